"""Hierarchy probe: does the model place a concept next to its parent? For each is_a link child ->
parent, every concept's preferred name is ranked by cosine to the child's preferred name (the child
itself left out) and the parent's rank is read: hit@1, hit@k, MRR.

Task folder (the demo_data stage writes one): `names.txt` (CUI||preferred name of every concept,
what is ranked) and one file of `CHILD_CUI||PARENT_CUI` lines per split: `held_out.txt` (links
kept out of the training graph) and `seen.txt` (links the model trained with); a task entry picks
one with `split`. Links whose child or parent has no name are counted and left out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from bali.evaluation.el_data import Issues, read_pairs_file

QUERY_CHUNK = 512  # children per score block: memory is QUERY_CHUNK x names floats


def parent_ranks(vecs: torch.Tensor, child: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """1-based rank of vecs[parent[i]] among all rows by dot product with vecs[child[i]], the child's
    own row excluded; a tie counts against the parent (rank = 1 + rows scoring at least as high)."""
    ranks = np.empty(len(child), dtype=np.int64)
    for c0 in range(0, len(child), QUERY_CHUNK):
        c, p = torch.from_numpy(child[c0:c0 + QUERY_CHUNK]), torch.from_numpy(parent[c0:c0 + QUERY_CHUNK])
        s = vecs[c] @ vecs.T
        s[torch.arange(len(c)), c] = float("-inf")
        target = s[torch.arange(len(c)), p].unsqueeze(1)
        ranks[c0:c0 + len(c)] = ((s >= target).sum(1)).numpy()
    return ranks


def run(ctx, task_dir: str | Path, task: dict, p: dict) -> tuple[dict, pl.DataFrame]:
    """The parent's rank for each link of the task's split; (metrics, per-link predictions)."""
    encoder, task_dir = ctx.encoder(), Path(task_dir)
    split = task.get("split", "held_out")
    issues = Issues()
    cuis, names, _ = read_pairs_file(task_dir / "names.txt", issues)
    children, parents, sources = read_pairs_file(task_dir / f"{split}.txt", issues)
    row = dict(zip(cuis, range(len(cuis))))
    keep = []
    for i, (c, par, where) in enumerate(zip(children, parents, sources)):
        if c not in row or par not in row:
            issues.add("concept_without_name", where, f"{c}||{par}")
        else:
            keep.append(i)
    child = np.array([row[children[i]] for i in keep], dtype=np.int64)
    parent = np.array([row[parents[i]] for i in keep], dtype=np.int64)
    vecs = encoder.vectors(names, progress="embed names")
    ranks = parent_ranks(vecs, child, parent)
    k = p["k"]
    metrics = {
        "protocol": f"each child's preferred name against every concept's preferred name ({len(names):,}, "
                    f"the child left out), cosine of {encoder.p['pooling']}-pooled vectors; the parent's rank",
        "split": split, "k": k, "links": len(keep), "concepts": len(names), "input_issues": issues.as_dict(),
        "hit@1": float((ranks == 1).mean()) if len(ranks) else 0.0,
        f"hit@{k}": float((ranks <= k).mean()) if len(ranks) else 0.0,
        "mrr": float((1.0 / ranks).mean()) if len(ranks) else 0.0,
    }
    preds = pl.DataFrame({"child": [children[i] for i in keep], "parent": [parents[i] for i in keep],
                          "child_name": [names[c] for c in child], "parent_name": [names[c] for c in parent],
                          "rank": ranks, "hit@1": ranks == 1, f"hit@{k}": ranks <= k})
    return metrics, preds
