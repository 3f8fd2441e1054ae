"""One FSDP2 training step of Whisper + LoRA, sharded as configs/accelerate_fsdp.yaml asks, on any device: the
evidence that the model shards (each process prints the bytes it holds) and trains the same as one process.

    torchrun --nproc_per_node=2 tools/check_fsdp.py --base_model=models/whisper-base \\
        --train_data=dataset/zh_train.jsonl

Each process wraps every layer class the config's fsdp_transformer_layer_cls_to_wrap names, then the whole
model, with torch's fully_shard (what `accelerate launch --config_file configs/accelerate_fsdp.yaml` does on
GPUs), takes its share of the first --global_batch_size clips, and runs forward, backward and one AdamW step.
It runs on CPUs too (gloo), where accelerate itself does not apply FSDP (docs/scale.md says why).
Without a launcher it runs as one process: the reference an N-process run must match. --save_dir saves the
adapter after the step the way finetune.py saves checkpoint-final (shards gathered, written by process 0).
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.cli import guarded, parse_args  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.core.models import default_base_model  # noqa: E402


@dataclass
class Arguments:
    train_data: str = field(default="dataset/zh_train.jsonl", metadata={"help": "Manifest whose first clips form "
                                                                                "the batch."})
    base_model: str = field(default_factory=default_base_model, metadata={"help": "Whisper model folder."})
    config: str = field(default="configs/accelerate_fsdp.yaml", metadata={
        "help": "accelerate config whose fsdp_transformer_layer_cls_to_wrap names the layers to shard."})
    global_batch_size: int = field(default=4, metadata={"help": "Clips in the step, split among the processes."})
    language: str = field(default="Chinese", metadata={"help": "Language of clips without their own."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate."})
    local_files_only: bool = field(default=True, metadata={"help": "Never download the model."})
    seed: int = field(default=3, metadata={"help": "Seed of the adapters' initial weights."})
    save_dir: str = field(default="", metadata={
        "help": "After the step, save the adapter here from process 0 as finetune.py saves checkpoint-final "
                "(the shards gathered into whole tensors); '' = do not save."})

    def __post_init__(self):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.global_batch_size < world or self.global_batch_size % world:
            raise UsageError(f"--global_batch_size={self.global_batch_size} must be a multiple of the {world} "
                             f"processes")


def layer_classes(config_path: str) -> list:
    import yaml

    if not os.path.isfile(config_path):
        raise UsageError(f"--config: {config_path} not found")
    with open(config_path, encoding="utf-8") as f:
        fsdp = (yaml.safe_load(f) or {}).get("fsdp_config") or {}
    names = [n.strip() for n in str(fsdp.get("fsdp_transformer_layer_cls_to_wrap", "")).split(",") if n.strip()]
    if not names:
        raise UsageError(f"--config: {config_path} names no fsdp_config.fsdp_transformer_layer_cls_to_wrap")
    return names


def check(args: Arguments) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from utils.core.models import load_processor, load_whisper
    from utils.data.collator import SpeechSeq2SeqCollator
    from utils.data.dataset import SpeechDataset
    from utils.training.lora import add_adapter, prepare_for_finetuning
    from utils.training.sharding import local_bytes, optimizer_state_tensors

    classes = layer_classes(args.config)
    with tempfile.TemporaryDirectory() as store:
        if "RANK" in os.environ:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        else:
            dist.init_process_group("gloo", init_method=f"file://{store}/rendezvous", rank=0, world_size=1)
        try:
            rank, world = dist.get_rank(), dist.get_world_size()
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() \
                else torch.device("cpu")
            processor = load_processor(args.base_model, local_files_only=args.local_files_only)
            model = load_whisper(args.base_model, local_files_only=args.local_files_only).to(device)
            prepare_for_finetuning(model, language=args.language, task="transcribe", use_8bit=False,
                                   gradient_checkpointing=False)
            torch.manual_seed(args.seed)
            model = add_adapter(model, use_adalora=False, r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0,
                                target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
                                freeze_encoder=False)
            full = local_bytes(model.parameters())
            wrapped = [m for m in model.modules() if type(m).__name__ in classes]
            if not wrapped:
                raise UsageError(f"--config: {args.config} wraps {', '.join(classes)}, which {args.base_model} "
                                 f"does not have")
            for module in wrapped:
                fully_shard(module)
            fully_shard(model)
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)

            dataset = SpeechDataset(args.train_data, processor, language=args.language)
            share = args.global_batch_size // world
            batch = SpeechSeq2SeqCollator(processor, model.config.decoder_start_token_id)(
                [dataset[i % len(dataset)] for i in range(rank * share, (rank + 1) * share)])
            loss = model(input_features=batch["input_features"].to(device), labels=batch["labels"].to(device)).loss
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1e9)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            optimizer.step()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            held = local_bytes(model.parameters())
            state = local_bytes(optimizer_state_tensors(optimizer))
            print(f"rank {rank}/{world}: holds {held / 2**20:.3f} of {full / 2**20:.3f} MiB of parameters "
                  f"({100 * held / full:.0f}%), optimizer state {state / 2**20:.3f} MiB; {len(wrapped)} layers + the "
                  f"model sharded; loss {mean_loss.item() / world:.5f}, grad norm {grad_norm.item():.5f}", flush=True)
            if args.save_dir:
                save_adapter(model, args.save_dir, rank, world)
        finally:
            dist.destroy_process_group()


def save_adapter(model, save_dir: str, rank: int, world: int) -> None:
    """As finetune.py saves checkpoint-final: every process takes part in the gather, process 0 writes."""
    import torch.distributed as dist

    from utils.training.sharding import gathered_adapter_state

    adapter = gathered_adapter_state(model)
    if rank == 0:
        model.save_pretrained(save_dir, safe_serialization=True, state_dict=adapter)
        print(f"adapter saved to {save_dir} "
              f"({'gathered from ' + str(world) + ' shards' if adapter is not None else 'unsharded'})", flush=True)
    dist.barrier()


def main(argv=None) -> int:
    args = parse_args(Arguments, argv, description=__doc__)
    return guarded(lambda: check(args))


if __name__ == "__main__":
    sys.exit(main())
