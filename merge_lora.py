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


@dataclass
class MergeArguments:
    lora_model: str = field(default="output/whisper-base/checkpoint-best",
                            metadata={"help": "Adapter folder written by finetune.py (checkpoint-best/-final)."})
    output_dir: str = field(default="models/", metadata={"help": "The merged model goes to "
                                                                  "<output_dir>/<base name>-finetune."})
    local_files_only: bool = field(default=False, metadata={"help": "Never download the base model."})


def merge(args: MergeArguments) -> str:
    from utils.core.models import model_name, save_model_folder
    from utils.training.callbacks import print_config
    from utils.training.lora import load_merged

    print_config("Configuration", args)
    model, processor, base = load_merged(args.lora_model, local_files_only=args.local_files_only)
    out_dir = os.path.join(args.output_dir, f"{model_name(base)}-finetune")
    save_model_folder(model, processor, out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"done: merged {args.lora_model} into {base} ({n_params / 1e6:.1f} M parameters); saved {out_dir}")
    return out_dir


def main(argv=None) -> int:
    from transformers import HfArgumentParser

    from utils.core.models import ModelLoadError
    from utils.inference.transcriber import report_errors

    parser = HfArgumentParser(MergeArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return report_errors(lambda: merge(args), ModelLoadError, status=2)


if __name__ == "__main__":
    sys.exit(main())
