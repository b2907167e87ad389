"""Corpus files -> documents, sentences and gold annotations, in shards.

Input files are applied in name order, the way PubMed's update files work: a later record with the
same id replaces the earlier one and a DeleteCitation removes it. Two passes keep memory bounded:
1. parse every file into scratch parquet chunks, noting each record's (file, position);
2. decide each id's surviving record, then split the survivors' sentences and write the shards.
Output tables are directories of parquet shards named after their input file, so a new input file
adds shards without touching the others' content.
"""
from __future__ import annotations

import glob
import shutil
import sys
from pathlib import Path

import polars as pl
from tqdm import tqdm

from bali.corpus import jsonl, medline, pubtator
from bali.corpus.records import Deletion, Doc, RecordError, open_maybe_gzip
from bali.corpus.sentences import SentenceSplitter

READERS = {"medline": medline.read, "pubtator": pubtator.read, "jsonl": jsonl.read}
ERRORS_SHOWN = 20
DOC_SCHEMA = {"doc_id": pl.String, "title": pl.String, "abstract": pl.String, "seg_start": pl.List(pl.Int64),
              "seg_end": pl.List(pl.Int64), "pos": pl.Int64}
ANN_SCHEMA = {"doc_id": pl.String, "pos": pl.Int64, "start": pl.Int64, "end": pl.Int64, "text": pl.String,
              "type": pl.String, "ids": pl.List(pl.String)}


class CorpusError(ValueError):
    """Missing input, or too many malformed records."""


def discover(spec: str | Path) -> list[Path]:
    """A file, a directory (its files) or a glob; in name order."""
    p = Path(spec)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")) \
        if p.is_dir() else [Path(f) for f in glob.glob(str(spec)) if Path(f).is_file()]
    if not files:
        raise CorpusError(f"{spec}: no input files")
    return sorted(files, key=lambda f: f.name)


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".xml"):
        return "medline"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    try:
        with open_maybe_gzip(path) as f:
            head = f.read(4096).lstrip()
    except (OSError, EOFError):
        head = b""
    return "medline" if head.startswith(b"<") else "jsonl" if head.startswith(b"{") else "pubtator"


def assemble(doc: Doc) -> tuple[str, list[tuple[int, int]]]:
    """The abstract text (labelled sections joined) and the segment spans in title + " " + abstract."""
    parts = [f"{label}: {text}" if label else text for label, text in doc.sections if text or label]
    abstract = " ".join(parts)
    segs = [(0, len(doc.title))] if doc.title.strip() else []
    at = len(doc.title) + 1
    for part in parts:
        segs.append((at, at + len(part)))
        at += len(part) + 1
    return abstract, segs


class Collector:
    """Parses files into scratch chunks and keeps the record/deletion events."""

    def __init__(self, scratch: Path, shard_documents: int):
        self.scratch, self.shard = scratch, shard_documents
        self.events: list[pl.DataFrame] = []
        self.chunks: list[tuple[int, str, Path]] = []  # (file index, shard name, scratch path)
        self.errors: list[str] = []
        self.records = self.malformed = 0

    def _flush(self, fi: int, stem: str, docs: list, anns: list) -> None:
        name = f"{stem}.{sum(1 for c in self.chunks if c[0] == fi):04d}"
        path = self.scratch / f"{fi:05d}-{name}"
        pl.DataFrame(docs, schema=DOC_SCHEMA, orient="row").write_parquet(f"{path}.docs.parquet")
        pl.DataFrame(anns, schema=ANN_SCHEMA, orient="row").write_parquet(f"{path}.ann.parquet")
        self.chunks.append((fi, name, path))

    def parse(self, fi: int, path: Path) -> None:
        stem = path.name.replace(".", "_")  # shards are named after their file: pubmed25n0001_xml_gz.0000
        if any(name.startswith(stem + ".") for _, name, _ in self.chunks):
            stem = f"{stem}_{fi}"  # same file name in another folder
        docs, anns, ids, kinds = [], [], [], []
        empty = path.stat().st_size == 0
        if empty:
            self._error(RecordError(f"{path}: line 1", "empty file"))
        for pos, item in enumerate([] if empty else READERS[detect_format(path)](path)):
            if isinstance(item, RecordError):
                self._error(item)
            elif isinstance(item, Deletion):
                ids += item.doc_ids
                kinds += [(pos, "delete")] * len(item.doc_ids)
            else:
                self.records += 1
                abstract, segs = assemble(item)
                docs.append((item.doc_id, item.title, abstract, [s for s, _ in segs], [e for _, e in segs], pos))
                anns += [(item.doc_id, pos, m.start, m.end, m.text, m.type, m.ids) for m in item.mentions]
                ids.append(item.doc_id)
                kinds.append((pos, "record"))
                if len(docs) >= self.shard:
                    self._flush(fi, stem, docs, anns)
                    docs, anns = [], []
        if docs or not any(c[0] == fi for c in self.chunks):
            self._flush(fi, stem, docs, anns)
        self.events.append(pl.DataFrame({"doc_id": ids, "file": [fi] * len(ids), "pos": [k[0] for k in kinds],
                                         "kind": [k[1] for k in kinds]},
                                        schema={"doc_id": pl.String, "file": pl.Int64, "pos": pl.Int64,
                                                "kind": pl.String}))

    def _error(self, err: RecordError) -> None:
        self.malformed += 1
        if len(self.errors) < ERRORS_SHOWN:
            self.errors.append(str(err))
            print(f"corpus: {err}", file=sys.stderr)


