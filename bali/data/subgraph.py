"""The training graph: the concepts mentioned in the data plus their `hops`-neighbourhood, renumbered
0..M-1 (in graph node-id order), as a CSR adjacency of the undirected view (the method samples
neighbours of a target; direction adds nothing there), self loops dropped unless `self_loops` (the
published graph keeps them, so a concept can draw itself as a neighbour). Each (u, v) pair keeps
the REL/RELA of the first edge that joins them (edges in file order, then their reversed copies), for
the linear-graph variant.

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
    coded = (edges.with_row_index("order")
             .filter(pl.col("src").is_in(inside) & pl.col("dst").is_in(inside)
                     & ((pl.col("src") != pl.col("dst")) | self_loops))
             .select("order", u="src", v="dst",
                     rel=pl.col("rel").cast(pl.Enum(rel_labels)).to_physical().cast(pl.UInt16),
                     rela=pl.col("rela").cast(pl.Enum(rela_labels)).to_physical().cast(pl.UInt16))
             .collect(engine="streaming"))
    both = pl.concat([coded.with_columns(back=pl.lit(False)),
                      coded.select("order", u="v", v="u", rel="rel", rela="rela", back=pl.lit(True))])
    pairs = both.sort("u", "v", "back", "order").unique(["u", "v"], keep="first", maintain_order=True)
    u = np.searchsorted(old, pairs["u"].to_numpy())
    return {
        "old_ids": old,
        "indptr": np.searchsorted(u, np.arange(len(old) + 1)).astype(np.int64),
        "indices": np.searchsorted(old, pairs["v"].to_numpy()).astype(np.uint32),
        "rel": pairs["rel"].to_numpy(),
        "rela": pairs["rela"].to_numpy(),
        "rel_labels": np.array(rel_labels, dtype=str),
        "rela_labels": np.array(rela_labels, dtype=str),
    }


def node_names(nodes: pl.DataFrame, old_ids: np.ndarray, held_out: set[str], tokenizer, max_length: int,
               stats: dict) -> pl.DataFrame:
    """Every distinct lower-cased name of each kept node (as the method does), held-out strings
    removed, tokenised to at most max_length tokens."""
    names = (nodes.filter(pl.col("node_id").is_in(pl.Series(old_ids).implode()))
             .select("node_id", name="names").explode("name")
             .with_columns(pl.col("name").str.to_lowercase()).unique(maintain_order=True))
    held = names.filter(pl.col("name").is_in(sorted(held_out)))
    stats["held_out_names_removed"] = held.height
    names = names.filter(~pl.col("name").is_in(sorted(held_out)))
    stats["nodes_without_names"] = int(len(old_ids) - names["node_id"].n_unique())
    ids = pl.concat([list_column([e.ids for e in encode(tokenizer, part.to_list(), max_length)], np.uint32)
                     .cast(pl.List(pl.UInt32))
                     for part in (names["name"].slice(i, 100_000) for i in range(0, names.height, 100_000))]
                    or [pl.Series([], dtype=pl.List(pl.UInt32))])  # in parts: one part's Python lists at a time
    node = np.searchsorted(old_ids, names["node_id"].to_numpy())
    return pl.DataFrame({"node": node.astype(np.uint32), "name": names["name"],
                         "input_ids": ids}).sort("node", maintain_order=True)
