package org.whisperfinetune.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.ByteArrayOutputStream
import java.io.File
import kotlin.math.abs
import kotlin.math.sqrt

class WavDecoderTest {
    @get:Rule
    val temp = TemporaryFolder()

    /** A WAV file around [data]; [extra] adds an unknown chunk before the data (odd-sized, to test padding). */
    private fun wav(code: Int, channels: Int, rate: Int, bits: Int, data: ByteArray, extensible: Boolean = false,
                    extra: Boolean = false): ByteArray {
        val out = ByteArrayOutputStream()
        fun u16(v: Int) { out.write(v and 0xFF); out.write(v ushr 8 and 0xFF) }
        fun u32(v: Int) { u16(v and 0xFFFF); u16(v ushr 16) }
        fun tag(s: String) = out.write(s.toByteArray(Charsets.ISO_8859_1))
        val bytesPerSample = (bits + 7) / 8
        tag("RIFF"); u32(0); tag("WAVE")
        tag("fmt "); u32(if (extensible) 40 else 16)
        u16(if (extensible) 0xFFFE else code); u16(channels); u32(rate); u32(rate * channels * bytesPerSample)
        u16(channels * bytesPerSample); u16(bits)
        if (extensible) {
            u16(22); u16(bits); u32(0); u16(code)
            out.write(byteArrayOf(0, 0, 0, 0, 0x10, 0, 0x80.toByte(), 0, 0, 0xAA.toByte(), 0, 0x38, 0x9B.toByte(), 0x71))
        }
        if (extra) { tag("LIST"); u32(3); out.write(byteArrayOf(1, 2, 3, 0)) }
        tag("data"); u32(data.size); out.write(data)
        return out.toByteArray()
    }

    private fun le(vararg values: Long, width: Int): ByteArray =
        ByteArray(values.size * width) { i -> (values[i / width] shr (8 * (i % width))).toByte() }

    @Test
    fun decodesEveryPcmWidthAndFloatType() {
        val cases = listOf(
            wav(1, 1, 16000, 8, byteArrayOf(0, 64, 128.toByte(), 255.toByte())) to
                floatArrayOf(-1f, -0.5f, 0f, 127 / 128f),
            wav(1, 1, 16000, 16, le(-32768, -16384, 0, 32767, width = 2)) to
                floatArrayOf(-1f, -0.5f, 0f, 32767 / 32768f),
            wav(1, 1, 16000, 24, le(-8388608, 4194304, 0, 8388607, width = 3)) to
                floatArrayOf(-1f, 0.5f, 0f, 8388607 / 8388608f),
            wav(1, 1, 16000, 32, le(Int.MIN_VALUE.toLong(), 1L shl 30, 0, 1, width = 4)) to
                floatArrayOf(-1f, 0.5f, 0f, 1 / 2147483648f),
            wav(3, 1, 16000, 32, le(*floatArrayOf(-1.5f, 0.25f, 0f, 1f).map { it.toBits().toLong() }.toLongArray(),
                width = 4)) to floatArrayOf(-1.5f, 0.25f, 0f, 1f),
            wav(3, 1, 16000, 64, le(*doubleArrayOf(-0.75, 0.1, 0.0, 2.0).map { it.toBits() }.toLongArray(),
                width = 8)) to floatArrayOf(-0.75f, 0.1f, 0f, 2f),
        )
        for ((bytes, expected) in cases) {
            val audio = WavDecoder.read(bytes)
            assertArrayEquals(audio.encoding, expected, audio.samples, 0f)
            assertEquals(1, audio.channels)
            assertEquals(16000, audio.sampleRate)
        }
    }

    @Test
    fun readsExtensibleHeadersStereoAndSkipsUnknownChunks() {
        val audio = WavDecoder.read(wav(1, 2, 44100, 16, le(16384, -16384, 8192, 0, width = 2), extensible = true,
            extra = true))
        assertEquals(2, audio.channels)
        assertEquals(44100, audio.sampleRate)
        assertEquals(2, audio.frames)
        assertArrayEquals(floatArrayOf(0.5f, -0.5f, 0.25f, 0f), audio.samples, 0f)
    }

    @Test
    fun decodeGivesSixteenKilohertzMono() {
        val frames = 48000
        val data = le(*LongArray(frames * 2) { if (it % 2 == 0) 16384 else 0 }, width = 2)
        val mono = WavDecoder.decode(wav(1, 2, 48000, 16, data))
        assertEquals(16000, mono.size)
        assertEquals(0.25f, mono[8000], 1e-4f)   // the mean of 0.5 and 0, away from the edges
    }

