"""The arithmetic floor of a Whisper transcription on this machine: what the matrix products alone must cost.

    floor = windows x encoder FLOPs per 30 s window / measured matmul FLOP/s in the row's dtype
          + decoder steps x decoder weight bytes / measured memory bandwidth

A greedy decoder reads every decoder weight once per step; a batch of windows shares that read, so a
batched row's decoder steps are its tokens over the batch size. Attention over the 1500 encoder frames,
the log-mel spectrogram and the tokenizer are left out, so no real run can reach the floor: how far a
row lies above it is the overhead an engine could still remove.
"""
from __future__ import annotations

import json
import math
import os
import time

# Bytes one weight takes in each compute type the benchmark rows use.
WEIGHT_BYTES = {"int8": 1, "bfloat16": 2, "float16": 2, "float32": 4}
# The products the benchmark times: one encoder layer's feed-forward input, (frames x d) @ (d x 4d).
MATMUL_SHAPE = (1500, 512, 2048)
WINDOW_S = 30.0


def encoder_flops(config: dict) -> float:
    """FLOPs of one encoder pass over a 30 s window (multiply-add = 2 FLOPs), from a transformers
    WhisperConfig as a dict."""
    d, ffn, layers = config["d_model"], config["encoder_ffn_dim"], config["encoder_layers"]
    frames, mels = config["max_source_positions"], config["num_mel_bins"]
    convs = 2 * (2 * frames) * mels * 3 * d + 2 * frames * d * 3 * d
    per_layer = 2 * frames * d * d * 4 + 2 * frames * d * ffn * 2 + 2 * 2 * frames * frames * d
    return float(convs + layers * per_layer)


def decoder_weights(config: dict) -> int:
    """Weights a decoder step reads: every decoder layer and the (tied) output projection."""
    d, ffn, layers, vocab = config["d_model"], config["decoder_ffn_dim"], config["decoder_layers"], config["vocab_size"]
    # self-attention q,k,v,o + cross-attention q,o (its k,v are computed once per window) + feed-forward
    per_layer = 4 * d * d + 2 * d * d + 2 * d * ffn
    return layers * per_layer + vocab * d


def measure_matmul_gflops(dtype: str, threads: int, repeats: int = 5) -> float:
    """Best of `repeats` timed (1500 x 512) @ (512 x 2048) products in torch, GFLOP/s."""
    import torch

    torch.set_num_threads(threads)
    m, k, n = MATMUL_SHAPE
    if dtype == "int8":
        # torch._int_mm needs sizes that are multiples of 8.
        a = torch.randint(-127, 127, (m + 4, k), dtype=torch.int8)
        b = torch.randint(-127, 127, (k, n), dtype=torch.int8)
        product = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        kind = getattr(torch, dtype)
        a, b = torch.randn(m, k, dtype=kind), torch.randn(k, n, dtype=kind)
        product = lambda: a @ b  # noqa: E731
    product()
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - began)
    return 2 * m * k * n / best / 1e9


def measure_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best of `repeats` copies of a `megabytes` array: bytes read plus bytes written per second, GB/s."""
    import numpy as np

    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - began)
    return 2 * source.nbytes / best / 1e9


def measure_machine(threads: int) -> dict:
    """This CPU's matmul GFLOP/s per dtype and its memory bandwidth, as the floor uses them.

    torch's int8 product (torch._int_mm) is slower than its float ones on some CPUs, while engines'
    own int8 kernels are not; an int8 row's floor therefore uses the fastest of the three rates, so
    that it stays a lower bound."""
    rates = {dtype: measure_matmul_gflops(dtype, threads) for dtype in ("float32", "bfloat16", "int8")}
    rates["int8"] = max(rates.values())
    rates["float16"] = rates["float32"]   # CPUs multiply float16 weights in float32
    return {"gflops": rates, "bandwidth_gbs": measure_bandwidth_gbs(), "threads": threads}


def model_config(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def floor_seconds(config: dict, machine: dict, dtype: str, duration_s: float, tokens: int,
                  batch_size: int = 1) -> dict:
    """{"encoder_s", "decoder_s", "seconds"}: the floor of one row (see the module's docstring)."""
    windows = math.ceil(duration_s / WINDOW_S)
    encoder_s = windows * encoder_flops(config) / (machine["gflops"][dtype] * 1e9)
    steps = math.ceil(tokens / max(batch_size, 1))
    decoder_s = steps * decoder_weights(config) * WEIGHT_BYTES[dtype] / (machine["bandwidth_gbs"] * 1e9)
    return {"encoder_s": encoder_s, "decoder_s": decoder_s, "seconds": encoder_s + decoder_s}
