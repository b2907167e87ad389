"""Zero-shot entity linking, the SapBERT / BioSyn protocol: embed every dictionary name and every
query with the model alone (no fine-tuning), rank names by cosine similarity, and score a query as
a hit at k when one of its k nearest names belongs to its concept.

Files: `CUI||text` lines. A query CUI field may list several concepts (`C1|C2`, BioSyn's
convention): any of them counts. Ranking runs in query chunks against dictionary chunks with a
running top-k, so no query x dictionary matrix exists: a full UMLS dictionary (millions of names)
needs only its embeddings (n_names x hidden floats) in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def read_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """(cuis, texts) of a `CUI||text` file; malformed lines are an error with file and line."""
    cuis, texts = [], []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            cui, sep, text = line.partition("||")
            if not sep or not cui or not text:
                raise ValueError(f"{path}:{no}: expected CUI||text, got {line[:80]!r}")
            cuis.append(cui)
            texts.append(text)
    return cuis, texts


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], pooling: str = "mean", batch_size: int = 256, max_length: int = 32,
          lowercase: bool = True, device: str = "cpu", progress: str | None = None) -> torch.Tensor:
    """L2-normalised float32 vectors, one per text, in input order. Batches are length-sorted so
    padding stays small; `mean` averages over the attention mask (as the pre-training's node
    vectors are pooled), `cls` takes the first token."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be mean or cls, not {pooling!r}")
    texts = [t.lower() for t in texts] if lowercase else list(texts)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out = torch.empty(len(texts), model.config.hidden_size)
    model.eval()
    for i in tqdm(range(0, len(texts), batch_size), desc=progress, disable=progress is None, mininterval=5):
        idx = order[i:i + batch_size]
        enc = tokenizer([texts[j] for j in idx], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt").to(device)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        if pooling == "cls":
            vec = hidden[:, 0]
        else:
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1)
        out[torch.from_numpy(idx)] = torch.nn.functional.normalize(vec.float(), dim=-1).cpu()
    return out


@torch.no_grad()
def top_k(queries: torch.Tensor, names: torch.Tensor, k: int, query_chunk: int = 1024, name_chunk: int = 65536,
          device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) of the k highest dot products of each query row with the name rows, best
    first (the order of exact ties is unspecified). Memory: query_chunk x (name_chunk + k) scores."""
    k = min(k, len(names))
    all_scores, all_idx = [], []
    for q0 in range(0, len(queries), query_chunk):
        q = queries[q0:q0 + query_chunk].to(device)
        best_s = q.new_full((len(q), 0), float("-inf"))
        best_i = torch.zeros(len(q), 0, dtype=torch.long, device=device)
        for n0 in range(0, len(names), name_chunk):
            s = q @ names[n0:n0 + name_chunk].to(device).T
            s_top, i_top = s.topk(min(k, s.shape[1]), dim=1)
            cand_s, cand_i = torch.cat([best_s, s_top], 1), torch.cat([best_i, i_top + n0], 1)
            best_s, sel = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
            best_i = cand_i.gather(1, sel)
        all_scores.append(best_s.cpu())
        all_idx.append(best_i.cpu())
    return torch.cat(all_scores), torch.cat(all_idx)


def hits(query_cuis: list[str], name_cuis: list[str], indices: torch.Tensor) -> np.ndarray:
    """(n_queries, k) bool: candidate j of query i belongs to (one of) the query's concept(s)."""
    name_cuis = np.asarray(name_cuis, dtype=object)
    cand = name_cuis[indices.numpy()]
    return np.array([[c in set(q.split("|")) for c in row] for q, row in zip(query_cuis, cand)], dtype=bool)


def accuracy_at(hit: np.ndarray, ks=(1, 5)) -> dict:
    """acc@k = share of queries with a hit among their first k candidates."""
    return {f"acc@{k}": float(hit[:, :k].any(axis=1).mean()) if len(hit) else 0.0 for k in ks}


def run(model_dir: str | Path, task_dir: str | Path, p: dict, device: str = "cpu",
        seen: set[str] | None = None) -> tuple[dict, "pl.DataFrame"]:
    """Rank `task_dir`'s dictionary.txt for each query of queries.txt; (metrics, per-query predictions).
    `seen`: concepts the aligned model was pre-trained on, to split the figures into seen / unseen."""
    import time

    import polars as pl
    from transformers import AutoModel, AutoTokenizer

    task_dir = Path(task_dir)
    q_cuis, q_texts = read_pairs(task_dir / "queries.txt")
    d_cuis, d_texts = read_pairs(task_dir / "dictionary.txt")
    model = AutoModel.from_pretrained(model_dir).to(device)
    tok = AutoTokenizer.from_pretrained(model_dir)
    opts = dict(pooling=p["pooling"], batch_size=p["batch_size"], max_length=p["max_length"],
                lowercase=p["lowercase"], device=device)
    t0 = time.perf_counter()
    names = embed(model, tok, d_texts, progress="embed dictionary", **opts)
    t1 = time.perf_counter()
    queries = embed(model, tok, q_texts, **opts)
    scores, idx = top_k(queries, names, p["k"], device=device)
    t2 = time.perf_counter()
    hit = hits(q_cuis, d_cuis, idx)
    metrics = {
        "protocol": f"zero-shot nearest-name ranking by cosine ({p['pooling']} pooling, lower-case {p['lowercase']}); "
                    "a hit at k: one of the k nearest names has the query's concept",
        "dictionary": str(task_dir / "dictionary.txt"), "dictionary_names": len(d_texts),
        "dictionary_concepts": len(set(d_cuis)), "queries": len(q_texts), **accuracy_at(hit, (1, p["k"])),
        "names_per_s": round(len(d_texts) / (t1 - t0), 1), "queries_per_s": round(len(q_texts) / (t2 - t1), 1),
    }
    is_seen = np.array([bool(seen) and any(c in seen for c in q.split("|")) for q in q_cuis])
    if seen is not None:
        for part, mask in (("seen", is_seen), ("unseen", ~is_seen)):
            metrics[part] = {"queries": int(mask.sum()), **accuracy_at(hit[mask], (1, p["k"]))}
    d_cuis_arr, d_texts_arr = np.asarray(d_cuis, dtype=object), np.asarray(d_texts, dtype=object)
    preds = pl.DataFrame({
        "cui": q_cuis, "query": q_texts, "seen": is_seen.tolist(), "hit@1": hit[:, 0].tolist(),
        f"hit@{p['k']}": hit.any(axis=1).tolist(),
        "candidate_cuis": d_cuis_arr[idx.numpy()].tolist(), "candidate_names": d_texts_arr[idx.numpy()].tolist(),
        "candidate_scores": scores.numpy().round(5).tolist()})
    return metrics, preds
