"""What this machine can run: CUDA, bfloat16 on the CPU, 8-bit weights. A flag the machine cannot
honour (--fp16 on a CPU, --use_8bit without bitsandbytes) is refused here in one sentence, never
silently replaced by fp32."""
from __future__ import annotations

from utils.core.errors import UserError


class DeviceError(UserError):
    """A precision or device flag this machine cannot honour; the message names the flag."""


def check_precision(*, fp16: bool, bf16: bool, use_8bit: bool) -> None:
    """GPU-only options fail loudly on CPU instead of silently training in fp32."""
    if fp16 and bf16:
        raise DeviceError("--fp16 and --bf16 exclude each other: pick one")
    import torch

    if torch.cuda.is_available():
        if bf16 and not torch.cuda.is_bf16_supported():
            raise DeviceError("--bf16: this GPU does not support bfloat16; use --fp16")
        if use_8bit:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise DeviceError("--use_8bit needs the bitsandbytes package: pip install bitsandbytes") from None
        return
    if bf16 and not cpu_supports_bf16():
        raise DeviceError("--bf16 needs a CUDA GPU or a CPU with bfloat16 instructions (AVX512-BF16 or "
                          "AMX) and this machine has neither; drop --bf16 (training on CPU runs in fp32)")
    for flag, on in (("--use_8bit", use_8bit), ("--fp16", fp16)):
        if on:
            raise DeviceError(f"{flag} needs a CUDA GPU and this machine has none; drop {flag} "
                              f"(training on CPU runs in fp32)")


def bf16_wanted(choice: str) -> bool:
    """A script's --bf16=auto|true|false: auto = where it is fast (a CUDA GPU with bf16, or a CPU with
    bfloat16 instructions)."""
    import torch

    if choice != "auto":
        return choice == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX). Elsewhere
    bfloat16 autocast is emulated and slower than fp32, so --bf16 is refused there."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (fast bfloat16 matrix products; torch's check, private, so asked
    defensively)."""
    import torch

    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(is_amx is not None and is_amx())
