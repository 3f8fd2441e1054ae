"""Write a transformers Whisper folder as a whisper.cpp GGML model file, in float or quantized form.

Layout (what whisper.cpp's loader reads, little-endian):
  uint32 magic "ggml"; 11 int32 hparams (n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
  n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype);
  mel filters: int32 n_mels, int32 n_fft_bins, float32[n_mels * n_fft_bins];
  vocabulary: int32 count, then per token int32 length + raw bytes (ids below <|endoftext|>;
  whisper.cpp derives the special tokens from n_vocab);
  tensors: int32 n_dims, int32 name length, int32 ggml type, int32 dims (innermost first), name, data.

Which tensor gets which type follows whisper.cpp's own converter and quantizer, because its loader
creates every tensor with a fixed type and refuses a file whose tensor sizes differ: the weight
matrices (attention, MLP, token embedding) take the file's type; the convolution kernels stay float16
(float32 in an f32 file); biases, layer norms and positional embeddings stay float32.

Quantized blocks (ggml's q8_0 and q5_0; 32 consecutive values of a row share one float16 scale d):
  q8_0: d, then 32 int8 q; value = q * d, d = max|x| / 127.                           34 bytes
  q5_0: d, uint32 of the 32 fifth bits, 16 bytes of 4-bit nibbles (value j in the low nibble of
        byte j, value 16 + j in its high nibble); value = (q - 16) * d, d = -(the value of largest
        magnitude) / 16, so that value maps to q = 0.                                   22 bytes

Written here (not by whisper.cpp's scripts) so that export needs neither the openai-whisper
repository nor its mel-filter file (the filters come from the model's own feature extractor), nor a
compiled quantize tool.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Optional

import numpy as np

from utils.core.files import atomic_write
from utils.core.models import GGML_MAGIC, model_format
from utils.export import ExportError

QUANTIZATIONS = ("f16", "f32", "q8_0", "q5_0")
# ggml's tensor type ids (enum ggml_type), written with every tensor.
GGML_TYPES = {"f32": 0, "f16": 1, "q5_0": 6, "q8_0": 8}
# The file's type (enum ggml_ftype: "mostly q8_0" and so on), the hparams' last field.
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q5_0": 8}
# whisper.cpp's quantize tool adds GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR to a quantized file's
# ftype (the loader takes ftype % 1000 and reports ftype // 1000 as the quantization version);
# written the same way so that other readers see what they expect.
GGML_QNT_VERSION, GGML_QNT_VERSION_FACTOR = 2, 1000
BLOCK = 32  # QK8_0 = QK5_0: values per quantized block
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", BLOCK)])
Q5_0_BLOCK = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", BLOCK // 2)])

# transformers name piece -> whisper.cpp name piece, inside a layer ("blocks.N.")
_LAYER_NAMES = [
    ("self_attn_layer_norm", "attn_ln"),
    ("encoder_attn_layer_norm", "cross_attn_ln"),
    ("final_layer_norm", "mlp_ln"),
    ("self_attn.q_proj", "attn.query"),
    ("self_attn.k_proj", "attn.key"),
    ("self_attn.v_proj", "attn.value"),
    ("self_attn.out_proj", "attn.out"),
    ("encoder_attn.q_proj", "cross_attn.query"),
    ("encoder_attn.k_proj", "cross_attn.key"),
    ("encoder_attn.v_proj", "cross_attn.value"),
    ("encoder_attn.out_proj", "cross_attn.out"),
    ("fc1", "mlp.0"),
    ("fc2", "mlp.2"),
]
_TOP_NAMES = {
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}
# Two-dimensional, yet whisper.cpp keeps them float32 in every file.
_ALWAYS_F32 = {"encoder.conv1.bias", "encoder.conv2.bias",
               "encoder.positional_embedding", "decoder.positional_embedding"}


def ggml_tensor_name(hf_name: str) -> Optional[str]:
    """whisper.cpp's name for a transformers parameter; None for the tied output projection."""
    name = hf_name[len("model."):] if hf_name.startswith("model.") else hf_name
    if name == "proj_out.weight":
        return None
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    if name.startswith(("encoder.conv1.", "encoder.conv2.")):
        return name
    match = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if match:
        side, index, module, kind = match.groups()
        for hf_piece, cpp_piece in _LAYER_NAMES:
            if module == hf_piece:
                return f"{side}.blocks.{index}.{cpp_piece}.{kind}"
    raise ExportError(f"parameter {hf_name!r} has no whisper.cpp counterpart; is this a Whisper model?")


