"""Collapse diagnostics: do the vectors the alignment loss sees, and the LM's name space that the
evaluations rank in, keep different concepts apart while training?

A contrastive term whose positives all sit near one direction (a fresh, deep graph encoder gives
graph vectors of unrelated concepts a high cosine) can pull the LM's whole name space towards that
direction; the losses alone do not show it. Logged through dvclive on rank 0 (`pretrain.diagnostics_every`
> 0), each the mean cosine over pairs of rows of *different* concepts (same-concept pairs left out):
- `collapse/graph_cosine`, `collapse/mention_cosine`: the training batch's graph vectors and mention
  vectors, every optimiser step (train mode, as the loss sees them; under DDP rank 0's share of the
  batch; with grad_accum the mean over the step's micro-batches). Nearly free: the vectors exist already.
- `collapse/name_cosine`: a fixed sample of `NAMES` dictionary names (drawn once by the seed from the
  dataset's names) embedded by the LM as the evaluations embed names (mean pooling, lower-cased,
  32 tokens), before the first step, every `diagnostics_every` steps and after the last;
- `collapse/name_base_cosine`: the mean cosine of each sampled name's vector to its vector under the
  base LM (computed once, before any checkpoint is loaded): how far training moved the name space.

None of it touches training: the names are embedded under no_grad with the LM in eval mode (no
dropout draws, so no random state is consumed) and the LM's plain `forward`, outside torch.compile's
wrapper, so a probe costs no compilation and none of the LM's recompile budget; a resumed run logs
the same values as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Names in the fixed sample (8,128 pairs): on the demo's CPU run (MiniLM, batch 16) embedding them costs about
# 0.2 of a training step, so a probe every 10 steps adds ~2 % to the run; on a GPU it is a few milliseconds.
NAMES = 128


def mean_pairwise_cosine(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the pairs of rows of x whose labels differ (NaN when there is no such pair),
    in float32, without gradient; a masked sum, so no host sync (boolean indexing would wait for the device)."""
    x = F.normalize(x.detach().float(), dim=-1)
    labels = labels.to(x.device)
    different = (labels[:, None] != labels[None, :]).float()
    return ((x @ x.T) * different).sum() / different.sum()


class Eager:
    """The LM called through its plain `forward` (`bali.lm.encoder.embed` calls `model(...)` and
    `model.eval()`): `Module.compile` wraps `__call__` only, and an eval-mode, no-grad call through
    it would compile new graphs for a probe of a few hundred names."""

    def __init__(self, lm):
        self.lm, self.config = lm, lm.config

    def eval(self):
        self.lm.eval()

    def __call__(self, **inputs):
        return self.lm.forward(**inputs)


class Watch:
    """Rank 0's collapse record. `micro_batch(out)` after each forward (the model's
    `out["vectors"]`), `log(record, step, total)` after each optimiser step, `log_names(record, step)`
    for the name sample alone. Built from the base LM, before a checkpoint is loaded into it."""

    def __init__(self, lm, data, every: int, seed: int, device: torch.device):
        self.lm, self.every, self.device = lm, every, device
        self.tokenizer = data.tokenizer
        n = len(data.name_texts)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=min(NAMES, n), replace=False))
        self.texts = [data.name_texts[int(i)] for i in rows]
        self.labels = torch.from_numpy(np.searchsorted(data.name_ptr, rows, side="right") - 1)  # each name's node
        self.pending: list[torch.Tensor] = []
        lm.to(device)  # where training runs (the loop moves the rest of the model there)
        self.base = self.names()

    def names(self) -> torch.Tensor:
        """The sample's L2-normalised vectors under the LM as it is now (CPU, float32)."""
        from bali.lm.encoder import embed

        was_training = self.lm.training
        try:
            return embed(Eager(self.lm), self.tokenizer, self.texts, device=str(self.device))
        finally:
            self.lm.train(was_training)

    def micro_batch(self, out: dict) -> None:
        mentions, graph, labels = out["vectors"]
        mention = mean_pairwise_cosine(mentions, labels)
        # no graph term in the objective: no graph vectors (NaN, not logged)
        graph = mean_pairwise_cosine(graph, labels) if graph is not None else torch.full_like(mention, float("nan"))
        # kept on the device: read once per step, after the losses' own host sync
        self.pending.append(torch.stack([graph, mention]))

    def log_names(self, record, step: int) -> None:
        now = self.names()
        record.log(step, "collapse/name_cosine", float(mean_pairwise_cosine(now, self.labels)))
        record.log(step, "collapse/name_base_cosine", float((now * self.base).sum(-1).mean()))

    def log(self, record, step: int, total: int) -> None:
        if self.pending:
            graph, mentions = torch.stack(self.pending).nanmean(0).tolist()
            self.pending = []
            for name, v in (("collapse/graph_cosine", graph), ("collapse/mention_cosine", mentions)):
                if not math.isnan(v):
                    record.log(step, name, v)
        if step % self.every == 0 or step == total:
            self.log_names(record, step)


class Off:
    """No diagnostics (`diagnostics_every: 0`, or a rank other than 0): every call does nothing."""

    def micro_batch(self, out: dict) -> None:
        pass

    def log_names(self, record, step: int) -> None:
        pass

    def log(self, record, step: int, total: int) -> None:
        pass


def watch(model, data, p: dict, seed: int, device: torch.device, rank: int = 0, record=None) -> Watch | Off:
    """The run's collapse record: a Watch on rank 0 when `diagnostics_every` > 0, else Off. Built on
    the base LM (before a checkpoint is loaded); with `record` (a fresh run's) it logs step 0's names."""
    every = int(p.get("diagnostics_every", 0) or 0)
    if rank != 0 or every <= 0:
        return Off()
    w = Watch(model.lm, data, every, seed, device)
    if record is not None:
        w.log_names(record, 0)
    return w
