"""The pre-training loop: AdamW with separate learning rates for the LM and the rest, cosine schedule
with warm-up min(warmup_fraction of steps, warmup_max_steps), gradient accumulation and clipping,
bf16 autocast on GPU, checkpoints with exact resume, dvclive logs.

Resuming is the training code's job: a checkpoint holds the model, optimiser, scheduler, RNG state
and the data position (epoch, batches done). Batches are fixed by (seed, epoch, batch number), so
skipping the batches already done replays the same data.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bali.data.batches import TrainingData, loader
from bali.modeling.model import BaliModel

CHECKPOINT = "checkpoint.pt"


def build_model(p: dict, lm_path: str) -> BaliModel:
    return BaliModel(lm_path, graph_encoder=p["graph_encoder"], layers=p["layers"], heads=p["heads"],
                     dropout=p["dropout"], attention_dropout=p["attention_dropout"], residual=p["residual"],
                     zero_init=p["zero_init"], fresh_mlm_head=p["fresh_mlm_head"], loss=p["loss"],
                     temperature=p["temperature"], mlm_weight=p["mlm_weight"], contrastive_weight=p["contrastive_weight"],
                     name_weight=p["name_weight"], name_negatives=p["name_negatives"],
                     synonym_weight=p["synonym_weight"],
                     gather_negatives=p["gather_negatives"])


def optimizer(model: BaliModel, p: dict) -> torch.optim.Optimizer:
    lm = {id(q) for q in model.lm.parameters()}
    groups = [{"params": [q for q in model.parameters() if id(q) in lm], "lr": p["lm_lr"]},
              {"params": [q for q in model.parameters() if id(q) not in lm], "lr": p["other_lr"]}]
    return torch.optim.AdamW(groups, weight_decay=p["weight_decay"])


def schedule(opt: torch.optim.Optimizer, total: int, p: dict) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(int(p["warmup_fraction"] * total), p["warmup_max_steps"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def run_key(p: dict, dataset_dir: Path, lm_path: str) -> str:
    """What a checkpoint must match to be resumed: the params, the dataset and the base model."""
    stats = (Path(dataset_dir) / "stats.json").read_text() if (Path(dataset_dir) / "stats.json").exists() else ""
    return json.dumps({"params": p, "dataset": stats, "lm": str(lm_path)}, sort_keys=True)


def save_checkpoint(path: Path, key: str, model, opt, sched, epoch: int, done: int, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(), "epoch": epoch, "batches_done": done, "step": step, "key": key}, tmp)
    os.replace(tmp, path)


def train(dataset_dir: Path, run_dir: Path, p: dict, lm_path: str, rank: int = 0, world_size: int = 1,
          stop_after: int | None = None, live=None, evaluate=None) -> BaliModel:
    """Train until p['max_steps'] (or p['epochs']); checkpoints go to run_dir. `stop_after` ends the
    run early after that many optimiser steps (to test resuming). `evaluate(lm) -> {name: value}`
    runs on rank 0 before the first step and every p['eval_every'] steps; its figures are logged."""
    seed = p["base"]["seed"]
    torch.manual_seed(seed)
    data = TrainingData(dataset_dir, "train")
    dl, sampler = loader(data, p["batch_size"], seed, p["workers"], rank, world_size,
                         neighbors=p["neighbors"], mlm_probability=p["mlm_probability"],
                         linear_graph=p["graph_encoder"] == "linear", synonyms=p["synonym_weight"] > 0)
    per_epoch = len(sampler) // p["grad_accum"]
    total = min(p["max_steps"], per_epoch * p["epochs"]) if p["max_steps"] else per_epoch * p["epochs"]
    model = build_model(p, lm_path)
    opt, device = optimizer(model, p), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sched = schedule(opt, total, p)
    step, epoch, done = 0, 0, 0
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, key = run_dir / CHECKPOINT, run_key(p, dataset_dir, lm_path)
    state = torch.load(ckpt, weights_only=True) if ckpt.exists() else None
    if state is not None and state["key"] != key:
        print(f"pretrain: {ckpt} is from other params or data; starting afresh", file=sys.stderr)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, epoch, done = state["step"], state["epoch"], state["batches_done"]
    model.to(device).train()
    wrapped = model
    if world_size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    bar = tqdm(total=total, initial=step, desc="pretrain", unit="step", disable=None if rank == 0 else True)

    def log_evaluation():
        if evaluate is None or rank != 0 or not p["eval_every"]:
            return
        model.eval()
        figures = evaluate(model.lm)
        model.train()
        if live is not None:
            for k, v in figures.items():
                live.log_metric(k, v, plot=True)
        print(f"pretrain: step {step}: {figures}", file=sys.stderr)

    if step == 0:
        log_evaluation()
        if live is not None and rank == 0 and evaluate is not None and p["eval_every"]:
            live.next_step()
    while step < total:
        sampler.set_epoch(epoch)
        t0, seen, real, padded = time.perf_counter(), 0, 0, 0
        for i, batch in enumerate(dl):
            if i < done:
                continue  # already trained on: resuming replays the same batches from here
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with autocast:
                out = wrapped(batch)
            (out["loss"] / p["grad_accum"]).backward()
            seen, real, padded = seen + len(batch["input_ids"]), real + batch["real_tokens"], padded + batch["padded_tokens"]
            done = i + 1
            if done % p["grad_accum"]:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), p["max_grad_norm"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update()
            if p["eval_every"] and (step % p["eval_every"] == 0 or step == total):
                log_evaluation()
            if live is not None and rank == 0:
                for k in ("loss", "mlm", "contrastive", "name", "synonym"):
                    live.log_metric(f"train/{k}", float(out[k].detach()))
                live.log_metric("lr/lm", sched.get_last_lr()[0])
                live.log_metric("lr/other", sched.get_last_lr()[1])
                live.log_metric("examples_per_s", seen / (time.perf_counter() - t0))
                live.log_metric("token_efficiency", real / padded)
                live.next_step()
            if rank == 0 and (step % p["checkpoint_every"] == 0 or step == total):
                save_checkpoint(ckpt, key, model, opt, sched, epoch, done, step)
            if step >= total or (stop_after is not None and step >= stop_after):
                bar.close()
                return model
        epoch, done = epoch + 1, 0
    bar.close()
    return model