    @Test
    fun readsWhatARecorderLeftWithoutItsFinalSize() {
        val bytes = wav(1, 1, 16000, 16, le(100, 200, 300, width = 2))
        // The data size field still says 0xFFFFFFFF, as a recorder that was killed leaves it.
        for (i in bytes.size - 10 until bytes.size - 6) bytes[i] = 0xFF.toByte()
        assertEquals(3, WavDecoder.read(bytes).frames)
    }

    private fun message(bytes: ByteArray, name: String = "clip.wav"): String = try {
        WavDecoder.read(bytes, name)
        fail("decoded a file it should refuse")
        ""
    } catch (error: AudioDecodeException) {
        error.message!!
    }

    @Test
    fun refusesNonAudioWithOneSentence() {
        assertEquals("notes.txt is not a WAV file; choose a WAV recording (PCM or float)",
            message("hello, this is text".toByteArray(), "notes.txt"))
        assertEquals("song.mp3 is an MP3 file, not WAV; choose a WAV recording (PCM or float)",
            message("ID3\u0004\u0000\u0000\u0000\u0000\u0000".toByteArray(Charsets.ISO_8859_1), "song.mp3"))
        assertEquals("clip.wav is empty", message(ByteArray(0)))
        assertEquals("clip.wav uses the WAV encoding mu-law (7); save it as PCM or float WAV",
            message(wav(7, 1, 8000, 8, ByteArray(16))))
        assertEquals("clip.wav has 12-bit PCM samples; 8, 16, 24 and 32-bit PCM are supported",
            message(wav(1, 1, 8000, 12, ByteArray(16))))
        assertEquals("clip.wav has no audio samples", message(wav(1, 1, 8000, 16, ByteArray(0))))
        val cut = wav(1, 1, 8000, 16, ByteArray(16)).copyOf(30)
        assertTrue(message(cut), message(cut).startsWith("clip.wav is damaged"))
    }

    @Test
    fun aMissingFileIsOneSentence() {
        try {
            WavDecoder.decode(File(temp.root, "gone.wav"))
            fail("decoded a missing file")
        } catch (error: AudioDecodeException) {
            assertEquals("gone.wav: audio file not found", error.message)
        }
    }

    /** The variants tests/test_android_core.py wrote with soundfile, against soundfile's and soxr's samples. */
    @Test
    fun decodesLikeSoundfileAndSoxr() {
        val inputs = TestInputs.require()
        val folder = inputs.folder("wav")
        val names = File(folder, "variants.txt").readLines().filter { it.isNotBlank() }
        assertTrue(names.size >= 10)
        val report = LinkedHashMap<String, Any>()
        for (name in names) {
            val audio = WavDecoder.read(File(folder, "$name.wav"))
            val raw = inputs.floats(File(folder, "$name.raw.f32"))
            assertEquals("$name: samples", raw.size, audio.samples.size)
            val rawWorst = raw.indices.maxOf { abs(raw[it] - audio.samples[it]) }
            assertEquals("$name: stored samples must be exactly soundfile's", 0f, rawWorst, 0f)

            val mono = WavDecoder.decode(File(folder, "$name.wav"))
            val reference = inputs.floats(File(folder, "$name.16k.f32"))
            assertEquals("$name: 16 kHz length", reference.size, mono.size)
            var squares = 0.0
            var signal = 0.0
            var worst = 0f
            for (i in reference.indices) {
                val d = mono[i] - reference[i]
                squares += d.toDouble() * d
                signal += reference[i].toDouble() * reference[i]
                worst = maxOf(worst, abs(d))
            }
            val relative = sqrt(squares / signal)
            report["$name.relative_rms_error"] = "%.2e".format(relative)
            report["$name.max_abs_error"] = "%.2e".format(worst)
            // -40 dB: the two resamplers' filters differ slightly near 8 kHz; speech is unaffected.
            assertTrue("$name: 16 kHz samples differ from soxr by ${"%.2e".format(relative)} (relative RMS)",
                relative < 0.01)
            assertTrue("$name: 16 kHz samples differ from soxr by up to $worst", worst < 0.02f)
        }
        inputs.record("wav_variants", report)
    }
}
