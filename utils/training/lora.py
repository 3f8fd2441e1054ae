"""LoRA and AdaLoRA adapters (peft) on a Whisper model: which layers get them, the generation settings
that make training-time decoding and the saved model agree, and merging an adapter back."""
from __future__ import annotations

import json
import os
import re
from typing import Optional, Sequence

from utils.core.languages import to_language_code
from utils.core.models import ModelLoadError, load_processor, load_whisper, model_is_multilingual

# Every linear layer of attention and feed-forward, in encoder and decoder, as in the original project.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ADAPTER_CONFIG = "adapter_config.json"
# Older runs recorded the base as given on the command line (models/whisper-base), relative to where they ran.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    # adapter_config.json's base_model_name_or_path is what AutoPeftModel.from_pretrained(adapter) and
    # merge_lora.py load: peft copies the path as given, which only resolves from the training's working folder.
    for adapter_config in peft_model.peft_config.values():
        adapter_config.base_model_name_or_path = resolvable_base(model.name_or_path)
    return peft_model


def resolvable_base(name_or_path: str) -> str:
    """The base model as an adapter records it: a local folder as an absolute path, a hub id as it is."""
    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path


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


def adapter_base(lora_dir: str) -> tuple[str, Optional[str]]:
    """(base model, a note or None) of an adapter folder. A relative base that is no folder from here (an adapter
    of an older run) is looked up under the repository root and the adapter folder; one that is not there
    either is taken as a hub id."""
    base = read_adapter_config(lora_dir)["base_model_name_or_path"]
    if os.path.isabs(base) or os.path.isdir(base):
        return base, None
    for root in (_REPO_ROOT, os.path.abspath(lora_dir)):
        candidate = os.path.normpath(os.path.join(root, base))
        if os.path.isdir(candidate):
            return candidate, (f"note: {os.path.join(lora_dir, ADAPTER_CONFIG)} names the base model {base!r} "
                               f"relative to the folder its run started in; using {candidate}")
    return base, None


def record_language(model, language: Optional[str], task: str) -> None:
    """Language and task into the model's generation_config, so that generate() and pipeline() without
    arguments decode them; transformers 5 reads these two and ignores forced_decoder_ids when they are set,
    so those stay empty. English-only models have neither token."""
    model.config.forced_decoder_ids = None
    model.generation_config.forced_decoder_ids = None
    if not model_is_multilingual(model):
        return
    model.generation_config.language = to_language_code(language)
    model.generation_config.task = task


def load_merged(lora_dir: str, *, local_files_only: bool = False, base: Optional[str] = None):
    """Base model (default: the one the adapter names) + adapter, merged into plain weights.
    Returns (model, processor, base)."""
    from peft import PeftModel

    base = base or adapter_base(lora_dir)[0]
    model = load_whisper(base, local_files_only=local_files_only)
    processor = load_processor(base, local_files_only=local_files_only)
    try:
        model = PeftModel.from_pretrained(model, lora_dir, is_trainable=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{lora_dir}: adapter does not fit base model {base} "
                             f"({str(exc).splitlines()[0]})") from None
    return model.merge_and_unload(), processor, base


def check_hub_push(repo_id: str) -> None:
    """--push_to_hub can work from here: the Hub allowed (HF_HUB_OFFLINE unset), a token, the Hub reachable;
    checked before anything slow runs, so that the refusal does not come after the training or the merge."""
    from huggingface_hub import get_token

    from utils.core.models import _hub_reachable

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelLoadError(f"--push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded to {repo_id}; "
                             f"unset it, or drop --push_to_hub and upload the folder later")
    if not get_token():
        raise ModelLoadError("--push_to_hub needs a Hugging Face token with write access: run `hf auth login` "
                             "or set HF_TOKEN")
    if not _hub_reachable():
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise ModelLoadError(f"--push_to_hub: the Hugging Face Hub ({endpoint}) is unreachable from "
                             f"this machine; drop --push_to_hub and upload the folder later")


def push_folder(folder: str, repo_id: str, *, private: bool = False, message: str = "Upload merged model") -> str:
    """Upload a model folder to the Hub repository `repo_id` (created when missing); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", commit_message=message)
    except HfHubHTTPError as exc:
        response = getattr(exc, "response", None)
        why = (f"HTTP {response.status_code}" if response is not None else str(exc).splitlines()[0])
        raise ModelLoadError(f"--hub_model_id={repo_id}: the Hub refused the upload ({why}; a 401 or 403 means the "
                             f"token may not write there); {folder} is saved, upload it later") from None
    return str(getattr(commit, "commit_url", commit))
