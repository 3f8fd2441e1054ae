"""Merge a LoRA/AdaLoRA adapter into its base Whisper model and save a standalone model folder.

    python merge_lora.py --lora_model=output/whisper-base/checkpoint-best --output_dir=models/

The base model is the one named in the adapter's adapter_config.json; the result,
<output_dir>/<base name>-finetune, loads with from_pretrained, infer.py, and (after conversion)
faster-whisper.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from utils.core.cli import guarded, parse_args, print_config
from utils.core.files import check_output_path
from utils.core.models import model_name, save_model_folder


@dataclass
class MergeArguments:
    lora_model: str = field(default="output/whisper-base/checkpoint-best",
                            metadata={"help": "Adapter folder written by finetune.py (checkpoint-best/-final)."})
    output_dir: str = field(default="models/", metadata={"help": "The merged model goes to "
                                                                  "<output_dir>/<base name>-finetune."})
    local_files_only: bool = field(default=False, metadata={"help": "Never download the base model."})


def merge(args: MergeArguments) -> None:
    from utils.training.lora import load_merged

    print_config("merge_lora.py configuration", args)
    check_output_path(args.output_dir, "--output_dir", kind="dir")
    model, processor, base = load_merged(args.lora_model, local_files_only=args.local_files_only)
    out_dir = os.path.join(args.output_dir, f"{model_name(base)}-finetune")
    save_model_folder(model, processor, out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"done: merged {args.lora_model} into {base} ({n_params / 1e6:.1f} M parameters); saved {out_dir}")


def main(argv=None) -> int:
    args = parse_args(MergeArguments, argv, description=__doc__)
    return guarded(lambda: merge(args))


if __name__ == "__main__":
    sys.exit(main())
