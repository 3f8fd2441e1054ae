package org.whisperfinetune.core

/**
 * One transcription's time: [encodeMs] in whisper.cpp's encoder (all 30 s windows), [decodeMs] the rest of
 * the run (mel spectrogram, prompt, token decoding and sampling), [wallMs] both.
 */
internal data class RunTiming(val encodeMs: Double, val decodeMs: Double, val wallMs: Double) {
    companion object {
        /** From WhisperNative.lastRunTimings: [wall ms, encoder runs, encode ms per run, ...]. */
        fun of(native: DoubleArray?): RunTiming {
            if (native == null || native.size < 3) return RunTiming(0.0, 0.0, 0.0)
            val wall = native[0]
            val encode = minOf(native[1] * native[2], wall)
            return RunTiming(encode, wall - encode, wall)
        }
    }
}

/** Median encoder and decoder time over the repeats; [realTimeFactor] < 1 is faster than the audio plays. */
data class BenchmarkResult(val encodeMs: Double, val decodeMs: Double, val audioSeconds: Double) {
    val realTimeFactor: Double get() = (encodeMs + decodeMs) / 1000.0 / audioSeconds
}

object Benchmark {
    fun run(ctx: WhisperContext, samples: FloatArray, params: TranscribeParams, repeats: Int = 3): BenchmarkResult {
        require(repeats >= 1) { "repeats must be at least 1, got $repeats" }
        val runs = List(repeats) { ctx.transcribeTimed(samples, params).second }
        return summarize(runs.map { it.encodeMs }, runs.map { it.decodeMs }, samples.size.toDouble() /
            Resampler.SAMPLE_RATE)
    }

    /** The medians of per-run encoder and decoder times (ms) for [audioSeconds] of audio. */
    fun summarize(encodeMs: List<Double>, decodeMs: List<Double>, audioSeconds: Double): BenchmarkResult {
        require(encodeMs.isNotEmpty() && encodeMs.size == decodeMs.size) { "one encode and decode time per run" }
        require(audioSeconds > 0) { "the benchmark audio must be longer than 0 s" }
        return BenchmarkResult(median(encodeMs), median(decodeMs), audioSeconds)
    }

    private fun median(values: List<Double>): Double {
        val sorted = values.sorted()
        val middle = sorted.size / 2
        return if (sorted.size % 2 == 1) sorted[middle] else (sorted[middle - 1] + sorted[middle]) / 2
    }
}
