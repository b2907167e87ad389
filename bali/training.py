"""The pre-training loop: AdamW with separate learning rates for the LM and the rest, cosine schedule
with warm-up min(warmup_fraction of steps, warmup_max_steps), gradient accumulation and clipping,
bf16 autocast on GPU, DDP under torchrun, checkpoints with exact resume, dvclive logs.

Device: `pretrain.device` (auto = the local rank's GPU when there is one, else the CPU). Every
tensor of a batch, nested ones included, goes there through `to_device`. Speed levers, used on CUDA
only (no-ops on the CPU): TF32 matmuls, fused AdamW, `torch.compile` of the LM (dynamic shapes:
batches are padded to their own longest sentence), pinned batches with non-blocking copies.

Resuming is the training code's job: a checkpoint holds the model, optimiser, scheduler, every
rank's CPU and CUDA RNG state and the data position (epoch, batches done). Batches are fixed by
(seed, epoch, batch number), so the sampler starting at the next batch replays the same data.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

import torch
from tqdm import tqdm

from bali.data.batches import TrainingData, loader
from bali.modeling.model import BaliModel

CHECKPOINT = "checkpoint.pt"
LOSSES = ("loss", "mlm", "contrastive", "name", "synonym", "link")
# Where and how fast a run goes, and what it logs, not what it trains: a checkpoint made with other
# values of these is resumed.
NOT_IN_RUN_KEY = ("workers", "checkpoint_every", "checkpoint_dir", "dvclive_dir", "eval_every", "eval_task",
                  "val_batches", "device", "tf32", "fused_adamw", "compile", "pin_memory")


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


def make_loader(data: TrainingData, p: dict, device: torch.device, rank: int = 0, world_size: int = 1):
    """The training batches of `data` for these params (the benchmarks build theirs here too)."""
    return loader(data, p["batch_size"], p["base"]["seed"], p["workers"], rank, world_size,
                  pin_memory=device.type == "cuda" and p["pin_memory"], neighbors=p["neighbors"],
                  mlm_probability=p["mlm_probability"], linear_graph=p["graph_encoder"] == "linear",
                  synonyms=p["synonym_weight"] > 0, links=p["link_weight"] > 0)


def build_model(p: dict, lm_path: str, verbose: bool = False) -> BaliModel:
    return BaliModel(lm_path, graph_encoder=p["graph_encoder"], layers=p["layers"], heads=p["heads"],
                     dropout=p["dropout"], attention_dropout=p["attention_dropout"], residual=p["residual"],
                     zero_init=p["zero_init"], fresh_mlm_head=p["fresh_mlm_head"], loss=p["loss"],
                     temperature=p["temperature"], mlm_weight=p["mlm_weight"], contrastive_weight=p["contrastive_weight"],
                     name_weight=p["name_weight"], name_negatives=p["name_negatives"],
                     synonym_weight=p["synonym_weight"], link_weight=p["link_weight"],
                     link_anchor=p["link_anchor"], link_temperature=p["link_temperature"], gather_negatives=p["gather_negatives"], verbose=verbose)


def optimizer(model: BaliModel, p: dict, fused: bool = False) -> torch.optim.Optimizer:
    lm = {id(q) for q in model.lm.parameters()}
    groups = [{"params": [q for q in model.parameters() if id(q) in lm], "lr": p["lm_lr"]},
              {"params": [q for q in model.parameters() if id(q) not in lm], "lr": p["other_lr"]}]
    return torch.optim.AdamW(groups, weight_decay=p["weight_decay"], fused=fused or None)


def prepare(model: BaliModel, p: dict, device: torch.device) -> tuple[BaliModel, torch.optim.Optimizer]:
    """The model on `device` with the speed levers that apply there, and its optimiser."""
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(p["tf32"])
    model.to(device)
    if cuda and p["compile"]:
        model.lm.compile(dynamic=True)  # in place: the state dict keeps its keys
    return model, optimizer(model, p, fused=cuda and p["fused_adamw"])


def autocast_for(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def schedule(opt: torch.optim.Optimizer, total: int, p: dict) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(int(p["warmup_fraction"] * total), p["warmup_max_steps"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def run_key(p: dict, dataset_dir: Path, lm_path: str) -> str:
    """What a checkpoint must match to be resumed: the params that change training, the dataset,
    the base model and the checkpoint format."""
    stats = (Path(dataset_dir) / "stats.json").read_text() if (Path(dataset_dir) / "stats.json").exists() else ""
    kept = {k: v for k, v in p.items() if k not in NOT_IN_RUN_KEY}
    return json.dumps({"params": kept, "dataset": stats, "lm": str(lm_path), "format": 2}, sort_keys=True)


def forward_backward(wrapped, batch: dict, device: torch.device, accumulate: int) -> dict:
    """One micro-batch: forward under autocast (losses in float32 inside), backward of loss / accumulate."""
    with autocast_for(device):
        out = wrapped(batch)
    (out["loss"] / accumulate).backward()
    return out


def optimizer_step(model, opt, sched, p: dict) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), p["max_grad_norm"])
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def loss_vector(out: dict) -> torch.Tensor:
    return torch.stack([out[k].detach().float() for k in LOSSES])


def mean_over_ranks(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """The ranks' mean: the global batch's loss (each rank's MLM term is its share of the global
    sum times the world size; the gathered contrastive terms are the same on every rank)."""
    if world_size > 1:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        x /= world_size
    return x


def rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def save_checkpoint(path: Path, key: str, model, opt, sched, epoch: int, done: int, step: int,
                    device: torch.device, rank: int, world_size: int) -> None:
    """Collective under DDP: every rank's RNG state is gathered; rank 0 writes."""
    states = [rng_state(device)]
    if world_size > 1:
        import torch.distributed as dist

        states = [None] * world_size
        dist.all_gather_object(states, rng_state(device))
    if rank != 0:
        return
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": states, "epoch": epoch, "batches_done": done, "step": step, "key": key}, tmp)
    os.replace(tmp, path)


