package org.whisperfinetune.core

import java.io.EOFException
import java.io.File
import java.io.IOException
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction

/** What ModelCheck read from a GGML file. [ftype] is the weight type as stored (quantized files add 1000 x
 *  the quantization version). */
data class GgmlModelInfo(
    val nVocab: Int,
    val nAudioState: Int,
    val nAudioLayer: Int,
    val nTextLayer: Int,
    val nMels: Int,
    val ftype: Int,
    val tensorCount: Int,
    val multilingual: Boolean,
    val sizeBytes: Long,
) {
    /** "f16", "q8_0", "q5_0", ...: the type of the weight matrices. */
    val weightType: String get() = GgmlTypes.weightTypeOf(ftype % GgmlTypes.QNT_VERSION_FACTOR)?.name ?: "unknown"

    /** Whisper's size name (tiny, base, small, medium, large) from the number of encoder layers. */
    val sizeName: String
        get() = when (nAudioLayer) {
            4 -> "tiny"; 6 -> "base"; 12 -> "small"; 24 -> "medium"; 32 -> "large"; else -> "$nAudioLayer-layer"
        }
}

/** ggml's tensor types as whisper.cpp's GGML files store them: id, elements per block, bytes per block. */
internal object GgmlTypes {
    class Type(val name: String, val id: Int, val blockElements: Int, val blockBytes: Int)

    const val QNT_VERSION_FACTOR = 1000

    val F32 = Type("f32", 0, 1, 4)
    val F16 = Type("f16", 1, 1, 2)
    private val all = listOf(
        F32, F16, Type("q4_0", 2, 32, 18), Type("q4_1", 3, 32, 20), Type("q5_0", 6, 32, 22),
        Type("q5_1", 7, 32, 24), Type("q8_0", 8, 32, 34), Type("q2_k", 10, 256, 84), Type("q3_k", 11, 256, 110),
        Type("q4_k", 12, 256, 144), Type("q5_k", 13, 256, 176), Type("q6_k", 14, 256, 210),
        Type("bf16", 30, 1, 2),
    )
    private val byId = all.associateBy { it.id }

    // ggml_ftype (the header's ftype) -> the type of the weight matrices, for the types whisper.cpp loads.
    private val weightTypeIds = mapOf(
        0 to 0, 1 to 1, 2 to 2, 3 to 3, 7 to 8, 8 to 6, 9 to 7, 10 to 10, 11 to 11, 12 to 12, 13 to 13, 14 to 14,
        24 to 30,
    )

    fun byId(id: Int): Type? = byId[id]
    fun weightTypeOf(ftype: Int): Type? = weightTypeIds[ftype]?.let { byId[it] }
}

/**
 * Checks a file before whisper.cpp sees it, so that a wrong file is one sentence on screen instead of a native
 * crash: the GGML magic, the hyperparameters, the mel filters, the vocabulary, and every tensor (name, shape,
 * type, and that its data lies inside the file) against what whisper.cpp's loader expects.
 */
object ModelCheck {
    private const val GGML_MAGIC = 0x67676d6c      // "ggml" as a little-endian uint32
    private const val HEADER_BYTES = 4 + 11 * 4
    private const val MAX_TOKEN_BYTES = 1024
    private const val MAX_NAME_BYTES = 256
    private val vocabularySizes = setOf(51864, 51865, 51866)   // English-only, multilingual, large-v3

    fun inspect(file: File): GgmlModelInfo {
        val name = file.name
        if (!file.exists()) fail("$name: model file not found")
        if (!file.isFile) fail("$name is a folder, not a GGML model file")
        if (!file.canRead()) fail("$name cannot be read (permission denied)")
        try {
            RandomAccessFile(file, "r").use { return inspect(Reader(it, name)) }
        } catch (error: EOFException) {
            fail("$name is truncated (it ends inside ${error.message}); the download or copy may be incomplete")
        } catch (error: IOException) {
            fail("$name cannot be read: ${error.message}")
        }
    }

