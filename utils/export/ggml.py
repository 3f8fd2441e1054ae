"""Write a transformers Whisper folder as a whisper.cpp GGML model file.

Layout (what whisper.cpp's loader reads, little-endian):
  uint32 magic "ggml"; 11 int32 hparams (n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
  n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype);
  mel filters: int32 n_mels, int32 n_fft_bins, float32[n_mels * n_fft_bins];
  vocabulary: int32 count, then per token int32 length + raw bytes (ids below <|endoftext|>;
  whisper.cpp derives the special tokens from n_vocab);
  tensors: int32 n_dims, int32 name length, int32 type (0 f32, 1 f16), int32 dims (innermost
  first), name, data.

Written here (not by whisper.cpp's convert script) so that export needs neither the openai-whisper
repository nor its mel-filter file: the filters come from the model's own feature extractor.
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

GGML_F32, GGML_F16 = 0, 1

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
# whisper.cpp keeps these in f32 even in an f16 file (its loader checks each tensor's type).
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


def export_ggml(model_dir: str, output_path: str, use_f16: bool = True, progress: bool = True) -> dict:
    """Write `model_dir` (a transformers Whisper folder) to `output_path` as GGML.

    Returns a summary (tensor count, bytes, hparams). The file appears only when complete.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    if model_format(model_dir) != "transformers":
        raise ExportError(f"{model_dir}: convert-ggml.py needs a transformers model folder; this is a "
                          f"{model_format(model_dir)} model (tools/ct2_to_hf.py turns a CTranslate2 folder "
                          f"into a transformers one)")
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = WhisperTokenizer.from_pretrained(model_dir)
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
    config = model.config
    state = model.state_dict()
    if not torch.equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"]):
        raise ExportError(f"{model_dir}: output projection is not tied to the token embedding; "
                          f"whisper.cpp cannot represent that model")
    hparams = [config.vocab_size, config.max_source_positions, config.d_model,
               config.encoder_attention_heads, config.encoder_layers, config.max_target_positions,
               config.d_model, config.decoder_attention_heads, config.decoder_layers,
               config.num_mel_bins, GGML_F16 if use_f16 else GGML_F32]
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
        count = _write_tensors(out, state, use_f16, progress)
    return {"tensors": count, "bytes": os.path.getsize(output_path), "vocab": len(tokens),
            "n_mels": config.num_mel_bins, "layers": config.encoder_layers, "f16": use_f16}


def _write_tensors(out, state: dict, use_f16: bool, progress: bool) -> int:
    """Every tensor whisper.cpp reads, in its names and layout; returns how many were written."""
    from tqdm import tqdm

    count = 0
    for hf_name, tensor in tqdm(state.items(), desc="writing tensors", disable=not progress):
        name = ggml_tensor_name(hf_name)
        if name is None:
            continue
        data = tensor.detach().cpu().numpy()
        if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
            data = data.reshape(-1, 1)   # whisper.cpp adds them as (n_state, 1)
        half = use_f16 and data.ndim >= 2 and name not in _ALWAYS_F32
        data = data.astype("<f2" if half else "<f4")
        encoded = name.encode("utf-8")
        out.write(struct.pack("<3i", data.ndim, len(encoded), GGML_F16 if half else GGML_F32))
        out.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
        out.write(encoded)
        out.write(np.ascontiguousarray(data).tobytes())
        count += 1
    return count
