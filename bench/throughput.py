"""What the pre-training and embedding benchmarks share: the model's own FLOP count, the same run's
plain-matmul bound at the same precision and thread count, and the CPU's name.

The bound is torch.matmul of a (2048 x 384) by a (384 x 1536) matrix, the shape of MiniLM's
feed-forward layer over a batch of tokens, repeated: what this machine's BLAS gives a dense matmul
at this precision here and now (other load included), so achieved FLOP/s over it is the share of
the machine the model's work reaches (MFU against the matmul bound).
"""
from __future__ import annotations

import platform
import subprocess
import time
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

DTYPE = {"float32": torch.float32, "bf16": torch.bfloat16}


def cpu_model() -> str:
    """lscpu's model name (the processor's name elsewhere)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def matmul_flops_per_s(precision: str, device: torch.device, seconds: float = 2.0, m: int = 2048, k: int = 384,
                       n: int = 1536) -> float:
    """FLOP/s of a plain (m x k) @ (k x n) matmul in `precision`, repeated for about `seconds` after
    two untimed ones (the threads' and the allocator's warm-up)."""
    a = torch.randn(m, k, device=device, dtype=DTYPE[precision])
    b = torch.randn(k, n, device=device, dtype=DTYPE[precision])
    for _ in range(2):
        torch.matmul(a, b)
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:  # on CUDA the launches are timed, and the queue at the sync
        torch.matmul(a, b)
        reps += 1
    sync(device)
    return 2 * m * k * n * reps / (time.perf_counter() - t0)


def bf16_over_float32(resolved: str, bound: float, device: torch.device) -> float:
    """The plain matmul's bf16 FLOP/s over its float32 FLOP/s, here and now (`bound`: the run's own
    precision's, the other measured now): about 1 where bf16 is emulated, 2 or more where native."""
    other = matmul_flops_per_s("float32" if resolved == "bf16" else "bf16", device)
    return bound / other if resolved == "bf16" else other / bound


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def counting_flops():
    """FlopCounterMode with the CPU's fused attention kernels counted too (torch's table has the CUDA
    ones only: without these the attention's matmuls would be missing from a CPU count)."""
    aten = torch.ops.aten

    def forward(q, k, v, *args, out_shape=None, **kwargs) -> int:  # shapes: FlopCounterMode passes them
        return sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, q, k, v)

    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        yield counter
