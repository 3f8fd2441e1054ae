package org.whisperfinetune.android

import android.content.Context
import android.media.AudioFormat
import android.media.MediaCodec
import android.media.MediaExtractor
import android.media.MediaFormat
import android.net.Uri
import android.provider.OpenableColumns
import java.io.IOException
import java.nio.ByteOrder
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import org.whisperfinetune.core.AudioDecodeException
import org.whisperfinetune.core.Resampler
import org.whisperfinetune.core.WavDecoder

/** Picked audio files to 16 kHz mono float: WAV through :core's decoder, anything else through MediaCodec. */
object AudioFiles {
    /** Long enough for any recording a phone should transcribe in one go, short enough to fit in memory. */
    private const val MAX_SECONDS = 30 * 60
    private const val TIMEOUT_US = 10_000L

    fun displayName(context: Context, uri: Uri): String? =
        context.contentResolver.query(uri, arrayOf(OpenableColumns.DISPLAY_NAME), null, null, null)?.use { cursor ->
            if (cursor.moveToFirst() && !cursor.isNull(0)) cursor.getString(0) else null
        }

    /** Throws AudioDecodeException, with one sentence naming the file, for anything that is not audio. */
    suspend fun decode(context: Context, uri: Uri): FloatArray {
        val name = displayName(context, uri) ?: uri.lastPathSegment ?: "The file"
        val resolver = context.contentResolver
        val header = ByteArray(12)
        val headerSize = (resolver.openInputStream(uri) ?: throw AudioDecodeException("$name cannot be opened."))
            .use { it.readNBytesCompat(header) }
        if (headerSize == 12 && isWav(header)) {
            val bytes = resolver.openInputStream(uri)?.use { it.readBytes() }
                ?: throw AudioDecodeException("$name cannot be opened.")
            val wav = WavDecoder.read(bytes, name)
            return Resampler.toMono16k(wav.samples, wav.channels, wav.sampleRate)
        }
        return decodeWithMediaCodec(context, uri, name)
    }

    private fun isWav(header: ByteArray): Boolean {
        val riff = String(header, 0, 4, Charsets.US_ASCII)
        return (riff == "RIFF" || riff == "RF64") && String(header, 8, 4, Charsets.US_ASCII) == "WAVE"
    }

    private fun java.io.InputStream.readNBytesCompat(buffer: ByteArray): Int {
        var total = 0
        while (total < buffer.size) {
            val n = read(buffer, total, buffer.size - total)
            if (n < 0) break
            total += n
        }
        return total
    }

    private suspend fun decodeWithMediaCodec(context: Context, uri: Uri, name: String): FloatArray {
        val extractor = MediaExtractor()
        try {
            try {
                extractor.setDataSource(context, uri, null)
            } catch (e: IOException) {
                throw AudioDecodeException("$name is not an audio file Android can read (${e.message}).")
            }
            val track = (0 until extractor.trackCount).firstOrNull {
                extractor.getTrackFormat(it).getString(MediaFormat.KEY_MIME)?.startsWith("audio/") == true
            } ?: throw AudioDecodeException("$name has no audio track.")
            extractor.selectTrack(track)
            val format = extractor.getTrackFormat(track)
            val mime = format.getString(MediaFormat.KEY_MIME)!!
            val codec = try {
                MediaCodec.createDecoderByType(mime)
            } catch (e: IOException) {
                throw AudioDecodeException("$name is $mime, which this phone has no decoder for.")
            } catch (e: IllegalArgumentException) {
                throw AudioDecodeException("$name is $mime, which this phone has no decoder for.")
            }
            try {
                codec.configure(format, null, null, 0)
                codec.start()
                return drain(codec, extractor, format, name)
            } catch (e: IllegalStateException) {
                // MediaCodec.CodecException is one: a damaged stream or a format the decoder rejects.
                throw AudioDecodeException("$name could not be decoded (${e.message}).")
            } catch (e: IllegalArgumentException) {
                throw AudioDecodeException("$name could not be decoded (${e.message}).")
            } finally {
                codec.release()
            }
        } finally {
            extractor.release()
        }
    }

    /** Feeds the extractor's packets to the decoder and gathers its PCM output, then resamples it. */
    private suspend fun drain(
        codec: MediaCodec,
        extractor: MediaExtractor,
        format: MediaFormat,
        name: String,
    ): FloatArray {
        var rate = format.getInteger(MediaFormat.KEY_SAMPLE_RATE)
        var channels = format.getInteger(MediaFormat.KEY_CHANNEL_COUNT)
        var encoding = AudioFormat.ENCODING_PCM_16BIT
        val pcm = SampleBuffer()
        val info = MediaCodec.BufferInfo()
        var inputDone = false
        while (true) {
            currentCoroutineContext().ensureActive()
            if (!inputDone) {
                val index = codec.dequeueInputBuffer(TIMEOUT_US)
                if (index >= 0) {
                    val buffer = codec.getInputBuffer(index)!!
                    val size = extractor.readSampleData(buffer, 0)
                    if (size < 0) {
                        codec.queueInputBuffer(index, 0, 0, 0, MediaCodec.BUFFER_FLAG_END_OF_STREAM)
                        inputDone = true
                    } else {
                        codec.queueInputBuffer(index, 0, size, extractor.sampleTime, 0)
                        extractor.advance()
                    }
                }
            }
            val index = codec.dequeueOutputBuffer(info, TIMEOUT_US)
            if (index == MediaCodec.INFO_OUTPUT_FORMAT_CHANGED) {
                val output = codec.outputFormat
                rate = output.getInteger(MediaFormat.KEY_SAMPLE_RATE)
                channels = output.getInteger(MediaFormat.KEY_CHANNEL_COUNT)
                if (output.containsKey(MediaFormat.KEY_PCM_ENCODING)) {
                    encoding = output.getInteger(MediaFormat.KEY_PCM_ENCODING)
                }
            } else if (index >= 0) {
                val buffer = codec.getOutputBuffer(index)!!
                buffer.position(info.offset)
                buffer.limit(info.offset + info.size)
                buffer.order(ByteOrder.LITTLE_ENDIAN)
                when (encoding) {
                    AudioFormat.ENCODING_PCM_FLOAT -> {
                        val floats = buffer.asFloatBuffer()
                        while (floats.hasRemaining()) pcm.add(floats.get())
                    }
                    AudioFormat.ENCODING_PCM_16BIT -> {
                        val shorts = buffer.asShortBuffer()
                        while (shorts.hasRemaining()) pcm.add(shorts.get() / 32768f)
                    }
                    else -> throw AudioDecodeException(
                        "$name decodes to PCM encoding $encoding, which this app does not read.",
                    )
                }
                codec.releaseOutputBuffer(index, false)
                if (pcm.size.toLong() > MAX_SECONDS.toLong() * rate * channels) {
                    throw AudioDecodeException(
                        "$name is longer than ${MAX_SECONDS / 60} minutes: cut it into parts first.",
                    )
                }
                if (info.flags and MediaCodec.BUFFER_FLAG_END_OF_STREAM != 0) break
            }
        }
        if (pcm.size == 0) throw AudioDecodeException("$name holds no audio samples.")
        return Resampler.toMono16k(pcm.toArray(), channels, rate)
    }

    /** A growable float array (a List<Float> would box every sample). */
    private class SampleBuffer {
        private var data = FloatArray(1 shl 16)
        var size = 0
            private set

        fun add(value: Float) {
            if (size == data.size) data = data.copyOf(data.size * 2)
            data[size++] = value
        }

        fun toArray(): FloatArray = data.copyOf(size)
    }
}
