"""Convert a transformers Whisper folder (base or merged fine-tune) to a CTranslate2 folder
that faster-whisper (infer_ct2.py) loads offline.

    python tools/hf_to_ct2.py --model_dir=models/whisper-base --output_dir=models/whisper-base-ct2 \
        --quantization=float16

It runs CTranslate2's own converter, adds what faster-whisper needs (tokenizer.json,
preprocessor_config.json, the language token ids) and loads the result with faster-whisper
before it replaces --output_dir (utils/export/ct2_export.py).
"""
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.export.ct2_export import QUANTIZATIONS  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402


@dataclass
class ConvertArguments:
    model_dir: str = field(default=default_model("transformers"),
                           metadata={"help": "transformers model folder (merged fine-tune or base model)"})
    output_dir: str = field(default="models/whisper-ct2", metadata={"help": "CTranslate2 folder to write"})
    quantization: Optional[str] = field(default="float16", metadata={
        "help": "weight type stored in model.bin; faster-whisper can still compute in another type",
        "choices": QUANTIZATIONS})
    force: bool = field(default=False, metadata={"help": "replace output_dir when it already exists"})


def convert(args: ConvertArguments) -> None:
    from utils.export.ct2_export import export_ct2

    print_config("hf_to_ct2.py configuration", args)
    summary = export_ct2(args.model_dir, args.output_dir, args.quantization, args.force)
    size = os.path.getsize(os.path.join(args.output_dir, "model.bin")) / 2**20
    print(f"wrote {args.output_dir}: model.bin {size:.1f} MiB ({args.quantization}), "
          f"{summary.n_mels} mel bins, {'multilingual' if summary.multilingual else 'English-only'}, "
          f"{summary.languages} languages; faster-whisper loads it")


def main(argv=None) -> int:
    args = parse_args(ConvertArguments, argv, description=__doc__)
    return guarded(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())
