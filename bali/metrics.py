"""Metrics of the evaluation tasks, and the paired tests that compare two models on the same items."""
from __future__ import annotations

import math

import numpy as np


def bio_spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """Entities (start, end, type) of a BIO tag sequence, end exclusive. As conlleval reads it: an
    I- tag that does not continue an entity of its type starts a new one."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        if start is not None and not (prefix == "I" and t == kind):
            spans.add((start, i, kind))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, t
    return spans


def prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def entity_prf(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level micro precision / recall / F1: an entity counts when its span and type match exactly."""
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, pred, strict=True):
        gs, ps = bio_spans(g), bio_spans(p)
        tp, n_pred, n_gold = tp + len(gs & ps), n_pred + len(ps), n_gold + len(gs)
    return prf(tp, n_pred, n_gold)


def micro_f1(gold: list[str], pred: list[str], negative: str | None = None) -> float:
    """Micro-F1 over the classes other than `negative` (ChemProt, DDI: the negative class is not
    counted as a prediction nor as gold); with no negative class it equals accuracy."""
    tp = sum(g == p and g != negative for g, p in zip(gold, pred, strict=True))
    return prf(tp, sum(p != negative for p in pred), sum(g != negative for g in gold))["f1"]


def multilabel_micro_f1(gold: list[set], pred: list[set]) -> float:
    """Micro-F1 over every (item, label) pair (HoC)."""
    tp = sum(len(g & p) for g, p in zip(gold, pred, strict=True))
    return prf(tp, sum(map(len, pred)), sum(map(len, gold)))["f1"]


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom else 0.0


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes of two systems on the same items."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return 1.0 if only_a + only_b == 0 else float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean(b) - mean(a) over items resampled with replacement (same items for both)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n, len(a)))
    diffs = b[idx].mean(1) - a[idx].mean(1)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the average ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    return pearson(rankdata(x), rankdata(y))


def bootstrap_ci(stat, n_items: int, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of `stat(indices)` over items resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = [stat(rng.integers(0, n_items, n_items)) for _ in range(n)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def paired_bootstrap_stat(stat, a, b, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(stat(b) - stat(a), 95 % interval) with the same resampled items for both systems; `stat`
    maps the items' values (e.g. (cosine, rating) rows) to a number, as Spearman's rho does."""
    a, b = np.asarray(a), np.asarray(b)
    delta = stat(b) - stat(a)
    lo, hi = bootstrap_ci(lambda idx: stat(b[idx]) - stat(a[idx]), len(a), n, seed)
    return float(delta), lo, hi


def macro_f1(gold: list[str], pred: list[str], labels: list[str]) -> float:
    """Mean over `labels` of each label's F1 (PubMedQA's second figure); a label never gold nor
    predicted scores 0, as scikit-learn's f1_score(average='macro', labels=...) does."""
    f1s = []
    for lab in labels:
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred, strict=True))
        f1s.append(prf(tp, sum(p == lab for p in pred), sum(g == lab for g in gold))["f1"])
    return sum(f1s) / len(f1s) if f1s else 0.0


def hoc_f1(gold: list[set], pred: list[set], ids: list[str]) -> float:
    """HoC as LinkBERT scores it (src/seqcls/utils_hoc.py, `eval_hoc`): rows grouped into abstracts by
    the id before its first `_` (hallmarks of the abstract's rows united), then one micro-F1 over every
    (abstract, hallmark) cell. Not BLUE's per-abstract F1 averaged over abstracts, nor a macro over the
    ten hallmarks; on abstract-level rows (LinkBERT's HoC_hf) it equals `multilabel_micro_f1`."""
    docs: dict[str, tuple[set, set]] = {}
    for g, p, i in zip(gold, pred, ids, strict=True):
        d = docs.setdefault(str(i).split("_")[0], (set(), set()))
        d[0].update(g)
        d[1].update(p)
    return multilabel_micro_f1([g for g, _ in docs.values()], [p for _, p in docs.values()])


def runs_interval(values: list[float]) -> tuple[float, float]:
    """95 % interval of the mean over independent runs (fine-tuning seeds, folds): mean ± t(0.975, n-1)
    · std / sqrt(n); a single run has no spread to estimate, so its interval is the point itself."""
    from scipy.stats import t

    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()) - half, float(v.mean()) + half
