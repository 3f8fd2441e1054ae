package org.whisperfinetune.core

import java.io.File
import java.util.concurrent.CancellationException
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/**
 * One loaded whisper.cpp model. Every call blocks, so run them off the main thread; one runs at a time (a second
 * caller waits). [cancel] from another thread stops the running [transcribe], which then throws
 * CancellationException; [close] cancels, waits for the running call to end, and frees the native context.
 */
class WhisperContext private constructor(private var handle: Long, val model: File, val info: GgmlModelInfo?) :
    AutoCloseable {

    companion object {
        /** Checks [model] with ModelCheck (ModelCheckException on a wrong file), then loads it into whisper.cpp. */
        fun load(model: File): WhisperContext {
            val info = ModelCheck.inspect(model)
            return WhisperContext(nativeLoad(model), model, info)
        }

        /** Loads without ModelCheck: only for proving that whisper.cpp's own refusal reaches Kotlin intact. */
        internal fun loadUnchecked(model: File): WhisperContext = WhisperContext(nativeLoad(model), model, null)

        /** The CPU features whisper.cpp was built with and uses ("AVX = 1 | NEON = 0 | ..."). */
        fun systemInfo(): String = WhisperNative.systemInfo().trim()

        /** The version of whisper.cpp inside the native library. */
        fun whisperVersion(): String = WhisperNative.version()

        /** Whisper's language codes in whisper.cpp's order ("en", "zh", "de", ...). */
        val languages: List<String> by lazy {
            (0..WhisperNative.languageMaxId()).map { WhisperNative.languageCode(it) ?: "?" }
        }

        private fun nativeLoad(model: File): Long {
            val handle = WhisperNative.load(model.absolutePath.toByteArray(Charsets.UTF_8))
            if (handle == 0L) {
                throw ModelCheckException("whisper.cpp could not load ${model.name}: ${WhisperNative.lastErrorText()}")
            }
            return handle
        }
    }

    private val work = ReentrantLock()
    private val handleLock = Any()

    val multilingual: Boolean by lazy { WhisperNative.isMultilingual(liveHandle()) }

    fun transcribe(samples: FloatArray, params: TranscribeParams, onSegment: (Segment) -> Unit): List<Segment> =
        transcribeTimed(samples, params, onSegment).first

    /** The most likely spoken language in the first 30 seconds and its probability. */
    fun detectLanguage(samples: FloatArray, threads: Int = 0): Pair<String, Float> {
        require(samples.isNotEmpty()) { "no audio samples to detect a language in" }
        if (!multilingual) return "en" to 1f
        return work.withLock {
            val probabilities = WhisperNative.detectLanguage(liveHandle(), samples, threadCount(threads))
                ?: throw TranscriptionException("whisper.cpp could not detect the language: " +
                    WhisperNative.lastErrorText())
            val best = probabilities.indices.maxByOrNull { probabilities[it] } ?: 0
            (WhisperNative.languageCode(best) ?: "?") to probabilities[best]
        }
    }

    fun cancel() {
        synchronized(handleLock) {
            if (handle != 0L) WhisperNative.cancel(handle)
        }
    }

    override fun close() {
        check(!work.isHeldByCurrentThread) { "close() cannot be called from inside a segment callback" }
        cancel()
        work.withLock {
            synchronized(handleLock) {
                if (handle != 0L) {
                    WhisperNative.free(handle)
                    handle = 0L
                }
            }
        }
    }

    internal fun transcribeTimed(samples: FloatArray, params: TranscribeParams,
                                 onSegment: (Segment) -> Unit = {}): Pair<List<Segment>, RunTiming> {
        require(samples.isNotEmpty()) { "no audio samples to transcribe" }
        val language = checkedLanguage(params.language)
        require(params.beamSize in 1..16) { "beam size must be 1 to 16, got ${params.beamSize}" }
        return work.withLock {
            val h = liveHandle()
            WhisperNative.takeAbort(h)   // a cancel() aimed at an earlier call must not stop this one
            val segments = ArrayList<Segment>()
            val sink = NativeSegmentSink { t0, t1, text ->
                val segment = Segment(t0 * 10, t1 * 10, String(text, Charsets.UTF_8).trim())
                segments.add(segment)
                onSegment(segment)
            }
            val result = WhisperNative.transcribe(h, samples, language, params.translate, threadCount(params.threads),
                params.beamSize, sink)
            if (WhisperNative.takeAbort(h)) throw CancellationException("transcription cancelled")
            if (result != 0) {
                throw TranscriptionException("whisper.cpp failed to transcribe (error $result: " +
                    "${WhisperNative.lastErrorText()})")
            }
            segments to RunTiming.of(WhisperNative.lastRunTimings(h))
        }
    }

    private fun checkedLanguage(language: String?): String? {
        val code = language?.trim()?.lowercase()?.takeUnless { it.isEmpty() || it == "auto" } ?: return null
        require(code in languages) { "unknown language '$language'; use a Whisper language code such as en, zh or de" }
        require(multilingual || code == "en") { "${model.name} is an English-only model; it cannot take '$code'" }
        return code
    }

    private fun threadCount(threads: Int): Int {
        require(threads >= 0) { "threads must be 0 (every core) or more, got $threads" }
        return if (threads == 0) Runtime.getRuntime().availableProcessors() else threads
    }

    private fun liveHandle(): Long = synchronized(handleLock) {
        check(handle != 0L) { "this WhisperContext is closed" }
        handle
    }
}