    private fun inspect(reader: Reader): GgmlModelInfo {
        val name = reader.name
        val size = reader.size
        if (size < HEADER_BYTES) fail("$name is too small to be a GGML model ($size bytes)")
        val magic = reader.int("the header")
        if (magic != GGML_MAGIC) fail(notGgml(name, reader.prefix()))

        val h = IntArray(11) { reader.int("the header") }
        val (nVocab, nAudioCtx, nAudioState, nAudioHead, nAudioLayer) = h
        val nTextCtx = h[5]
        val nTextState = h[6]
        val nTextHead = h[7]
        val nTextLayer = h[8]
        val nMels = h[9]
        val ftype = h[10]
        if (nVocab !in vocabularySizes) fail("$name has a vocabulary of $nVocab tokens; whisper.cpp runs Whisper's 51864 (English-only), " +
                "51865 (multilingual) or 51866 (large-v3)")
        if (nMels != 80 && nMels != 128) fail("$name has $nMels mel bins; Whisper models have 80 or 128")
        if (nAudioState != nTextState || nAudioState <= 0 || nAudioState > 8192) {
            fail("$name has encoder width $nAudioState and decoder width $nTextState; whisper.cpp needs them equal")
        }
        if (nAudioLayer !in 1..64 || nTextLayer !in 1..64) {
            fail("$name has $nAudioLayer encoder and $nTextLayer decoder layers, outside what Whisper models have")
        }
        if (nAudioHead <= 0 || nAudioState % nAudioHead != 0 || nTextHead <= 0 || nTextState % nTextHead != 0) {
            fail("$name has $nAudioHead/$nTextHead attention heads, which do not divide its width $nAudioState")
        }
        if (nAudioCtx != 1500 || nTextCtx !in 1..4096) {
            fail("$name has audio context $nAudioCtx and text context $nTextCtx; Whisper models have 1500 and 448")
        }
        val weightType = GgmlTypes.weightTypeOf(ftype % GgmlTypes.QNT_VERSION_FACTOR)
            ?: fail("$name stores its weights as type $ftype, which whisper.cpp cannot load here; convert it " +
                "again with convert-ggml.py (f16, q8_0 or q5_0)")

        val melBins = reader.int("the mel filters")
        val fftBins = reader.int("the mel filters")
        if (melBins != nMels || fftBins != 201) {
            fail("$name has $melBins x $fftBins mel filters; a $nMels-mel Whisper model needs $nMels x 201")
        }
        reader.skip(melBins.toLong() * fftBins * 4, "the mel filters")

        val tokens = reader.int("the vocabulary")
        if (tokens < 0 || tokens > nVocab) fail("$name lists $tokens vocabulary tokens for a $nVocab-token model")
        for (index in 0 until tokens) {
            val length = reader.int("the vocabulary")
            if (length < 0 || length > MAX_TOKEN_BYTES) fail("$name has a damaged vocabulary (token $index)")
            reader.skip(length.toLong(), "the vocabulary")
        }

        val expected = expectedTensors(nAudioState, nAudioLayer, nTextLayer, nMels, nVocab, nAudioCtx, nTextCtx,
            weightType)
        val seen = HashSet<String>()
        while (reader.position < size) {
            val dims = reader.int("a tensor header")
            val nameLength = reader.int("a tensor header")
            val typeId = reader.int("a tensor header")
            if (dims !in 1..4 || nameLength !in 1..MAX_NAME_BYTES) {
                fail("$name has a damaged tensor table after ${seen.size} tensors")
            }
            val shape = IntArray(dims) { reader.int("a tensor header") }
            val tensor = reader.utf8(nameLength) ?: fail("$name has a damaged tensor name after ${seen.size} tensors")
            val want = expected[tensor]
                ?: fail("$name has a tensor '$tensor' that a Whisper model does not have")
            if (!seen.add(tensor)) fail("$name has the tensor '$tensor' twice")
            val type = GgmlTypes.byId(typeId)
            if (type == null || type.id != want.type.id) {
                fail("$name stores '$tensor' as ${type?.name ?: "type $typeId"}; a ${weightType.name} model needs " +
                    want.type.name)
            }
            val fullShape = shape.copyOf(4).also { for (i in dims until 4) it[i] = 1 }
            if (!fullShape.contentEquals(want.shape)) {
                fail("$name has '$tensor' of shape ${shape.toList()}; this model needs ${want.shape.toList().take(dims)}")
            }
            val elements = fullShape.fold(1L) { product, n -> product * n }
            if (shape[0] % type.blockElements != 0) fail("$name has '$tensor' with a width its type cannot hold")
            reader.skip(elements / type.blockElements * type.blockBytes, "the data of '$tensor'")
        }
        if (seen.size != expected.size) {
            val missing = expected.keys.first { it !in seen }
            fail("$name has ${seen.size} tensors; a Whisper model with $nAudioLayer encoder and $nTextLayer decoder " +
                "layers has ${expected.size} (missing '$missing'); the file may be incomplete")
        }
        return GgmlModelInfo(nVocab, nAudioState, nAudioLayer, nTextLayer, nMels, ftype, seen.size,
            multilingual = nVocab >= 51865, sizeBytes = size)
    }

    private class Expected(val shape: IntArray, val type: GgmlTypes.Type)

