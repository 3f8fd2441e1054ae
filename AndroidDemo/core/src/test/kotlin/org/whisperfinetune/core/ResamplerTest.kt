package org.whisperfinetune.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertSame
import org.junit.Assert.assertTrue
import org.junit.Test
import kotlin.math.PI
import kotlin.math.abs
import kotlin.math.sin
import kotlin.math.sqrt

class ResamplerTest {
    private fun sine(rate: Int, hz: Double, seconds: Double) =
        FloatArray((rate * seconds).toInt()) { (0.5 * sin(2 * PI * hz * it / rate)).toFloat() }

    private fun rms(x: FloatArray, from: Int, to: Int): Double =
        sqrt((from until to).sumOf { x[it].toDouble() * x[it] } / (to - from))

    @Test
    fun keepsA440HzToneAtEveryCommonRate() {
        for (rate in listOf(8000, 11025, 22050, 32000, 44100, 48000, 96000)) {
            val out = Resampler.resample(sine(rate, 440.0, 1.0), rate, 16000)
            assertEquals("length at $rate Hz", 16000, out.size)
            val expected = sine(16000, 440.0, 1.0)
            // Away from the edges (where the filter sees silence beyond the signal) the tone is unchanged.
            val worst = (2000 until 14000).maxOf { abs(out[it] - expected[it]) }
            assertTrue("440 Hz from $rate Hz: worst error $worst", worst < 1e-3)
        }
    }

    @Test
    fun removesWhatLiesAbove8kHz() {
        val out = Resampler.resample(sine(48000, 12000.0, 1.0), 48000, 16000)
        assertTrue("12 kHz must not alias into 16 kHz audio", rms(out, 2000, 14000) < 1e-4)
    }

    @Test
    fun usesTheSlowPathForRatesWithoutACommonDivisor() {
        // 16001 Hz shares no divisor with 16000: no per-phase table, the interpolated kernel instead.
        val out = Resampler.resample(sine(16001, 300.0, 1.0), 16001, 16000)
        val expected = sine(16000, 300.0, 1.0)
        assertEquals(16000, out.size)
        assertTrue((2000 until 14000).maxOf { abs(out[it] - expected[it]) } < 1e-3)
    }

    @Test
    fun mixesChannelsByTheirMean() {
        assertArrayEquals(floatArrayOf(0.5f, -0.25f), Resampler.mix(floatArrayOf(1f, 0f, -0.5f, 0f), 2), 0f)
        val mono = floatArrayOf(0.1f, 0.2f)
        assertSame(mono, Resampler.mix(mono, 1))
        assertArrayEquals(floatArrayOf(0.2f), Resampler.toMono16k(floatArrayOf(0.1f, 0.2f, 0.3f), 3, 16000), 1e-7f)
    }

    @Test(expected = IllegalArgumentException::class)
    fun refusesSamplesThatDoNotFillTheChannels() {
        Resampler.mix(floatArrayOf(1f, 2f, 3f), 2)
    }
}
