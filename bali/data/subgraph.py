"""The training graph: the concepts mentioned in the data plus their `hops`-neighbourhood, renumbered
0..M-1 (in graph node-id order), as a CSR adjacency of the undirected view without self loops (the
method samples neighbours of a target; direction and loops add nothing there). Each (u, v) pair keeps
the REL/RELA of the first edge that joins them (edges are sorted), for the linear-graph variant.
"""
from __future__ import annotations

import numpy as np
import polars as pl


def undirected(edges: pl.DataFrame) -> pl.DataFrame:
    """(u, v, rel, rela) both ways, self loops removed, one row per pair."""
    both = pl.concat([edges.select(u="src", v="dst", rel="rel", rela="rela"),
                      edges.select(u="dst", v="src", rel="rel", rela="rela")])
    return both.filter(pl.col("u") != pl.col("v")).unique(["u", "v"], keep="first", maintain_order=True).sort("u", "v")


def neighbourhood(pairs: pl.DataFrame, seeds: np.ndarray, hops: int) -> np.ndarray:
    kept = np.unique(seeds)
    for _ in range(hops):
        reached = pairs.filter(pl.col("u").is_in(pl.Series(kept).implode()))["v"].to_numpy()
        grown = np.union1d(kept, reached)
        if len(grown) == len(kept):
            break
        kept = grown
    return kept


def restrict(edges: pl.DataFrame, seeds: np.ndarray, hops: int) -> dict:
    """Arrays of the restricted graph: `old_ids` (graph node id of each new id), CSR `indptr` and
    `indices`, per-edge `rel`/`rela` codes and their label tables."""
    pairs = undirected(edges)
    old = neighbourhood(pairs, seeds, hops).astype(np.uint32)
    inside = pairs.filter(pl.col("u").is_in(pl.Series(old).implode()) & pl.col("v").is_in(pl.Series(old).implode()))
    u = np.searchsorted(old, inside["u"].to_numpy())
    v = np.searchsorted(old, inside["v"].to_numpy())
    rel_labels = np.array(sorted(set(inside["rel"].to_list())), dtype=str)
    rela_labels = np.array(sorted(set(inside["rela"].to_list())), dtype=str)
    return {
        "old_ids": old,
        "indptr": np.searchsorted(u, np.arange(len(old) + 1)).astype(np.int64),
        "indices": v.astype(np.uint32),
        "rel": np.searchsorted(rel_labels, np.array(inside["rel"].to_list(), dtype=str)).astype(np.uint16),
        "rela": np.searchsorted(rela_labels, np.array(inside["rela"].to_list(), dtype=str)).astype(np.uint16),
        "rel_labels": rel_labels,
        "rela_labels": rela_labels,
    }


def node_names(nodes: pl.DataFrame, old_ids: np.ndarray, held_out: set[str], tokenizer, max_length: int,
               stats: dict) -> pl.DataFrame:
    """Every distinct lower-cased name of each kept node (as the method does), names whose linker key
    (`name_keys`) is a held-out key removed, tokenised to at most max_length tokens."""
    from bali.linking.dictionary import name_keys

    names = (nodes.filter(pl.col("node_id").is_in(pl.Series(old_ids).implode()))
             .select("node_id", name="names").explode("name")
             .with_columns(pl.col("name").str.to_lowercase()).unique(maintain_order=True))
    held = name_keys(names["name"]).is_in(sorted(held_out))
    stats["held_out_names_removed"] = int(held.sum())
    names = names.filter(~held)
    stats["nodes_without_names"] = int(len(old_ids) - names["node_id"].n_unique())
    ids = tokenizer(names["name"].to_list(), truncation=True, max_length=max_length)["input_ids"]
    node = np.searchsorted(old_ids, names["node_id"].to_numpy())
    return pl.DataFrame({"node": node.astype(np.uint32), "name": names["name"],
                         "input_ids": pl.Series(ids, dtype=pl.List(pl.UInt32))}).sort("node", maintain_order=True)
