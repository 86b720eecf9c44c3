"""Mixed precision on CPU: bfloat16 autocast where the processor has native bf16 arithmetic.

On x86 CPUs with AVX512-BF16 or AMX (Zen 4+, Sapphire Rapids+) oneDNN runs bf16 convolutions and matmuls at
about twice the fp32 rate; elsewhere bf16 is emulated and slower, so ``"auto"`` picks it only where native.
Weights, optimiser state and the loss stay fp32 (autocast casts per op); evaluation runs in fp32.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import torch

from medlite.errors import ConfigError

AMP_CHOICES = ("auto", "bf16", "none")


@functools.cache
def native_bf16() -> bool:
    """True when this CPU computes bf16 natively (Linux: avx512_bf16 or amx_bf16 in /proc/cpuinfo)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def resolve_amp(amp: str, device: str = "cpu") -> str:
    """ "auto" -> "bf16" or "none" for this machine and device; other values are checked and returned."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp must be one of {AMP_CHOICES}; got {amp!r}")
    if amp == "auto":
        if torch.device(device).type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "none"
        return "bf16" if native_bf16() else "none"
    return amp


def autocast(amp: str, device: str = "cpu") -> contextlib.AbstractContextManager:
    """The autocast context for a resolved ``amp`` value ("bf16" or "none") on ``device`` ("cpu", "cuda:0")."""
    if amp == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
