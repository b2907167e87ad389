"""Zero-shot entity linking, the SapBERT / BioSyn protocol: embed every dictionary name and every
query with the model alone (no fine-tuning), rank names by cosine similarity, and score a query as
a hit at k when one of its k nearest names belongs to its concept.

Task formats (SapBERT's `CUI||text` pairs, GSC+, BioSyn's) are read by `el_data`. A query's id
field may list several concepts (`C1|C2`, BioSyn's convention): any of them counts. Vectors come
from a `bali.lm.encoder.Encoder`, so tasks that share a dictionary embed it once per model. Ranking
runs in query chunks against dictionary chunks with a running top-k, so no query x dictionary
matrix exists; the dictionary's vectors stay on disk in float16 and are read in chunks (`ranking`),
so a full UMLS dictionary (millions of names) needs memory for one chunk, not for the dictionary.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def read_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """(cuis, texts) of a `CUI||text` file this pipeline wrote: a malformed line is an error with file
    and line (task files from elsewhere go through `el_data`, which counts and skips them)."""
    from bali.evaluation.el_data import Issues, read_pairs_file

    issues = Issues()
    cuis, texts, _ = read_pairs_file(Path(path), issues)
    if "malformed_line" in issues.counts:
        raise ValueError(f"{path}: expected CUI||text lines; {issues.examples[0]}")
    return cuis, texts


def hits(query_cuis: list[str], name_cuis: list[str], indices: torch.Tensor) -> np.ndarray:
    """(n_queries, k) bool: candidate j of query i shares an id with the query (either side may list
    several ids joined by `|`: BioSyn's convention, and MEDIC's names of several ids)."""
    name_cuis = np.asarray(name_cuis, dtype=object)
    cand = name_cuis[indices.numpy()]
    return np.array([[not gold.isdisjoint(c.split("|")) for c in row]
                     for gold, row in zip((set(q.split("|")) for q in query_cuis), cand)], dtype=bool).reshape(indices.shape)


def accuracy_at(hit: np.ndarray, ks=(1, 5)) -> dict:
    """acc@k = share of queries with a hit among their first k candidates."""
    return {f"acc@{k}": float(hit[:, :k].any(axis=1).mean()) if len(hit) else 0.0 for k in ks}


def by_mention(hit: np.ndarray, qids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mention ids, (n_mentions, k) hits): a mention of several parts (a composite mention) is a
    hit at k only when every part is, as BioSyn scores it."""
    cum = np.logical_or.accumulate(hit, axis=1) if hit.size else hit
    uniq, inv = np.unique(qids, return_inverse=True)
    out = np.ones((len(uniq), hit.shape[1]), dtype=bool)
    np.logical_and.at(out, inv, cum)
    return uniq, out


def load(task_dir: Path, task: dict, graph_dir: Path, obo: Path):
    """(queries, dictionary ids, dictionary names, protocol note) of a task entry (see el_data)."""
    from bali.evaluation import el_data

    fmt = task.get("format", "pairs")
    if fmt == "pairs":
        q = el_data.read_pairs_queries(task_dir, task.get("split"))
        note = f"queries {task.get('split') or 'queries'}.txt"
    elif fmt == "gsc":
        q = el_data.read_gsc(task_dir, graph_dir, obo)
        note = "GSC+ mentions, HPO ids -> graph CUIs through codes.parquet (alt_id / replaced_by from hp.obo)"
    elif fmt == "biosyn":
        q = el_data.read_biosyn(task_dir)
        note = ("BioSyn .concept mentions, -1 left out, composite mentions a hit only when every part is "
                "(plain test split, not the refined one)")
    else:
        raise ValueError(f"entity_linking format must be pairs, gsc or biosyn, not {fmt!r}")
    d_ids, d_texts = el_data.read_dictionary(task.get("dictionary", ""), task_dir, graph_dir, q.issues)
    return q, d_ids, d_texts, note


