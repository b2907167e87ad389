"""The fine-tuning loop shared by every fine-tuning kind (NER, classification, PubMedQA, multiple
choice): AdamW (no decay on biases and LayerNorm), linear warm-up and decay, gradient clipping, a fixed
number of epochs, batches shuffled by seed, and optionally the best epoch on dev (PubMedQA's protocol).
Kept small on purpose: what changes between base and aligned model is only the checkpoint."""
from __future__ import annotations

import random
from pathlib import Path

import torch
from tqdm import tqdm

from bali import precision

SPLITS = {"train": ("train",), "dev": ("dev", "devel"), "test": ("test",)}

HEAD_NOTE = "the task's head, trained by fine-tuning"


def train(model, examples: list, collate, p: dict, seed: int, device: str, desc: str = "fine-tune",
          dev_score=None) -> list[float]:
    """Train `model` in place on `examples`; `collate(list) -> dict of tensors` (with `labels`). With
    `dev_score(model) -> float`, the model is scored after every epoch and the best epoch's weights
    (the first of equals) are the ones kept; returns the per-epoch dev scores."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    decay = [p_ for n, p_ in model.named_parameters() if p_.ndim > 1]
    no_decay = [p_ for n, p_ in model.named_parameters() if p_.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": p["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=p["lr"])
    steps = p["epochs"] * -(-len(examples) // p["batch_size"])
    warmup = int(p["warmup_fraction"] * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    model.to(device).train()
    # `precision` of the params (ner_model's, or evaluate's, passed to its kinds): bf16 only where native
    numerics = precision.resolve(p.get("precision", "auto"), device)
    scores, best = [], None
    bar = tqdm(total=steps, desc=desc, mininterval=10)
    for _ in range(p["epochs"]):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for i in range(0, len(order), p["batch_size"]):
            batch = {k: v.to(device) for k, v in collate([examples[j] for j in order[i:i + p["batch_size"]]]).items()}
            with precision.autocast(device, numerics):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if dev_score is not None:
            model.eval()
            scores.append(dev_score(model))
            if scores[-1] > max(scores[:-1], default=float("-inf")):
                # a CPU copy: one model's weights, whatever the number of epochs
                best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            model.train()
    bar.close()
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return scores


@torch.no_grad()
def predict_logits(model, examples: list, collate, batch_size: int, device: str) -> list[torch.Tensor]:
    """Logits per batch, in example order."""
    model.to(device).eval()
    out = []
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i:i + batch_size]).items() if k != "labels"}
        out.append(model(**batch).logits.float().cpu())
    return out


def padded(seqs: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the attention mask (1 on real tokens), as the model takes them."""
    rows = [torch.as_tensor(list(x), dtype=torch.long) for x in seqs]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True)
    return ids, mask


def mean_std(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0, "runs": values}


def split_files(task_dir: Path, splits: tuple[str, ...] = ("train", "dev", "test")) -> dict[str, Path]:
    """train / dev / test files of a task folder, by name (NCBItrainset_corpus.txt, devel.tsv, ...)."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise FileNotFoundError(f"{task_dir}: no such task folder")
    files = {}
    for split in splits:
        keys = SPLITS[split]
        found = sorted(f for f in task_dir.iterdir() if f.is_file() and any(k in f.name.lower() for k in keys)
                       and not (split == "dev" and "test" in f.name.lower()))
        if len(found) != 1:
            raise FileNotFoundError(f"{task_dir}: expected one {split} file, found {[f.name for f in found]}")
        files[split] = found[0]
    return files
