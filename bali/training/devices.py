"""Where a pre-training run goes: the device of this process (`pretrain.device`), batches moved there,
the gloo group rank 0's evaluation barrier waits on under DDP, and torch.compile's graph count."""
from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch


def to_device(obj, device: torch.device, non_blocking: bool = False):
    """Every tensor of a batch, at any depth of dicts, lists and tuples, on `device`."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def pick_device(p: dict) -> torch.device:
    """`pretrain.device`: auto | cpu | cuda. On CUDA, the GPU of this process's LOCAL_RANK
    (torchrun sets it; one process per GPU), made the current device."""
    want = p["device"]
    if want not in ("auto", "cpu", "cuda"):
        raise ValueError(f"pretrain.device must be auto, cpu or cuda, not {want!r}")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("pretrain.device is cuda, but torch sees no GPU")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process (each new shape specialisation, train / eval
    mode or grad mode of the LM adds one; past `recompile_limit` per frame dynamo runs it eagerly)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def gloo_side_group(world_size: int):
    """The gloo group rank 0's evaluation barrier waits on. Across nodes gloo binds the interface
    the hostname resolves to unless GLOO_SOCKET_IFNAME names one (torch.distributed's documented
    setting); on hosts whose name resolves to a loopback address the barrier would hang."""
    import torch.distributed as dist

    nodes_apart = int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) < world_size
    if nodes_apart and not os.environ.get("GLOO_SOCKET_IFNAME") and dist.get_rank() == 0:
        print("pretrain: several nodes and GLOO_SOCKET_IFNAME unset: the evaluation barrier's gloo group binds the "
              "interface this host's name resolves to; set GLOO_SOCKET_IFNAME (e.g. eth0) if that is not the "
              "nodes' network", file=sys.stderr)
    return dist.new_group(backend="gloo", timeout=timedelta(hours=12))
