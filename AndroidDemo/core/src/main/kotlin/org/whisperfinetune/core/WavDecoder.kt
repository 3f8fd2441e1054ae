package org.whisperfinetune.core

import java.io.BufferedInputStream
import java.io.ByteArrayInputStream
import java.io.File
import java.io.IOException
import java.io.InputStream

/** A WAV file's samples as stored: interleaved, scaled to -1..1 the way libsndfile (soundfile) scales them. */
class WavAudio(val samples: FloatArray, val channels: Int, val sampleRate: Int, val encoding: String) {
    val frames: Int get() = samples.size / channels
    val seconds: Double get() = frames.toDouble() / sampleRate
}

/**
 * WAV (RIFF/WAVE) decoding: PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, plain or
 * WAVE_FORMAT_EXTENSIBLE, any sample rate and channel count. [decode] gives what Whisper takes: 16 kHz mono float.
 */
object WavDecoder {
    private const val FORMAT_PCM = 1
    private const val FORMAT_FLOAT = 3
    private const val FORMAT_EXTENSIBLE = 0xFFFE
    private val otherFormats = mapOf(2 to "ADPCM", 6 to "A-law", 7 to "mu-law", 0x11 to "IMA ADPCM", 0x55 to "MP3")

    fun decode(file: File): FloatArray = read(file).let { Resampler.toMono16k(it.samples, it.channels, it.sampleRate) }

    fun decode(bytes: ByteArray): FloatArray =
        read(bytes).let { Resampler.toMono16k(it.samples, it.channels, it.sampleRate) }

    fun read(file: File): WavAudio {
        if (!file.isFile) fail("${file.name}: audio file not found")
        return try {
            BufferedInputStream(file.inputStream(), 1 shl 16).use { read(it, file.name, file.length()) }
        } catch (error: IOException) {
            fail("${file.name} cannot be read: ${error.message}")
        }
    }

    fun read(bytes: ByteArray, name: String = "the audio"): WavAudio =
        read(ByteArrayInputStream(bytes), name, bytes.size.toLong())

    private fun read(input: InputStream, name: String, length: Long): WavAudio {
        val stream = LittleEndian(input)
        if (length == 0L) fail("$name is empty")
        val riff = stream.tag() ?: fail("$name is too short to be a WAV file ($length bytes)")
        val wave = if (stream.skip(4)) stream.tag() else null
        if (riff != "RIFF" || wave != "WAVE") fail(notWav(name, riff))

        var format: Format? = null
        while (true) {
            val id = stream.tag() ?: break
            val size = stream.uint32() ?: break
            when (id) {
                "fmt " -> format = readFormat(stream, size, name)
                "data" -> {
                    val fmt = format ?: fail("$name is damaged: its audio data comes before its format description")
                    // A recorder that was stopped early leaves the size unset or too large: read what is there.
                    val available = if (size == 0L || size == 0xFFFFFFFFL) length else minOf(size, length)
                    return readData(stream, fmt, available, name)
                }
                else -> if (!stream.skip(size + (size and 1))) break
            }
        }
        fail(if (format == null) "$name is damaged: it has no format description" else "$name has no audio data")
    }

    private class Format(val code: Int, val channels: Int, val rate: Int, val bytesPerSample: Int, val validBits: Int) {
        val encoding: String
            get() = if (code == FORMAT_FLOAT) "float${bytesPerSample * 8}" else "pcm$validBits"
    }

    private fun readFormat(stream: LittleEndian, size: Long, name: String): Format {
        if (size < 16) fail("$name is damaged: its format description is too short")
        val damaged = "$name is damaged: its format description is cut off"
        var code = stream.uint16() ?: fail(damaged)
        val channels = stream.uint16() ?: fail(damaged)
        val rate = stream.uint32() ?: fail(damaged)
        stream.uint32() ?: fail(damaged)                 // bytes per second: derived, not trusted
        val blockAlign = stream.uint16() ?: fail(damaged)
        val bits = stream.uint16() ?: fail(damaged)
        var validBits = bits
        var consumed = 16L
        if (code == FORMAT_EXTENSIBLE && size >= 40) {
            stream.uint16() ?: fail(damaged)               // extension size
            validBits = stream.uint16() ?: fail(damaged)
            stream.uint32() ?: fail(damaged)               // channel mask
            code = stream.uint16() ?: fail(damaged)         // the sub-format GUID begins with the format code
            if (!stream.skip(14)) fail(damaged)
            consumed = 40
            if (validBits == 0) validBits = bits
        }
        if (!stream.skip(size - consumed + (size and 1))) fail(damaged)
        val bytesPerSample = (bits + 7) / 8
        when {
            code != FORMAT_PCM && code != FORMAT_FLOAT -> {
                val known = otherFormats[code]?.let { "$it ($code)" } ?: "format $code"
                fail("$name uses the WAV encoding $known; save it as PCM or float WAV")
            }
            channels == 0 -> fail("$name is damaged: it says it has no channels")
            rate <= 0 || rate > 1_000_000 -> fail("$name is damaged: its sample rate is $rate Hz")
            code == FORMAT_PCM && bits !in setOf(8, 16, 24, 32) ->
                fail("$name has $bits-bit PCM samples; 8, 16, 24 and 32-bit PCM are supported")
            code == FORMAT_FLOAT && bits != 32 && bits != 64 ->
                fail("$name has $bits-bit float samples; 32 and 64-bit float are supported")
            blockAlign != channels * bytesPerSample ->
                fail("$name is damaged: $channels channels of $bits bits do not make $blockAlign-byte frames")
        }
        return Format(code, channels, rate.toInt(), bytesPerSample, if (code == FORMAT_FLOAT) bits else validBits)
    }

