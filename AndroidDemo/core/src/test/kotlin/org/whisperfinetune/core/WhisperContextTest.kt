package org.whisperfinetune.core

import org.junit.AfterClass
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.util.concurrent.CancellationException
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread

/** The host build of libwhisper_jni against whisper.cpp, with the models convert-ggml.py writes. */
class WhisperContextTest {
    @get:Rule
    val temp = TemporaryFolder()

    companion object {
        private val contexts = HashMap<String, WhisperContext>()

        /** One context per model for the whole class: loading whisper-base takes a while. */
        fun context(inputs: TestInputs, key: String): WhisperContext =
            contexts.getOrPut(key) { WhisperContext.load(inputs.file(key)) }

        /** The settings the pytest run gave pywhispercpp for the reference transcripts. */
        fun params(language: String?) = TranscribeParams(language = language, threads = TestInputs["threads"].toInt())

        @AfterClass
        @JvmStatic
        fun closeContexts() {
            contexts.values.forEach { it.close() }
            contexts.clear()
        }
    }

    /** Each case: a model, a WAV file, its language, and pywhispercpp's segments for them ("t0|t1|text" lines). */
    @Test
    fun transcribesLikePywhispercpp() {
        val inputs = TestInputs.require()
        val cases = inputs["cases"].split(",")
        assertTrue(cases.size >= 3)
        val report = LinkedHashMap<String, Any>()
        for (case in cases) {
            val ctx = context(inputs, inputs["case.$case.model"])
            val samples = WavDecoder.decode(inputs.file("case.$case.audio"))
            val streamed = ArrayList<Segment>()
            val segments = ctx.transcribe(samples, params(inputs["case.$case.language"])) { streamed.add(it) }
            assertEquals("$case: every segment is streamed, in order", segments, streamed)
            val reference = inputs["case.$case.reference"].split("\n").filter { it.isNotEmpty() }.map { line ->
                val (t0, t1, text) = line.split("|", limit = 3)
                Segment(t0.toLong() * 10, t1.toLong() * 10, text)
            }
            val text = segments.joinToString(" ") { it.text }
            report["$case.text"] = text
            report["$case.segments"] = segments.size
            assertTrue("$case: an empty transcript", text.isNotBlank())
            if (inputs.optional("case.$case.compare") == "text") {
                // A quantized file: the same text, segment by segment, and each time within one second. This build's
                // AVX-512 sums and the wheel's AVX2 sums differ in the last digits, which can tip a timestamp token.
                assertEquals("$case: the same segments' text as pywhispercpp", reference.map { it.text },
                    segments.map { it.text })
                val shift = reference.zip(segments).maxOf { (r, s) ->
                    maxOf(Math.abs(r.startMs - s.startMs), Math.abs(r.endMs - s.endMs))
                }
                assertTrue("$case: a segment time differs by $shift ms from pywhispercpp's", shift <= 1000)
                report["$case.max_time_difference_ms"] = shift
            } else {
                assertEquals("$case: the same segments, times and text as pywhispercpp", reference, segments)
            }
        }
        inputs.record("transcripts", report)
    }

    @Test
    fun detectsTheLanguageLikePywhispercpp() {
        val inputs = TestInputs.require()
        val ctx = context(inputs, "model.base")
        for (case in inputs["detect"].split(",")) {
            val samples = WavDecoder.decode(inputs.file("case.$case.audio"))
            val (language, probability) = ctx.detectLanguage(samples, threads = TestInputs["threads"].toInt())
            assertEquals(case, inputs["case.$case.detect_language"], language)
            // This build uses this CPU's own instructions, pywhispercpp's wheel generic ones: the logits differ in the
            // last digits, the probability by about 1e-3.
            assertEquals("$case: probability", inputs["case.$case.detect_probability"].toFloat(), probability, 5e-3f)
        }
    }

    @Test
    fun cancelStopsARunningTranscription() {
        val inputs = TestInputs.require()
        val ctx = context(inputs, "model.base")
        val clip = WavDecoder.decode(inputs.file("case.base.en.audio"))
        // About three minutes of speech: several 30 s windows, so the run is long enough to interrupt.
        val pause = FloatArray(8000)
        val long = generateSequence { clip + pause }.take(180 * 16000 / (clip.size + pause.size) + 1)
            .reduce { a, b -> a + b }
        val first = CountDownLatch(1)
        val segments = ArrayList<Segment>()
        var outcome: Throwable? = null
        val worker = thread {
            try {
                ctx.transcribe(long, params("en")) { segments.add(it); first.countDown() }
            } catch (error: Throwable) {
                outcome = error
            }
        }
        assertTrue("no segment within 120 s", first.await(120, TimeUnit.SECONDS))
        // Into the next window's encoder, so that the cancel lands inside whisper.cpp's work, not between windows.
        Thread.sleep(500)
        val cancelled = System.nanoTime()
        ctx.cancel()
        worker.join(60_000)
        val stopMs = (System.nanoTime() - cancelled) / 1e6
        assertTrue("transcribe did not return after cancel", !worker.isAlive)
        assertTrue("expected CancellationException, got $outcome", outcome is CancellationException)
        assertTrue("it stopped early: ${segments.size} segments", segments.last().endMs < long.size / 16 - 30_000)
        inputs.record("cancel", mapOf("stop_ms" to "%.0f".format(stopMs), "segments_before_stop" to segments.size,
            "audio_seconds" to long.size / 16000))
        // The context is usable again afterwards.
        assertTrue(ctx.transcribe(clip, params("en")) {}.isNotEmpty())
    }

