"""The pre-training loop: AdamW with separate learning rates for the LM and the rest, cosine schedule
with warm-up min(warmup_fraction of steps, warmup_max_steps), gradient accumulation, clipping
(`max_grad_norm`; 0 = none, as the reference), bf16 autocast where the hardware runs it natively
(`pretrain.precision`, see `bali.precision`), DDP under torchrun, checkpoints with exact resume, dvclive logs.

Device: `pretrain.device` (auto = the local rank's GPU when there is one, else the CPU). Every
tensor of a batch, nested ones included, goes there through `to_device`. Speed levers, used on CUDA
only (no-ops on the CPU): TF32 matmuls, fused AdamW, `torch.compile` of the LM (dynamic shapes:
batches are padded to their own longest sentence), pinned batches with non-blocking copies.

Resuming is the training code's job: a checkpoint holds the model, optimiser, scheduler, every
rank's CPU and CUDA RNG state, the data position (epoch, batches done) and the points logged so far.
Batches are fixed by (seed, epoch, batch number), so the sampler starting at the next batch replays
the same data. How checkpoints are written, verified and chosen (on rank 0, for every rank):
`bali.training.checkpoints`. Logged points carry their optimiser step (0 = before the first step).
"""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from bali import precision
from bali.training import checkpoints, diagnostics, freeze
from bali.training.config import PretrainConfig
from bali.training.devices import compiled_graphs, gloo_side_group, pick_device, to_device
from bali.data.batches import loader
from bali.data.training_data import TrainingData
from bali.modeling.model import BaliModel

LOSSES = ("loss", "mlm", "contrastive", "name", "synonym", "link")
# logged beside the losses, not optimised: how far the graph vector is from the target's own name
# vector (the model's `graph_name_figures`; NaN for the linear graph, which has no name vector)
LOGGED = LOSSES + ("encoder_share", "graph_name_cosine")


def make_loader(data: TrainingData, p: dict, device: torch.device, rank: int = 0, world_size: int = 1):
    """The training batches of `data` for these params (the benchmarks build theirs here too)."""
    c = PretrainConfig.of(p)
    if c.sample_per not in ("concept", "occurrence"):
        raise ValueError(f"pretrain.sample_per must be concept or occurrence, not {c.sample_per!r}")
    # what a batch carries follows from the objective: no synonym or link rows without their terms
    return loader(data, c.batch_size, c.training_seed, c.workers, rank, world_size,
                  pin_memory=device.type == "cuda" and c.pin_memory, neighbors=c.neighbors,
                  mlm_probability=c.mlm_probability, linear_graph=c.graph_encoder == "linear",
                  synonyms=c.synonym_weight > 0, links=c.link_weight > 0, mention_masking_prob=c.mention_masking_prob,
                  name_masking_prob=c.concept_name_masking_prob, per_occurrence=c.sample_per == "occurrence")


def build_model(p: dict, lm_path: str, verbose: bool = False) -> BaliModel:
    return BaliModel(lm_path, **PretrainConfig.of(p).model_args(), verbose=verbose)


def optimizer(model: BaliModel, p: dict, fused: bool = False) -> torch.optim.Optimizer:
    lm = {id(q) for q in model.lm.parameters()}
    groups = [{"params": [q for q in model.parameters() if id(q) in lm], "lr": p["lm_lr"]},
              {"params": [q for q in model.parameters() if id(q) not in lm], "lr": p["other_lr"]}]
    return torch.optim.AdamW(groups, weight_decay=p["weight_decay"], fused=fused or None)


def freeze_unused_head(model: BaliModel) -> list[str]:
    """Freeze the MLM head's parameters its forward never reaches (a checkpoint with an untied
    `cls.predictions.bias` beside the decoder's own), found by one forward of a zero row: DDP would
    otherwise wait for their gradients and fail at the second step. A parameter without a gradient
    is never updated by AdamW (nor decayed), so freezing it changes no weight."""
    head = getattr(model.mlm_model, model.head_name) if model.head_name else None
    trainable = [(n, q) for n, q in head.named_parameters() if q.requires_grad] if head is not None else []
    if not trainable:
        return []
    grads = torch.autograd.grad(head(torch.zeros(1, model.mlm_model.config.hidden_size)).sum(),
                                [q for _, q in trainable], allow_unused=True)
    unused = [n for (n, q), g in zip(trainable, grads) if g is None]
    for n, q in trainable:
        if n in unused:
            q.requires_grad_(False)
    return unused


def prepare(model: BaliModel, p: dict, device: torch.device, world_size: int = 1) -> tuple[BaliModel, torch.optim.Optimizer]:
    """The model on `device` with the speed levers that apply there, and its optimiser."""
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(p["tf32"])
    model.to(device)
    if cuda and p["compile"]:
        if world_size > 1:
            # DDPOptimizer would split each LM graph at DDP's bucket boundaries to overlap the
            # all-reduce with backward; the LM runs many times per step (sentences and name chunks)
            # and gradients are reduced once, at the step's last backward, so the split buys no
            # overlap, only more graphs and compile time.
            torch._dynamo.config.optimize_ddp = False
        model.lm.compile(dynamic=True)  # in place: the state dict keeps its keys
    return model, optimizer(model, p, fused=cuda and p["fused_adamw"])


