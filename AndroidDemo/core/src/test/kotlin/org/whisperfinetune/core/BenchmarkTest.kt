package org.whisperfinetune.core

import org.junit.Assert.assertEquals
import org.junit.Test

class BenchmarkTest {
    @Test
    fun takesTheMedianOfEachPart() {
        val result = Benchmark.summarize(listOf(300.0, 100.0, 200.0), listOf(50.0, 70.0, 60.0), 10.0)
        assertEquals(200.0, result.encodeMs, 0.0)
        assertEquals(60.0, result.decodeMs, 0.0)
        assertEquals(0.026, result.realTimeFactor, 1e-12)
        assertEquals(150.0, Benchmark.summarize(listOf(100.0, 200.0), listOf(1.0, 3.0), 1.0).encodeMs, 0.0)
    }

    @Test
    fun splitsANativeRunIntoEncoderAndTheRest() {
        // wall 1000 ms, 2 encoder runs of 300 ms each, then per-call averages that are not totals
        val timing = RunTiming.of(doubleArrayOf(1000.0, 2.0, 300.0, 0.1, 5.0, 0.0, 20.0))
        assertEquals(600.0, timing.encodeMs, 0.0)
        assertEquals(400.0, timing.decodeMs, 0.0)
        assertEquals(RunTiming(0.0, 0.0, 0.0), RunTiming.of(null))
    }

    @Test(expected = IllegalArgumentException::class)
    fun refusesAnEmptyBenchmark() {
        Benchmark.summarize(emptyList(), emptyList(), 1.0)
    }
}
