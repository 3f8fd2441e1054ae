"""What each process of a multi-process run holds: the bytes of its parameters and optimizer state, against the
whole model's. Under DDP every process holds everything; under FSDP (configs/accelerate_fsdp.yaml) about 1/N,
which is the evidence that a run is really sharded (docs/scale.md)."""
from __future__ import annotations

import os
from typing import Iterable

from transformers import TrainerCallback


def check_sharding_device(cuda: bool) -> None:
    """Refuse `accelerate launch` with FSDP where accelerate would not shard: without GPUs it silently trains
    every process on a full copy (DDP). accelerate 1.x (state.py, AcceleratorState) switches to FSDP only from
    MULTI_GPU/XPU/NPU/HPU/MLU/MUSA/SDAA/NEURON, never from MULTI_CPU."""
    from utils.core.errors import UsageError

    if not cuda and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        raise UsageError("accelerate's FSDP needs GPUs: on CPUs accelerate trains every process on a full copy of "
                         "the model instead; use --multi_gpu (DDP) there, or tools/check_fsdp.py to see FSDP2 shard "
                         "this model on CPUs (docs/scale.md)")


def local_bytes(tensors: Iterable) -> int:
    """Bytes these tensors occupy in this process: a DTensor (FSDP2) counts its local shard only."""
    total = 0
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def gathered_adapter_state(model):
    """The adapter's weights as whole tensors when FSDP2 has sharded them (DTensors), else None.

    Every process must call it (each DTensor's full_tensor() is a collective, taken in the same state-dict order
    everywhere); only the adapter entries are gathered, not the frozen base model, so it costs the adapter's
    size. PeftModel.save_pretrained(state_dict=...) then writes them from process 0; without it, each process
    would save its own 1/N shard under the full names."""
    from torch.distributed.tensor import DTensor

    state = model.state_dict()
    if not any(isinstance(value, DTensor) for value in state.values()):
        return None
    return {name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().cpu()
            for name, value in state.items() if "lora_" in name or "ranknum" in name}


def optimizer_state_tensors(optimizer) -> list:
    import torch

    optimizer = getattr(optimizer, "optimizer", optimizer)    # accelerate's AcceleratedOptimizer wraps it
    return [value for state in optimizer.state.values() for value in state.values()
            if torch.is_tensor(value) and value.dim() > 0]


class ShardingReport(TrainerCallback):
    """After the first optimizer step (when the optimizer state exists) each process prints one line:
    `rank R/N: holds P of F MiB of parameters (S%), optimizer state O MiB`."""

    def __init__(self, trainer):
        self.trainer = trainer
        # The model before Trainer wraps (and FSDP shards) it: the size every process would otherwise hold.
        self.full_bytes = local_bytes(trainer.model.parameters())
        self.done = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.done:
            return
        self.done = True
        held = local_bytes(self.trainer.model_wrapped.parameters())
        optimizer = local_bytes(optimizer_state_tensors(self.trainer.optimizer))
        print(f"rank {args.process_index}/{args.world_size}: holds {held / 2**20:.3f} of {self.full_bytes / 2**20:.3f} "
              f"MiB of parameters ({100 * held / self.full_bytes:.0f}%), optimizer state {optimizer / 2**20:.3f} MiB"
              + (" (FSDP)" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else ""), flush=True)