def run(ctx, task_dir: str | Path, task: dict, p: dict) -> tuple[dict, "pl.DataFrame"]:
    """Rank the task's dictionary for each query; (metrics, per-query-part predictions).
    `ctx`: a bali.evaluation.Context (its shared encoder, graph, hp.obo, and the concepts the model
    was pre-trained on, which split the figures into seen / unseen). Graph-aware error figures when
    the dictionary's ids are graph CUIs."""
    import time

    import polars as pl

    from bali.evaluation import graph_errors
    from bali.lm import ranking

    encoder, seen, task_dir, graph_dir = ctx.encoder(), ctx.seen_concepts(), Path(task_dir), ctx.graph_dir
    q, d_cuis, d_texts, note = load(task_dir, task, graph_dir, ctx.obo if task.get("format") == "gsc" else None)
    frame = q.frame
    q_cuis, q_texts = frame["cui"].to_list(), frame["query"].to_list()
    t0 = time.perf_counter()
    names = encoder.store(d_texts, progress="embed dictionary")
    t1 = time.perf_counter()
    queries = encoder.vectors(q_texts)
    scores, idx, ranked = ranking.rank(queries, names, p["k"], p, device=encoder.device)
    t2 = time.perf_counter()
    hit = hits(q_cuis, d_cuis, idx)
    qids, mention_hit = by_mention(hit, frame["qid"].to_numpy())
    metrics = {
        "protocol": f"zero-shot nearest-name ranking by cosine ({p['pooling']} pooling, lower-case {p['lowercase']}, "
                    f"<= {p['max_length']} tokens); a hit at k: one of the k nearest names has the query's concept; {note}",
        "dictionary": task.get("dictionary") or str(task_dir / "dictionary.txt"), "dictionary_names": len(d_texts),
        "dictionary_concepts": len(set(d_cuis)), "queries": len(qids), "query_parts": len(q_texts),
        **accuracy_at(mention_hit, (1, p["k"])), "input_issues": q.issues.as_dict(),
        **ranked, "names_per_s": round(len(d_texts) / max(t1 - t0, 1e-9), 1), "queries_per_s": round(len(q_texts) / (t2 - t1), 1),
    }
    graph_ids = task.get("format", "pairs") != "biosyn"  # BioSyn ids (MeSH, OMIM) are not graph CUIs
    is_seen = np.array([bool(seen) and any(c in seen for c in cui.split("|")) for cui in q_cuis])
    if seen is not None and graph_ids:
        first = np.searchsorted(frame["qid"].to_numpy(), qids)
        for part, mask in (("seen", is_seen[first]), ("unseen", ~is_seen[first])):
            metrics[part] = {"queries": int(mask.sum()), **accuracy_at(mention_hit[mask], (1, p["k"]))}
    d_cuis_arr, d_texts_arr = np.asarray(d_cuis, dtype=object), np.asarray(d_texts, dtype=object)
    top1 = d_cuis_arr[idx[:, 0].numpy()] if len(idx) else np.array([], dtype=object)
    errors = graph_errors.near_misses(graph_dir, [c.split("|")[0] for c in q_cuis], top1.tolist(), hit[:, 0]) \
        if graph_ids and (graph_dir / "edges.parquet").exists() else None
    if errors is not None:
        metrics["top1_errors"] = errors.pop("summary")
    preds = pl.DataFrame({
        "qid": frame["qid"], "cui": q_cuis, "query": q_texts, "source": frame["source"], "seen": is_seen.tolist(),
        "hit@1": mention_hit[np.searchsorted(qids, frame["qid"].to_numpy()), 0].tolist(),
        f"hit@{p['k']}": mention_hit[np.searchsorted(qids, frame["qid"].to_numpy()), -1].tolist(),
        "candidate_cuis": d_cuis_arr[idx.numpy()].tolist(), "candidate_names": d_texts_arr[idx.numpy()].tolist(),
        "candidate_scores": scores.numpy().round(5).tolist()})
    if errors is not None:
        preds = preds.with_columns(pl.Series("top1_relation", errors["relation"]), pl.Series("top1_distance", errors["distance"]))
    return metrics, preds