    @Test
    fun benchmarkReportsEncoderAndDecoderTimes() {
        val inputs = TestInputs.require()
        val ctx = context(inputs, "model.base")
        val samples = WavDecoder.decode(inputs.file("case.base.en.audio"))
        val result = Benchmark.run(ctx, samples, params("en"), repeats = 1)
        assertEquals(samples.size / 16000.0, result.audioSeconds, 1e-9)
        assertTrue("encoder ${result.encodeMs} ms", result.encodeMs > 1.0)
        assertTrue("decoder ${result.decodeMs} ms", result.decodeMs > 1.0)
        assertEquals((result.encodeMs + result.decodeMs) / 1000 / result.audioSeconds, result.realTimeFactor, 1e-12)
        inputs.record("benchmark", mapOf("encode_ms" to "%.1f".format(result.encodeMs),
            "decode_ms" to "%.1f".format(result.decodeMs), "audio_seconds" to "%.2f".format(result.audioSeconds),
            "real_time_factor" to "%.3f".format(result.realTimeFactor),
            "system_info" to WhisperContext.systemInfo()))
    }

    private fun refusal(block: () -> Unit): String = try {
        block()
        fail("loaded a file it should refuse")
        ""
    } catch (error: ModelCheckException) {
        error.message!!
    }

    @Test
    fun aWrongModelIsAnExceptionNotACrash() {
        TestInputs.requireNativeLibrary()
        val text = File(temp.root, "notes.bin").also { it.writeText("not a model at all, just some text: ".repeat(4)) }
        assertEquals("notes.bin is not a whisper.cpp GGML model (it does not start with 'ggml'); make one with " +
            "convert-ggml.py", refusal { WhisperContext.load(text) })
        // Past ModelCheck, whisper.cpp's own refusals come back as exceptions too (no abort()).
        assertEquals("whisper.cpp could not load notes.bin: invalid model data (bad magic)",
            refusal { WhisperContext.loadUnchecked(text) })
        val missing = TinyGgml().apply { tensors.remove("decoder.ln.bias") }.write(File(temp.root, "tiny.bin"))
        assertTrue(refusal { WhisperContext.loadUnchecked(missing) }
            .startsWith("whisper.cpp could not load tiny.bin: ERROR not all tensors loaded from model file"))
        val wrongShape = TinyGgml().apply { tensors["encoder.conv1.weight"] = intArrayOf(3, 80, 9) to 1 }
            .write(File(temp.root, "shape.bin"))
        assertTrue(refusal { WhisperContext.loadUnchecked(wrongShape) }
            .startsWith("whisper.cpp could not load shape.bin: tensor 'encoder.conv1.weight' has wrong size"))
    }

    @Test
    fun mistakesInTheParametersAreOneSentence() {
        val inputs = TestInputs.require()
        val ctx = context(inputs, "model.base")
        try {
            ctx.transcribe(FloatArray(16000), TranscribeParams(language = "klingon")) {}
            fail("accepted an unknown language")
        } catch (error: IllegalArgumentException) {
            assertEquals("unknown language 'klingon'; use a Whisper language code such as en, zh or de", error.message)
        }
        val tiny = WhisperContext.load(TinyGgml().write(File(temp.root, "tiny.bin")))
        tiny.close()
        tiny.close()   // closing twice is harmless
        try {
            tiny.transcribe(FloatArray(16000), TranscribeParams()) {}
            fail("a closed context transcribed")
        } catch (error: IllegalStateException) {
            assertEquals("this WhisperContext is closed", error.message)
        }
    }

    @Test
    fun reportsTheBuild() {
        val inputs = TestInputs.require()
        assertEquals(inputs["whisper.version"], WhisperContext.whisperVersion())
        assertTrue(WhisperContext.systemInfo(), WhisperContext.systemInfo().contains("CPU"))
        assertEquals("en", WhisperContext.languages[0])
        assertTrue("zh" in WhisperContext.languages)
    }
}
