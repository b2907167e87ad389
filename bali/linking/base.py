"""What every linker of the link stage shares: the inputs it is built from, one corpus shard as it
reads it, and the mention table it returns.

A linker module (registered in `bali.linking.methods.LINKERS`) has one entry point,

    build(ctx: Context) -> Linker

and the object it returns has `mentions(shard: Shard, stats: dict) -> polars.DataFrame` (rows of
`MENTION_SCHEMA`, offsets into the sentence text) and `typed: bool`: True when it matches only the
kept concepts' names itself (`link.semantic_types`: a longer name of a dropped type must not hide a
kept one inside it), False when the stage is to drop what it links outside the types.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from bali.linking import abbreviations

MENTION_SCHEMA = {"doc_id": pl.String, "sent_id": pl.Int32, "start": pl.Int32, "end": pl.Int32, "text": pl.String,
                  "cui": pl.String, "node_id": pl.UInt32, "score": pl.Float32, "method": pl.String}


@dataclass
class Context:
    """A linker's inputs: every node (ids and CUIs of the rows it writes), the nodes of the kept
    semantic types, the `link` params and the stage's stats (a linker adds its own counters)."""

    graph_dir: Path
    all_nodes: pl.DataFrame
    nodes: pl.DataFrame
    p: dict
    stats: dict


@dataclass
class Shard:
    """One corpus shard: its sentences, and its documents and annotations read only when asked for."""

    corpus_dir: Path
    name: str
    sentences: pl.DataFrame
    _read: dict = field(default_factory=dict, repr=False)

    def table(self, what: str) -> pl.DataFrame:
        if what not in self._read:
            self._read[what] = pl.read_parquet(self.corpus_dir / f"{what}.parquet" / f"{self.name}.parquet")
        return self._read[what]

    @property
    def documents(self) -> pl.DataFrame:
        return self.table("documents")

    @property
    def annotations(self) -> pl.DataFrame:
        return self.table("annotations")


def spans_frame(spans: dict, sentences: pl.DataFrame, nodes_cui) -> pl.DataFrame:
    """Mention rows (MENTION_SCHEMA) of {(sentence row, start, end): (node ids, method, score)}."""
    rows = [(r, s, e, int(n), method, score) for (r, s, e), (ids, method, score) in spans.items() for n in ids]
    frame = pl.DataFrame(rows, schema={"row": pl.Int64, "start": pl.Int32, "end": pl.Int32, "node_id": pl.UInt32,
                                       "method": pl.String, "score": pl.Float32}, orient="row")
    frame = frame.sort("row", "start", "node_id")
    sent = sentences.select("doc_id", "sent_id", "text").with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    return (frame.join(sent, on="row").with_columns(text=pl.col("text").str.slice(pl.col("start"),
                                                                                   pl.col("end") - pl.col("start")),
                                                    cui=pl.lit(nodes_cui).gather(pl.col("node_id")))
            .select(*MENTION_SCHEMA))


def add_abbreviations(spans: dict, sentences: pl.DataFrame, documents: pl.DataFrame, stats: dict) -> None:
    """Short forms of abbreviations defined in a document take their long form's concepts; a longer
    match that already covers a short form keeps it."""
    t0 = time.perf_counter()
    by_row: dict[int, list] = {}
    for (r, a, b), (ids, *_) in spans.items():
        by_row.setdefault(r, []).append((a, b, ids))
    doc_rows: dict[str, list] = {}
    for row, doc_id, s, e in sentences.select("doc_id", "start", "end").with_row_index("row").iter_rows():
        doc_rows.setdefault(doc_id, []).append((row, s, e))
    for doc_id, text in documents.select("doc_id", "text").iter_rows():
        sents = doc_rows.get(doc_id)
        if not sents or "(" not in text:
            continue
        linked = {(s + a, s + b): ids for row, s, _ in sents for a, b, ids in by_row.get(row, ())}
        for (a, b), ids in abbreviations.propagate(text, linked).items():
            home = next(((row, s) for row, s, e in sents if s <= a and b <= e), None)
            if home is None or any(x <= a and b <= y and (x, y) != (a, b) for x, y in linked):
                continue
            spans[(home[0], a - home[1], b - home[1])] = (ids, "abbreviation", 1.0)
            stats["abbreviation_mentions"] += 1
    stats["abbreviation_seconds"] = stats.get("abbreviation_seconds", 0.0) + time.perf_counter() - t0
