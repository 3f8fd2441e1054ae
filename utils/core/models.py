"""Loading Whisper models and processors, adding LoRA/AdaLoRA adapters, merging and saving them."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from typing import Optional, Sequence
from urllib.parse import urlparse

import torch

DEFAULT_LOCAL_MODEL = os.path.join("models", "whisper-base")
DEFAULT_HUB_MODEL = "openai/whisper-base"
# Every linear layer of attention and feed-forward, in encoder and decoder, as in the original project.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ADAPTER_CONFIG = "adapter_config.json"
DOWNLOAD_HINT = "run `python tools/download_model.py --model=whisper-base` (or whisper-tiny.en)"


class ModelLoadError(ValueError):
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
    looks_local = (os.path.isabs(name_or_path) or name_or_path.startswith((".", "~"))
                   or name_or_path.count("/") != 1 or os.path.isdir(name_or_path.split("/")[0]))
    if looks_local:
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


MULTILINGUAL_VOCAB = 51865   # English-only Whisper vocabularies have 51864 tokens, multilingual ones more


def is_multilingual(model) -> bool:
    """English-only checkpoints (*.en) have no language/task tokens and reject language= in generate.

    Their tokenizers still list the language tokens, so only the model's configs can tell."""
    gen = getattr(model, "generation_config", None)
    if gen is not None and getattr(gen, "is_multilingual", None) is not None:
        return bool(gen.is_multilingual)
    return getattr(model, "config", model).vocab_size >= MULTILINGUAL_VOCAB


def checkpoint_is_multilingual(name_or_path: str, *, local_files_only: bool = False) -> bool:
    """is_multilingual from the saved configs, without loading the weights."""
    from transformers import GenerationConfig, WhisperConfig

    path, offline = resolve_model(name_or_path, local_files_only=local_files_only)
    try:
        gen = GenerationConfig.from_pretrained(path, local_files_only=offline)
        if getattr(gen, "is_multilingual", None) is not None:
            return bool(gen.is_multilingual)
    except OSError:  # no generation_config.json: older exports; the vocabulary size decides
        pass
    return WhisperConfig.from_pretrained(path, local_files_only=offline).vocab_size >= MULTILINGUAL_VOCAB


def check_precision(*, fp16: bool, bf16: bool, use_8bit: bool) -> None:
    """GPU-only options fail loudly on CPU instead of silently training in fp32."""
    if fp16 and bf16:
        raise ModelLoadError("--fp16 and --bf16 exclude each other: pick one")
    if torch.cuda.is_available():
        if bf16 and not torch.cuda.is_bf16_supported():
            raise ModelLoadError("--bf16: this GPU does not support bfloat16; use --fp16")
        if use_8bit:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise ModelLoadError("--use_8bit needs the bitsandbytes package: pip install bitsandbytes") from None
        return
    if bf16 and not cpu_supports_bf16():
        raise ModelLoadError("--bf16 needs a CUDA GPU or a CPU with bfloat16 instructions (AVX512-BF16 or "
                             "AMX) and this machine has neither; drop --bf16 (training on CPU runs in fp32)")
    for flag, on in (("--use_8bit", use_8bit), ("--fp16", fp16)):
        if on:
            raise ModelLoadError(f"{flag} needs a CUDA GPU and this machine has none; drop {flag} "
                                 f"(training on CPU runs in fp32)")


def bf16_wanted(choice: str) -> bool:
    """A script's --bf16=auto|true|false: auto = where it is fast (a CUDA GPU with bf16, or a CPU with
    bfloat16 instructions)."""
    if choice != "auto":
        return choice == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX). Elsewhere
    bfloat16 autocast is emulated and slower than fp32, so --bf16 is refused there."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def load_whisper(name_or_path: str, *, local_files_only: bool = False, use_8bit: bool = False,
                 dtype: Optional[torch.dtype] = None):
    """WhisperForConditionalGeneration from a folder or hub id; 8-bit weights only on CUDA."""
    from transformers import WhisperForConditionalGeneration

    path, offline = resolve_model(name_or_path, local_files_only=local_files_only)
    kwargs = {"local_files_only": offline}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if use_8bit:
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


