"""Convert a CTranslate2 / faster-whisper Whisper model folder into a transformers folder.

    python tools/ct2_to_hf.py --model_dir=models/whisper-base-ct2 --output_dir=output/whisper-base-hf

The result loads with WhisperForConditionalGeneration / WhisperProcessor.from_pretrained and can be
fine-tuned (finetune.py --base_model=<output_dir>). float32, float16, bfloat16 and int8 models are
read; int8 weights are dequantized with their stored per-row scales.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.export.ct2_import import SAVE_DTYPES  # noqa: E402


@dataclass
class ImportArguments:
    model_dir: str = field(metadata={
        "help": "CTranslate2 Whisper folder: model.bin, vocabulary.json or vocabulary.txt, tokenizer.json "
                "and (optional) config.json"})
    output_dir: str = field(metadata={
        "help": "transformers folder to write; it must not exist or be empty unless --overwrite"})
    dtype: str = field(default="float32", metadata={
        "help": "weight type to save (float32 is what CPU inference and training need)", "choices": SAVE_DTYPES})
    multilingual: Literal["auto", "yes", "no"] = field(default="auto", metadata={
        "help": "whether the model has language/task tokens; auto: by the vocabulary size, as openai/whisper"})
    normalizer_file: Optional[str] = field(default=None, metadata={
        "help": "openai/whisper's English spelling table (whisper/normalizers/english.json), saved as "
                "normalizer.json so that tokenizer.normalize() works; default: the model folder's "
                "normalizer.json if it has one"})
    overwrite: bool = field(default=False, metadata={"help": "replace --output_dir if it already holds files"})


def convert(args: ImportArguments) -> None:
    from utils.export.ct2_import import convert_ct2_to_hf

    print_config("ct2_to_hf.py configuration", args)
    started = time.time()
    summary = convert_ct2_to_hf(
        args.model_dir, args.output_dir, dtype=args.dtype, overwrite=args.overwrite,
        is_multilingual={"auto": None, "yes": True, "no": False}[args.multilingual],
        normalizer_file=args.normalizer_file)
    print(f"done: wrote {summary.output_dir} in {time.time() - started:.1f} s "
          f"({summary.parameters / 1e6:.1f}M parameters, {summary.stored_dtype} -> {summary.saved_dtype}, "
          f"{'multilingual' if summary.is_multilingual else 'English-only'}, "
          f"{summary.added_tokens} tokens added to the tokenizer)")


def main(argv=None) -> int:
    args = parse_args(ImportArguments, argv, description=__doc__)
    return guarded(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())
