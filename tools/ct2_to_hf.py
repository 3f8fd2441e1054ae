"""Convert a CTranslate2 / faster-whisper Whisper model folder into a transformers folder.

    python tools/ct2_to_hf.py --model_dir=models/whisper-base-ct2 --output_dir=output/whisper-base-hf

The result loads with WhisperForConditionalGeneration / WhisperProcessor.from_pretrained and can be
fine-tuned (finetune.py --base_model=<output_dir>). float32, float16, bfloat16 and int8 models are
read; int8 weights are dequantized with their stored per-row scales.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.export.ct2_import import SAVE_DTYPES, Ct2FormatError, convert_ct2_to_hf  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True,
                        help="CTranslate2 Whisper folder: model.bin, vocabulary.json or vocabulary.txt, "
                             "tokenizer.json and (optional) config.json")
    parser.add_argument("--output_dir", required=True,
                        help="transformers folder to write; it must not exist or be empty unless --overwrite")
    parser.add_argument("--dtype", default="float32", choices=SAVE_DTYPES,
                        help="weight type to save (default float32, which CPU inference and training need)")
    parser.add_argument("--multilingual", default="auto", choices=["auto", "yes", "no"],
                        help="whether the model is multilingual (language/task tokens in the prompt); "
                             "auto follows openai/whisper: by the vocabulary size (utils.core.languages.is_multilingual)")
    parser.add_argument("--normalizer_file", default=None,
                        help="openai/whisper's English spelling table (whisper/normalizers/english.json), "
                             "saved as normalizer.json so that tokenizer.normalize() works; default: the "
                             "model folder's normalizer.json if it has one")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output_dir if it already holds files")
    args = parser.parse_args(argv)
    print(f"ct2_to_hf: model_dir={args.model_dir} output_dir={args.output_dir} dtype={args.dtype} "
          f"multilingual={args.multilingual} normalizer_file={args.normalizer_file} "
          f"overwrite={args.overwrite}")
    started = time.time()
    try:
        summary = convert_ct2_to_hf(
            args.model_dir, args.output_dir, dtype=args.dtype, overwrite=args.overwrite,
            is_multilingual={"auto": None, "yes": True, "no": False}[args.multilingual],
            normalizer_file=args.normalizer_file)
    except (Ct2FormatError, FileExistsError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"done: wrote {summary.output_dir} in {time.time() - started:.1f} s "
          f"({summary.parameters / 1e6:.1f}M parameters, {summary.stored_dtype} -> {summary.saved_dtype}, "
          f"{'multilingual' if summary.is_multilingual else 'English-only'}, "
          f"{summary.added_tokens} tokens added to the tokenizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
