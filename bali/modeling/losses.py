"""Alignment losses over [mention vectors; graph vectors] with concept ids as labels: any two
vectors of the same concept are a positive pair, any two of different concepts a negative one.

Both run in float32 whatever the autocast around them: cosine similarities divided by tau = 0.07
and their log-sum-exp lose about two significant digits in bf16, which is the size of the signal.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def float32(fn):
    """Run a loss with autocast off and its tensor arguments in float32 (gradients still flow back
    to the bf16 tensors that produced them)."""
    @functools.wraps(fn)
    def wrapper(embeddings: torch.Tensor, labels: torch.Tensor, *args, **kwargs):
        with torch.autocast(embeddings.device.type, enabled=False):
            return fn(embeddings.float(), labels, *args, **kwargs)
    return wrapper


def _pairs(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = F.normalize(embeddings, dim=-1)
    sim = x @ x.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return sim, same & ~eye, ~same


@float32
def nt_xent(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """NT-Xent / InfoNCE with cosine similarity: for every positive pair (a, p),
    -log(exp(s_ap / t) / (exp(s_ap / t) + sum over negatives n of a of exp(s_an / t))), averaged
    over positive pairs (the formulation of pytorch-metric-learning's NTXentLoss, which the
    published code uses). Zero when the batch has no positive pair."""
    sim, pos, neg = _pairs(embeddings, labels)
    logits = sim / temperature
    neg_logits = logits.masked_fill(~neg, float("-inf"))
    # log(exp(s_ap) + sum_n exp(s_an)) for every (a, p), computed stably.
    denom = torch.logaddexp(logits, torch.logsumexp(neg_logits, dim=1, keepdim=True))
    losses = (denom - logits)[pos]
    return losses.mean() if losses.numel() else embeddings.sum() * 0.0


@float32
def multi_similarity(embeddings: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 50.0,
                     base: float = 0.5, margin: float = 0.1) -> torch.Tensor:
    """Multi-similarity loss (Wang et al., CVPR 2019) with its pair mining: a negative counts when
    its similarity exceeds the anchor's hardest positive minus `margin`, a positive when it is below
    the hardest negative plus `margin`; per anchor 1/alpha log(1 + sum exp(-alpha (s_p - base))) +
    1/beta log(1 + sum exp(beta (s_n - base))), averaged over anchors that have a positive."""
    sim, pos, neg = _pairs(embeddings, labels)
    hardest_pos = sim.masked_fill(~pos, float("inf")).min(dim=1, keepdim=True).values
    hardest_neg = sim.masked_fill(~neg, float("-inf")).max(dim=1, keepdim=True).values
    keep_neg = neg & (sim + margin > hardest_pos)
    keep_pos = pos & (sim - margin < hardest_neg)
    zero = torch.zeros(len(labels), 1, device=sim.device, dtype=sim.dtype)
    pos_term = torch.logsumexp(torch.cat([zero, (-alpha * (sim - base)).masked_fill(~keep_pos, float("-inf"))], 1), 1)
    neg_term = torch.logsumexp(torch.cat([zero, (beta * (sim - base)).masked_fill(~keep_neg, float("-inf"))], 1), 1)
    anchors = pos.any(dim=1)
    loss = pos_term / alpha + neg_term / beta
    return loss[anchors].mean() if anchors.any() else embeddings.sum() * 0.0


def link_nt_xent(anchors: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 temperature: float = 0.07) -> torch.Tensor:
    """NT-Xent from anchors to candidates with one positive each: anchor i's positive is candidate
    positive[i], its negatives the candidates where negative[i] is true;
    -log(exp(s_ip / t) / (exp(s_ip / t) + sum over negatives n of exp(s_in / t))), averaged over
    anchors, in float32. Zero when there is no anchor."""
    if not len(anchors):
        return candidates.float().sum() * 0.0
    with torch.autocast(anchors.device.type, enabled=False):
        logits = F.normalize(anchors.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T / temperature
        pos = logits[torch.arange(len(anchors), device=logits.device), positive]
        neg = torch.logsumexp(logits.masked_fill(~negative, float("-inf")), dim=1)
        return (torch.logaddexp(pos, neg) - pos).mean()
