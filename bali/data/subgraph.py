"""The training graph: the concepts mentioned in the data plus their `hops`-neighbourhood, renumbered
0..M-1 (in graph node-id order), as a CSR adjacency of the undirected view (the method samples
neighbours of a target; direction adds nothing there), self loops dropped unless `self_loops` (the
published graph keeps them, so a concept can draw itself as a neighbour). Each (u, v) pair keeps
the smallest (REL, RELA) of the edges u -> v, or of the edges v -> u when there is none, for the
linear-graph variant (the graph stage sorts edges by (dst, src, rel, rela): the first edge in its
file order).

Memory follows the restricted graph, not the whole edge table: the edges are scanned (a LazyFrame
over the graph stage's shards, streamed) once per hop for node ids only, then once for the edges
inside the neighbourhood, whose REL/RELA strings become integer codes (polars Enums over the sorted
labels) as they are read; only those rows, as integers, are ever doubled to make the view undirected.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from bali.data.examples import encode, list_column


def _lazy(edges: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return edges.lazy() if isinstance(edges, pl.DataFrame) else edges


def neighbourhood(edges: pl.LazyFrame, seeds: np.ndarray, hops: int) -> np.ndarray:
    """Sorted node ids within `hops` undirected hops of the seeds."""
    kept = np.unique(seeds)
    for _ in range(hops):
        inside = pl.Series(kept).implode()
        reached = pl.concat([edges.filter(pl.col("src").is_in(inside)).select(n="dst"),
                             edges.filter(pl.col("dst").is_in(inside)).select(n="src")]).unique()
        grown = np.union1d(kept, reached.collect(engine="streaming")["n"].to_numpy())
        if len(grown) == len(kept):
            break
        kept = grown
    return kept


def labels(edges: pl.LazyFrame, column: str) -> list[str]:
    return sorted(edges.select(pl.col(column).unique()).collect(engine="streaming")[column].to_list())


def restrict(edges: pl.DataFrame | pl.LazyFrame, seeds: np.ndarray, hops: int, self_loops: bool = False) -> dict:
    """Arrays of the restricted graph: `old_ids` (graph node id of each new id), CSR `indptr` and
    `indices`, per-edge `rel`/`rela` codes and their label tables (sorted)."""
    edges = _lazy(edges).select("src", "dst", "rel", "rela")
    old = neighbourhood(edges, seeds, hops).astype(np.uint32)
    rel_labels, rela_labels = labels(edges, "rel"), labels(edges, "rela")
    inside = pl.Series(old).implode()
    # No row index here: it would stop the scan from streaming and load every string column whole.
    coded = (edges.filter(pl.col("src").is_in(inside) & pl.col("dst").is_in(inside)
                          & ((pl.col("src") != pl.col("dst")) | self_loops))
             .select(u="src", v="dst", rel=pl.col("rel").cast(pl.Enum(rel_labels)).to_physical().cast(pl.UInt16),
                     rela=pl.col("rela").cast(pl.Enum(rela_labels)).to_physical().cast(pl.UInt16))
             .collect(engine="streaming"))
    u, v = (np.searchsorted(old, coded[c].to_numpy()).astype(np.uint64) for c in ("u", "v"))
    rel, rela = coded["rel"].to_numpy().astype(np.uint64), coded["rela"].to_numpy().astype(np.uint64)
    del coded
    # Both directions, one uint64 per row: (u, v, reversed copy?, rel, rela) in mixed radix, so one
    # in-place sort orders them and the first row of each (u, v) is the pair's; no row encoding or
    # hash table (polars' multi-column sort + unique peaked at 12x the rows' size here).
    n, na, nr = np.uint64(len(old)), np.uint64(max(1, len(rela_labels))), np.uint64(max(1, len(rel_labels)))
    if float(len(old)) ** 2 * 2 * float(nr) * float(na) >= 2.0 ** 64:
        raise ValueError(f"training graph of {len(old):,} nodes and {nr} x {na} relation labels: too many to code in 64 bits")
    tie = rel * na + rela
    key = np.concatenate([((u * n + v) * np.uint64(2)) * nr * na + tie,
                          ((v * n + u) * np.uint64(2) + np.uint64(1)) * nr * na + tie])
    del u, v, rel, rela, tie
    key.sort()
    pair = key // (np.uint64(2) * nr * na)
    first = np.ones(len(key), dtype=bool)
    np.not_equal(pair[1:], pair[:-1], out=first[1:])
    key = key[first]  # one at a time: each full-length array is freed before the next copy is made
    pair = pair[first]
    tie = key % (nr * na)
    del key, first
    u = (pair // n).astype(np.int64)
    return {
        "old_ids": old,
        "indptr": np.searchsorted(u, np.arange(len(old) + 1)).astype(np.int64),
        "indices": (pair % n).astype(np.uint32),
        "rel": (tie // na).astype(np.uint16),
        "rela": (tie % na).astype(np.uint16),
        "rel_labels": np.array(rel_labels, dtype=str),
        "rela_labels": np.array(rela_labels, dtype=str),
    }


def node_names(nodes: pl.DataFrame, old_ids: np.ndarray, held_out: set[str], tokenizer, max_length: int,
               stats: dict) -> pl.DataFrame:
    """Every distinct lower-cased name of each kept node (as the method does), names whose linker key
    (`name_keys`) is a held-out key removed, tokenised to at most max_length tokens."""
    from bali.names import name_keys

    names = (nodes.filter(pl.col("node_id").is_in(pl.Series(old_ids).implode()))
             .select("node_id", name="names").explode("name")
             .with_columns(pl.col("name").str.to_lowercase()).unique(maintain_order=True))
    held = name_keys(names["name"]).is_in(sorted(held_out))
    stats["held_out_names_removed"] = int(held.sum())
    names = names.filter(~held)
    stats["nodes_without_names"] = int(len(old_ids) - names["node_id"].n_unique())
    ids = pl.concat([list_column([e.ids for e in encode(tokenizer, part.to_list(), max_length)], np.uint32)
                     .cast(pl.List(pl.UInt32))
                     for part in (names["name"].slice(i, 100_000) for i in range(0, names.height, 100_000))]
                    or [pl.Series([], dtype=pl.List(pl.UInt32))])  # in parts: one part's Python lists at a time
    node = np.searchsorted(old_ids, names["node_id"].to_numpy())
    return pl.DataFrame({"node": node.astype(np.uint32), "name": names["name"],
                         "input_ids": ids}).sort("node", maintain_order=True)
