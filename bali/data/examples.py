"""Training examples: sentences tokenised with the base model's fast tokenizer, each mention's
character span mapped to its subword tokens through the tokenizer's offset mapping.

A mention cut by truncation is dropped, never half kept; a sentence left without a mention is
dropped; every drop is counted. All mentions of one concept in a sentence are kept apart here
(the collate step pools them, as the method does).
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from bali.hf import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if not tok.is_fast:
        raise ValueError(f"{name}: a fast tokenizer (offset mapping) is needed")
    return tok


def encode(tokenizer, texts: list[str], max_length: int) -> list:
    """The fast tokenizer's own encodings (`.ids`, `.offsets`), truncated to max_length: the same ids
    as `tokenizer(texts, truncation=True, max_length=max_length)`, without transformers' per-text
    conversion to Python dicts (half the dataset stage's time at scale)."""
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length)
    try:
        return backend.encode_batch(texts)
    finally:  # the tokenizer is saved with the dataset: it must not keep this call's truncation
        backend.no_truncation()


def list_column(rows: list[list[int]], dtype) -> pl.Series:
    """A polars list column from Python lists through one flat array and Arrow offsets (polars' own
    per-row conversion costs more than tokenising)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=int(offsets[-1]))
    return pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)))


def token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """[first, last + 1) of the tokens overlapping chars [start, end); None if the mention runs past
    the last real token (truncated) or covers no token. Special tokens have empty offsets."""
    real = [i for i, (a, b) in enumerate(offsets) if b > a]
    if not real or end > offsets[real[-1]][1]:
        return None
    ends = [offsets[i][1] for i in real]
    first = bisect.bisect_right(ends, start)  # first real token ending after the mention starts
    if first >= len(real) or offsets[real[first]][0] >= end:
        return None
    last = bisect.bisect_left([offsets[i][0] for i in real], end) - 1  # last token starting before its end
    return real[first], real[last] + 1


def split_of(doc_id: str, seed: int, val_fraction: float) -> str:
    """train / val by document, from a hash of (seed, doc id): stable across runs and machines."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")
    return "val" if h / 2**64 < val_fraction else "train"


SCHEMA = {"doc_id": pl.String, "sent_id": pl.Int32, "split": pl.String, "input_ids": pl.List(pl.UInt32),
          "mention_start": pl.List(pl.UInt16), "mention_end": pl.List(pl.UInt16), "mention_node": pl.List(pl.UInt32)}


def build_examples(sentences: pl.DataFrame, mentions: pl.DataFrame, tokenizer, max_length: int, seed: int,
                   val_fraction: float, stats: dict, chunk: int = 20000) -> pl.DataFrame:
    """One row per kept sentence: ids, split and its mentions as token spans with their node ids.
    Sentences are tokenised `chunk` at a time, so the tokenizer's Python lists (ids and offset pairs,
    ~100 bytes a token) never hold more than one chunk; the result is Arrow columns."""
    spans = (mentions.select("doc_id", "sent_id", "start", "end", "node_id").unique()
             .sort("doc_id", "sent_id", "start", "end", "node_id")
             .group_by("doc_id", "sent_id", maintain_order=True)
             .agg(m_start="start", m_end="end", m_node="node_id"))
    rows = sentences.select("doc_id", "sent_id", "text").join(spans, on=["doc_id", "sent_id"], how="inner",
                                                               maintain_order="left")
    stats["sentences_with_mentions"] += rows.height
    stats["mentions_in"] += int(rows["m_node"].list.len().sum() or 0)
    parts = [_examples(part, tokenizer, max_length, seed, val_fraction, stats) for part in rows.iter_slices(chunk)]
    return pl.concat(parts) if parts else pl.DataFrame(schema=SCHEMA)


def _examples(rows: pl.DataFrame, tokenizer, max_length: int, seed: int, val_fraction: float,
              stats: dict) -> pl.DataFrame:
    out = []
    for (doc_id, sent_id, starts, ends, nodes), e in zip(rows.select("doc_id", "sent_id", "m_start", "m_end", "m_node")
                                                         .iter_rows(), encode(tokenizer, rows["text"].to_list(), max_length)):
        ids, offsets = e.ids, e.offsets
        t0, t1, kept_nodes = [], [], []
        for s, e, n in zip(starts, ends, nodes):
            span = token_span(offsets, s, e)
            if span is None:
                stats["mentions_dropped_truncated"] += 1
                continue
            t0.append(span[0])
            t1.append(span[1])
            kept_nodes.append(n)
        if not kept_nodes:
            stats["sentences_dropped_no_mention_left"] += 1
            continue
        out.append((doc_id, sent_id, split_of(doc_id, seed, val_fraction), ids, t0, t1, kept_nodes))
    stats["mentions_kept"] += sum(len(r[6]) for r in out)
    columns = list(zip(*out)) or [[]] * len(SCHEMA)
    numpy_of = {pl.UInt32: np.uint32, pl.UInt16: np.uint16}
    return pl.DataFrame([list_column(col, numpy_of[dtype.inner]).alias(name).cast(dtype) if dtype.is_nested()
                         else pl.Series(name, col, dtype=dtype) for (name, dtype), col in zip(SCHEMA.items(), columns)])


def read_held_out(path: str | Path | None) -> set[str]:
    """The linker's keys (`bali.names.name_keys`: NFKC, case, dashes, spacing) of the
    strings of an entity-linking query file (CUI||mention lines): never a node name, a mention or
    part of a sentence in training."""
    if not path:
        return set()
    from bali.names import name_keys

    texts = [line.split("||", 1)[1] for line in Path(path).read_text(encoding="utf-8").splitlines() if "||" in line]
    return set(name_keys(texts).to_list()) - {""}


def contains_held_out(texts: pl.Series, held_out: set[str]) -> pl.Series:
    """Whether each text contains a held-out key at token boundaries (Aho-Corasick over the keyed
    texts, so the cost does not grow with the number of held-out strings)."""
    from bali.names import name_keys

    if not held_out or texts.len() == 0:
        return pl.Series([False] * texts.len())
    padded = " " + name_keys(texts) + " "
    return padded.str.contains_any([f" {k} " for k in sorted(held_out)])