    private fun readData(stream: LittleEndian, format: Format, available: Long, name: String): WavAudio {
        val frameBytes = format.channels * format.bytesPerSample
        val maxSamples = (Int.MAX_VALUE - 8).toLong()
        var capacity = minOf(available / format.bytesPerSample, maxSamples).toInt().coerceAtLeast(0)
        var samples = FloatArray(capacity)
        var count = 0
        val buffer = ByteArray(frameBytes * 4096)
        var remaining = available - available % frameBytes
        var carry = 0
        while (remaining > 0) {
            val want = minOf(buffer.size.toLong() - carry, remaining).toInt()
            val got = stream.read(buffer, carry, want)
            if (got <= 0) break
            remaining -= got
            val bytes = carry + got
            val whole = bytes - bytes % format.bytesPerSample
            val needed = count + whole / format.bytesPerSample
            if (needed > capacity) {
                if (needed > maxSamples) fail("$name is too long to decode in memory")
                capacity = minOf(maxOf(needed.toLong(), capacity * 2L), maxSamples).toInt()
                samples = samples.copyOf(capacity)
            }
            count = convert(buffer, whole, format, samples, count)
            carry = bytes - whole
            System.arraycopy(buffer, whole, buffer, 0, carry)
        }
        val frames = count / format.channels
        if (frames == 0) fail("$name has no audio samples")
        val out = if (frames * format.channels == samples.size) samples else samples.copyOf(frames * format.channels)
        return WavAudio(out, format.channels, format.rate, format.encoding)
    }

    /** Converts [length] bytes of samples into [out] from [at]; returns the new sample count. */
    private fun convert(bytes: ByteArray, length: Int, format: Format, out: FloatArray, at: Int): Int {
        var o = at
        var i = 0
        fun u8(k: Int) = bytes[k].toInt() and 0xFF
        when {
            format.code == FORMAT_FLOAT && format.bytesPerSample == 4 -> while (i < length) {
                out[o++] = Float.fromBits(u8(i) or (u8(i + 1) shl 8) or (u8(i + 2) shl 16) or (u8(i + 3) shl 24))
                i += 4
            }
            format.code == FORMAT_FLOAT -> while (i < length) {
                var bits = 0L
                for (k in 7 downTo 0) bits = (bits shl 8) or u8(i + k).toLong()
                out[o++] = Double.fromBits(bits).toFloat()
                i += 8
            }
            format.bytesPerSample == 1 -> while (i < length) {   // 8-bit WAV is unsigned
                out[o++] = (u8(i) - 128) / 128f
                i += 1
            }
            format.bytesPerSample == 2 -> while (i < length) {
                out[o++] = ((u8(i) or (bytes[i + 1].toInt() shl 8))) / 32768f
                i += 2
            }
            format.bytesPerSample == 3 -> while (i < length) {
                out[o++] = (u8(i) or (u8(i + 1) shl 8) or (bytes[i + 2].toInt() shl 16)) / 8388608f
                i += 3
            }
            else -> while (i < length) {
                out[o++] = (u8(i) or (u8(i + 1) shl 8) or (u8(i + 2) shl 16) or (u8(i + 3) shl 24)).toFloat() /
                    2147483648f
                i += 4
            }
        }
        return o
    }

    private fun notWav(name: String, first: String): String {
        val what = when {
            first.startsWith("fLaC") -> "a FLAC file"
            first.startsWith("ID3") || first.startsWith("\u00ff\u00fb") || first.startsWith("\u00ff\u00f3") -> "an MP3 file"
            first.startsWith("OggS") -> "an Ogg file"
            first.startsWith("RIFF") -> "a RIFF file of another kind"
            else -> "not a WAV file"
        }
        val conversion = if (what == "not a WAV file") "" else ", not WAV"
        return "$name is $what$conversion; choose a WAV recording (PCM or float)"
    }

    private fun fail(message: String): Nothing = throw AudioDecodeException(message)

    /** Little-endian reads that report the end of the stream as null/false instead of throwing. */
    private class LittleEndian(private val input: InputStream) {
        private val small = ByteArray(4)

        fun read(buffer: ByteArray, offset: Int, length: Int): Int = input.read(buffer, offset, length)

        private fun fill(n: Int): Boolean {
            var got = 0
            while (got < n) {
                val r = input.read(small, got, n - got)
                if (r < 0) return false
                got += r
            }
            return true
        }

        fun tag(): String? = if (fill(4)) String(small, 0, 4, Charsets.ISO_8859_1) else null

        fun uint16(): Int? = if (fill(2)) (small[0].toInt() and 0xFF) or ((small[1].toInt() and 0xFF) shl 8) else null

        fun uint32(): Long? = if (fill(4)) {
            (small[0].toLong() and 0xFF) or ((small[1].toLong() and 0xFF) shl 8) or
                ((small[2].toLong() and 0xFF) shl 16) or ((small[3].toLong() and 0xFF) shl 24)
        } else null

        fun skip(n: Long): Boolean {
            var left = n
            while (left > 0) {
                val skipped = input.skip(left)
                if (skipped <= 0) {
                    if (input.read() < 0) return false
                    left -= 1
                } else {
                    left -= skipped
                }
            }
            return true
        }
    }
}