def contrastive_sentences(p: dict, world_size: int) -> int:
    """Sentences whose vectors one contrastive loss sees (its negatives come from these): the whole
    micro-batch with `gather_negatives` or on one process, else about one rank's share of it,
    so without gathering the objective changes with the number of processes."""
    return p["batch_size"] if p["gather_negatives"] or world_size == 1 else p["batch_size"] // world_size


def schedule(opt: torch.optim.Optimizer, total: int, p: dict) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(int(p["warmup_fraction"] * total), p["warmup_max_steps"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, [freeze.lm_factor(factor, p, warmup), factor])  # LM, the rest


def run_key(p: dict, dataset_dir: Path, lm_path: str) -> str:
    """What a checkpoint must match to be resumed: the params that change training, the dataset,
    the base model and the checkpoint format."""
    path = Path(dataset_dir) / "stats.json"
    stats = {k: v for k, v in json.loads(path.read_text()).items() if k != "run"} if path.exists() else {}  # not timings
    kept = PretrainConfig.of(p).resumed_by()
    return json.dumps({"params": kept, "dataset": stats, "lm": str(lm_path), "format": 4}, sort_keys=True)


def forward_backward(wrapped, batch: dict, device: torch.device, accumulate: int, numerics: str = "auto") -> dict:
    """One micro-batch: forward under `numerics`' autocast (`bali.precision`: auto | bf16 | float32; the
    losses in float32 inside), backward of loss / accumulate."""
    with precision.autocast(device, precision.resolve(numerics, device)):
        out = wrapped(batch)
    (out["loss"] / accumulate).backward()
    return out


def optimizer_step(model, opt, sched, p: dict) -> None:
    freeze.hold_lm(model, sched.last_epoch, p)  # sched.last_epoch: the optimiser steps done
    if p["max_grad_norm"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), p["max_grad_norm"])
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def loss_vector(out: dict) -> torch.Tensor:
    return torch.stack([out[k].detach().float() for k in LOGGED])


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


def save_checkpoint(run_dir: Path, key: str, model, opt, sched, epoch: int, done: int, tokens: tuple, step: int,
                    device: torch.device, rank: int, world_size: int, record: checkpoints.Record, keep: int) -> None:
    """Collective under DDP: every rank's RNG state is gathered; rank 0 writes. `tokens`: the epoch's
    real and padded token counts so far (its logged token efficiency goes on from them)."""
    states = [rng_state(device)]
    if world_size > 1:
        import torch.distributed as dist

        states = [None] * world_size
        dist.all_gather_object(states, rng_state(device))
    if rank != 0:
        return
    checkpoints.save(run_dir, step, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "rng": states, "epoch": epoch,
                                     "batches_done": done, "tokens": [int(t) for t in tokens], "step": step,
                                     "key": key, "record": record.state()}, keep)


def restore_rng(states: list, device: torch.device, rank: int) -> None:
    state = states[rank % len(states)]  # a resume on fewer or more ranks still restores a state
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def validation_loss(model: BaliModel, dl, sampler, device: torch.device, world_size: int, limit: int,
                    numerics: str = "auto") -> dict:
    """Mean losses over the validation split's first `limit` batches (0: all), the same batches and
    masks every time (epoch 0 of the seeded order), dropout off."""
    model.eval()
    sampler.set_epoch(0)
    total, n = torch.zeros(len(LOGGED), device=device), 0
    with torch.no_grad():
        for batch in dl:
            with precision.autocast(device, precision.resolve(numerics, device)):
                total += loss_vector(model(to_device(batch, device, non_blocking=True)))
            n += 1
            if limit and n >= limit:
                break
    model.train()
    figures = mean_over_ranks(total / max(n, 1), world_size).tolist()
    return {f"val/{k}": v for k, v in zip(LOGGED, figures) if not math.isnan(v)}


