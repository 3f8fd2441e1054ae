"""Export a transformers Whisper folder (base or merged fine-tune) to whisper.cpp's GGML format.

    python convert-ggml.py --model_dir=models/whisper-base --output_path=models/ggml-whisper-base.bin

The file runs in whisper.cpp itself, in pywhispercpp, and in the WhisperDesktop/Android apps.
"""
import os
import sys
from dataclasses import dataclass, field

from utils.core.cli import guarded, parse_args, print_config
from utils.inference.registry import default_model


@dataclass
class ConvertArguments:
    model_dir: str = field(default=default_model("transformers"),
                           metadata={"help": "transformers model folder (merged fine-tune or base model)"})
    output_path: str = field(default=default_model("ggml"), metadata={"help": "GGML file to write"})
    use_f16: bool = field(default=True, metadata={
        "help": "store weight matrices as float16 (half the size). False writes float32, which "
                "whisper.cpp's CPU build (as bundled in pywhispercpp 1.5) cannot run: see docs/inference.md"})


def convert(args: ConvertArguments) -> None:
    from utils.export.ggml import export_ggml

    print_config("convert-ggml.py configuration", args)
    summary = export_ggml(args.model_dir, args.output_path, use_f16=args.use_f16)
    print(f"wrote {args.output_path}: {summary['tensors']} tensors, {summary['vocab']} tokens, "
          f"{summary['n_mels']} mel bins, {'f16' if summary['f16'] else 'f32'}, "
          f"{os.path.getsize(args.output_path) / 2**20:.1f} MiB")


def main(argv=None) -> int:
    args = parse_args(ConvertArguments, argv, description=__doc__)
    return guarded(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())
