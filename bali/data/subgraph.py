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
labels) as they are read; the undirected view is then sorted one range of nodes at a time, so the
sort's working set stays bounded however many edges the neighbourhood holds.
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


# Keys sorted at once: 2**22 uint64 (32 MiB), so the working set is bounded however large the graph.
PART_ROWS = 1 << 22


def restrict(edges: pl.DataFrame | pl.LazyFrame, seeds: np.ndarray, hops: int, self_loops: bool = False,
             part_rows: int = PART_ROWS) -> dict:
    """Arrays of the restricted graph: `old_ids` (graph node id of each new id), CSR `indptr` and
    `indices`, per-edge `rel`/`rela` codes and their label tables (sorted). `part_rows` bounds the
    keys sorted at once (the output is the same for any value)."""
    edges = _lazy(edges).select("src", "dst", "rel", "rela")
    old = neighbourhood(edges, seeds, hops).astype(np.uint32)
    rel_labels, rela_labels = labels(edges, "rel"), labels(edges, "rela")
    na, nr = max(1, len(rela_labels)), max(1, len(rel_labels))
    if float(len(old)) ** 2 * 2 * nr * na >= 2.0 ** 64:
        raise ValueError(f"training graph of {len(old):,} nodes and {nr} x {na} relation labels: too many to code in 64 bits")
    inside = pl.Series(old).implode()
    # No row index here: it would stop the scan from streaming and load every string column whole.
    coded = (edges.filter(pl.col("src").is_in(inside) & pl.col("dst").is_in(inside)
                          & ((pl.col("src") != pl.col("dst")) | self_loops))
             .select(u="src", v="dst", tie=pl.col("rel").cast(pl.Enum(rel_labels)).to_physical().cast(pl.UInt32) * na
                     + pl.col("rela").cast(pl.Enum(rela_labels)).to_physical().cast(pl.UInt32))
             .collect(engine="streaming"))
    u, v = (np.searchsorted(old, coded[c].to_numpy()).astype(np.uint32) for c in ("u", "v"))
    tie = coded["tie"].to_numpy().astype(np.uint32)
    del coded
    indptr, indices, tie = undirected_csr(u, v, tie, len(old), nr * na, part_rows)
    return {
        "old_ids": old,
        "indptr": indptr,
        "indices": indices,
        "rel": (tie // na).astype(np.uint16),
        "rela": (tie % na).astype(np.uint16),
        "rel_labels": np.array(rel_labels, dtype=str),
        "rela_labels": np.array(rela_labels, dtype=str),
    }


def undirected_csr(u: np.ndarray, v: np.ndarray, tie: np.ndarray, n: int, ties: int,
                   part_rows: int = PART_ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (indptr, indices, tie per entry) of the undirected view of the edges u -> v (uint32 node
    ids < n, `tie` < ties an edge's (REL, RELA) code): each (u, v) pair once, with the smallest tie of
    the edges u -> v, or of the edges v -> u when there is none.

    Each row and its reversed copy are keyed (row node, other node, reversed?, tie) in mixed radix, one
    uint64 each, so one in-place sort orders them and the first row of each pair is the pair's; no row
    encoding or hash table (polars' multi-column sort + unique peaked at 12x the rows' size). The keys
    are made and sorted one range of row nodes at a time, each range holding at most about `part_rows`
    rows (a node's own rows are never split), so the working set is the three input columns, the
    output and one part's keys."""
    degree = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(degree, out=indptr[1:])
    del degree
    # Part boundaries on row-node ids: where the cumulative row count crosses each multiple of part_rows.
    bounds = np.unique(np.concatenate([[0], np.searchsorted(indptr[1:], np.arange(part_rows, indptr[-1], part_rows),
                                                            side="right"), [n]]))
    r, t, nn = np.uint64(2 * ties), np.uint64(ties), np.uint64(n)
    # Written in place part after part (no list of parts to concatenate at the end: that copy was the
    # peak); at most 2 entries per row, so the buffers' unused tail is the duplicate pairs.
    indices, ties_out, end = np.empty(2 * len(u), np.uint32), np.empty(2 * len(u), np.uint32), 0
    counts = np.zeros(n, dtype=np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        fwd = np.flatnonzero((u >= lo) & (u < hi))
        rev = np.flatnonzero((v >= lo) & (v < hi))
        key = np.concatenate([((u[fwd] - np.uint32(lo)).astype(np.uint64) * nn + v[fwd]) * r + tie[fwd],
                              ((v[rev] - np.uint32(lo)).astype(np.uint64) * nn + u[rev]) * r + t + tie[rev]])
        del fwd, rev
        key.sort()
        pair = key // r
        first = np.ones(len(key), dtype=bool)
        np.not_equal(pair[1:], pair[:-1], out=first[1:])
        key, pair = key[first], pair[first]
        del first
        indices[end:end + len(pair)] = pair % nn
        ties_out[end:end + len(pair)] = key % t
        end += len(pair)
        counts[lo:hi] = np.bincount((pair // nn).astype(np.int64), minlength=hi - lo)
        del key, pair
    np.cumsum(counts, out=indptr[1:])
    return indptr, indices[:end], ties_out[:end]


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
