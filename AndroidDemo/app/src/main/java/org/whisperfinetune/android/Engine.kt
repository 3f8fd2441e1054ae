package org.whisperfinetune.android

import java.io.File
import org.whisperfinetune.core.Benchmark
import org.whisperfinetune.core.BenchmarkResult
import org.whisperfinetune.core.GgmlModelInfo
import org.whisperfinetune.core.ModelCheck
import org.whisperfinetune.core.Segment
import org.whisperfinetune.core.TranscribeParams
import org.whisperfinetune.core.WhisperContext

/**
 * The app's one whisper.cpp context, replaced when another model is loaded. Every method but [cancel] blocks:
 * call them off the main thread. [cancel] is meant for another thread while a run is going on.
 */
class Engine : AutoCloseable {
    @Volatile
    private var context: WhisperContext? = null

    /** Replaces the loaded model; a wrong file throws ModelCheckException before whisper.cpp sees it. */
    fun load(model: File): GgmlModelInfo = synchronized(this) {
        // Free the old model first: a phone may not hold two.
        context?.close()
        context = null
        val loaded = WhisperContext.load(model)
        context = loaded
        loaded.info ?: ModelCheck.inspect(model)
    }

    fun transcribe(samples: FloatArray, params: TranscribeParams, onSegment: (Segment) -> Unit): List<Segment> =
        loaded().transcribe(samples, params, onSegment)

    fun benchmark(samples: FloatArray, params: TranscribeParams): BenchmarkResult =
        Benchmark.run(loaded(), samples, params)

    /** Stops the running transcription or benchmark, which then throws CancellationException. */
    fun cancel() {
        context?.cancel()
    }

    /** Cancels what runs, waits for it to stop, and frees the model. */
    override fun close() = synchronized(this) {
        context?.close()
        context = null
    }

    private fun loaded(): WhisperContext = context ?: throw IllegalStateException("No model is loaded.")
}
