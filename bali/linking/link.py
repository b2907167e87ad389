"""The link stage: concept mentions in every sentence of a corpus, linked to graph nodes.

Works shard by shard (the corpus stage's shards), so memory follows one shard, and writes
mentions.parquet as a directory of shards with the same names. Offsets are into the sentence text.
The method (`link.method`) is looked up once in `bali.linking.methods.LINKERS`; every method returns rows
of `MENTION_SCHEMA` and this module filters, sorts, writes and counts them the same way.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import polars as pl
from tqdm import tqdm

from bali.corpus import shard_names
from bali.linking.methods import linker_module
from bali.linking.base import MENTION_SCHEMA, Context, Shard, add_abbreviations, spans_frame  # noqa: F401

__all__ = ["MENTION_SCHEMA", "add_abbreviations", "link", "shard_names", "spans_frame", "typed_nodes"]


def typed_nodes(nodes: pl.DataFrame, semantic_types: list[str]) -> pl.DataFrame:
    """The nodes with at least one of the semantic types (TUIs); every node when the list is empty."""
    if not semantic_types:
        return nodes
    return nodes.filter(pl.col("semantic_types").list.eval(pl.element().is_in(semantic_types)).list.any())


def descendants(graph_dir: Path, nodes: pl.DataFrame, roots: list[str]) -> pl.DataFrame:
    """The nodes under any of the root CUIs (themselves included) through CHD edges (child -> parent),
    as PhenoTagger keeps HPO's "Phenotypic abnormality" branch; every node when `roots` is empty."""
    if not roots:
        return nodes
    all_ids = pl.read_parquet(graph_dir / "nodes.parquet", columns=["node_id", "cui"])
    missing = sorted(set(roots) - set(all_ids.filter(pl.col("cui").is_in(roots))["cui"]))
    if missing:
        raise ValueError(f"link.descendants_of: {', '.join(missing)} not in the graph")
    child = (pl.scan_parquet(graph_dir / "edges.parquet" / "*.parquet") if (graph_dir / "edges.parquet").is_dir()
             else pl.scan_parquet(graph_dir / "edges.parquet"))
    child = child.filter(pl.col("rel") == "CHD").select(parent="dst", node_id="src").unique().collect()
    seen = frontier = all_ids.filter(pl.col("cui").is_in(roots)).select("node_id")
    while frontier.height:
        frontier = (child.join(frontier.rename({"node_id": "parent"}), on="parent", how="semi").select("node_id")
                    .join(seen, on="node_id", how="anti").unique())
        seen = pl.concat([seen, frontier])
    return nodes.join(seen, on="node_id", how="semi")


def link(graph_dir: Path, corpus_dir: Path, out_dir: Path, p: dict) -> dict:
    method = p["method"]
    module = linker_module(method)  # an unknown method fails here, before any work
    all_nodes = pl.read_parquet(graph_dir / "nodes.parquet")
    nodes = descendants(graph_dir, typed_nodes(all_nodes, p["semantic_types"]), p.get("descendants_of", []))
    kept = None if nodes.height == all_nodes.height else nodes["node_id"]
    stats = {"method": method, "sentences": 0, "sentences_with_mention": 0, "mentions": 0, "mention_rows": 0,
             "distinct_concepts": 0, "ambiguous_mentions": 0, "abbreviation_mentions": 0, "by_method": {},
             "ids_not_linked": {}, "mentions_across_sentences": 0, "dropped_by_semantic_type": 0,
             "concepts_of_kept_types": nodes.height}
    t0 = time.perf_counter()
    linker = module.build(Context(graph_dir, all_nodes, nodes, p, stats))
    stats["setup_seconds"], t1 = time.perf_counter() - t0, time.perf_counter()  # index built / model loaded
    concepts = set()
    (out_dir / "mentions.parquet").mkdir()
    for name in tqdm(shard_names(corpus_dir), desc=f"link ({method})", unit="shard", disable=None):
        shard = Shard(corpus_dir, name, pl.read_parquet(corpus_dir / "sentences.parquet" / f"{name}.parquet"))
        found = linker.mentions(shard, stats)
        if kept is not None and not linker.typed:
            before = found.height
            found = found.filter(pl.col("node_id").is_in(kept.implode()))
            stats["dropped_by_semantic_type"] += before - found.height
        found = found.sort("doc_id", "sent_id", "start", "end", "node_id")  # joins above need not keep order
        found.write_parquet(out_dir / "mentions.parquet" / f"{name}.parquet", compression="zstd")
        sentences = shard.sentences
        stats["sentences"] += sentences.height
        stats["sentences_with_mention"] += found.select("doc_id", "sent_id").n_unique() if found.height else 0
        stats["mentions"] += found.select("doc_id", "sent_id", "start", "end").n_unique() if found.height else 0
        stats["mention_rows"] += found.height
        for m, n in found.group_by("method").len().iter_rows():
            stats["by_method"][m] = stats["by_method"].get(m, 0) + n
        concepts.update(found["node_id"].unique().to_list())
    stats["distinct_concepts"] = len(concepts)
    stats["linking_seconds"] = time.perf_counter() - t1  # the shard loop: reading, linking, writing
    if stats["sentences"] == 0:
        print("link: the corpus has no sentences", file=sys.stderr)
    return stats
