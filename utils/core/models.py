"""Finding, checking, loading and saving Whisper model folders: the one loader every layer uses, with
one error class (ModelLoadError) for a model the user named that cannot be used."""
from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any, Sequence
from urllib.parse import urlparse

from utils.core.errors import UserError
from utils.core.files import atomic_dir
from utils.core.languages import is_multilingual, model_languages

DEFAULT_LOCAL_MODEL = os.path.join("models", "whisper-base")
DEFAULT_HUB_MODEL = "openai/whisper-base"
DOWNLOAD_HINT = "run `python tools/download_model.py --model=whisper-base` (or whisper-tiny.en)"


class ModelLoadError(UserError):
    """A model, processor or adapter named by the user cannot be used; the message says why and what to do."""


def default_base_model() -> str:
    """models/whisper-base when tools/download_model.py has fetched it, else the hub id (needs network)."""
    if os.path.isfile(os.path.join(DEFAULT_LOCAL_MODEL, "config.json")):
        return DEFAULT_LOCAL_MODEL
    return DEFAULT_HUB_MODEL


def model_name(name_or_path: str) -> str:
    """'openai/whisper-base' or 'models/whisper-base/' -> 'whisper-base' (names output folders)."""
    return os.path.basename(os.path.normpath(name_or_path))


def _hub_reachable(timeout: float = 3.0) -> bool:
    # from_pretrained retries for minutes when offline; one socket connect answers in seconds.
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id that is not a valid repo name is simply not cached
        return False


def looks_like_hub_id(name: str) -> bool:
    """'openai/whisper-base' yes; 'models/missing', '/abs/path', './x', 'a/b/c' no (a local path)."""
    return (not os.path.exists(name) and name.count("/") == 1 and not os.path.isabs(name)
            and not name.startswith((".", "~")) and not os.path.isdir(name.split("/")[0]))


def resolve_model(name_or_path: str, *, local_files_only: bool = False, what: str = "model") -> tuple[str, bool]:
    """Check that `name_or_path` can be loaded before transformers tries (and retries) the network.

    Returns (name_or_path, local_files_only to pass to from_pretrained).
    """
    if what == "model" and os.path.exists(name_or_path):
        wrong = wrong_kind_of_model(name_or_path, "transformers")
        if wrong:
            raise ModelLoadError(wrong)
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")) and what == "model":
            raise ModelLoadError(f"{name_or_path}: folder has no config.json, so it is not a Whisper model folder")
        check_mel_bins(name_or_path)
        return name_or_path, True
    if os.path.exists(name_or_path):
        raise ModelLoadError(f"{name_or_path}: is a file; --{what} needs a model folder or a Hugging Face Hub id")
    if not looks_like_hub_id(name_or_path):
        raise ModelLoadError(f"{name_or_path}: model folder not found; {DOWNLOAD_HINT}, "
                             f"or pass a folder that exists")
    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if _in_hub_cache(name_or_path):
        return name_or_path, offline
    if offline:
        raise ModelLoadError(f"{name_or_path}: not in the local Hugging Face cache and downloads are off "
                             f"(--local_files_only / HF_HUB_OFFLINE); {DOWNLOAD_HINT} and pass its folder")
    if not _hub_reachable():
        raise ModelLoadError(f"{name_or_path}: cannot download it, the Hugging Face Hub is unreachable from this "
                             f"machine; {DOWNLOAD_HINT} and pass --base_model=models/whisper-base")
    return name_or_path, False


def _json_field(path: str, *keys: str):
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
        for key in keys:
            value = value[key]
        return value
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_mel_bins(model_dir: str) -> None:
    """ModelLoadError when the model folder's feature extractor makes another number of mel bins than
    its model takes (config.json num_mel_bins against preprocessor_config.json feature_size, e.g. a
    128-mel large-v3 folder holding whisper-base's 80-mel processor files): every script that loads
    the folder says so in one sentence instead of failing inside the first convolution."""
    n_mels = _json_field(os.path.join(model_dir, "config.json"), "num_mel_bins")
    if n_mels is None:
        return
    for name, keys in (("preprocessor_config.json", ("feature_size",)),
                       ("processor_config.json", ("feature_extractor", "feature_size"))):
        features = _json_field(os.path.join(model_dir, name), *keys)
        if features is not None and features != n_mels:
            raise ModelLoadError(f"{model_dir}: config.json's model takes {n_mels} mel bins (num_mel_bins) but "
                                 f"{name} makes {features} (feature_size); copy the processor files of the "
                                 f"model it came from")


def load_processor(name_or_path: str, *, local_files_only: bool = False):
    from transformers import WhisperProcessor

    path, offline = resolve_model(name_or_path, local_files_only=local_files_only)
    try:
        return WhisperProcessor.from_pretrained(path, local_files_only=offline)
    except OSError as exc:
        raise ModelLoadError(f"{name_or_path}: cannot load the tokenizer/feature extractor "
                             f"({str(exc).splitlines()[0]})") from None


