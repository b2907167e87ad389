"""UMLS (MRCONSO, MRREL, MRSTY) -> concept graph: nodes, edges, (SAB, CODE) -> CUI codes, stats.

Edge direction: MRREL's row `CUI1 | REL | CUI2 | RELA` reads "CUI2 is REL/RELA of CUI1" (a PAR row
says CUI2 is a parent of CUI1). An edge is written src = node(CUI2), dst = node(CUI1), so it reads
"src REL/RELA dst": a CHD/isa row gives the edge child -> parent with rel CHD, rela isa. MRREL
stores both directions, so the graph is effectively symmetric. Edges are sorted by (dst, src, rel,
rela); of rows repeating one (CUI1, CUI2, REL, RELA) the first in MRREL is kept (its `sab`).

Preferred name: the English atom ranked highest by (TS=P, STT=PF, ISPREF=Y), in that order of
weight; ties go to the atom that comes first in MRCONSO. `names` keeps each distinct string once,
in the order of first appearance in MRCONSO. Node ids follow sorted CUIs.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from bali.kg import umls

DEFAULTS = {
    "languages": ["ENG"], "sources_keep": [], "sources_drop": [], "suppress_drop": [],
    "rel_keep": [], "rel_drop": [], "rela_keep": [], "rela_drop": [], "self_loops": True,
    "max_malformed_fraction": 0.001, "edge_partition_rows": 4_000_000,
}
EDGE_SCHEMA = {"src": pl.UInt32, "dst": pl.UInt32, "rel": pl.String, "rela": pl.String, "sab": pl.String}


def _in(col: str, values: list) -> pl.Expr:
    return pl.col(col).fill_null("").is_in(values)


def _keep_drop(col: str, keep: list, drop: list) -> pl.Expr | None:
    """The 'fails' condition of a keep-list / drop-list filter, None when neither is set."""
    fails = [~_in(col, keep)] if keep else []
    fails += [_in(col, drop)] if drop else []
    return pl.any_horizontal(fails) if fails else None


class Checks:
    """Named row checks: rows failing none are kept; drops are counted by the first check failed.

    Counting needs a second streaming pass only when more than one check is active; with one,
    its count is simply the rows the filter removed.
    """

    def __init__(self, checks: list[tuple[str, pl.Expr | None]]):
        self.active = [(name, fails) for name, fails in checks if fails is not None]

    def plans(self, lf: pl.LazyFrame, out: list) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
        if not self.active:
            return lf.select(out), None
        reason = pl.lit(None, dtype=pl.String)
        for name, fails in reversed(self.active):
            reason = pl.when(fails.fill_null(False)).then(pl.lit(name)).otherwise(reason)
        lf = lf.with_columns(reason.alias("_reason"))
        kept = lf.filter(pl.col("_reason").is_null()).select(out)
        counts = lf.filter(pl.col("_reason").is_not_null()).group_by("_reason").len() if len(self.active) > 1 else None
        return kept, counts

    def dropped(self, counts: pl.DataFrame | None, rows: int, kept: int) -> dict:
        if counts is None:
            return {name: rows - kept for name, _ in self.active}
        return {name: 0 for name, _ in self.active} | dict(counts.iter_rows())


class NodeIndex:
    """CUI -> node_id. UMLS CUIs (C + 7 digits) go through a dense array: one gather per row, no
    string hashing. Any other form of id (the demo's synthetic CUIs) goes through a small map."""

    def __init__(self, nodes: pl.DataFrame):
        std = self._number(pl.col("cui"))
        dense = nodes.select(std.alias("num"), "node_id").drop_nulls()
        table = np.full(10**7, np.iinfo(np.uint32).max, dtype=np.uint32)
        table[dense["num"].to_numpy()] = dense["node_id"].to_numpy()
        self.table = pl.Series("node_id", table).replace(np.iinfo(np.uint32).max, None)
        self.other = nodes.filter(std.is_null()).select("cui", "node_id")
        self.height = nodes.height

    @staticmethod
    def _number(c: pl.Expr) -> pl.Expr:
        return pl.when((c.str.len_bytes() == 8) & c.str.starts_with("C")).then(c.str.slice(1).cast(pl.UInt32, strict=False))

    def ids(self, col: str) -> pl.Expr:
        """Expression: the node id of the CUI in `col`, null when it is not a node."""
        ids = pl.lit(self.table).gather(self._number(pl.col(col)))
        if self.other.height:
            ids = pl.coalesce(ids, pl.col(col).replace_strict(self.other["cui"], self.other["node_id"], default=None,
                                                              return_dtype=pl.UInt32))
        return ids


def read_atoms(path: Path, report: umls.FileReport, p: dict) -> tuple[pl.DataFrame, dict]:
    checks = Checks([
        ("language", ~_in("LAT", p["languages"]) if p["languages"] else None),
        ("source", _keep_drop("SAB", p["sources_keep"], p["sources_drop"])),
        ("suppress", _in("SUPPRESS", p["suppress_drop"]) if p["suppress_drop"] else None),
    ])
    pref = ((pl.col("TS") == "P").cast(pl.UInt8) * 4 + (pl.col("STT") == "PF").cast(pl.UInt8) * 2
            + (pl.col("ISPREF") == "Y").cast(pl.UInt8)).fill_null(0)
    lf = umls.scan(path, report, ["CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "CODE", "STR", "SUPPRESS"])
    kept, counts = checks.plans(lf, ["ln", pl.col("CUI").alias("cui"), pl.col("STR").alias("str"), pref.alias("pref"),
                                     pl.col("SAB").alias("sab"), pl.col("CODE").alias("code")])
    kept, *counts = pl.collect_all([kept] + ([counts] if counts is not None else []), engine="streaming")
    dropped = checks.dropped(counts[0] if counts else None, report.lines - report.malformed, kept.height)
    # An empty STR is not a name; few enough to filter after the streaming pass at no extra cost.
    atoms = kept.filter(pl.col("str").is_not_null())
    return atoms, dropped | {"empty_str": kept.height - atoms.height}


def first_of_key(key: list[str]) -> pl.Expr:
    """On rows sorted by `key`, true for the first row of each run of equal keys."""
    return pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in key])


def build_nodes(atoms: pl.DataFrame) -> pl.DataFrame:
    # The preferred name's atom has the highest rank, then the lowest line: one integer key.
    key = pl.col("pref").cast(pl.UInt64) * 2**32 + (2**32 - 1 - pl.col("ln").cast(pl.UInt64))
    return (atoms.lazy().group_by("cui")
            .agg(name=pl.col("str").get(key.arg_max()), names=pl.col("str").unique(maintain_order=True))
            .sort("cui").with_row_index("node_id").collect())


def add_semantic_types(nodes: pl.DataFrame, sty: pl.LazyFrame | None, index: NodeIndex) -> pl.DataFrame:
    empty = pl.lit([], dtype=pl.List(pl.String))
    if sty is None:
        return nodes.with_columns(semantic_types=empty)
    types = (sty.select(index.ids("CUI").alias("node_id"), "TUI").drop_nulls().collect(engine="streaming")
             .sort("node_id", "TUI").group_by("node_id", maintain_order=True)
             .agg(semantic_types=pl.col("TUI").unique(maintain_order=True)))
    return (nodes.join(types, on="node_id", how="left", maintain_order="left")
            .with_columns(pl.col("semantic_types").fill_null(empty)))


def write_edges(path: Path, report: umls.FileReport, p: dict, index: NodeIndex, out_dir: Path) -> dict:
    """Stream MRREL into node-id edges, de-duplicate, write out_dir/edges.parquet; return counts.

    Memory stays bounded whatever the size of MRREL: the streaming pass writes kept rows to scratch
    Arrow files partitioned by ranges of dst, and each range is de-duplicated, sorted and written
    as one shard of the edges.parquet directory on its own (shards in dst order, so reading the
    directory gives the whole table sorted).
    """
    checks = Checks([
        ("rel", _keep_drop("REL", p["rel_keep"], p["rel_drop"])),
        ("rela", _keep_drop("RELA", p["rela_keep"], p["rela_drop"])),
        ("source", _keep_drop("SAB", p["sources_keep"], p["sources_drop"])),
        ("suppress", _in("SUPPRESS", p["suppress_drop"]) if p["suppress_drop"] else None),
        ("self_loop", None if p["self_loops"] else pl.col("CUI1") == pl.col("CUI2")),
        ("endpoint_not_node", pl.col("src").is_null() | pl.col("dst").is_null()),
    ])
    lf = umls.scan(path, report, ["CUI1", "REL", "CUI2", "RELA", "SAB", "SUPPRESS"])
    lf = lf.with_columns(dst=index.ids("CUI1"), src=index.ids("CUI2"))
    kept, counts = checks.plans(lf, ["ln", "src", "dst", *(pl.col(c).fill_null("").cast(pl.Categorical).alias(c.lower())
                                                           for c in ("REL", "RELA", "SAB"))])
    n_parts = max(1, -(-report.lines // p["edge_partition_rows"]))
    block = max(1, -(-index.height // n_parts))
    scratch = out_dir / ".edge-parts"
    sink = kept.sink_ipc(pl.PartitionBy(scratch, key=(pl.col("dst") // block).alias("part"), include_key=False),
                         lazy=True, mkdir=True, compression="uncompressed")
    _, *counts = pl.collect_all([sink] + ([counts] if counts is not None else []), engine="streaming")

    # Sorted by key then line, the first row of each duplicate group is the one MRREL lists first
    # (categoricals sort by their strings, so the order does not depend on category codes).
    key = ["dst", "src", "rel", "rela"]
    kept_rows = n_edges = self_loops = 0
    touched = np.zeros(index.height, dtype=bool)
    (out_dir / "edges.parquet").mkdir()
    for k in range(n_parts):
        files = sorted((scratch / f"part={k}").glob("*"))
        rows = pl.concat([pl.read_ipc(f) for f in files]) if files else \
            pl.DataFrame(schema={"ln": pl.UInt32, "src": pl.UInt32, "dst": pl.UInt32} | dict.fromkeys(("rel", "rela", "sab"), pl.Categorical))
        edges = rows.sort(*key, "ln").filter(first_of_key(key)).select(*(pl.col(c).cast(t) for c, t in EDGE_SCHEMA.items()))
        kept_rows, n_edges = kept_rows + rows.height, n_edges + edges.height
        self_loops += int((edges["src"] == edges["dst"]).sum())
        touched[edges["src"].to_numpy()] = touched[edges["dst"].to_numpy()] = True
        edges.write_parquet(out_dir / "edges.parquet" / f"part-{k:05d}.parquet", compression="zstd", statistics=False)
        del rows, edges
    shutil.rmtree(scratch, ignore_errors=True)
    dropped = checks.dropped(counts[0] if counts else None, report.lines - report.malformed, kept_rows)
    return {"edges": n_edges, "rows_kept": kept_rows, "dropped": dropped | {"duplicate": kept_rows - n_edges},
            "self_loops": self_loops, "isolated_nodes": int((~touched).sum())}


def build(meta_dir: str | Path, params: dict, out_dir: Path) -> dict:
    """Write nodes, edges and codes parquet files into out_dir; return the stats."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}}
    paths = [umls.rrf_path(meta_dir, "MRCONSO.RRF"), umls.rrf_path(meta_dir, "MRREL.RRF"),
             umls.rrf_path(meta_dir, "MRSTY.RRF", required=False)]
    steps = tqdm(total=len(paths) + 3, desc="umls_graph", unit="step", disable=None)
    reports = {}
    for path in filter(None, paths):  # every file is checked before the long work starts
        steps.set_postfix_str(f"validating {path.name}")
        reports[path.name] = umls.validate(path, p["max_malformed_fraction"])
        steps.update()

    steps.set_postfix_str("reading MRCONSO")
    atoms, atoms_dropped = read_atoms(paths[0], reports["MRCONSO.RRF"], p)
    steps.update()
    steps.set_postfix_str("building nodes")
    key = ["sab", "code", "cui"]
    codes = atoms.lazy().filter(pl.col("code").is_not_null()).select(key).sort(key).filter(first_of_key(key)).collect()
    codes.write_parquet(out_dir / "codes.parquet", compression="zstd", statistics=False)
    n_atoms, n_codes = atoms.height, codes.height
    del codes
    nodes = build_nodes(atoms.drop("sab", "code"))
    del atoms
    index = NodeIndex(nodes)
    sty = umls.scan(paths[2], reports["MRSTY.RRF"], ["CUI", "TUI"]) if paths[2] else None
    nodes = add_semantic_types(nodes, sty, index).select("node_id", "cui", "name", "names", "semantic_types")
    nodes.write_parquet(out_dir / "nodes.parquet", compression="zstd", statistics=False)
    n_names = int(nodes["names"].list.len().sum() or 0)
    steps.update()
    steps.set_postfix_str("reading MRREL")
    e = write_edges(paths[1], reports["MRREL.RRF"], p, index, out_dir)
    steps.update()
    steps.close()

    files = {name: r.as_stats() for name, r in reports.items()}
    files["MRCONSO.RRF"].update(rows_kept=n_atoms, dropped=atoms_dropped, distinct_names=n_names)
    files["MRREL.RRF"].update(rows_kept=e["rows_kept"], dropped=e["dropped"])
    return {
        "nodes": nodes.height, "edges": e["edges"], "codes": n_codes,
        "malformed_lines": sum(r.malformed for r in reports.values()),
        "isolated_nodes": e["isolated_nodes"], "self_loops": e["self_loops"],
        "nodes_without_semantic_type": int((nodes["semantic_types"].list.len() == 0).sum()),
        "files": files,
    }
