package org.whisperfinetune.core

import org.junit.Assume
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.Properties

/**
 * What tests/test_android_core.py prepares (-Dwhisper.test.inputs=DIR): GGML models made by convert-ggml.py,
 * audio, pywhispercpp's transcripts of it, and WAV variants with soundfile's and soxr's samples. Tests that need
 * them are skipped when the folder is not given (tools/android_core.sh run by hand); the pytest run requires them.
 * Results (transcripts, measured numbers) go to -Dwhisper.test.results=DIR for the pytest run to check and report.
 */
object TestInputs {
    private val dir: File? = System.getProperty("whisper.test.inputs")?.let(::File)
    private val properties: Properties by lazy {
        Properties().also { props -> File(dir, "inputs.properties").reader(Charsets.UTF_8).use(props::load) }
    }
    private val results: File? = System.getProperty("whisper.test.results")?.let(::File)?.also { it.mkdirs() }

    fun require(): TestInputs {
        Assume.assumeTrue("no -Dwhisper.test.inputs folder given", dir != null)
        requireNativeLibrary()
        return this
    }

    /** Skips a test when libwhisper_jni is not on java.library.path (a Gradle run before the host build). */
    fun requireNativeLibrary() {
        val loaded = try {
            WhisperContext.whisperVersion().isNotEmpty()
        } catch (error: LinkageError) {   // UnsatisfiedLinkError first, NoClassDefFoundError after
            false
        }
        Assume.assumeTrue("libwhisper_jni is not on java.library.path (tools/android_core.sh --build-only)", loaded)
    }

    operator fun get(key: String): String = properties.getProperty(key) ?: error("inputs.properties has no $key")

    fun optional(key: String): String? = properties.getProperty(key)

    fun file(key: String): File = File(get(key)).also { check(it.isFile) { "$key: $it does not exist" } }

    fun folder(name: String): File = File(dir, name)

    /** Little-endian float32 samples written by numpy's tofile(). */
    fun floats(file: File): FloatArray {
        val buffer = ByteBuffer.wrap(file.readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buffer.remaining()).also { buffer.get(it) }
    }

    /** Writes one test's results for the pytest run as "key<TAB>value" lines (\\, \t and \n escaped). */
    fun record(name: String, values: Map<String, Any>) {
        val folder = results ?: return
        fun escape(text: String) = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        File(folder, "$name.tsv").writeText(
            values.entries.joinToString("") { (key, value) -> "${escape(key)}\t${escape(value.toString())}\n" },
            Charsets.UTF_8,
        )
    }
}
