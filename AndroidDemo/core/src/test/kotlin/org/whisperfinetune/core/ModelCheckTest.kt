package org.whisperfinetune.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.ByteArrayOutputStream
import java.io.File
import java.io.RandomAccessFile

/** A small GGML file with whisper.cpp's layout (random-free: zeros), to break one piece at a time. */
class TinyGgml(
    var vocab: Int = 51865, var state: Int = 8, var heads: Int = 2, var audioLayers: Int = 1, var textLayers: Int = 1,
    var mels: Int = 80, var ftype: Int = 1, var melRows: Int = mels,
) {
    /** name -> (shape innermost first, type id); editable before [write]. */
    val tensors = LinkedHashMap<String, Pair<IntArray, Int>>()

    init {
        val w = if (ftype == 0) 0 else 1
        fun t(name: String, type: Int, vararg shape: Int) { tensors[name] = shape to type }
        fun attention(p: String, k: String) {
            t("$p.${k}_ln.weight", 0, state); t("$p.${k}_ln.bias", 0, state)
            t("$p.$k.query.weight", w, state, state); t("$p.$k.query.bias", 0, state)
            t("$p.$k.key.weight", w, state, state)
            t("$p.$k.value.weight", w, state, state); t("$p.$k.value.bias", 0, state)
            t("$p.$k.out.weight", w, state, state); t("$p.$k.out.bias", 0, state)
        }
        fun block(p: String) {
            t("$p.mlp_ln.weight", 0, state); t("$p.mlp_ln.bias", 0, state)
            t("$p.mlp.0.weight", w, state, 4 * state); t("$p.mlp.0.bias", 0, 4 * state)
            t("$p.mlp.2.weight", w, 4 * state, state); t("$p.mlp.2.bias", 0, state)
            attention(p, "attn")
        }
        t("encoder.positional_embedding", 0, state, 1500)
        t("encoder.conv1.weight", w, 3, mels, state); t("encoder.conv1.bias", 0, 1, state)
        t("encoder.conv2.weight", w, 3, state, state); t("encoder.conv2.bias", 0, 1, state)
        t("encoder.ln_post.weight", 0, state); t("encoder.ln_post.bias", 0, state)
        for (i in 0 until audioLayers) block("encoder.blocks.$i")
        t("decoder.positional_embedding", 0, state, 448)
        t("decoder.token_embedding.weight", w, state, vocab)
        t("decoder.ln.weight", 0, state); t("decoder.ln.bias", 0, state)
        for (i in 0 until textLayers) { block("decoder.blocks.$i"); attention("decoder.blocks.$i", "cross_attn") }
    }

    fun write(file: File): File {
        val out = ByteArrayOutputStream()
        fun i32(v: Int) { for (k in 0 until 4) out.write(v ushr (8 * k) and 0xFF) }
        i32(0x67676d6c)
        for (v in intArrayOf(vocab, 1500, state, heads, audioLayers, 448, state, heads, textLayers, mels, ftype)) i32(v)
        i32(melRows); i32(201); out.write(ByteArray(melRows * 201 * 4))
        i32(3); for (token in listOf("a", "bc", "")) { i32(token.length); out.write(token.toByteArray()) }
        for ((name, spec) in tensors) {
            val (shape, type) = spec
            i32(shape.size); i32(name.length); i32(type)
            shape.forEach { i32(it) }
            out.write(name.toByteArray())
            out.write(ByteArray(shape.fold(1) { a, b -> a * b } * (if (type == 0) 4 else 2)))
        }
        file.writeBytes(out.toByteArray())
        return file
    }
}

class ModelCheckTest {
    @get:Rule
    val temp = TemporaryFolder()

    private fun rejected(file: File): String = try {
        ModelCheck.inspect(file)
        fail("accepted ${file.name}")
        ""
    } catch (error: ModelCheckException) {
        error.message!!
    }

    private fun file(name: String, bytes: ByteArray) = File(temp.root, name).also { it.writeBytes(bytes) }

    @Test
    fun acceptsAWellFormedFileAndReportsIt() {
        val info = ModelCheck.inspect(TinyGgml().write(File(temp.root, "tiny.bin")))
        assertEquals(51865, info.nVocab)
        assertEquals(8, info.nAudioState)
        assertEquals(80, info.nMels)
        assertEquals(11 + 15 + 24, info.tensorCount)
        assertTrue(info.multilingual)
        assertEquals("f16", info.weightType)
        assertEquals(File(temp.root, "tiny.bin").length(), info.sizeBytes)
    }

    @Test
    fun namesWhatANonGgmlFileIs() {
        val hint = "; make one with convert-ggml.py"
        assertEquals("notes.txt is not a whisper.cpp GGML model (it does not start with 'ggml')$hint",
            rejected(file("notes.txt", ByteArray(100) { 'x'.code.toByte() })))
        assertEquals("config.json is a text file (JSON or HTML?), not a GGML model$hint",
            rejected(file("config.json", ("{\"model_type\": \"whisper\"}" + " ".repeat(64)).toByteArray())))
        assertEquals("model.gguf is a GGUF file; this app runs whisper.cpp's GGML files$hint",
            rejected(file("model.gguf", "GGUF".toByteArray() + ByteArray(60))))
        assertEquals("pytorch_model.bin is a zip archive (a PyTorch checkpoint?), not a GGML model$hint",
            rejected(file("pytorch_model.bin", "PK\u0003\u0004".toByteArray() + ByteArray(60))))
        val safetensors = byteArrayOf(0x40, 0, 0, 0, 0, 0, 0, 0) + "{\"__metadata__\":{}}".toByteArray() + ByteArray(40)
        assertEquals("model.safetensors looks like a safetensors file, not a GGML model$hint",
            rejected(file("model.safetensors", safetensors)))
        assertEquals("clip.wav is an audio file, not a model$hint",
            rejected(file("clip.wav", "RIFF".toByteArray() + ByteArray(60))))
        assertEquals("tiny.bin is too small to be a GGML model (10 bytes)", rejected(file("tiny.bin", ByteArray(10))))
        assertEquals("gone.bin: model file not found", rejected(File(temp.root, "gone.bin")))
        assertEquals("${temp.root.name} is a folder, not a GGML model file", rejected(temp.root))
    }