def model_is_multilingual(model: Any) -> bool:
    """Whether a loaded model (or its config) has language and task tokens: English-only checkpoints
    (*.en) have none and reject language= in generate."""
    return is_multilingual(getattr(model, "config", model).vocab_size)


def _checkpoint_config(name_or_path: str, local_files_only: bool):
    from transformers import WhisperConfig

    path, offline = resolve_model(name_or_path, local_files_only=local_files_only)
    try:
        return WhisperConfig.from_pretrained(path, local_files_only=offline)
    except OSError as exc:
        raise ModelLoadError(f"{name_or_path}: cannot read the model's config.json "
                             f"({str(exc).splitlines()[0]})") from None


def checkpoint_is_multilingual(name_or_path: str, *, local_files_only: bool = False) -> bool:
    """model_is_multilingual from the saved config.json, without loading the weights."""
    return model_is_multilingual(_checkpoint_config(name_or_path, local_files_only))


def checkpoint_languages(name_or_path: str, tokenizer, *, local_files_only: bool = False) -> tuple[str, ...]:
    """tokenizer_languages of a saved model (its config.json's vocabulary size), without loading the weights."""
    return tokenizer_languages(tokenizer, _checkpoint_config(name_or_path, local_files_only).vocab_size)


def tokenizer_languages(tokenizer, vocab_size: int) -> tuple[str, ...]:
    """The language codes a model of `vocab_size` tokens has and `tokenizer` holds a <|xx|> token for
    (English-only: ("en",)); what training and transcription accept as --language."""
    if not is_multilingual(vocab_size):
        return ("en",)
    vocabulary = tokenizer.get_vocab()
    return tuple(code for code in model_languages(vocab_size) if f"<|{code}|>" in vocabulary)


_KINDS = {"transformers": "a transformers model folder", "ct2": "a CTranslate2 model folder",
          "ggml": "a whisper.cpp GGML file", "adapter": "a LoRA adapter folder"}
_WHAT_TO_DO = {
    ("ct2", "transformers"): "tools/ct2_to_hf.py converts it, or run it with infer_ct2.py",
    ("transformers", "ct2"): "tools/hf_to_ct2.py converts it, or run it with infer.py",
    ("ggml", "transformers"): "run it with infer_server.py or infer_gui.py (--backend=ggml)",
    ("ggml", "ct2"): "run it with infer_server.py or infer_gui.py (--backend=ggml)",
    ("adapter", "transformers"): "merge it into its base model with merge_lora.py and pass the merged folder",
    ("adapter", "ct2"): "merge it with merge_lora.py, then convert the merged folder with tools/hf_to_ct2.py",
    ("transformers", "ggml"): "convert-ggml.py converts it, or run it with --backend=transformers",
    ("ct2", "ggml"): "convert-ggml.py converts it, or run it with --backend=ct2",
    ("adapter", "ggml"): "merge it with merge_lora.py, then convert the merged folder with convert-ggml.py",
}


def kind_of_model(path: str) -> str | None:
    """What an existing path holds, by its files: "transformers", "ct2", "ggml", "adapter", or None."""
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if "model.bin" in names:
            return "ct2"
        if "config.json" in names and names & set(TRANSFORMERS_WEIGHTS):
            return "transformers"
        if "adapter_config.json" in names and "config.json" not in names:
            return "adapter"
        return None
    try:
        with open(path, "rb") as file:
            magic = file.read(4)
    except OSError:
        return None
    return "ggml" if len(magic) == 4 and struct.unpack("<I", magic)[0] == GGML_MAGIC else None


def wrong_kind_of_model(path: str, wanted: str) -> str | None:
    """The one sentence for `path` when it is a model of another kind than `wanted` ("transformers",
    "ct2" or "ggml"), e.g. a GGML file or an adapter folder given where a transformers folder is needed; else None."""
    kind = kind_of_model(path)
    if kind is None or kind == wanted:
        return None
    return f"{path}: is {_KINDS[kind]}, not {_KINDS[wanted]}; {_WHAT_TO_DO[kind, wanted]}"


def check_model_dir(model_path: str, required: Sequence[str], must_exist: bool) -> None:
    """A local model folder must hold `required` files.

    A path that does not exist may still be a hub name ("openai/whisper-base") for online users,
    so it is only an error when `must_exist` (e.g. --local_files_only)."""
    if not os.path.exists(model_path):
        if must_exist:
            raise ModelLoadError(f"{model_path}: model folder not found; {DOWNLOAD_HINT}, "
                                 f"or pass a folder that exists")
        return
    wrong = wrong_kind_of_model(model_path, "ct2" if "model.bin" in required else "transformers")
    if wrong:
        raise ModelLoadError(wrong)
    if not os.path.isdir(model_path):
        raise ModelLoadError(f"{model_path}: expected a model folder, found a file")
    missing = [name for name in required if not os.path.exists(os.path.join(model_path, name))]
    if missing:
        raise ModelLoadError(f"{model_path}: not a usable model folder, missing {', '.join(missing)}")


