"""Write a transformers Whisper folder (base or merged fine-tune) as a CTranslate2 folder that
faster-whisper loads offline.

CTranslate2's own converter does the weights; this adds what faster-whisper needs and the plain
converter misses with transformers 5: tokenizer.json, preprocessor_config.json (faster-whisper reads
the mel count from it) and the language token ids (without them faster-whisper cannot detect the
language). The result is loaded with faster-whisper before it replaces the output folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from utils.core.files import atomic_dir, write_json_atomic
from utils.core.languages import LANGUAGES, is_multilingual
from utils.core.models import wrong_kind_of_model
from utils.export import ExportError

QUANTIZATIONS = ("float16", "float32", "int8", "int8_float16", "int8_float32", "int8_bfloat16",
                 "int16", "bfloat16")


@dataclass
class Ct2Summary:
    multilingual: bool
    languages: int
    n_mels: int


def language_token_ids(model_dir: str) -> list[int]:
    from transformers import WhisperTokenizer

    vocab = WhisperTokenizer.from_pretrained(model_dir).get_vocab()
    return sorted(vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab)


def export_ct2(model_dir: str, output_dir: str, quantization: Optional[str], force: bool) -> Ct2Summary:
    """Convert `model_dir` into `output_dir` (built beside it and swapped in only once faster-whisper
    has loaded it, so a failure leaves no half folder)."""
    import ctranslate2
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperTokenizer

    wrong = wrong_kind_of_model(model_dir, "transformers")   # a CTranslate2 folder has a config.json too
    if wrong:
        raise ExportError(wrong)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ExportError(f"{model_dir}: not a transformers model folder (no config.json)")
    if os.path.exists(output_dir) and not force:
        raise ExportError(f"{output_dir} already exists; pass --force to replace it")
    config = WhisperConfig.from_pretrained(model_dir)
    multilingual = is_multilingual(config.vocab_size)
    with atomic_dir(output_dir) as staging:
        copy = [name for name in ("tokenizer.json", "preprocessor_config.json")
                if os.path.exists(os.path.join(model_dir, name))]
        converter = ctranslate2.converters.TransformersConverter(model_dir, copy_files=copy)
        converter.convert(staging, quantization=quantization, force=True)
        if not os.path.exists(os.path.join(staging, "tokenizer.json")):
            WhisperTokenizer.from_pretrained(model_dir).backend_tokenizer.save(
                os.path.join(staging, "tokenizer.json"))
        # Always rewritten: transformers 5 no longer saves it with the processor, and an old one
        # may lack feature_size.
        WhisperFeatureExtractor.from_pretrained(model_dir).save_pretrained(staging)
        ct2_config_path = os.path.join(staging, "config.json")
        with open(ct2_config_path, encoding="utf-8") as file:
            ct2_config = json.load(file)
        if multilingual and not ct2_config.get("lang_ids"):
            ct2_config["lang_ids"] = language_token_ids(model_dir)
            write_json_atomic(ct2_config_path, ct2_config)
        summary = check_ct2_folder(staging, multilingual, config.num_mel_bins)
    return summary


def check_ct2_folder(path: str, multilingual: bool, n_mels: int) -> Ct2Summary:
    """Load the folder as faster-whisper will and confirm language ids and mel count."""
    from faster_whisper import WhisperModel

    model = WhisperModel(path, device="cpu", compute_type="int8", local_files_only=True)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as file:
        lang_ids = json.load(file).get("lang_ids") or []
    if multilingual and not lang_ids:
        raise ExportError(f"{path}: no language ids in config.json; language detection would fail")
    if bool(model.model.is_multilingual) != multilingual:
        raise ExportError(f"{path}: converted model is_multilingual={model.model.is_multilingual}, "
                          f"expected {multilingual}")
    computed = model.feature_extractor.mel_filters.shape[0]
    if computed != n_mels:
        raise ExportError(f"{path}: faster-whisper would compute {computed} mel bins, the model expects {n_mels}")
    return Ct2Summary(multilingual=multilingual, languages=len(lang_ids) if multilingual else 1, n_mels=n_mels)
