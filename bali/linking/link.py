"""The link stage: concept mentions in every sentence of a corpus, linked to graph nodes.

Works shard by shard (the corpus stage's shards), so memory follows one shard, and writes
mentions.parquet as a directory of shards with the same names. Offsets are into the sentence text.
"""
from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
from tqdm import tqdm

from bali.linking import abbreviations, pretagged
from bali.linking.dictionary import DictionaryIndex

MENTION_SCHEMA = {"doc_id": pl.String, "sent_id": pl.Int32, "start": pl.Int32, "end": pl.Int32, "text": pl.String,
                  "cui": pl.String, "node_id": pl.UInt32, "score": pl.Float32, "method": pl.String}


def shard_names(corpus_dir: Path) -> list[str]:
    return sorted(f.stem for f in (corpus_dir / "sentences.parquet").glob("*.parquet"))


def dictionary_mentions(index: DictionaryIndex, sentences: pl.DataFrame, documents: pl.DataFrame, nodes_cui,
                        p: dict, stats: dict) -> pl.DataFrame:
    texts = sentences["text"].to_list()
    spans: dict[tuple[int, int, int], tuple] = {}  # (row, start, end) -> (node ids, method, score)
    for m in index.match(texts):
        ids, ambiguous = index.concepts(m.key, p["ambiguity"])
        stats["ambiguous_mentions"] += int(ambiguous)
        spans[(m.sentence, m.start, m.end)] = (ids, "dictionary", 1.0)
    if p["abbreviations"]:
        add_abbreviations(spans, sentences, documents, stats)
    return spans_frame(spans, sentences, nodes_cui)


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


def typed_nodes(nodes: pl.DataFrame, semantic_types: list[str]) -> pl.DataFrame:
    """The nodes with at least one of the semantic types (TUIs); every node when the list is empty."""
    if not semantic_types:
        return nodes
    return nodes.filter(pl.col("semantic_types").list.eval(pl.element().is_in(semantic_types)).list.any())


def link(graph_dir: Path, corpus_dir: Path, out_dir: Path, p: dict) -> dict:
    all_nodes = pl.read_parquet(graph_dir / "nodes.parquet")
    # The dictionary and ner methods match only names of kept concepts (a longer name of a dropped
    # type must not hide a kept one inside it); the others drop what they link outside the types.
    nodes = typed_nodes(all_nodes, p["semantic_types"])
    kept = None if nodes.height == all_nodes.height else nodes["node_id"]
    method = p["method"]
    stats = {"method": method, "sentences": 0, "sentences_with_mention": 0, "mentions": 0, "mention_rows": 0,
             "distinct_concepts": 0, "ambiguous_mentions": 0, "abbreviation_mentions": 0, "by_method": {},
             "ids_not_linked": {}, "mentions_across_sentences": 0, "dropped_by_semantic_type": 0,
             "concepts_of_kept_types": nodes.height}
    if method == "dictionary":
        index = DictionaryIndex(nodes, p["min_name_length"], p["max_name_tokens"], p["stopwords"], p["exclude_names"])
        stats["dictionary"] = index.stats
    elif method == "pretagged":
        codes = pl.read_parquet(graph_dir / "codes.parquet")
    elif method == "scispacy":
        from bali.linking import scispacy_linker
        linker = scispacy_linker.Linker(all_nodes, Path(p["scispacy"]["kb_dir"]), p["scispacy"])
    elif method == "ner":
        import torch

        from bali.linking.ner import NerLinker
        tagger = NerLinker(nodes, p, "cuda" if torch.cuda.is_available() else "cpu")
        stats.update(ner_spans=0, ner_linked_by_name=0, ner_linked_by_embedding=0, ner_spans_unlinked=0,
                     ner_index_seconds=tagger.index_seconds, ner_tagging_seconds=0.0, ner_linking_seconds=0.0)
    else:
        raise ValueError(f"link.method must be dictionary, scispacy, pretagged or ner, not {method!r}")
    concepts = set()
    (out_dir / "mentions.parquet").mkdir()
    for name in tqdm(shard_names(corpus_dir), desc=f"link ({method})", unit="shard", disable=None):
        sentences = pl.read_parquet(corpus_dir / "sentences.parquet" / f"{name}.parquet")
        if method == "dictionary":
            documents = pl.read_parquet(corpus_dir / "documents.parquet" / f"{name}.parquet")
            found = dictionary_mentions(index, sentences, documents, all_nodes["cui"], p, stats)
        elif method == "ner":
            spans = tagger.spans(sentences["text"].to_list(), p["ambiguity"], stats)
            if p["abbreviations"]:
                documents = pl.read_parquet(corpus_dir / "documents.parquet" / f"{name}.parquet")
                add_abbreviations(spans, sentences, documents, stats)
            found = spans_frame(spans, sentences, all_nodes["cui"])
        elif method == "pretagged":
            annotations = pl.read_parquet(corpus_dir / "annotations.parquet" / f"{name}.parquet")
            found = pretagged.mentions(annotations, sentences, all_nodes, codes, p["pretagged_sources"],
                                       p["pretagged_keep_prefix"], stats).cast(MENTION_SCHEMA)
        else:
            found = linker.mentions(sentences, stats)
        if kept is not None and method not in ("dictionary", "ner"):
            before = found.height
            found = found.filter(pl.col("node_id").is_in(kept.implode()))
            stats["dropped_by_semantic_type"] += before - found.height
        found = found.sort("doc_id", "sent_id", "start", "end", "node_id")  # joins above need not keep order
        found.write_parquet(out_dir / "mentions.parquet" / f"{name}.parquet", compression="zstd")
        stats["sentences"] += sentences.height
        stats["sentences_with_mention"] += found.select("doc_id", "sent_id").n_unique() if found.height else 0
        stats["mentions"] += found.select("doc_id", "sent_id", "start", "end").n_unique() if found.height else 0
        stats["mention_rows"] += found.height
        for m, n in found.group_by("method").len().iter_rows():
            stats["by_method"][m] = stats["by_method"].get(m, 0) + n
        concepts.update(found["node_id"].unique().to_list())
    stats["distinct_concepts"] = len(concepts)
    if stats["sentences"] == 0:
        print("link: the corpus has no sentences", file=sys.stderr)
    return stats
