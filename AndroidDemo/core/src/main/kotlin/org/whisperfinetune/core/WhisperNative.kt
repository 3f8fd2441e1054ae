package org.whisperfinetune.core

/** Receives each new segment from native code: times in whisper.cpp's 10 ms ticks, text as UTF-8 bytes. */
internal fun interface NativeSegmentSink {
    fun onSegment(t0: Long, t1: Long, text: ByteArray)
}

/** The functions of libwhisper_jni (native/whisper_jni.cpp). Handles are owned by WhisperContext. */
internal object WhisperNative {
    init {
        System.loadLibrary("whisper_jni")
    }

    @JvmStatic external fun load(path: ByteArray): Long
    @JvmStatic external fun lastError(): ByteArray
    @JvmStatic external fun free(handle: Long)
    @JvmStatic external fun cancel(handle: Long)
    @JvmStatic external fun takeAbort(handle: Long): Boolean
    @JvmStatic external fun transcribe(handle: Long, samples: FloatArray, language: String?, translate: Boolean,
                                       threads: Int, beamSize: Int, sink: NativeSegmentSink): Int
    @JvmStatic external fun lastRunTimings(handle: Long): DoubleArray?
    @JvmStatic external fun detectLanguage(handle: Long, samples: FloatArray, threads: Int): FloatArray?
    @JvmStatic external fun isMultilingual(handle: Long): Boolean
    @JvmStatic external fun languageMaxId(): Int
    @JvmStatic external fun languageCode(id: Int): String?
    @JvmStatic external fun systemInfo(): String
    @JvmStatic external fun version(): String

    fun lastErrorText(): String = String(lastError(), Charsets.UTF_8).ifBlank { "no reason given" }
}
