"""LoRA and AdaLoRA adapters (peft) on a Whisper model: which layers get them, the generation settings
that make training-time decoding and the saved model agree, and merging an adapter back."""
from __future__ import annotations

import json
import os
import re
from typing import Optional, Sequence

from utils.core.models import ModelLoadError, load_processor, load_whisper, model_is_multilingual

# Every linear layer of attention and feed-forward, in encoder and decoder, as in the original project.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ADAPTER_CONFIG = "adapter_config.json"


def prepare_for_finetuning(model, *, language: Optional[str], task: str, use_8bit: bool,
                           gradient_checkpointing: bool) -> None:
    """Generation settings that make training-time decoding and the saved model agree."""
    # Labels carry the language/task prefix; forced ids in the config would duplicate it.
    model.config.forced_decoder_ids = None
    model.generation_config.forced_decoder_ids = None
    if model_is_multilingual(model):
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
    return r".*decoder\..*\.(" + "|".join(map(re.escape, names)) + r")$"


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