def train(dataset_dir: Path, run_dir: Path, p: dict, lm_path: str, rank: int = 0, world_size: int = 1,
          stop_after: int | None = None, live=None, evaluate=None) -> BaliModel:
    """Train until p['max_steps'] (or p['epochs']); checkpoints go to run_dir. `stop_after` ends the
    run early after that many optimiser steps (to test resuming). Every p['eval_every'] steps (and
    before the first) the validation split's loss is logged on every rank's share, and
    `evaluate(lm) -> {name: value}` runs on rank 0 while the others wait outside NCCL. `live` (rank
    0's dvclive record, or None) must start empty: a resumed run rewrites the checkpoint's points."""
    seed = PretrainConfig.of(p).training_seed  # every key of the section known and present, or a KeyError now
    torch.manual_seed(seed)
    device = pick_device(p)
    data = TrainingData(dataset_dir, "train")
    dl, sampler = make_loader(data, p, device, rank, world_size)
    per_epoch = len(sampler) // p["grad_accum"]
    total = min(p["max_steps"], per_epoch * p["epochs"]) if p["max_steps"] else per_epoch * p["epochs"]
    model = build_model(p, lm_path, verbose=rank == 0)
    if world_size > 1:  # one dropout stream per rank: equal shapes on two ranks must not get equal masks
        torch.manual_seed(seed + rank)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed + rank)
    step, epoch, done, tokens = 0, 0, 0, (0, 0)
    numerics = precision.resolve(p["precision"], device)  # what `auto` means here: bf16 only where it is native
    key = run_key({**p, "precision": numerics}, dataset_dir, lm_path)  # a bf16 checkpoint is not resumed in float32
    resume = checkpoints.resume_point(run_dir, key, rank, world_size)
    state = resume.state if resume is not None else None
    record = checkpoints.Record(live, state["record"] if state else None, state["step"] if state else 0) \
        if rank == 0 else checkpoints.Record()
    watch = diagnostics.watch(model, data, p, seed, device, rank, record if state is None else None)  # on the base LM
    if state is not None:
        model.load_state_dict(state["model"])
    unused = freeze_unused_head(model)
    if unused and rank == 0:
        print(f"pretrain: MLM head parameters the head never uses, frozen: {unused}", file=sys.stderr)
    model, opt = prepare(model, p, device, world_size)
    model.train()
    sched = schedule(opt, total, p)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], device, rank)
        step, epoch, done, tokens = state["step"], state["epoch"], state["batches_done"], state["tokens"]
        del state
        if rank == 0:
            print(f"pretrain: resumed from step {step} of {total} (checkpoint {run_dir / resume.name})", file=sys.stderr)
            if live is not None:
                live.log_metric("resumed_from_step", step, plot=False)
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
    wait = gloo_side_group(world_size) if world_size > 1 and p["eval_every"] else None
    negatives = contrastive_sentences(p, world_size)
    if rank == 0:
        if live is not None and hasattr(live, "log_param"):
            live.log_param("contrastive_sentences_per_loss", negatives)
            live.log_param("precision", numerics)
        if negatives < p["batch_size"]:
            print(f"pretrain: gather_negatives is false: each rank's contrastive loss sees its own ~{negatives} of the "
                  f"{p['batch_size']} sentences of a micro-batch, so the objective changes with the number of "
                  f"processes ({world_size})", file=sys.stderr)
    bar = tqdm(total=total, initial=step, desc="pretrain", unit="step", disable=None if rank == 0 else True)

    def log_evaluation() -> bool:
        if not p["eval_every"]:
            return False
        figures = validation_loss(model, val_dl, val_sampler, device, world_size, p["val_batches"],
                                  numerics) if val_dl else {}
        if evaluate is not None and rank == 0:
            model.eval()
            figures.update(evaluate(model.lm))
            model.train()
        if wait is not None:
            import torch.distributed as dist

            dist.barrier(group=wait)
        if rank == 0 and figures:
            for k, v in figures.items():
                record.log(step, k, v)
            print(f"pretrain: step {step}: {figures}", file=sys.stderr)
        return bool(figures)

    if step == 0 and log_evaluation() and live is not None and rank == 0:
        live.next_step()
    non_blocking = device.type == "cuda" and p["pin_memory"]
    used = per_epoch * p["grad_accum"]  # micro-batches of an epoch that make whole optimiser steps
    while step < total:
        sampler.set_epoch(epoch, start=done)  # a resumed epoch starts at its next batch
        t0, seen, losses = time.perf_counter(), 0, None
        (real, padded), tokens = tokens, (0, 0)  # a resumed epoch counts on from its checkpoint
        # an epoch's last len(sampler) % grad_accum micro-batches make no step: they are not run, and
        # no gradient crosses into the next epoch (where a resume at the boundary would not have it)
        opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(dl, start=done):
            if i >= used:
                break
            batch = to_device(batch, device, non_blocking=non_blocking)
            boundary = (i + 1) % p["grad_accum"] == 0
            # gradients are all-reduced once per optimiser step, not once per micro-batch
            with wrapped.no_sync() if world_size > 1 and not boundary else nullcontext():
                out = forward_backward(wrapped, batch, device, p["grad_accum"], numerics)
            watch.micro_batch(out)
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
            if rank == 0:
                for k, v in zip(LOGGED, figures):
                    if not math.isnan(v):
                        record.log(step, f"train/{k}", v)
                record.log(step, "lr/lm", sched.get_last_lr()[0])
                record.log(step, "lr/other", sched.get_last_lr()[1])
                record.log(step, "examples_per_s", seen * world_size / (time.perf_counter() - t0))
                record.log(step, "token_efficiency", real / padded)
                if device.type == "cuda" and p["compile"]:
                    record.log(step, "compiled_graphs", compiled_graphs())
                watch.log(record, step, total)
                if live is not None:
                    live.next_step()
            if step % p["checkpoint_every"] == 0 or step == total:
                save_checkpoint(run_dir, key, model, opt, sched, epoch, done, (real, padded), step, device, rank, world_size,
                                record, p["keep_checkpoints"])
            if step >= total or (stop_after is not None and step >= stop_after):
                bar.close()
                return model
        epoch, done = epoch + 1, 0
    bar.close()
    return model
