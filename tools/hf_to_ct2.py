"""Convert a transformers Whisper folder (base or merged fine-tune) to a CTranslate2 folder
that faster-whisper (infer_ct2.py) loads offline.

    python tools/hf_to_ct2.py --model_dir=models/whisper-base --output_dir=models/whisper-base-ct2 \
        --quantization=float16

It runs CTranslate2's own converter, then makes sure the result holds what faster-whisper needs
and the plain converter misses with transformers 5: tokenizer.json, preprocessor_config.json
(faster-whisper reads the mel count from it) and the language token ids (without them
faster-whisper cannot detect the language). Finally it loads the folder with faster-whisper.
"""
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import HfArgumentParser  # noqa: E402

from utils.core.cli import print_config  # noqa: E402
from utils.core.languages import LANGUAGES, is_multilingual  # noqa: E402
from utils.inference.transcriber import exit_on_user_error  # noqa: E402

QUANTIZATIONS = ("float16", "float32", "int8", "int8_float16", "int8_float32", "int8_bfloat16",
                 "int16", "bfloat16")


@dataclass
class ConvertArguments:
    model_dir: str = field(default="models/whisper-base",
                           metadata={"help": "transformers model folder (merged fine-tune or base model)"})
    output_dir: str = field(default="models/whisper-ct2", metadata={"help": "CTranslate2 folder to write"})
    quantization: Optional[Literal[QUANTIZATIONS]] = field(default="float16", metadata={
        "help": "weight type stored in model.bin; faster-whisper can still compute in another type"})
    force: bool = field(default=False, metadata={"help": "replace output_dir when it already exists"})


def language_token_ids(model_dir: str) -> list[int]:
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(model_dir)
    vocab = tokenizer.get_vocab()
    return sorted(vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab)


def convert(model_dir: str, output_dir: str, quantization: Optional[str], force: bool) -> dict:
    import ctranslate2
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperTokenizer

    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"{model_dir}: not a transformers model folder (no config.json)")
    if os.path.exists(output_dir) and not force:
        raise ValueError(f"{output_dir} already exists; pass --force to replace it")
    config = WhisperConfig.from_pretrained(model_dir)
    # Build beside the target and swap it in at the end, so a failure leaves no half folder.
    staging = f"{output_dir.rstrip('/')}.part"
    shutil.rmtree(staging, ignore_errors=True)
    try:
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
        multilingual = is_multilingual(config.vocab_size)
        if multilingual and not ct2_config.get("lang_ids"):
            ct2_config["lang_ids"] = language_token_ids(model_dir)
            with open(ct2_config_path, "w", encoding="utf-8") as file:
                json.dump(ct2_config, file, indent=2)

        check = check_ct2_folder(staging, multilingual, config.num_mel_bins)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return check


def check_ct2_folder(path: str, multilingual: bool, n_mels: int) -> dict:
    """Load the folder as faster-whisper will and confirm language ids and mel count."""
    from faster_whisper import WhisperModel

    model = WhisperModel(path, device="cpu", compute_type="int8", local_files_only=True)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as file:
        lang_ids = json.load(file).get("lang_ids") or []
    if multilingual and not lang_ids:
        raise ValueError(f"{path}: no language ids in config.json; language detection would fail")
    if bool(model.model.is_multilingual) != multilingual:
        raise ValueError(f"{path}: converted model is_multilingual={model.model.is_multilingual}, "
                         f"expected {multilingual}")
    if model.feature_extractor.mel_filters.shape[0] != n_mels:
        raise ValueError(f"{path}: faster-whisper would compute {model.feature_extractor.mel_filters.shape[0]} "
                         f"mel bins, the model expects {n_mels}")
    return {"multilingual": multilingual, "languages": len(lang_ids) if multilingual else 1, "n_mels": n_mels}


def main():
    (args,) = HfArgumentParser(ConvertArguments).parse_args_into_dataclasses()
    print_config("hf_to_ct2.py configuration", args)
    check = convert(args.model_dir, args.output_dir, args.quantization, args.force)
    size = os.path.getsize(os.path.join(args.output_dir, "model.bin")) / 2**20
    print(f"wrote {args.output_dir}: model.bin {size:.1f} MiB ({args.quantization}), "
          f"{check['n_mels']} mel bins, {'multilingual' if check['multilingual'] else 'English-only'}, "
          f"{check['languages']} languages; faster-whisper loads it")


if __name__ == "__main__":
    exit_on_user_error(main)