    /** whisper.cpp's tensors for these hyperparameters: name -> shape (innermost first, padded to 4) and type. */
    private fun expectedTensors(state: Int, audioLayers: Int, textLayers: Int, mels: Int, vocab: Int, audioCtx: Int,
                                textCtx: Int, weight: GgmlTypes.Type): Map<String, Expected> {
        val conv = if (weight.id == GgmlTypes.F32.id) GgmlTypes.F32 else GgmlTypes.F16
        val f32 = GgmlTypes.F32
        val out = LinkedHashMap<String, Expected>()
        fun add(name: String, type: GgmlTypes.Type, vararg shape: Int) {
            out[name] = Expected(IntArray(4) { if (it < shape.size) shape[it] else 1 }, type)
        }
        fun attentionWithNorm(prefix: String, kind: String) {
            add("$prefix.${kind}_ln.weight", f32, state); add("$prefix.${kind}_ln.bias", f32, state)
            add("$prefix.$kind.query.weight", weight, state, state); add("$prefix.$kind.query.bias", f32, state)
            add("$prefix.$kind.key.weight", weight, state, state)
            add("$prefix.$kind.value.weight", weight, state, state); add("$prefix.$kind.value.bias", f32, state)
            add("$prefix.$kind.out.weight", weight, state, state); add("$prefix.$kind.out.bias", f32, state)
        }
        fun block(prefix: String) {
            add("$prefix.mlp_ln.weight", f32, state); add("$prefix.mlp_ln.bias", f32, state)
            add("$prefix.mlp.0.weight", weight, state, 4 * state); add("$prefix.mlp.0.bias", f32, 4 * state)
            add("$prefix.mlp.2.weight", weight, 4 * state, state); add("$prefix.mlp.2.bias", f32, state)
            attentionWithNorm(prefix, "attn")
        }
        add("encoder.positional_embedding", f32, state, audioCtx)
        add("encoder.conv1.weight", conv, 3, mels, state); add("encoder.conv1.bias", f32, 1, state)
        add("encoder.conv2.weight", conv, 3, state, state); add("encoder.conv2.bias", f32, 1, state)
        add("encoder.ln_post.weight", f32, state); add("encoder.ln_post.bias", f32, state)
        for (i in 0 until audioLayers) block("encoder.blocks.$i")
        add("decoder.positional_embedding", f32, state, textCtx)
        add("decoder.token_embedding.weight", weight, state, vocab)
        add("decoder.ln.weight", f32, state); add("decoder.ln.bias", f32, state)
        for (i in 0 until textLayers) {
            block("decoder.blocks.$i")
            attentionWithNorm("decoder.blocks.$i", "cross_attn")
        }
        return out
    }

    /** What a file that is not GGML most likely is, so that the message says what to do. */
    private fun notGgml(name: String, head: ByteArray): String {
        fun startsWith(text: String) = head.size >= text.length && String(head, 0, text.length, Charsets.ISO_8859_1) == text
        val hint = "; make one with convert-ggml.py"
        return when {
            startsWith("GGUF") -> "$name is a GGUF file; this app runs whisper.cpp's GGML files$hint"
            startsWith("PK") -> "$name is a zip archive (a PyTorch checkpoint?), not a GGML model$hint"
            head.size >= 9 && head[8] == '{'.code.toByte() && head[0].toInt() != 0 ->
                "$name looks like a safetensors file, not a GGML model$hint"
            startsWith("RIFF") || startsWith("ID3") || startsWith("fLaC") || startsWith("OggS") ->
                "$name is an audio file, not a model$hint"
            startsWith("{") || startsWith("<") -> "$name is a text file (JSON or HTML?), not a GGML model$hint"
            else -> "$name is not a whisper.cpp GGML model (it does not start with 'ggml')$hint"
        }
    }

    private fun fail(message: String): Nothing = throw ModelCheckException(message)

    /** Little-endian reads over a file with a known size; every read past the end is an EOFException. */
    private class Reader(private val file: RandomAccessFile, val name: String) {
        val size: Long = file.length()
        var position: Long = 0
            private set
        private val scratch = ByteBuffer.allocate(MAX_NAME_BYTES).order(ByteOrder.LITTLE_ENDIAN)
        private val decoder = Charsets.UTF_8.newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT)

        fun prefix(): ByteArray {
            val bytes = ByteArray(minOf(16L, size).toInt())
            file.seek(0)
            file.readFully(bytes)
            file.seek(position)
            return bytes
        }

        fun int(where: String): Int {
            read(4, where)
            return scratch.getInt(0)
        }

        fun utf8(length: Int): String? {
            read(length, "a tensor name")
            return try {
                decoder.decode(ByteBuffer.wrap(scratch.array(), 0, length)).toString()
            } catch (error: CharacterCodingException) {
                null
            }
        }

        fun skip(bytes: Long, where: String) {
            if (bytes < 0 || position + bytes > size) throw EOFException(where)
            position += bytes
            file.seek(position)
        }

        private fun read(length: Int, where: String) {
            if (position + length > size) throw EOFException(where)
            file.readFully(scratch.array(), 0, length)
            position += length
        }
    }
}