def restore_rng(states: list, device: torch.device, rank: int) -> None:
    state = states[rank % len(states)]  # a resume on fewer or more ranks still restores a state
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def validation_loss(model: BaliModel, dl, sampler, device: torch.device, world_size: int, limit: int) -> dict:
    """Mean losses over the validation split's first `limit` batches (0: all), the same batches and
    masks every time (epoch 0 of the seeded order), dropout off."""
    model.eval()
    sampler.set_epoch(0)
    total, n = torch.zeros(len(LOSSES), device=device), 0
    with torch.no_grad():
        for batch in dl:
            with autocast_for(device):
                total += loss_vector(model(to_device(batch, device, non_blocking=True)))
            n += 1
            if limit and n >= limit:
                break
    model.train()
    figures = mean_over_ranks(total / max(n, 1), world_size).tolist()
    return {f"val/{k}": v for k, v in zip(LOSSES, figures)}


def train(dataset_dir: Path, run_dir: Path, p: dict, lm_path: str, rank: int = 0, world_size: int = 1,
          stop_after: int | None = None, live=None, evaluate=None) -> BaliModel:
    """Train until p['max_steps'] (or p['epochs']); checkpoints go to run_dir. `stop_after` ends the
    run early after that many optimiser steps (to test resuming). Every p['eval_every'] steps (and
    before the first) the validation split's loss is logged on every rank's share, and
    `evaluate(lm) -> {name: value}` runs on rank 0 while the others wait outside NCCL."""
    seed = p["base"]["seed"]
    torch.manual_seed(seed)
    device = pick_device(p)
    data = TrainingData(dataset_dir, "train")
    dl, sampler = make_loader(data, p, device, rank, world_size)
    per_epoch = len(sampler) // p["grad_accum"]
    total = min(p["max_steps"], per_epoch * p["epochs"]) if p["max_steps"] else per_epoch * p["epochs"]
    model = build_model(p, lm_path, verbose=rank == 0)
    step, epoch, done = 0, 0, 0
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, key = run_dir / CHECKPOINT, run_key(p, dataset_dir, lm_path)
    state = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
    if state is not None and state["key"] != key:
        if rank == 0:
            print(f"pretrain: {ckpt} is from other params or data; starting afresh", file=sys.stderr)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
    model, opt = prepare(model, p, device)
    model.train()
    sched = schedule(opt, total, p)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], device, rank)
        step, epoch, done = state["step"], state["epoch"], state["batches_done"]
        del state
    wrapped = model
    if world_size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    val = TrainingData(dataset_dir, "val", share=data) if p["eval_every"] else None
    if val is not None and len(val):
        val_dl, val_sampler = make_loader(val, p, device, rank, world_size)
    else:
        val_dl = None
        if rank == 0:
            print("pretrain: no validation loss: " + ("eval_every is 0" if not p["eval_every"] else
                                                      "the dataset's val split is empty"), file=sys.stderr)
    # Rank 0's entity-linking evaluation can outlast NCCL's timeout: the others wait on a gloo barrier
    wait = None
    if world_size > 1 and p["eval_every"]:
        import torch.distributed as dist

        wait = dist.new_group(backend="gloo", timeout=timedelta(hours=12))
    bar = tqdm(total=total, initial=step, desc="pretrain", unit="step", disable=None if rank == 0 else True)

    def log_evaluation() -> bool:
        if not p["eval_every"]:
            return False
        figures = validation_loss(model, val_dl, val_sampler, device, world_size, p["val_batches"]) if val_dl else {}
        if evaluate is not None and rank == 0:
            model.eval()
            figures.update(evaluate(model.lm))
            model.train()
        if wait is not None:
            import torch.distributed as dist

            dist.barrier(group=wait)
        if rank == 0 and figures:
            if live is not None:
                for k, v in figures.items():
                    live.log_metric(k, v, plot=True)
            print(f"pretrain: step {step}: {figures}", file=sys.stderr)
        return bool(figures)

    if step == 0 and log_evaluation() and live is not None and rank == 0:
        live.next_step()
    non_blocking = device.type == "cuda" and p["pin_memory"]
    while step < total:
        sampler.set_epoch(epoch, start=done)  # a resumed epoch starts at its next batch
        t0, seen, real, padded, losses = time.perf_counter(), 0, 0, 0, None
        for i, batch in enumerate(dl, start=done):
            batch = to_device(batch, device, non_blocking=non_blocking)
            boundary = (i + 1) % p["grad_accum"] == 0
            # gradients are all-reduced once per optimiser step, not once per micro-batch
            with wrapped.no_sync() if world_size > 1 and not boundary else nullcontext():
                out = forward_backward(wrapped, batch, device, p["grad_accum"])
            losses = loss_vector(out) if losses is None else losses + loss_vector(out)
            seen, real, padded = seen + len(batch["input_ids"]), real + batch["real_tokens"], padded + batch["padded_tokens"]
            done = i + 1
            if not boundary:
                continue
            optimizer_step(model, opt, sched, p)
            step += 1
            bar.update()
            figures = mean_over_ranks(losses / p["grad_accum"], world_size).tolist()  # the step's one host sync
            losses = None
            if p["eval_every"] and (step % p["eval_every"] == 0 or step == total):
                log_evaluation()
            if live is not None and rank == 0:
                for k, v in zip(LOSSES, figures):
                    live.log_metric(f"train/{k}", v)
                live.log_metric("lr/lm", sched.get_last_lr()[0])
                live.log_metric("lr/other", sched.get_last_lr()[1])
                live.log_metric("examples_per_s", seen * world_size / (time.perf_counter() - t0))
                live.log_metric("token_efficiency", real / padded)
                live.next_step()
            if step % p["checkpoint_every"] == 0 or step == total:
                save_checkpoint(ckpt, key, model, opt, sched, epoch, done, step, device, rank, world_size)
            if step >= total or (stop_after is not None and step >= stop_after):
                bar.close()
                return model
        epoch, done = epoch + 1, 0
    bar.close()
    return model