def load_whisper(name_or_path: str, *, local_files_only: bool = False, use_8bit: bool = False,
                 dtype: Any = None, **from_pretrained):
    """WhisperForConditionalGeneration from a folder or hub id; 8-bit weights only on CUDA."""
    from transformers import WhisperForConditionalGeneration

    path, offline = resolve_model(name_or_path, local_files_only=local_files_only)
    kwargs = {"local_files_only": offline, **from_pretrained}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if use_8bit:
        from utils.core.devices import check_precision

        check_precision(fp16=False, bf16=False, use_8bit=True)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        # Each DDP process keeps its whole 8-bit model on its own GPU.
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    try:
        model = WhisperForConditionalGeneration.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"{name_or_path}: cannot load the model ({str(exc).splitlines()[0]})") from None
    return model


def save_model_folder(model, processor, out_dir: str) -> None:
    """Write a standalone model folder atomically: build it beside `out_dir`, then rename it into place."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        model.generation_config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        # transformers 5 folds the feature extractor into processor_config.json; faster-whisper and the
        # CTranslate2 converter read preprocessor_config.json, so write it explicitly.
        processor.feature_extractor.save_pretrained(tmp)
        processor.tokenizer.save_pretrained(tmp)


# whisper.cpp's GGML model files start with this uint32 ("ggml"), then eleven int32 hyperparameters.
GGML_MAGIC = 0x67676D6C
GGML_HPARAMS = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
                "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json")


def read_ggml_header(path: str) -> dict:
    """The hyperparameters of a GGML Whisper file; ModelLoadError when it is not one."""
    with open(path, "rb") as file:
        head = file.read(4 + 4 * len(GGML_HPARAMS))
    if len(head) < 4 + 4 * len(GGML_HPARAMS) or struct.unpack("<I", head[:4])[0] != GGML_MAGIC:
        raise ModelLoadError(f"{path}: not a whisper.cpp GGML model file (make one with convert-ggml.py)")
    return dict(zip(GGML_HPARAMS, struct.unpack(f"<{len(GGML_HPARAMS)}i", head[4:])))


# ggml tensor type id -> (bytes per block, values per block): the types whisper.cpp's converter and
# quantize tool write (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K ... q6_K).
GGML_TYPE_SIZES = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32),
                   10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256), 14: (210, 256)}


def ggml_tensor_shapes(header: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor whisper.cpp's loader creates for `header`, with its dims innermost first: a file
    must hold exactly these, or whisper.cpp refuses it. Its MLPs are always 4 x n_state wide (the file
    has no field for the width)."""
    shapes: dict[str, tuple[int, ...]] = {}
    sides = (("encoder", header["n_audio_state"], header["n_audio_ctx"], header["n_audio_layer"]),
             ("decoder", header["n_text_state"], header["n_text_ctx"], header["n_text_layer"]))
    for side, state, ctx, layers in sides:
        shapes[f"{side}.positional_embedding"] = (state, ctx)
        attentions = ("attn", "cross_attn") if side == "decoder" else ("attn",)
        for index in range(layers):
            block = f"{side}.blocks.{index}"
            shapes.update({f"{block}.mlp_ln.weight": (state,), f"{block}.mlp_ln.bias": (state,),
                           f"{block}.mlp.0.weight": (state, 4 * state), f"{block}.mlp.0.bias": (4 * state,),
                           f"{block}.mlp.2.weight": (4 * state, state), f"{block}.mlp.2.bias": (state,)})
            for attention in attentions:
                shapes.update({f"{block}.{attention}_ln.weight": (state,), f"{block}.{attention}_ln.bias": (state,),
                               f"{block}.{attention}.key.weight": (state, state)})
                for part in ("query", "value", "out"):
                    shapes.update({f"{block}.{attention}.{part}.weight": (state, state),
                                   f"{block}.{attention}.{part}.bias": (state,)})
    state = header["n_audio_state"]
    shapes.update({"encoder.conv1.weight": (3, header["n_mels"], state), "encoder.conv1.bias": (1, state),
                   "encoder.conv2.weight": (3, state, state), "encoder.conv2.bias": (1, state),
                   "encoder.ln_post.weight": (state,), "encoder.ln_post.bias": (state,),
                   "decoder.token_embedding.weight": (header["n_text_state"], header["n_vocab"]),
                   "decoder.ln.weight": (header["n_text_state"],), "decoder.ln.bias": (header["n_text_state"],)})
    return shapes


