"""The numeric precision of the LM's forward passes: the `precision` param (auto | bf16 | float32) of
pretrain, evaluate, link and ner_model.

`auto` runs bf16 autocast only where the hardware does bf16 matmuls natively: a CUDA device with bf16
support, or a CPU whose flags include `amx_bf16` or `avx512_bf16` (Sapphire Rapids and later, Zen 4
and later), read from /proc/cpuinfo (else `lscpu`), never assumed. Elsewhere bf16 is emulated, slower
than float32 and less exact, so `auto` is float32 there. `bf16` forces autocast (also where it is
emulated: to test, or to match a bf16 machine's numbers); `float32` runs without autocast.

Only forward passes run under `autocast`: the losses switch it off around themselves
(`bali.modeling.losses`), gradients of float32 weights are float32, and the optimiser's state stays
float32. bf16 and float32 give different vectors and losses, so the resolved precision (never
`auto`) is recorded with a run and keys the embedding cache.
"""
from __future__ import annotations

import functools
import subprocess
from contextlib import nullcontext

import torch

CHOICES = ("auto", "bf16", "float32")
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.lru_cache(maxsize=None)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux: `cpuinfo`'s first `flags` line, else lscpu's `Flags:`);
    empty when neither says, so nothing is assumed."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    for line in out.splitlines():
        if line.startswith("Flags:"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device) -> bool:
    """Whether `device` (a torch.device or its string) runs bf16 matmuls in hardware."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool(cpu_flags() & CPU_BF16_FLAGS)
    return False


def resolve(precision: str, device) -> str:
    """"bf16" or "float32": what `precision` (auto | bf16 | float32) means on `device`."""
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "float32"
    return precision


def autocast(device, resolved: str):
    """The context a forward pass runs in: bf16 autocast on `device`'s type, or nothing for float32.
    Takes a resolved precision, so a caller resolves `auto` once (and records what it got)."""
    if resolved == "float32":
        return nullcontext()
    if resolved != "bf16":
        raise ValueError(f"autocast takes a resolved precision (bf16 or float32), not {resolved!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
