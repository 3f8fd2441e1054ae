package org.whisperfinetune.android

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test
import org.whisperfinetune.core.BenchmarkResult
import org.whisperfinetune.core.GgmlModelInfo
import org.whisperfinetune.core.TranscribeParams

class AppStateTest {
    @Test
    fun languageFieldMeansDetectWhenEmptyOrAuto() {
        assertNull(Settings.parseLanguage(""))
        assertNull(Settings.parseLanguage("  Auto "))
        assertEquals("zh", Settings.parseLanguage(" ZH"))
    }

    @Test
    fun settingsBecomeTranscribeParams() {
        val params = Settings(language = "en", translate = true, threads = 4, beamSize = 3).toParams()
        assertEquals(TranscribeParams(language = "en", translate = true, threads = 4, beamSize = 3), params)
    }

    @Test
    fun modelDescriptionNamesSizeLanguagesAndWeights() {
        val base = GgmlModelInfo(nVocab = 51865, nAudioState = 512, nAudioLayer = 6, nTextLayer = 6, nMels = 80,
            ftype = 1, tensorCount = 245, multilingual = true, sizeBytes = 147_964_211)
        assertEquals("base, multilingual, f16, 141.1 MiB", describeModel(base))
        val tinyEn = base.copy(nAudioState = 384, nAudioLayer = 4, nVocab = 51864, multilingual = false, ftype = 2008)
        assertEquals("tiny, English-only, q5_0, 141.1 MiB", describeModel(tinyEn))
    }

    @Test
    fun benchmarkSaysWhetherThePhoneKeepsUp() {
        val lines = benchmarkLines(BenchmarkResult(encodeMs = 1500.0, decodeMs = 500.0, audioSeconds = 10.0))
        assertEquals("Encoder: 1500 ms", lines[0])
        assertEquals("Decoder: 500 ms", lines[1])
        assertEquals("Real-time factor: 0.20 (faster than real time)", lines[3])
    }

    @Test
    fun storedNamesStayInsideTheModelFolder() {
        assertEquals("ggml-base-q5_0.bin", storageName("/models/ggml-base-q5_0.bin?download=true"))
        assertEquals("passwd", storageName("../../etc/passwd"))
        assertEquals("my_model.bin", storageName("my model.bin"))
        assertEquals("model.bin", storageName(".."))
        assertEquals("model.bin", storageName(null))
    }

    @Test
    fun downloadProgressIsAFractionOnlyWhenTheSizeIsKnown() {
        assertEquals(0.25f, Busy.Downloading(1 shl 20, 4L shl 20).fraction!!, 1e-6f)
        assertNull(Busy.Downloading(1 shl 20, null).fraction)
        assertEquals("Downloading: 1.0 MiB of 4.0 MiB", Busy.Downloading(1 shl 20, 4L shl 20).label)
    }
}