def check_ggml_file(path: str) -> dict:
    """read_ggml_header, then the rest of the file against it, the way whisper.cpp's loader reads it:
    the mel filters, the vocabulary and the tensor table (names, shapes, types, sizes) must fit the
    header and end exactly at the end of the file. A file whisper.cpp would refuse (a truncated
    download, a model whose MLPs are not 4 x d_model wide) is a ModelLoadError saying why, before
    whisper.cpp sees it (pywhispercpp crashes the process on a file whisper.cpp refused).
    Only the headers are read; the weights are skipped over. Long because the file's sections are read
    in their order, each checked where it is read."""
    header = read_ggml_header(path)
    odd = [name for name in GGML_HPARAMS[:-1] if not 0 < header[name] < 1 << 20]
    if odd or header["ftype"] < 0:
        raise ModelLoadError(f"{path}: not a usable GGML Whisper file, its header has impossible values "
                             f"({', '.join(f'{n}={header[n]}' for n in odd[:3] or ['ftype'])})")
    size = os.path.getsize(path)
    truncated = f"{path}: the GGML file is truncated ({size} bytes); export or download it again"
    with open(path, "rb") as file:
        def ints(count: int) -> tuple[int, ...]:
            data = file.read(4 * count)
            if len(data) < 4 * count:
                raise ModelLoadError(truncated)
            return struct.unpack(f"<{count}i", data)

        file.seek(4 + 4 * len(GGML_HPARAMS))
        n_mels, n_fft = ints(2)
        if n_mels != header["n_mels"] or not 0 < n_fft < 1 << 16:
            raise ModelLoadError(f"{path}: the GGML file's mel filters ({n_mels} x {n_fft}) do not fit its "
                                 f"header ({header['n_mels']} mel bins)")
        file.seek(4 * n_mels * n_fft, os.SEEK_CUR)
        (n_tokens,) = ints(1)
        if not 0 < n_tokens <= header["n_vocab"]:
            raise ModelLoadError(f"{path}: the GGML file lists {n_tokens} tokens for a vocabulary of "
                                 f"{header['n_vocab']}")
        for _ in range(n_tokens):
            file.seek(ints(1)[0], os.SEEK_CUR)
        expected = ggml_tensor_shapes(header)
        seen = set()
        while file.tell() < size:
            n_dims, name_length, kind = ints(3)
            if not 0 < n_dims <= 4 or not 0 < name_length < 256 or kind not in GGML_TYPE_SIZES:
                raise ModelLoadError(f"{path}: the GGML file's tensor table is damaged at byte {file.tell() - 12}; "
                                     f"export or download it again")
            dims = ints(n_dims)
            name = file.read(name_length).decode("utf-8", "replace")
            if name not in expected:
                raise ModelLoadError(f"{path}: the GGML file holds a tensor {name!r} that whisper.cpp does not know")
            if dims != expected[name]:
                raise ModelLoadError(f"{path}: tensor {name} is {' x '.join(map(str, dims[::-1]))} but whisper.cpp "
                                     f"expects {' x '.join(map(str, expected[name][::-1]))} for this header"
                                     + ("; whisper.cpp makes every MLP 4 x d_model wide" if ".mlp." in name else ""))
            block_bytes, block_values = GGML_TYPE_SIZES[kind]
            count = 1
            for dim in dims:
                count *= dim
            file.seek(count // block_values * block_bytes, os.SEEK_CUR)
            if file.tell() > size:
                raise ModelLoadError(truncated)
            seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise ModelLoadError(f"{path}: the GGML file lacks {len(missing)} of whisper.cpp's tensors "
                             f"(first: {missing[0]}); it is truncated or was not written for whisper.cpp")
    return header


def model_format(path: str) -> str:
    """What kind of Whisper model `path` is: "ct2" (a folder with model.bin), "transformers" (a folder
    with config.json and weights) or "ggml" (a GGML file); ModelLoadError saying what was found."""
    if os.path.isdir(path):
        kind = kind_of_model(path)
        if kind in ("ct2", "transformers"):
            return kind
        names = set(os.listdir(path))
        if kind == "adapter":
            raise ModelLoadError(f"{path}: is a LoRA adapter folder, not a full model; merge it into its base "
                                 f"model with merge_lora.py and pass the merged folder")
        if "config.json" in names:
            raise ModelLoadError(f"{path}: has config.json but no weights ({' or '.join(TRANSFORMERS_WEIGHTS[::2])})")
        shown = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "") if names else "nothing"
        raise ModelLoadError(f"{path}: not a model folder: it holds {shown}, but neither model.bin "
                             f"(CTranslate2) nor config.json with weights (transformers)")
    if os.path.isfile(path):
        read_ggml_header(path)
        return "ggml"
    raise ModelLoadError(f"{path}: no such model file or folder; {DOWNLOAD_HINT}, or pass a path that exists")
