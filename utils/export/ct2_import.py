"""Import a CTranslate2 (faster-whisper) Whisper model into a transformers folder.

CTranslate2 ships no reader for its own `model.bin` in Python and no converter
back to transformers, so both live here. The format (written by
`ctranslate2.specs.model_spec.ModelSpec._serialize`) is little-endian:

    uint32 version (6) | string spec name | uint32 revision | uint32 count
    count x (string name | uint8 rank | rank x uint32 dim | uint8 dtype
             | uint32 byte count | bytes)
    uint32 alias count | alias count x (string alias | string target)

where a string is a uint16 length (including a trailing NUL) and its bytes.
The weights map one to one onto `WhisperForConditionalGeneration`, except that
CTranslate2 fuses the attention projections (self-attention `linear_0` is
Q|K|V, cross-attention `linear_0` is Q and `linear_1` is K|V) and may store
int8 weights with a per-row `<name>_scale`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from utils.core.errors import UserError
from utils.core.files import atomic_dir
from utils.core.languages import is_multilingual as vocabulary_is_multilingual

SUPPORTED_BINARY_VERSIONS = (5, 6)   # what ctranslate2 4.x writes and reads for Whisper
WHISPER_SPEC_NAME = "WhisperSpec"
MAX_TARGET_POSITIONS = 448           # Whisper's decoder context (tokens)
MAX_INITIAL_TIMESTAMP_INDEX = 50     # first timestamp at most 1.0 s, as openai/whisper decodes
TIME_PRECISION = 0.02
N_TIMESTAMPS = 1501                  # <|0.00|> ... <|30.00|>

# Order of the DataType enum in CTranslate2's include/ctranslate2/types.h.
# numpy has no bfloat16: its raw uint16 bits are widened to float32 below.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu", 4: "gelu", 5: "tanh"}

MODEL_FILE = "model.bin"


class Ct2FormatError(UserError):
    """A CTranslate2 model folder or model.bin is unusable; the message names file and offset."""


@dataclass
class Ct2Variable:
    name: str
    dtype: str          # "float32", "int8", ... as stored
    shape: tuple
    offset: int         # byte offset of the data in the file
    array: np.ndarray   # decoded values (bfloat16 widened to float32)


@dataclass
class Ct2Model:
    path: str
    version: int
    spec: str
    revision: int
    variables: dict = field(default_factory=dict)   # name -> Ct2Variable
    aliases: dict = field(default_factory=dict)     # alias -> target name

    def array(self, name: str) -> np.ndarray:
        name = self.aliases.get(name, name)
        try:
            return self.variables[name].array
        except KeyError:
            raise Ct2FormatError(f"{self.path}: variable '{name}' is missing "
                                 f"(is this a complete {self.spec} model?)") from None

    def has(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def scalar(self, name: str) -> int:
        return int(self.array(name).reshape(-1)[0])


class _Reader:
    """Bounds-checked cursor over the file bytes, so a short file names its offset."""

    def __init__(self, path: str, data: memoryview):
        self.path, self.data, self.pos = path, data, 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.pos + size
        if end > len(self.data):
            raise Ct2FormatError(
                f"{self.path}: truncated at byte offset {self.pos} while reading {what} "
                f"({size} bytes needed, {len(self.data) - self.pos} left of {len(self.data)}); "
                f"the file is incomplete or corrupted, fetch it again")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        start = self.pos
        length = self.uint("H", f"the length of {what}")
        raw = bytes(self.take(length, what))
        if length == 0 or raw[-1] != 0:
            raise Ct2FormatError(f"{self.path}: corrupted string for {what} at byte offset {start} "
                                 f"(no terminating NUL)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise Ct2FormatError(f"{self.path}: corrupted string for {what} at byte offset "
                                 f"{start} (not UTF-8)") from None


def _decode(path: str, raw: memoryview, dtype_id: int, shape: tuple, name: str, offset: int) -> np.ndarray:
    if dtype_id == 5:
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    dtype = np.dtype(_DTYPES[dtype_id]).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if count * dtype.itemsize != len(raw):
        raise Ct2FormatError(
            f"{path}: variable '{name}' at byte offset {offset} has {len(raw)} bytes but shape "
            f"{list(shape)} of {_DTYPE_NAMES[dtype_id]} needs {count * dtype.itemsize}; "
            f"the file is corrupted")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def read_model_bin(path: str | os.PathLike) -> Ct2Model:
    """Parse a CTranslate2 model.bin; raises Ct2FormatError naming the file and byte offset."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise Ct2FormatError(f"{path}: file not found")
    with open(path, "rb") as handle:
        data = memoryview(handle.read())
    reader = _Reader(path, data)
    version = reader.uint("I", "the format version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise Ct2FormatError(f"{path}: not a CTranslate2 model file this importer reads "
                             f"(format version {version} at byte offset 0, expected one of "
                             f"{list(SUPPORTED_BINARY_VERSIONS)})")
    spec = reader.string("the model spec name")
    revision = reader.uint("I", "the spec revision")
    count = reader.uint("I", "the variable count")
    model = Ct2Model(path=path, version=version, spec=spec, revision=revision)
    for index in range(count):
        start = reader.pos
        name = reader.string(f"the name of variable {index + 1}/{count}")
        rank = reader.uint("B", f"the rank of '{name}'")
        shape = tuple(reader.uint("I", f"dimension {d} of '{name}'") for d in range(rank))
        dtype_pos = reader.pos
        dtype_id = reader.uint("B", f"the dtype of '{name}'")
        if dtype_id not in _DTYPES:
            raise Ct2FormatError(f"{path}: variable '{name}' (entry at byte offset {start}) has "
                                 f"unknown dtype code {dtype_id} at byte offset {dtype_pos}; "
                                 f"the file is corrupted")
        nbytes = reader.uint("I", f"the byte count of '{name}'")
        data_pos = reader.pos
        raw = reader.take(nbytes, f"the data of '{name}'")
        array = _decode(path, raw, dtype_id, shape, name, data_pos)
        model.variables[name] = Ct2Variable(name, _DTYPE_NAMES[dtype_id], shape, data_pos, array)
    if version >= 5 or reader.pos < len(data):
        alias_count = reader.uint("I", "the alias count")
        for _ in range(alias_count):
            alias = reader.string("an alias name")
            target = reader.string(f"the target of alias '{alias}'")
            if target not in model.variables:
                raise Ct2FormatError(f"{path}: alias '{alias}' points to missing variable '{target}'")
            model.aliases[alias] = target
    if reader.pos != len(data):
        raise Ct2FormatError(f"{path}: {len(data) - reader.pos} unexpected bytes after the end of "
                             f"the model at byte offset {reader.pos}; the file is corrupted")
    return model


