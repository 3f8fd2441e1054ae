package org.whisperfinetune.android

import java.io.File
import java.util.Locale
import org.whisperfinetune.core.BenchmarkResult
import org.whisperfinetune.core.GgmlModelInfo
import org.whisperfinetune.core.Segment
import org.whisperfinetune.core.TranscribeParams

// What the screens show, as plain data: no android.* import here, so this file compiles (and is tested)
// on any JVM.

/** The settings screen's choices; [language] null means detect it. */
data class Settings(
    val language: String? = null,
    val translate: Boolean = false,
    val threads: Int = 0,
    val beamSize: Int = 1,
) {
    fun toParams() =
        TranscribeParams(language = language, translate = translate, threads = threads, beamSize = beamSize)

    companion object {
        const val MAX_BEAM_SIZE = 5

        /** "auto", "" and "Auto " all mean detect; anything else is a language code such as "en" or "zh". */
        fun parseLanguage(text: String): String? =
            text.trim().lowercase(Locale.ROOT).takeUnless { it.isEmpty() || it == "auto" }
    }
}

/** What the app is doing now; only one thing at a time, because there is one whisper.cpp context. */
sealed interface Busy {
    val label: String

    data object LoadingModel : Busy { override val label = "Loading the model" }
    data object ImportingModel : Busy { override val label = "Importing the model" }
    data class Downloading(val doneBytes: Long, val totalBytes: Long?) : Busy {
        override val label
            get() = "Downloading: ${mib(doneBytes)}" + (totalBytes?.let { " of ${mib(it)}" } ?: "")
        val fraction: Float? get() = totalBytes?.takeIf { it > 0 }?.let { doneBytes.toFloat() / it }
    }
    data object DecodingAudio : Busy { override val label = "Reading the audio" }
    data class Recording(val seconds: Float) : Busy {
        override val label get() = "Recording: ${"%.1f".format(Locale.ROOT, seconds)} s"
    }
    data object Transcribing : Busy { override val label = "Transcribing" }
    data object Benchmarking : Busy { override val label = "Benchmarking" }
}

/** A model the user can load: bundled in the APK ([file] null until first copied out) or in app storage. */
data class ModelEntry(val name: String, val bundled: Boolean, val file: File?, val sizeBytes: Long?)

data class LoadedModel(val name: String, val info: GgmlModelInfo)

data class UiState(
    val settings: Settings = Settings(),
    val models: List<ModelEntry> = emptyList(),
    val loaded: LoadedModel? = null,
    val busy: Busy? = null,
    val segments: List<Segment> = emptyList(),
    val transcriptSource: String? = null,
    val benchmark: BenchmarkResult? = null,
    val systemInfo: String? = null,
    /** The one message on screen: a wrong file, a failed download, a cancelled run. */
    val message: String? = null,
) {
    val canRun: Boolean get() = loaded != null && busy == null
}

/** "base, multilingual, q5_0, 51.2 MiB": the model as the Model screen names it. */
fun describeModel(info: GgmlModelInfo): String =
    "${info.sizeName}, ${if (info.multilingual) "multilingual" else "English-only"}, ${info.weightType}, " +
        mib(info.sizeBytes)

/** The benchmark screen's lines. */
fun benchmarkLines(result: BenchmarkResult): List<String> = listOf(
    "Encoder: ${"%.0f".format(Locale.ROOT, result.encodeMs)} ms",
    "Decoder: ${"%.0f".format(Locale.ROOT, result.decodeMs)} ms",
    "Audio: ${"%.1f".format(Locale.ROOT, result.audioSeconds)} s",
    "Real-time factor: ${"%.2f".format(Locale.ROOT, result.realTimeFactor)}" +
        if (result.realTimeFactor < 1.0) " (faster than real time)" else " (slower than real time)",
)

fun mib(bytes: Long): String = "%.1f MiB".format(Locale.ROOT, bytes / 1048576.0)

/** A file name safe for app storage, from a picked document's or a URL's last path segment. */
fun storageName(raw: String?, fallback: String = "model.bin"): String {
    val cleaned = raw.orEmpty().substringAfterLast('/').substringBefore('?').substringBefore('#')
        .replace(Regex("[^A-Za-z0-9._-]"), "_").trim('.', '_')
    return cleaned.ifEmpty { fallback }
}