    @Test
    fun refusesWrongHyperparameters() {
        assertEquals("m.bin has 64 mel bins; Whisper models have 80 or 128",
            rejected(TinyGgml(mels = 64).write(File(temp.root, "m.bin"))))
        assertEquals("m.bin has a vocabulary of 32000 tokens; whisper.cpp runs Whisper's 51864 (English-only), " +
            "51865 (multilingual) or 51866 (large-v3)", rejected(TinyGgml(vocab = 32000).write(File(temp.root, "m.bin"))))
        assertEquals("m.bin has 80 x 201 mel filters; a 128-mel Whisper model needs 128 x 201",
            rejected(TinyGgml(mels = 128, melRows = 80).write(File(temp.root, "m.bin"))))
        assertTrue(rejected(TinyGgml(ftype = 19).write(File(temp.root, "m.bin")))
            .startsWith("m.bin stores its weights as type 19, which whisper.cpp cannot load here"))
        assertEquals("m.bin has 3/3 attention heads, which do not divide its width 8",
            rejected(TinyGgml(heads = 3).write(File(temp.root, "m.bin"))))
    }

    @Test
    fun refusesTensorsWhisperCppWouldNotLoad() {
        val f = File(temp.root, "m.bin")
        assertEquals("m.bin has 49 tensors; a Whisper model with 1 encoder and 1 decoder layers has 50 " +
            "(missing 'decoder.ln.bias'); the file may be incomplete",
            rejected(TinyGgml().apply { tensors.remove("decoder.ln.bias") }.write(f)))
        assertEquals("m.bin has a tensor 'decoder.proj_out.weight' that a Whisper model does not have",
            rejected(TinyGgml().apply { tensors["decoder.proj_out.weight"] = intArrayOf(8, 8) to 1 }.write(f)))
        assertEquals("m.bin has 'encoder.conv1.weight' of shape [3, 80, 9]; this model needs [3, 80, 8]",
            rejected(TinyGgml().apply { tensors["encoder.conv1.weight"] = intArrayOf(3, 80, 9) to 1 }.write(f)))
        assertEquals("m.bin stores 'decoder.ln.bias' as f16; a f16 model needs f32",
            rejected(TinyGgml().apply { tensors["decoder.ln.bias"] = intArrayOf(8) to 1 }.write(f)))
    }

    @Test
    fun refusesATruncatedFile() {
        val f = TinyGgml().write(File(temp.root, "m.bin"))
        RandomAccessFile(f, "rw").use { it.setLength(it.length() - 20) }
        assertEquals("m.bin is truncated (it ends inside the data of 'decoder.blocks.0.cross_attn.out.bias'); " +
            "the download or copy may be incomplete", rejected(f))
        RandomAccessFile(f, "rw").use { it.setLength(5000) }
        assertEquals("m.bin is truncated (it ends inside the mel filters); the download or copy may be incomplete",
            rejected(f))
    }

    /**
     * The GGML files that convert-ggml.py made from whisper-base (f16, q8_0, q5_0) and from a merged fine-tune (f16).
     * A quantized file's header stores ftype 1000 x GGML_QNT_VERSION (2) + ggml's file type (7 = mostly q8_0,
     * 8 = mostly q5_0), as whisper.cpp's quantize tool writes it.
     */
    @Test
    fun acceptsWhatConvertGgmlWrites() {
        val inputs = TestInputs.require()
        val expected = listOf("model.base" to (1 to "f16"), "model.finetuned" to (1 to "f16"),
            "model.q8_0" to (2007 to "q8_0"), "model.q5_0" to (2008 to "q5_0"))
        val sizes = HashMap<String, Long>()
        for ((key, type) in expected) {
            val info = ModelCheck.inspect(inputs.file(key))
            assertEquals(51865, info.nVocab)
            assertEquals(512, info.nAudioState)
            assertEquals(6, info.nAudioLayer)
            assertEquals(6, info.nTextLayer)
            assertEquals(80, info.nMels)
            assertEquals(key, type.first, info.ftype)
            assertEquals(key, type.second, info.weightType)
            assertEquals(11 + 15 * 6 + 24 * 6, info.tensorCount)
            assertEquals("base", info.sizeName)
            assertEquals(inputs.file(key).length(), info.sizeBytes)
            sizes[key] = info.sizeBytes
        }
        // The weight matrices shrink to 34/64 (q8_0) and 22/64 (q5_0) of f16; the rest stays f16/f32.
        val f16 = sizes.getValue("model.base").toDouble()
        assertTrue("q8_0: ${sizes["model.q8_0"]} bytes", sizes.getValue("model.q8_0") / f16 in 0.50..0.60)
        assertTrue("q5_0: ${sizes["model.q5_0"]} bytes", sizes.getValue("model.q5_0") / f16 in 0.32..0.42)
        for (key in listOf("model.base", "model.q5_0")) {
            val cut = File(temp.root, "cut.bin")
            inputs.file(key).inputStream().use { input ->
                cut.outputStream().use { out -> out.write(input.readNBytes(20_000_000)) }
            }
            assertTrue(key, rejected(cut).startsWith("cut.bin is truncated (it ends inside the data of '"))
        }
    }
}
