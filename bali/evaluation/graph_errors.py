"""How far a wrong answer is from the right one in the graph: GEBERT found that graph-aligned
encoders err towards parents, children and siblings of the gold concept, which plain accuracy hides.

Relations come from the graph's `CHD` edges (`src` is a child of `dst`, as the umls_graph stage
writes MRREL's CHD/isa rows); the distance is the unweighted shortest path over every edge, either
direction, capped at `cap` (unreachable counts as `cap`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

DISTANCES_PER_BATCH = 1 << 25  # float64 shortest-path distances held at once (256 MB), whatever the graph size


def near_misses(graph_dir: Path, gold: list[str], top1: list[str], hit1: np.ndarray, cap: int = 5) -> dict | None:
    """Per query the relation of the top-1 concept to the gold one (`same`, `parent`, `child`,
    `sibling`, `other`, or null when either is not a graph node) and their distance; `summary`:
    the share of top-1 errors of each relation and the mean capped distance of the errors."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    nodes = pl.read_parquet(graph_dir / "nodes.parquet", columns=["node_id", "cui"])
    node = dict(zip(nodes["cui"], nodes["node_id"]))
    g = np.array([node.get(c, -1) for c in gold], dtype=np.int64)
    t = np.array([node.get(c, -1) for c in top1], dtype=np.int64)
    known = (g >= 0) & (t >= 0)
    if not known.any():
        return None
    edges = pl.scan_parquet(graph_dir / "edges.parquet").select("src", "dst", "rel").collect()
    n = len(nodes)
    src, dst = edges["src"].to_numpy(), edges["dst"].to_numpy()
    adj = csr_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    chd = edges.filter(pl.col("rel") == "CHD")
    parent = csr_matrix((np.ones(chd.height, dtype=np.int8), (chd["src"].to_numpy(), chd["dst"].to_numpy())), shape=(n, n))
    relation = np.full(len(g), None, dtype=object)
    distance = np.full(len(g), np.nan)
    rows = np.flatnonzero(known)
    chunk = max(1, DISTANCES_PER_BATCH // n)  # dijkstra returns a dense (gold concepts x nodes) array
    for c0 in range(0, len(rows), chunk):
        part = rows[c0:c0 + chunk]
        d = dijkstra(adj, directed=False, unweighted=True, indices=g[part], limit=cap)
        distance[part] = np.minimum(d[np.arange(len(part)), t[part]], cap)
    for i in rows:
        a, b = g[i], t[i]
        gp, tp = set(parent[a].indices), set(parent[b].indices)
        relation[i] = ("same" if a == b else "parent" if b in gp else "child" if a in tp
                       else "sibling" if gp & tp else "other")
    wrong = known & ~np.asarray(hit1, bool)
    summary = {"errors_in_graph": int(wrong.sum())}
    for r in ("parent", "child", "sibling", "same", "other"):
        summary[f"share_{r}"] = float((relation[wrong] == r).mean()) if wrong.any() else 0.0
    summary["share_parent_child_sibling"] = sum(summary[f"share_{r}"] for r in ("parent", "child", "sibling"))
    summary[f"mean_distance_capped_{cap}"] = float(distance[wrong].mean()) if wrong.any() else 0.0
    return {"relation": relation.tolist(), "distance": distance.tolist(), "summary": summary}