def survivors(events: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """(file, pos) of the record that stands for each id, and the replace/delete counts."""
    last = events.sort("file", "pos").group_by("doc_id", maintain_order=True).last()
    records = events.filter(pl.col("kind") == "record")
    had_record = events.group_by("doc_id").agg(pl.col("kind").eq("record").any().alias("r"))
    deleted_ids = last.filter(pl.col("kind") == "delete").join(had_record, on="doc_id").filter("r")
    keep = last.filter(pl.col("kind") == "record").select("file", "pos")
    deleted_records = records.join(deleted_ids.select("doc_id"), on="doc_id").height
    return keep, {
        "replaced": records.height - keep.height - deleted_records,
        "deleted": deleted_records,
        "deletions_without_record": last.filter(pl.col("kind") == "delete").height - deleted_ids.height,
    }


def build(inputs: list[Path], out_dir: Path, p: dict) -> dict:
    scratch = out_dir / ".scratch"
    scratch.mkdir()
    try:
        return _build(inputs, out_dir, scratch, p)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build(inputs: list[Path], out_dir: Path, scratch: Path, p: dict) -> dict:
    col = Collector(scratch, p["shard_documents"])
    for fi, path in enumerate(tqdm(inputs, desc="corpus: parse", unit="file", disable=None)):
        col.parse(fi, path)
    total = col.records + col.malformed
    if total == 0 or col.malformed / total > p["max_malformed_fraction"]:
        raise CorpusError(f"{col.malformed} of {total} records are malformed (max_malformed_fraction "
                          f"{p['max_malformed_fraction']:.2%}); first: " + "; ".join(col.errors[:5]))
    keep, counts = survivors(pl.concat(col.events))
    stats = {"files": len(inputs), "documents_read": col.records, "malformed_records": col.malformed,
             "malformed_examples": col.errors[:10], **counts,
             "dropped": {"no_abstract": 0, "empty": 0}, "documents": 0, "sentences": 0, "annotations": 0}
    for table in ("documents", "sentences", "annotations"):
        (out_dir / f"{table}.parquet").mkdir()
    bar = tqdm(total=keep.height, desc="corpus: sentences", unit="doc", disable=None)
    with SentenceSplitter(p["spacy_model"], p["batch_size"], p["processes"]) as splitter:
        for fi, name, path in col.chunks:
            docs = pl.read_parquet(f"{path}.docs.parquet").join(keep.filter(pl.col("file") == fi), on="pos",
                                                                how="semi", maintain_order="left")
            empty = (docs["title"].str.strip_chars() == "") & (docs["abstract"] == "")
            no_abs = ~empty & (docs["abstract"] == "")
            stats["dropped"]["empty"] += int(empty.sum())
            drop = empty | (no_abs if not p["keep_without_abstract"] else False)
            stats["dropped"]["no_abstract"] += int((no_abs & drop).sum())
            docs = docs.filter(~drop).with_columns(text=pl.col("title") + " " + pl.col("abstract"),
                                                   source=pl.lit(str(inputs[fi].name)))
            write_shard(docs, pl.read_parquet(f"{path}.ann.parquet"), splitter, out_dir, name, stats)
            bar.update(docs.height)
    bar.close()
    return stats


def write_shard(docs: pl.DataFrame, anns: pl.DataFrame, splitter: SentenceSplitter, out_dir: Path, name: str,
                stats: dict) -> None:
    texts = docs["text"].to_list()
    segs = [list(zip(s, e)) for s, e in zip(docs["seg_start"].to_list(), docs["seg_end"].to_list())]
    spans = splitter.split(list(zip(texts, segs)))
    sent_rows = [(doc_id, i, s, e, text[s:e]) for doc_id, text, sp in zip(docs["doc_id"], texts, spans)
                 for i, (s, e) in enumerate(sp)]
    sentences = pl.DataFrame(sent_rows, schema={"doc_id": pl.String, "sent_id": pl.Int32, "start": pl.Int32,
                                                "end": pl.Int32, "text": pl.String}, orient="row")
    anns = anns.join(docs.select("doc_id", "pos"), on=["doc_id", "pos"], how="semi", maintain_order="left")
    docs.select("doc_id", "title", "abstract", "text", "source").write_parquet(
        out_dir / "documents.parquet" / f"{name}.parquet", compression="zstd")
    sentences.write_parquet(out_dir / "sentences.parquet" / f"{name}.parquet", compression="zstd")
    anns.select("doc_id", "start", "end", "text", "type", "ids").write_parquet(
        out_dir / "annotations.parquet" / f"{name}.parquet", compression="zstd")
    stats["documents"] += docs.height
    stats["sentences"] += sentences.height
    stats["annotations"] += anns.height
