"""Finding, checking, loading and saving Whisper model folders: the one loader every layer uses, with
one error class (ModelLoadError) for a model the user named that cannot be used."""
from __future__ import annotations

import os
import socket
import struct
from typing import Any, Sequence
from urllib.parse import urlparse

from utils.core.errors import UserError
from utils.core.files import atomic_dir
from utils.core.languages import is_multilingual

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
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")) and what == "model":
            raise ModelLoadError(f"{name_or_path}: folder has no config.json, so it is not a Whisper model folder")
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


def checkpoint_is_multilingual(name_or_path: str, *, local_files_only: bool = False) -> bool:
    """model_is_multilingual from the saved config.json, without loading the weights."""
    from transformers import WhisperConfig

    path, offline = resolve_model(name_or_path, local_files_only=local_files_only)
    try:
        return model_is_multilingual(WhisperConfig.from_pretrained(path, local_files_only=offline))
    except OSError as exc:
        raise ModelLoadError(f"{name_or_path}: cannot read the model's config.json "
                             f"({str(exc).splitlines()[0]})") from None


def check_model_dir(model_path: str, required: Sequence[str], must_exist: bool) -> None:
    """A local model folder must hold `required` files.

    A path that does not exist may still be a hub name ("openai/whisper-base") for online users,
    so it is only an error when `must_exist` (e.g. --local_files_only)."""
    if not os.path.exists(model_path):
        if must_exist:
            raise ModelLoadError(f"{model_path}: model folder not found; {DOWNLOAD_HINT}, "
                                 f"or pass a folder that exists")
        return
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


def model_format(path: str) -> str:
    """What kind of Whisper model `path` is: "ct2" (a folder with model.bin), "transformers" (a folder
    with config.json and weights) or "ggml" (a GGML file); ModelLoadError saying what was found."""
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if "model.bin" in names:
            return "ct2"
        if "config.json" in names and names & set(TRANSFORMERS_WEIGHTS):
            return "transformers"
        if "config.json" in names:
            raise ModelLoadError(f"{path}: has config.json but no weights ({' or '.join(TRANSFORMERS_WEIGHTS[::2])})")
        shown = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "") if names else "nothing"
        raise ModelLoadError(f"{path}: not a model folder: it holds {shown}, but neither model.bin "
                             f"(CTranslate2) nor config.json with weights (transformers)")
    if os.path.isfile(path):
        read_ggml_header(path)
        return "ggml"
    raise ModelLoadError(f"{path}: no such model file or folder; {DOWNLOAD_HINT}, or pass a path that exists")