def prepare_for_finetuning(model, *, language: Optional[str], task: str, use_8bit: bool,
                           gradient_checkpointing: bool) -> None:
    """Generation settings that make training-time decoding and the saved model agree."""
    # Labels carry the language/task prefix; forced ids in the config would duplicate it.
    model.config.forced_decoder_ids = None
    model.generation_config.forced_decoder_ids = None
    if is_multilingual(model):
        model.generation_config.language = language
        model.generation_config.task = task
    if use_8bit:
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if gradient_checkpointing:
        model.config.use_cache = False


def lora_target_modules(target_modules: Sequence[str], *, freeze_encoder: bool):
    """peft target spec: a list of module names, or with a frozen encoder a regex limited to the decoder."""
    names = [m.strip() for m in target_modules if m.strip()]
    if not names:
        raise ModelLoadError("--target_modules is empty: name at least one linear layer, e.g. q_proj,v_proj")
    if not freeze_encoder:
        return names
    return r".*decoder\..*\.(" + "|".join(map(_re_escape, names)) + r")$"


def _re_escape(name: str) -> str:
    import re

    return re.escape(name)


def add_adapter(model, *, use_adalora: bool, r: int, alpha: int, dropout: float,
                target_modules: Sequence[str], freeze_encoder: bool, total_step: Optional[int] = None):
    """Wrap `model` in a peft LoRA or AdaLoRA adapter; only adapter weights stay trainable."""
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    targets = lora_target_modules(target_modules, freeze_encoder=freeze_encoder)
    if use_adalora:
        if not total_step or total_step < 3:
            raise ModelLoadError(f"AdaLoRA needs at least 3 optimizer steps to allocate ranks, this run has "
                                 f"{total_step}; train longer or drop --use_adalora")
        # Warm up for the first 10 % of optimizer steps, fix ranks for the last 30 %, reallocate in between.
        tinit = max(1, total_step // 10)
        tfinal = max(1, (total_step * 3) // 10)
        if tinit >= total_step - tfinal:
            tinit, tfinal = 0, 1
        config = AdaLoraConfig(init_r=max(r * 3 // 2, r + 1), target_r=r, tinit=tinit, tfinal=tfinal,
                               deltaT=max(1, (total_step - tinit - tfinal) // 10), beta1=0.85, beta2=0.85,
                               orth_reg_weight=0.5, lora_alpha=alpha, lora_dropout=dropout,
                               target_modules=targets, total_step=total_step)
    else:
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise ModelLoadError(f"--target_modules: {str(exc).splitlines()[0]}") from None
    return peft_model


def read_adapter_config(folder: str) -> dict:
    path = os.path.join(folder, ADAPTER_CONFIG)
    if not os.path.isdir(folder):
        raise ModelLoadError(f"{folder}: adapter folder not found")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{folder}: not a LoRA adapter folder (no {ADAPTER_CONFIG}); pass a checkpoint-best "
                             f"or checkpoint-final folder written by finetune.py")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable adapter config ({exc})") from None
    if not config.get("base_model_name_or_path"):
        raise ModelLoadError(f"{path}: field base_model_name_or_path is missing, so the base model is unknown")
    return config


def load_merged(lora_dir: str, *, local_files_only: bool = False):
    """Base model named in the adapter config + adapter, merged into plain weights. Returns (model, processor, base)."""
    from peft import PeftModel

    base = read_adapter_config(lora_dir)["base_model_name_or_path"]
    model = load_whisper(base, local_files_only=local_files_only)
    processor = load_processor(base, local_files_only=local_files_only)
    try:
        model = PeftModel.from_pretrained(model, lora_dir, is_trainable=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{lora_dir}: adapter does not fit base model {base} "
                             f"({str(exc).splitlines()[0]})") from None
    return model.merge_and_unload(), processor, base


def save_model_folder(model, processor, out_dir: str) -> None:
    """Write a standalone model folder atomically: build it beside `out_dir`, then rename it into place."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        model.generation_config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        # transformers 5 folds the feature extractor into processor_config.json; faster-whisper and the
        # CTranslate2 converter read preprocessor_config.json, so write it explicitly.
        processor.feature_extractor.save_pretrained(tmp)
        processor.tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: str, dst: str) -> None:
    """Move a finished folder onto `dst`; a reader sees either the old or the new folder, never a mix."""
    if os.path.isdir(dst):
        old = f"{dst}.old-{os.getpid()}"
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