def dequantized(model: Ct2Model, name: str) -> np.ndarray:
    """A weight as float32, undoing int8/int16 quantization (CTranslate2 stores q = round(w * scale))."""
    values = model.array(name)
    scale_name = f"{name}_scale"
    if np.issubdtype(values.dtype, np.integer) and values.ndim > 0:
        if not model.has(scale_name):
            raise Ct2FormatError(f"{model.path}: quantized weight '{name}' has no '{scale_name}'")
        scale = model.array(scale_name).astype(np.float32)
        if scale.ndim == 1 and values.ndim >= 2:
            scale = scale.reshape((-1,) + (1,) * (values.ndim - 1))
        return values.astype(np.float32) / scale
    return values.astype(np.float32)


# ---------------------------------------------------------------- CT2 folder files

def read_vocabulary(model_dir: str) -> list[str]:
    """The id -> token list CTranslate2 decodes with (vocabulary.json or vocabulary.txt)."""
    json_path = os.path.join(model_dir, "vocabulary.json")
    txt_path = os.path.join(model_dir, "vocabulary.txt")
    if os.path.isfile(json_path):
        try:
            with open(json_path, encoding="utf-8") as handle:
                tokens = json.load(handle)
        except json.JSONDecodeError as exc:
            raise Ct2FormatError(f"{json_path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise Ct2FormatError(f"{json_path}: expected a JSON list of token strings")
        return tokens
    if os.path.isfile(txt_path):
        with open(txt_path, encoding="utf-8") as handle:
            text = handle.read()
        # One token per line; the file ends with a newline that is not a token.
        return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    raise Ct2FormatError(f"{model_dir}: no vocabulary.json or vocabulary.txt; "
                         f"is this a CTranslate2 model folder?")


def read_ct2_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except json.JSONDecodeError as exc:
        raise Ct2FormatError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(config, dict):
        raise Ct2FormatError(f"{path}: expected a JSON object")
    return config


# ---------------------------------------------------------------- transformers config

def whisper_dimensions(model: Ct2Model) -> dict:
    """WhisperConfig fields that follow from the weights' shapes."""
    if model.spec != WHISPER_SPEC_NAME:
        raise Ct2FormatError(f"{model.path}: holds a '{model.spec}' model, not a Whisper model "
                             f"('{WHISPER_SPEC_NAME}')")

    def count_layers(prefix: str) -> int:
        layers = {int(m.group(1)) for n in model.variables
                  if (m := re.match(rf"{prefix}/layer_(\d+)/", n))}
        if not layers or layers != set(range(len(layers))):
            raise Ct2FormatError(f"{model.path}: {prefix} layers are missing or not numbered 0..n-1")
        return len(layers)

    embeddings = model.array("decoder/embeddings/weight")
    conv1 = model.array("encoder/conv1/weight")
    activation = model.scalar("decoder/activation") if model.has("decoder/activation") else 3
    return dict(
        vocab_size=int(embeddings.shape[0]),
        d_model=int(embeddings.shape[1]),
        num_mel_bins=int(conv1.shape[1]),
        encoder_layers=count_layers("encoder"),
        decoder_layers=count_layers("decoder"),
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=int(model.array("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(model.array("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(model.array("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.array("decoder/position_encodings/encodings").shape[0]),
        activation_function=_ACTIVATIONS.get(activation, "gelu"),
    )


def _split(array: np.ndarray, parts: int, name: str, path: str) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise Ct2FormatError(f"{path}: fused projection '{name}' has {array.shape[0]} rows, "
                             f"not divisible into {parts}")
    return np.split(array, parts, axis=0)


def whisper_state_dict(model: Ct2Model, dims: dict) -> dict:
    """transformers state dict (float32 numpy arrays) from the CTranslate2 variables."""
    weights: dict[str, np.ndarray] = {}
    get = lambda name: dequantized(model, name)   # noqa: E731

    def linear(hf: str, ct2: str, bias: bool = True):
        weights[f"{hf}.weight"] = get(f"{ct2}/weight")
        if bias:
            weights[f"{hf}.bias"] = get(f"{ct2}/bias")

    def norm(hf: str, ct2: str):
        weights[f"{hf}.weight"] = get(f"{ct2}/gamma")
        weights[f"{hf}.bias"] = get(f"{ct2}/beta")

    def attention(hf: str, ct2: str, fused_qkv: bool):
        # HF's k_proj has no bias: CTranslate2 stores zeros there, and a key bias would only add
        # the same constant to every score of a query, which softmax cancels anyway.
        if fused_qkv:
            w = _split(get(f"{ct2}/linear_0/weight"), 3, f"{ct2}/linear_0/weight", model.path)
            b = _split(get(f"{ct2}/linear_0/bias"), 3, f"{ct2}/linear_0/bias", model.path)
            out = f"{ct2}/linear_1"
        else:
            wq, bq = get(f"{ct2}/linear_0/weight"), get(f"{ct2}/linear_0/bias")
            wkv = _split(get(f"{ct2}/linear_1/weight"), 2, f"{ct2}/linear_1/weight", model.path)
            bkv = _split(get(f"{ct2}/linear_1/bias"), 2, f"{ct2}/linear_1/bias", model.path)
            w, b = [wq, *wkv], [bq, *bkv]
            out = f"{ct2}/linear_2"
        for proj, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w, b):
            weights[f"{hf}.{proj}.weight"] = wi
            if proj != "k_proj":
                weights[f"{hf}.{proj}.bias"] = bi
        linear(f"{hf}.out_proj", out)

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        if side == "encoder":
            linear(f"{prefix}.conv1", "encoder/conv1")
            linear(f"{prefix}.conv2", "encoder/conv2")
        else:
            weights[f"{prefix}.embed_tokens.weight"] = get("decoder/embeddings/weight")
        weights[f"{prefix}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        for i in range(dims[f"{side}_layers"]):
            hf, ct2 = f"{prefix}.layers.{i}", f"{side}/layer_{i}"
            attention(f"{hf}.self_attn", f"{ct2}/self_attention", fused_qkv=True)
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            if side == "decoder":
                attention(f"{hf}.encoder_attn", f"{ct2}/attention", fused_qkv=False)
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")

    projection = model.aliases.get("decoder/projection/weight", "decoder/projection/weight")
    if projection != "decoder/embeddings/weight" and model.has(projection):
        if not np.array_equal(get(projection), weights["model.decoder.embed_tokens.weight"]):
            raise Ct2FormatError(f"{model.path}: the output projection is not tied to the token "
                                 f"embeddings, which transformers' Whisper requires")
    return weights


# ---------------------------------------------------------------- tokenizer

def _is_timestamp(token: str) -> bool:
    return re.fullmatch(r"<\|\d+\.\d\d\|>", token) is not None


def build_tokenizer(model_dir: str, vocabulary: Sequence[str], return_added: bool = False,
                    normalizer_file: Optional[str] = None):
    """A transformers WhisperTokenizer whose ids match `vocabulary` exactly.

    Tokens the CT2 tokenizer.json lacks (tiny.en's has no timestamp tokens) are added with
    their vocabulary ids; `<|...|>` tokens other than timestamps become special tokens.
    `normalizer_file` (default: the folder's normalizer.json, if any) is openai/whisper's
    English spelling table, which `tokenizer.normalize()` needs.
    """
    from transformers import WhisperTokenizer

    tokenizer_path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(tokenizer_path):
        raise Ct2FormatError(f"{model_dir}: no tokenizer.json; CTranslate2 Whisper folders made "
                             f"by faster-whisper or ct2-transformers-converter --copy_files "
                             f"tokenizer.json have one")
    try:
        with open(tokenizer_path, encoding="utf-8") as handle:
            spec = json.load(handle)
        known = dict(spec["model"]["vocab"])
        added = spec.setdefault("added_tokens", [])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise Ct2FormatError(f"{tokenizer_path}: not a tokenizers BPE tokenizer.json ({exc})") from None
    known.update({t["content"]: t["id"] for t in added})
    added_count = 0
    for index, token in enumerate(vocabulary):
        if token in known:
            if known[token] != index:
                raise Ct2FormatError(f"{tokenizer_path}: token {token!r} has id {known[token]} but "
                                     f"the model's vocabulary puts it at {index}")
            continue
        if not token:
            continue   # the empty padding entry some vocabularies carry is not a real token
        special = token.startswith("<|") and token.endswith("|>") and not _is_timestamp(token)
        added_count += 1
        added.append({"id": index, "content": token, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": not special, "special": special})
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"])
                if t.get("special") and t["content"] != "<|endoftext|>"]
    with tempfile.TemporaryDirectory(prefix="ct2_tokenizer_") as tmp:
        with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as handle:
            json.dump(spec, handle, ensure_ascii=False)
        if normalizer_file is None and os.path.isfile(os.path.join(model_dir, "normalizer.json")):
            normalizer_file = os.path.join(model_dir, "normalizer.json")
        tokenizer = WhisperTokenizer(tokenizer_file=os.path.join(tmp, "tokenizer.json"),
                                     extra_special_tokens=specials, normalizer_file=normalizer_file)
    mismatched = [(i, t) for i, t in enumerate(vocabulary)
                  if t and tokenizer.convert_tokens_to_ids(t) != i]
    if mismatched:
        index, token = mismatched[0]
        raise Ct2FormatError(f"{tokenizer_path}: token {token!r} does not get id {index} "
                             f"({len(mismatched)} tokens disagree with the vocabulary)")
    return (tokenizer, added_count) if return_added else tokenizer


def _token_id(tokenizer, token: str) -> Optional[int]:
    """The token's id, or None where the tokenizer maps it to its unknown token (it lacks it)."""
    index = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(index, int) or (index == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return index


def build_generation_config(tokenizer, *, is_multilingual: bool,
                            alignment_heads: Optional[Iterable[Sequence[int]]] = None,
                            suppress_tokens: Optional[Iterable[int]] = None,
                            begin_suppress_tokens: Optional[Iterable[int]] = None,
                            lang_ids: Optional[Iterable[int]] = None,
                            max_length: int = MAX_TARGET_POSITIONS):
    """A Whisper GenerationConfig for a model that uses `tokenizer`'s ids.

    Multilingual models get `lang_to_id` (from `lang_ids`, else every token between
    <|startoftranscript|> and <|translate|>) and `task_to_id`; English-only models get
    neither, since transformers then rejects `language=`/`task=`. Without explicit
    `suppress_tokens`/`begin_suppress_tokens` it uses openai/whisper's rule: the
    symbols and the special tokens it never wants sampled, and a blank/EOT first token.
    """
    from transformers import GenerationConfig

    def need(token: str) -> int:
        index = _token_id(tokenizer, token)
        if index is None:
            raise ValueError(f"the tokenizer has no {token} token; it is not a Whisper tokenizer")
        return index

    eot = need("<|endoftext|>")
    sot = need("<|startoftranscript|>")
    translate, transcribe = need("<|translate|>"), need("<|transcribe|>")
    no_timestamps = need("<|notimestamps|>")
    prev = need("<|startofprev|>")
    if begin_suppress_tokens is None:
        begin_suppress_tokens = [tokenizer.encode(" ", add_special_tokens=False)[0], eot]
    if suppress_tokens is None:
        suppress_tokens = _default_suppress_tokens(tokenizer)
    config = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        max_length=max_length, no_timestamps_token_id=no_timestamps, prev_sot_token_id=prev,
        suppress_tokens=sorted(int(t) for t in suppress_tokens),
        begin_suppress_tokens=[int(t) for t in begin_suppress_tokens],
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        return_timestamps=False, is_multilingual=bool(is_multilingual),
    )
    if alignment_heads is not None:
        config.alignment_heads = [[int(layer), int(head)] for layer, head in alignment_heads]
    if is_multilingual:
        ids = list(lang_ids) if lang_ids is not None else list(range(sot + 1, translate))
        config.lang_to_id = {tokenizer.convert_ids_to_tokens(int(i)): int(i) for i in sorted(ids)}
        config.task_to_id = {"transcribe": transcribe, "translate": translate}
    return config


def _default_suppress_tokens(tokenizer) -> list[int]:
    # openai/whisper tokenizer.non_speech_tokens: symbols a speech transcript never starts a
    # token with, plus the tokens generate must never produce on its own.
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")
    result = {tokenizer.encode(" -", add_special_tokens=False)[0],
              tokenizer.encode(" '", add_special_tokens=False)[0]}
    for symbol in symbols + sorted(miscellaneous):
        for text in (symbol, " " + symbol):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1 or (symbol in miscellaneous and ids):
                result.add(ids[0])
    for token in ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                  "<|startoftranscript|>", "<|nocaptions|>", "<|nospeech|>"):
        index = _token_id(tokenizer, token)
        if index is not None:
            result.add(index)
    return sorted(result)


# ---------------------------------------------------------------- the conversion

@dataclass
class ImportSummary:
    output_dir: str
    is_multilingual: bool
    parameters: int
    stored_dtype: str
    saved_dtype: str
    added_tokens: int


SAVE_DTYPES = ("float32", "float16", "bfloat16")


def convert_ct2_to_hf(model_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                      dtype: str = "float32", overwrite: bool = False,
                      is_multilingual: Optional[bool] = None,
                      normalizer_file: Optional[str] = None) -> ImportSummary:
    """Write a transformers Whisper folder (weights, config, generation config, tokenizer,
    feature extractor) for the CTranslate2 model in `model_dir`. `normalizer_file` is
    openai/whisper's english.json, saved as normalizer.json for `tokenizer.normalize()`.

    The folder is assembled beside `output_dir` and renamed into place at the end, so an
    interrupted run never leaves something that looks complete.
    """
    model_dir, output_dir = os.fspath(model_dir), os.fspath(output_dir)
    _check_paths(model_dir, output_dir, dtype=dtype, overwrite=overwrite, normalizer_file=normalizer_file)
    model = read_model_bin(os.path.join(model_dir, MODEL_FILE))
    dims = whisper_dimensions(model)
    vocabulary = read_vocabulary(model_dir)
    if len(vocabulary) != dims["vocab_size"]:
        raise Ct2FormatError(f"{model_dir}: the vocabulary has {len(vocabulary)} tokens but "
                             f"{MODEL_FILE} has {dims['vocab_size']} embeddings")
    ct2_config = read_ct2_config(model_dir)
    tokenizer, added_tokens = build_tokenizer(model_dir, vocabulary, return_added=True,
                                              normalizer_file=normalizer_file)
    stored_dtype = model.variables[model.aliases.get("decoder/embeddings/weight",
                                                     "decoder/embeddings/weight")].dtype
    if is_multilingual is None:
        is_multilingual = vocabulary_is_multilingual(dims["vocab_size"])
    generation_config = build_generation_config(
        tokenizer, is_multilingual=is_multilingual,
        alignment_heads=ct2_config.get("alignment_heads"),
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        lang_ids=ct2_config.get("lang_ids") if is_multilingual else None)
    hf_model = _transformers_model(model, dims, generation_config, dtype, model_dir)
    del model
    _save_folder(hf_model, tokenizer, dims["num_mel_bins"], output_dir,
                 normalizer_file or os.path.join(model_dir, "normalizer.json"))
    return ImportSummary(output_dir=output_dir, is_multilingual=is_multilingual,
                         parameters=sum(p.numel() for p in hf_model.parameters()),
                         stored_dtype=stored_dtype, saved_dtype=dtype, added_tokens=added_tokens)


def _check_paths(model_dir: str, output_dir: str, *, dtype: str, overwrite: bool,
                 normalizer_file: Optional[str]) -> None:
    """Refuse a conversion that cannot work before anything is read or written."""
    if dtype not in SAVE_DTYPES:
        raise Ct2FormatError(f"dtype must be one of {', '.join(SAVE_DTYPES)}, not {dtype!r}")
    if normalizer_file is not None and not os.path.isfile(normalizer_file):
        raise Ct2FormatError(f"{normalizer_file}: normalizer file not found")
    if not os.path.isdir(model_dir):
        raise Ct2FormatError(f"{model_dir}: not a folder; pass the CTranslate2 model folder "
                             f"(the one holding {MODEL_FILE})")
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        if not overwrite:
            raise Ct2FormatError(f"{output_dir}: already exists and is not empty; choose another "
                                 f"output folder or pass --overwrite")
    if not os.path.isfile(os.path.join(model_dir, MODEL_FILE)):
        hint = (" it looks like a transformers folder already" if
                os.path.isfile(os.path.join(model_dir, "model.safetensors")) else "")
        raise Ct2FormatError(f"{model_dir}: has no {MODEL_FILE}, so it is not a CTranslate2 "
                             f"model folder{';' + hint if hint else ''}")


def _transformers_model(model: Ct2Model, dims: dict, generation_config, dtype: str, model_dir: str):
    """WhisperForConditionalGeneration holding the CTranslate2 weights, in `dtype`."""
    # Imported only now, so that a bad model folder is reported without loading torch first.
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        **dims,
        pad_token_id=generation_config.pad_token_id, bos_token_id=generation_config.bos_token_id,
        eos_token_id=generation_config.eos_token_id,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        # Kept only in generation_config.json: a copy here makes transformers 5 warn on every
        # generate() that generation arguments were passed twice.
        begin_suppress_tokens=None, suppress_tokens=None,
        scale_embedding=False, tie_word_embeddings=True, use_cache=True,
    )
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in whisper_state_dict(model, dims).items()}
    with torch.device("meta"):
        hf_model = WhisperForConditionalGeneration(config)
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    missing, unexpected = hf_model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise Ct2FormatError(f"{model_dir}: weights do not fit transformers' Whisper "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    hf_model.tie_weights()
    hf_model.to(getattr(torch, dtype))
    hf_model.generation_config = generation_config
    return hf_model.eval()


def _save_folder(hf_model, tokenizer, n_mels: int, output_dir: str, normalizer_source: str) -> None:
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    if os.path.isfile(output_dir):
        os.remove(output_dir)   # --overwrite of a file where the folder goes
    with atomic_dir(output_dir) as staging:
        hf_model.save_pretrained(staging)
        feature_extractor = WhisperFeatureExtractor(feature_size=n_mels)
        processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        processor.save_pretrained(staging)
        # transformers 5's processor no longer writes preprocessor_config.json itself;
        # faster-whisper and WhisperFeatureExtractor.from_pretrained need it.
        feature_extractor.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # transformers 5 does not save the spelling table itself; from_pretrained reads it back.
        if os.path.isfile(normalizer_source):
            shutil.copyfile(normalizer_source, os.path.join(staging, "normalizer.json"))
