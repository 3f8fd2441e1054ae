package org.whisperfinetune.android

import android.Manifest
import android.annotation.SuppressLint
import android.content.Context
import android.content.pm.PackageManager
import android.media.AudioFormat
import android.media.AudioRecord
import android.media.MediaRecorder
import java.io.IOException
import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import org.whisperfinetune.core.Resampler

/** Microphone to 16 kHz mono float, until [stop] is set (or [MAX_SECONDS] pass). */
object Recorder {
    const val MAX_SECONDS = 10 * 60

    /** Whisper's own rate first; a microphone that refuses it still gives 48 or 44.1 kHz, resampled after. */
    private val RATES = intArrayOf(16_000, 48_000, 44_100)

    fun hasPermission(context: Context): Boolean =
        context.checkSelfPermission(Manifest.permission.RECORD_AUDIO) == PackageManager.PERMISSION_GRANTED

    /** Blocks while recording: call it off the main thread. [onProgress] gets the seconds recorded so far. */
    suspend fun record(context: Context, stop: AtomicBoolean, onProgress: (Float) -> Unit): FloatArray {
        if (!hasPermission(context)) {
            throw IOException("The app may not use the microphone: allow it in the system settings.")
        }
        val (record, rate) = open()
        val chunk = ShortArray(rate / 10)
        var samples = FloatArray(rate * 30)
        var size = 0
        try {
            record.startRecording()
            while (!stop.get() && size < MAX_SECONDS * rate) {
                currentCoroutineContext().ensureActive()
                val n = record.read(chunk, 0, chunk.size)
                if (n < 0) throw IOException("The microphone stopped delivering audio (AudioRecord error $n).")
                if (size + n > samples.size) samples = samples.copyOf(samples.size * 2)
                for (i in 0 until n) samples[size + i] = chunk[i] / 32768f
                size += n
                onProgress(size.toFloat() / rate)
            }
        } finally {
            record.stop()
            record.release()
        }
        return Resampler.toMono16k(samples.copyOf(size), 1, rate)
    }

    // The permission is checked in record(), the only caller.
    @SuppressLint("MissingPermission")
    private fun open(): Pair<AudioRecord, Int> {
        for (rate in RATES) {
            val minBuffer =
                AudioRecord.getMinBufferSize(rate, AudioFormat.CHANNEL_IN_MONO, AudioFormat.ENCODING_PCM_16BIT)
            if (minBuffer <= 0) continue
            val record = AudioRecord(
                MediaRecorder.AudioSource.MIC, rate, AudioFormat.CHANNEL_IN_MONO, AudioFormat.ENCODING_PCM_16BIT,
                maxOf(minBuffer, rate / 5 * 2),
            )
            if (record.state == AudioRecord.STATE_INITIALIZED) return record to rate
            record.release()
        }
        throw IOException("The microphone cannot be opened (is another app using it?).")
    }
}
