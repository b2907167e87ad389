"""Nearest dictionary names of query vectors, over float16 vectors that stay on disk.

A dictionary of a full UMLS (7-10 M names x 768 dims) is 12 GB in float16, 24 GB in float32: more
than a 24 GB machine holds beside its model. `VectorRows` names the dictionary's rows of a float16
file (the embedding cache), and every ranking here reads them in chunks with explicit file reads
(no memory map: pages a scan keeps mapped would count in resident memory and grow with the file).

- `exact_top_k` (default): every query against every chunk, a running top-k. Exact.
- `ivfpq_top_k`: FAISS IVF-PQ (product-quantised codes in memory: `m` bytes per name) proposes
  `rerank` candidates per query; their float16 vectors are read back and ranked exactly, so its
  scores are true cosines and only recall can differ from exact ranking (`recall_at` measures it).

Both rank distinct vectors: names sharing a text (one string of several concepts) share one row,
and the k best names come from the k best rows, each row expanded to its names in dictionary order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


# FAISS trains each product quantiser's 256 centroids on >= 39 points each; below that many distinct
# vectors an exact scan is fast anyway.
MIN_IVFPQ_ROWS = 39 * 256


@dataclass
class VectorRows:
    """Entry i of a dictionary has vector row `rows[i]` of `source`: a raw float16 file of `dim`
    columns (read in chunks, never mapped) or an in-memory float16 array."""

    source: Path | np.ndarray
    dim: int
    rows: np.ndarray

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, stop) of the source as float16 (an explicit read into `out` when given)."""
        if isinstance(self.source, np.ndarray):
            return self.source[start:stop]
        n = stop - start
        buf = out[:n] if out is not None and len(out) >= n else np.empty((n, self.dim), dtype=np.float16)
        with open(self.source, "rb", buffering=0) as f:
            f.seek(start * self.dim * 2)
            got = f.readinto(memoryview(buf).cast("B"))
        if got != n * self.dim * 2:
            raise ValueError(f"{self.source}: expected {n} rows of {self.dim} float16 from row {start}, file too short")
        return buf

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float16 vectors of the given source rows (any order), one positioned read per row."""
        if isinstance(self.source, np.ndarray):
            return self.source[rows]
        out = np.empty((len(rows), self.dim), dtype=np.float16)
        width = self.dim * 2
        fd = os.open(self.source, os.O_RDONLY)
        try:
            for j, r in enumerate(rows.tolist()):
                out[j] = np.frombuffer(os.pread(fd, width, r * width), dtype=np.float16)
        finally:
            os.close(fd)
        return out


def _distinct(store: VectorRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct rows, CSR offsets, entries grouped by distinct row, in dictionary order)."""
    distinct, inverse = np.unique(store.rows, return_inverse=True)
    entries = np.argsort(inverse, kind="stable")
    offsets = np.zeros(len(distinct) + 1, dtype=np.int64)
    np.cumsum(np.bincount(inverse, minlength=len(distinct)), out=offsets[1:])
    return distinct, offsets, entries


def _expand(scores: torch.Tensor, pos: torch.Tensor, offsets: np.ndarray, entries: np.ndarray, k: int):
    """Ranked distinct rows -> the k best dictionary entries (a row's entries in dictionary order)."""
    out_s, out_i = torch.empty(len(pos), k), torch.empty(len(pos), k, dtype=torch.long)
    for q, (srow, prow) in enumerate(zip(scores.tolist(), pos.tolist())):
        got_s, got_i = [], []
        for s, p in zip(srow, prow):
            ids = entries[offsets[p]:offsets[p + 1]][:k - len(got_i)].tolist()
            got_i += ids
            got_s += [s] * len(ids)
            if len(got_i) == k:
                break
        out_s[q], out_i[q] = torch.tensor(got_s), torch.tensor(got_i)
    return out_s, out_i


