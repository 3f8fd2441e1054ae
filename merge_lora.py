"""Merge a LoRA/AdaLoRA adapter into its base Whisper model and save a standalone model folder.

    python merge_lora.py --lora_model=output/whisper-base/checkpoint-best --output_dir=models/

The base model is the one named in the adapter's adapter_config.json; the result,
<output_dir>/<base name>-finetune, loads with from_pretrained, pipeline("automatic-speech-recognition"),
infer.py, and (after conversion) faster-whisper. Its generation_config records --language and --task
(the adapter does not know what it was trained on), so generate() and pipeline() need no arguments.
With --push_to_hub it is uploaded to --hub_model_id as well.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError
from utils.core.files import check_output_path
from utils.core.languages import TASKS, to_language_code
from utils.core.models import model_name, save_model_folder


@dataclass
class MergeArguments:
    lora_model: str = field(default="output/whisper-base/checkpoint-best",
                            metadata={"help": "Adapter folder written by finetune.py (checkpoint-best/-final)."})
    output_dir: str = field(default="models/", metadata={"help": "The merged model goes to "
                                                                  "<output_dir>/<base name>-finetune."})
    local_files_only: bool = field(default=False, metadata={"help": "Never download the base model."})
    language: Optional[str] = field(default="Chinese", metadata={
        "help": "The language the adapter was trained on (finetune.py --language, same default), recorded in the "
                "merged model's generation_config; 'None' records none, so the model detects the language. "
                "Ignored for English-only models."})
    task: str = field(default="transcribe", metadata={"help": "The task recorded with the language: transcribe or "
                                                              "translate (finetune.py --task).", "choices": TASKS})
    push_to_hub: bool = field(default=False, metadata={"help": "Also upload the merged model folder to the Hugging "
                                                               "Face Hub repository --hub_model_id."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repository <user>/<name> for "
                                                                        "--push_to_hub (created when missing)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the --hub_model_id repository "
                                                                    "private."})

    def __post_init__(self):
        try:
            to_language_code(self.language)
        except ValueError as exc:
            raise UsageError(f"--language: {exc}") from None
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id=<user>/<name>")
        if (self.hub_model_id or self.hub_private_repo) and not self.push_to_hub:
            raise UsageError("--hub_model_id/--hub_private_repo do nothing without --push_to_hub")


def merge(args: MergeArguments) -> None:
    from utils.training.lora import adapter_base, check_hub_push, load_merged, push_folder, record_language

    print_config("merge_lora.py configuration", args)
    check_output_path(args.output_dir, "--output_dir", kind="dir")
    base, note = adapter_base(args.lora_model)
    if note:
        print(note, flush=True)
    if args.push_to_hub:
        check_hub_push(args.hub_model_id)
    model, processor, base = load_merged(args.lora_model, local_files_only=args.local_files_only, base=base)
    record_language(model, args.language, args.task)
    out_dir = os.path.join(args.output_dir, f"{model_name(base)}-finetune")
    save_model_folder(model, processor, out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    language = model.generation_config.language if getattr(model.generation_config, "is_multilingual", False) else None
    print(f"done: merged {args.lora_model} into {base} ({n_params / 1e6:.1f} M parameters, language "
          f"{language or 'detected'}, task {args.task}); saved {out_dir}", flush=True)
    if args.push_to_hub:
        url = push_folder(out_dir, args.hub_model_id, private=args.hub_private_repo)
        print(f"pushed {out_dir} to {args.hub_model_id}: {url}", flush=True)


def main(argv=None) -> int:
    args = parse_args(MergeArguments, argv, description=__doc__)
    return guarded(lambda: merge(args))


if __name__ == "__main__":
    sys.exit(main())