def tensor_type(name: str, ndim: int, quantization: str) -> str:
    """The type whisper.cpp's loader expects for tensor `name` in a `quantization` file."""
    if ndim < 2 or name in _ALWAYS_F32:
        return "f32"
    if ndim == 3:   # the convolution kernels
        return "f32" if quantization == "f32" else "f16"
    return quantization


def file_type(quantization: str) -> int:
    """The hparams' ftype field of a `quantization` file."""
    if quantization in ("f16", "f32"):
        return FILE_TYPES[quantization]
    return GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR + FILE_TYPES[quantization]


def _blocks(values: np.ndarray) -> np.ndarray:
    if values.shape[-1] % BLOCK:
        raise ValueError(f"rows of {values.shape[-1]} values cannot be cut into blocks of {BLOCK}")
    return values.astype(np.float32).reshape(-1, BLOCK)


def _inverse(scale: np.ndarray) -> np.ndarray:
    # ggml writes q = 0 for a block of zeros (scale 0) rather than dividing by zero.
    return np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)


def quantize_q8_0(values: np.ndarray) -> np.ndarray:
    """ggml's q8_0 blocks of `values` (rows a multiple of 32 long), as ggml's reference quantizer makes them."""
    blocks = _blocks(values)
    scale = np.abs(blocks).max(axis=1) / 127
    scaled = blocks * _inverse(scale)[:, None]
    out = np.empty(len(blocks), Q8_0_BLOCK)
    out["d"] = scale
    out["qs"] = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)   # C's roundf: halves away from zero
    return out


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    return (blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def quantize_q5_0(values: np.ndarray) -> np.ndarray:
    """ggml's q5_0 blocks of `values` (rows a multiple of 32 long), as ggml's reference quantizer makes them."""
    blocks = _blocks(values)
    largest = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    scale = largest / -16
    q = np.clip(np.floor(blocks * _inverse(scale)[:, None] + 16.5), 0, 31).astype(np.uint32)
    out = np.empty(len(blocks), Q5_0_BLOCK)
    out["d"] = scale
    out["qh"] = (((q >> 4) & 1) << np.arange(BLOCK, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    half = BLOCK // 2
    out["qs"] = (q[:, :half] & 0x0F) | ((q[:, half:] & 0x0F) << 4)
    return out


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    fifth = (blocks["qh"][:, None] >> np.arange(BLOCK, dtype=np.uint32)) & 1
    nibbles = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.uint32)
    q = (nibbles | (fifth << 4)).astype(np.float32) - 16
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


_ENCODERS = {"f32": lambda data: data.astype("<f4"), "f16": lambda data: data.astype("<f2"),
             "q8_0": quantize_q8_0, "q5_0": quantize_q5_0}


def _token_bytes(tokenizer) -> list[bytes]:
    """Byte strings of the ordinary tokens, ids 0 .. <|endoftext|>-1, in id order."""
    # GPT-2 byte-level BPE stores bytes as printable stand-in characters; undo that mapping.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_decoder = {char: byte for byte, char in bytes_to_unicode().items()}
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    by_id = {index: token for token, index in tokenizer.get_vocab().items() if index < eot}
    if len(by_id) != eot:
        raise ExportError(f"tokenizer has {len(by_id)} ordinary tokens below <|endoftext|> ({eot}); "
                         f"expected {eot}")
    return [bytes(byte_decoder[char] for char in by_id[index]) for index in range(eot)]


def export_ggml(model_dir: str, output_path: str, quantization: str = "f16", progress: bool = True) -> dict:
    """Write `model_dir` (a transformers Whisper folder) to `output_path` as GGML whose weight matrices
    are `quantization` (one of QUANTIZATIONS).

    Returns a summary (tensor count, bytes, hparams). The file appears only when complete.
    """
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if os.path.isdir(model_dir) and model_format(model_dir) == "ct2":
        # A CTranslate2 folder is read back into a transformers one first (what tools/ct2_to_hf.py does),
        # in a temporary folder that goes away with the export.
        import tempfile

        from utils.export.ct2_import import convert_ct2_to_hf

        with tempfile.TemporaryDirectory(prefix="ct2-to-ggml-") as tmp:
            convert_ct2_to_hf(model_dir, os.path.join(tmp, "hf"))
            return export_ggml(os.path.join(tmp, "hf"), output_path, quantization, progress)
    model = _load_representable_model(model_dir)
    tokenizer = WhisperTokenizer.from_pretrained(model_dir)
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
    config = model.config
    hparams = [config.vocab_size, config.max_source_positions, config.d_model,
               config.encoder_attention_heads, config.encoder_layers, config.max_target_positions,
               config.d_model, config.decoder_attention_heads, config.decoder_layers,
               config.num_mel_bins, file_type(quantization)]
    filters = np.ascontiguousarray(feature_extractor.mel_filters.T, dtype=np.float32)  # (n_mels, bins)
    if filters.shape[0] != config.num_mel_bins:
        raise ExportError(f"{model_dir}: feature extractor has {filters.shape[0]} mel bins, "
                          f"model expects {config.num_mel_bins}")
    tokens = _token_bytes(tokenizer)
    with atomic_write(output_path, "wb") as out:
        out.write(struct.pack("<I", GGML_MAGIC))
        out.write(struct.pack("<11i", *hparams))
        out.write(struct.pack("<2i", *filters.shape))
        out.write(filters.astype("<f4").tobytes())
        out.write(struct.pack("<i", len(tokens)))
        for token in tokens:
            out.write(struct.pack("<i", len(token)))
            out.write(token)
        count = _write_tensors(out, model.state_dict(), quantization, progress)
    _check_loads(output_path)
    return {"tensors": count, "bytes": os.path.getsize(output_path), "vocab": len(tokens),
            "n_mels": config.num_mel_bins, "layers": config.encoder_layers, "quantization": quantization}


def _check_loads(output_path: str) -> None:
    """The written file read back as the ggml backend reads it (tensor table, then whisper.cpp itself in a
    child process): an export is reported only when whisper.cpp can run it, else the file is removed."""
    from utils.core.models import ModelLoadError, check_ggml_file
    from utils.inference.backends.ggml import check_whisper_cpp_loads

    try:
        check_whisper_cpp_loads(output_path, check_ggml_file(output_path)["n_vocab"])
    except ModelLoadError as exc:
        os.remove(output_path)
        raise ExportError(f"the written file failed its check and was removed: {exc}") from None


def _load_representable_model(model_dir: str):
    """The model of `model_dir` in float32; ExportError for one whisper.cpp could not load."""
    import torch
    from transformers import WhisperForConditionalGeneration

    if model_format(model_dir) != "transformers":
        raise ExportError(f"{model_dir}: is already a GGML file; convert-ggml.py needs a transformers model folder")
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    if not torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight):
        raise ExportError(f"{model_dir}: output projection is not tied to the token embedding; "
                          f"whisper.cpp cannot represent that model")
    config = model.config
    for side in ("encoder", "decoder"):
        # The file has no field for it: whisper.cpp's loader makes every MLP 4 x d_model wide.
        width = getattr(config, f"{side}_ffn_dim")
        if width != 4 * config.d_model:
            raise ExportError(f"{model_dir}: the {side}'s MLPs are {width} wide, but whisper.cpp assumes "
                              f"4 x d_model = {4 * config.d_model}; it could not load this model")
    return model


def _write_tensors(out, state: dict, quantization: str, progress: bool) -> int:
    """Every tensor whisper.cpp reads, in its names, layout and types; returns how many were written."""
    from tqdm import tqdm

    count = 0
    for hf_name, tensor in tqdm(state.items(), desc=f"writing {quantization} tensors", disable=not progress):
        name = ggml_tensor_name(hf_name)
        if name is None:
            continue
        data = tensor.detach().cpu().numpy()
        if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
            data = data.reshape(-1, 1)   # whisper.cpp adds them as (n_state, 1)
        kind = tensor_type(name, data.ndim, quantization)
        if kind in ("q8_0", "q5_0") and data.shape[-1] % BLOCK:
            raise ExportError(f"{hf_name}: rows of {data.shape[-1]} values cannot be cut into {kind}'s blocks "
                              f"of {BLOCK}; export this model with --quantization=f16")
        encoded = name.encode("utf-8")
        out.write(struct.pack("<3i", data.ndim, len(encoded), GGML_TYPES[kind]))
        out.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
        out.write(encoded)
        out.write(np.ascontiguousarray(_ENCODERS[kind](data)).tobytes())
        count += 1
    return count