@torch.no_grad()
def exact_top_k(queries: torch.Tensor, store: VectorRows, k: int, chunk_rows: int = 65536,
                device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, dictionary indices) of the k best entries per query, best first. Memory: one chunk
    of float16 rows, its float32 copy and queries x (chunk + k) scores, whatever the dictionary."""
    k = min(k, len(store.rows))
    if not len(queries) or not k:
        return torch.empty(len(queries), k), torch.empty(len(queries), k, dtype=torch.long)
    distinct, offsets, entries = _distinct(store)
    q = queries.to(device)
    best_s = q.new_full((len(q), 0), float("-inf"))
    best_p = torch.zeros(len(q), 0, dtype=torch.long, device=device)
    buf = None if isinstance(store.source, np.ndarray) else np.empty((chunk_rows, store.dim), dtype=np.float16)
    lo = 0  # walk the source in row ranges, keeping only the dictionary's rows of each
    while lo < len(distinct):
        start = int(distinct[lo])
        hi = int(np.searchsorted(distinct, start + chunk_rows))
        block = store.read(start, int(distinct[hi - 1]) + 1, buf)
        vecs = torch.from_numpy(block[distinct[lo:hi] - start]).to(device).float()
        s = q @ vecs.T
        s_top, p_top = s.topk(min(k, s.shape[1]), dim=1)
        cand_s, cand_p = torch.cat([best_s, s_top], 1), torch.cat([best_p, p_top + lo], 1)
        best_s, sel = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
        best_p = cand_p.gather(1, sel)
        lo = hi
    return _expand(best_s.cpu(), best_p.cpu(), offsets, entries, k)


def build_ivfpq(store: VectorRows, p: dict, chunk_rows: int = 65536, seed: int = 0):
    """A FAISS IVF-PQ index (inner product) over the store's distinct rows, ids = their positions;
    trained on a random sample, filled chunk by chunk. p: nlist, m (bytes per code), train_size."""
    import faiss

    distinct, _, _ = _distinct(store)
    nlist = max(1, min(p["nlist"], len(distinct) // 39))  # FAISS wants >= 39 training points per list
    quantizer = faiss.IndexFlatIP(store.dim)
    index = faiss.IndexIVFPQ(quantizer, store.dim, nlist, p["m"], 8, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(distinct), min(len(distinct), max(p["train_size"], 256)), replace=False))
    index.train(store.gather(distinct[sample]).astype(np.float32))
    for lo in range(0, len(distinct), chunk_rows):
        rows = distinct[lo:lo + chunk_rows]
        block = store.read(int(rows[0]), int(rows[-1]) + 1)
        index.add_with_ids(block[rows - rows[0]].astype(np.float32), np.arange(lo, lo + len(rows), dtype=np.int64))
    return index


@torch.no_grad()
def ivfpq_top_k(queries: torch.Tensor, store: VectorRows, k: int, p: dict, index=None) -> tuple[torch.Tensor, torch.Tensor]:
    """IVF-PQ candidates (`rerank` per query, `nprobe` lists searched) re-ranked exactly from the
    float16 vectors; same output as `exact_top_k`."""
    k = min(k, len(store.rows))
    if not len(queries) or not k:
        return torch.empty(len(queries), k), torch.empty(len(queries), k, dtype=torch.long)
    distinct, offsets, entries = _distinct(store)
    index = index if index is not None else build_ivfpq(store, p)
    index.nprobe = p["nprobe"]
    _, cand = index.search(queries.numpy().astype(np.float32), max(k, p["rerank"]))
    uniq, inv = np.unique(cand[cand >= 0], return_inverse=True)
    vecs = torch.from_numpy(store.gather(distinct[uniq]).astype(np.float32))
    cand_t = torch.from_numpy(cand)
    local = torch.full(cand.shape, -1, dtype=torch.long)
    local[cand_t >= 0] = torch.from_numpy(inv.reshape(-1).astype(np.int64))
    s = torch.einsum("qd,qcd->qc", queries.float(), vecs[local.clamp(min=0)])
    s[local < 0] = float("-inf")
    best_s, sel = s.topk(min(k, s.shape[1]), dim=1)
    scores, idx = _expand_or_exact(queries, store, k, best_s, cand_t.gather(1, sel), offsets, entries)
    return scores, idx


def _expand_or_exact(queries, store, k, best_s, best_p, offsets, entries):
    """Expand the re-ranked candidates; a query whose probed lists held fewer than k vectors is
    ranked exactly instead (FAISS pads its answer with -1)."""
    short = (best_p < 0).any(dim=1)
    best_p = best_p.clamp(min=0)
    scores, idx = _expand(best_s, best_p, offsets, entries, k)
    if short.any():
        rows = short.nonzero().squeeze(1)
        scores[rows], idx[rows] = exact_top_k(queries[rows], store, k)
    return scores, idx


def recall_at(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of the exact top-k entries that the approximate top-k holds (ties aside)."""
    if not len(exact):
        return 1.0
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx.tolist(), exact.tolist())]))


def rank(queries: torch.Tensor, store: VectorRows, k: int, p: dict, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The evaluate stage's ranking: exact by default; `ann.method: ivfpq` ranks through FAISS and
    reports its recall@k against exact ranking on `ann.recall_queries` queries (figures returned)."""
    ann = p.get("ann") or {"method": "exact"}
    if ann["method"] == "exact":
        return (*exact_top_k(queries, store, k, device=device), {"ranking": "exact"})
    if ann["method"] != "ivfpq":
        raise ValueError(f"entity_linking.ann.method must be exact or ivfpq, not {ann['method']!r}")
    if len(np.unique(store.rows)) < MIN_IVFPQ_ROWS:
        return (*exact_top_k(queries, store, k, device=device), {"ranking": "exact (too few names for ivfpq)"})
    scores, idx = ivfpq_top_k(queries, store, k, ann)
    sample = queries[:ann["recall_queries"]]
    exact = exact_top_k(sample, store, k, device=device)[1]
    return scores, idx, {"ranking": f"ivfpq (nlist {ann['nlist']}, m {ann['m']}, nprobe {ann['nprobe']}, "
                                    f"rerank {ann['rerank']})", f"ann_recall@{k}": recall_at(idx[:len(sample)], exact),
                         "ann_recall_queries": len(sample)}
