"""peft's LoRA training step made cheaper on a CPU, with the same mathematics: dropout masks drawn as
the positions of the dropped elements, and the adapter's output summed into the base layer's inside
one matrix product.

Why. In Whisper's decoder the cross-attention k_proj/v_proj adapters see the whole encoder output
(batch x 1500 frames x d_model) in every step, so anything peft does element by element there is
done over millions of values, twelve times a step (`python tools/microbenchmarks.py train-step`):

- peft's `nn.Dropout` draws a Bernoulli mask one element at a time on a CPU, a large share of the
  step (docs/performance.md). A Bernoulli(p) mask is the same random object as the positions of its
  zeros, and the gaps between consecutive zeros are independent Geometric(p) draws: for p = 0.05,
  one draw per twenty elements. `GapDropout` draws the gaps, multiplies by 1/(1-p) and scatters the
  zeros. Each element is still zeroed independently with probability p and the rest scaled by
  1/(1-p), exactly as nn.Dropout does; only the random numbers consumed differ.
- peft computes `result + lora_B(lora_A(dropout(x))) * scaling`: the product, the scaling and the
  sum each write a tensor of the layer's full output size. `torch.addmm(result, h, B.T,
  alpha=scaling)` does the same sum inside the product (and in backward applies the scaling to the
  rank-r side). Same value up to float rounding, no extra passes.
Neither exists in torch or peft (their dropout draws per element on a CPU; peft has no fused path),
hence this module. Both apply on a CPU only; on a GPU, torch's kernels are fused and fast already.

The masks come from a generator of their own (`speed_up_lora`), which finetune.py reseeds from
(--seed, process, optimizer step) before every step (utils.training.callbacks.DropoutSeedCallback). They then
depend on nothing else that draws random numbers: a run that reads stored encoder outputs in the main
process draws the same masks as one whose DataLoader workers decode audio, and a resumed run the same
as one that was never interrupted.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn


def dropped_positions(numel: int, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Sorted flat indices in [0, numel) of the elements a Bernoulli(p) mask drops."""
    expected = numel * p
    # Enough gaps to pass `numel` almost always (mean + 6 standard deviations); the loop covers the rest.
    draws = int(expected + 6 * math.sqrt(expected * (1 - p))) + 16

    def gaps():
        return torch.empty(draws, dtype=torch.int64).geometric_(p, generator=generator).cumsum_(0)

    positions = gaps().sub_(1)
    while positions[-1] < numel:
        positions = torch.cat([positions, gaps().add_(positions[-1])])
    return positions[:int(torch.searchsorted(positions, numel))]


class GapDropout(nn.Dropout):
    """nn.Dropout whose CPU training mask is drawn as the gaps between dropped elements."""

    def __init__(self, p: float, generator: Optional[torch.Generator] = None):
        super().__init__(p)
        self.generator = generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0 < self.p < 1 or self.inplace or input.device.type != "cpu":
            return super().forward(input)
        output = input * (1.0 / (1.0 - self.p))
        if not output.is_contiguous():
            output = output.contiguous()
        output.view(-1).index_fill_(0, dropped_positions(output.numel(), self.p, self.generator), 0)
        return output


class FusedLoraLinear(LoraLinear):
    """peft's LoRA Linear whose adapter output is added to the base output inside one addmm (CPU, one
    plain LoRA adapter active); every other case is peft's own forward."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        names = self.active_adapters
        if (args or kwargs or x.device.type != "cpu" or self.disable_adapters or self.merged or len(names) != 1
                or names[0] not in self.lora_A or names[0] in self.lora_variant
                or not isinstance(self.base_layer, nn.Linear)):
            return super().forward(x, *args, **kwargs)
        name = names[0]
        lora_a, lora_b = self.lora_A[name], self.lora_B[name]
        if lora_b.bias is not None or x.dtype != lora_a.weight.dtype:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        hidden = lora_a(self.lora_dropout[name](x))
        summed = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]),
                             lora_b.weight.t(), alpha=self.scaling[name])
        return summed.view(result.shape).to(result.dtype)


def speed_up_lora(model: nn.Module, seed: int) -> torch.Generator:
    """Give every LoRA/AdaLoRA adapter in `model` GapDropout (drawing from one new generator seeded with
    `seed`, which is returned) and every plain LoRA Linear the fused sum."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if type(module) is LoraLinear:
            # A subclass that only overrides forward: the module's weights, state and peft's handling
            # (saving, merging, isinstance checks) stay as they are.
            module.__class__ = FusedLoraLinear
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict):
            for name, dropout in list(dropouts.items()):
                if type(dropout) is nn.Dropout:
                    dropouts[name] = GapDropout(dropout.p, generator)
    return generator
