package org.whisperfinetune.core

import java.util.Locale

/** One piece of transcript: start and end in milliseconds from the start of the audio. */
data class Segment(val startMs: Long, val endMs: Long, val text: String)

/**
 * How to transcribe. [language] is a Whisper language code ("en", "zh", ...) or null to detect it;
 * [threads] 0 uses every core; [beamSize] 1 is greedy decoding, more is beam search.
 */
data class TranscribeParams(
    val language: String? = null,
    val translate: Boolean = false,
    val threads: Int = 0,
    val beamSize: Int = 1,
)

/** Timestamps for the screen ("00:01:02.345") and transcripts as SubRip (.srt) text. */
object Timestamps {
    fun format(ms: Long): String = clock(ms, '.')

    fun srt(segments: List<Segment>): String = buildString {
        segments.forEachIndexed { index, segment ->
            append(index + 1).append('\n')
            append(clock(segment.startMs, ',')).append(" --> ").append(clock(segment.endMs, ',')).append('\n')
            append(segment.text.trim()).append("\n\n")
        }
    }

    /** The segments as plain lines, "[00:00:01.000 -> 00:00:03.500] text", for copying and sharing. */
    fun lines(segments: List<Segment>): String = segments.joinToString("\n") {
        "[${format(it.startMs)} -> ${format(it.endMs)}] ${it.text.trim()}"
    }

    private fun clock(ms: Long, separator: Char): String {
        require(ms >= 0) { "a timestamp cannot be negative: $ms ms" }
        val hours = ms / 3_600_000
        val minutes = ms / 60_000 % 60
        val seconds = ms / 1000 % 60
        // Locale.ROOT: ASCII digits whatever the phone's language.
        return String.format(Locale.ROOT, "%02d:%02d:%02d%c%03d", hours, minutes, seconds, separator, ms % 1000)
    }
}
