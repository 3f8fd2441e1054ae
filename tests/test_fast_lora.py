"""The CPU LoRA step (utils/training/fast_lora.py): nn.Dropout's distribution from far fewer random draws, and
peft's adapter sum inside one matrix product, with the same values and gradients as peft's own."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from utils.training.fast_lora import FusedLoraLinear, GapDropout, dropped_positions, speed_up_lora


def test_dropped_positions_are_a_bernoulli_process():
    generator = torch.Generator().manual_seed(0)
    n, p, trials = 1000, 0.3, 3000
    masks = torch.zeros(trials, n, dtype=torch.bool)
    for row in masks:
        positions = dropped_positions(n, p, generator)
        assert positions.numel() == 0 or (positions.min() >= 0 and positions.max() < n)
        assert torch.equal(positions, positions.unique())        # sorted, no repeats
        row[positions] = True
    counts = masks.sum(1).double()
    # Binomial(n, p): mean np = 300, variance np(1-p) = 210 (tolerances about 6 standard errors)
    assert counts.mean().item() == pytest.approx(n * p, abs=6 * math.sqrt(n * p * (1 - p) / trials))
    assert counts.var().item() == pytest.approx(n * p * (1 - p), rel=0.16)
    # every position is dropped with probability p, independently of its neighbour
    assert masks.double().mean(0).sub(p).abs().max().item() < 6 * math.sqrt(p * (1 - p) / trials)
    both = (masks[:, 1:] & masks[:, :-1]).double().mean().item()
    assert both == pytest.approx(p * p, abs=0.01)
    # a small p and a long tensor: the draws run past the first batch of gaps only rarely, never wrongly
    assert dropped_positions(10, 0.01, generator).lt(10).all()
    assert dropped_positions(50_000, 0.05, generator).numel() == pytest.approx(2500, abs=6 * math.sqrt(2375))


def test_gap_dropout_scales_the_kept_values_and_routes_gradients_through_them_only():
    dropout = GapDropout(0.1, torch.Generator().manual_seed(1)).train()
    x = torch.randn(4, 300, 64, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert 0.08 < 1 - kept.double().mean().item() < 0.12
    assert torch.allclose(y[kept], x[kept] / 0.9)
    y.sum().backward()
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.9)) and (x.grad[~kept] == 0).all()
    # a transposed (non-contiguous) input works too
    assert dropout(x.detach().transpose(1, 2)).shape == (4, 64, 300)
    # eval mode and p = 0 leave the input alone; the same seed gives the same mask
    assert torch.equal(dropout.eval()(x), x) and torch.equal(GapDropout(0.0).train()(x), x)
    a = GapDropout(0.1, torch.Generator().manual_seed(5)).train()(x.detach())
    b = GapDropout(0.1, torch.Generator().manual_seed(5)).train()(x.detach())
    assert torch.equal(a, b)


def _tiny_lora(tiny_whisper_dir, dropout):
    from transformers import WhisperForConditionalGeneration

    from utils.training.lora import add_adapter

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    model = add_adapter(model, use_adalora=False, r=4, alpha=8, dropout=dropout,
                        target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], freeze_encoder=True)
    with torch.no_grad():   # adapters start as a no-op (B = 0); make them count
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    return model.train()


def _loss_and_grads(model, features, labels):
    model.zero_grad()
    loss = model(input_features=features, labels=labels).loss
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_fused_sum_gives_peft_s_loss_and_gradients(tiny_whisper_dir, monkeypatch):
    from peft.tuners.lora import Linear as LoraLinear

    peft_model = _tiny_lora(tiny_whisper_dir, dropout=0.0)
    fused = copy.deepcopy(peft_model)
    speed_up_lora(fused, seed=0)
    layers = [m for m in fused.modules() if isinstance(m, FusedLoraLinear)]
    assert len(layers) == 2 * 8 + 2 * 2        # 2 decoder layers: q/k/v/out in self- and cross-attention, fc1, fc2
    torch.manual_seed(0)
    features, labels = torch.randn(2, 80, 3000), torch.randint(0, 1000, (2, 6))
    loss, grads = _loss_and_grads(peft_model, features, labels)
    with monkeypatch.context() as patch:     # the fused path runs: peft's forward is never reached
        patch.setattr(LoraLinear, "forward", lambda *a, **k: pytest.fail("fell back to peft's forward"))
        fused_loss, fused_grads = _loss_and_grads(fused, features, labels)
    assert fused_loss == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == fused_grads.keys() and len(grads) == 2 * len(layers)
    for name in grads:
        assert torch.allclose(fused_grads[name], grads[name], rtol=1e-4, atol=1e-7), name
    # With the adapters switched off, or merged, it is peft's forward (the base model's output).
    with fused.disable_adapter(), peft_model.disable_adapter():
        assert torch.allclose(fused(input_features=features, labels=labels).loss,
                              peft_model(input_features=features, labels=labels).loss)


def test_speed_up_lora_swaps_every_adapter_dropout_onto_one_generator(tiny_whisper_dir):
    model = _tiny_lora(tiny_whisper_dir, dropout=0.05)
    generator = speed_up_lora(model, seed=3)
    dropouts = [d for m in model.modules() if hasattr(m, "lora_dropout") for d in m.lora_dropout.values()]
    assert len(dropouts) == 20 and all(type(d) is GapDropout and d.p == 0.05 and d.generator is generator
                                       for d in dropouts)
    # Masks follow the generator alone: reseeding it repeats the step exactly, whatever else drew numbers.
    torch.manual_seed(0)
    features, labels = torch.randn(2, 80, 3000), torch.randint(0, 1000, (2, 6))
    generator.manual_seed(11)
    first = _loss_and_grads(model, features, labels)[0]
    torch.rand(1000)
    generator.manual_seed(11)
    assert _loss_and_grads(model, features, labels)[0] == first
