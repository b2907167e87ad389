"""The scispaCy route: NER spans from a spaCy/scispaCy model, linked by scispaCy's CandidateGenerator
(TF-IDF over character 3-grams + an nmslib HNSW index) over a knowledge base made from nodes.parquet.

scispaCy's own `create_tfidf_ann_index` hard-codes build settings for a 60-thread machine (M=100,
efConstruction=2000: hours on 2 cores), refuses to run on Python 3.11 (its float16 check) and saves
the vectors as float16; the index here is built the same way with the settings as params, saved
in float32, and loaded with the query-time efSearch set (a fresh index without it has poor recall).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

INDEX_FILES = ("nmslib_index.bin", "tfidf_vectorizer.joblib", "concept_aliases.json", "settings.json")


def knowledge_base(nodes: pl.DataFrame):
    from scispacy.linking_utils import Entity, KnowledgeBase

    return KnowledgeBase(Entity(cui, name, list(names), list(types), "")
                         for cui, name, names, types in nodes.select("cui", "name", "names", "semantic_types").iter_rows())


def build_index(kb, kb_dir: Path, p: dict) -> None:
    """Fit the TF-IDF vectorizer on every alias and build the HNSW index; write them to kb_dir."""
    import joblib
    import nmslib
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    aliases = sorted(kb.alias_to_cuis)
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=p["min_df"], dtype=np.float32)
    vectors = vectorizer.fit_transform(aliases)
    keep = np.asarray(vectors.sum(axis=1)).ravel() != 0  # nmslib crashes on all-zero vectors
    aliases, vectors = [a for a, k in zip(aliases, keep) if k], vectors[keep]
    index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
    index.addDataPointBatch(vectors)
    index.createIndex({"M": p["m"], "efConstruction": p["ef_construction"], "indexThreadQty": p["threads"],
                       "post": 0}, print_progress=False)
    kb_dir.mkdir(parents=True, exist_ok=True)
    index.saveIndex(str(kb_dir / "nmslib_index.bin"), save_data=True)
    joblib.dump(vectorizer, kb_dir / "tfidf_vectorizer.joblib")
    (kb_dir / "concept_aliases.json").write_text(json.dumps(aliases))
    settings = {k: p[k] for k in ("min_df", "m", "ef_construction")}
    (kb_dir / "settings.json").write_text(json.dumps({**settings, "aliases": len(aliases)}, sort_keys=True))


def load_generator(kb, kb_dir: Path, ef_search: int):
    import joblib
    import nmslib
    from scispacy.candidate_generation import CandidateGenerator

    missing = [f for f in INDEX_FILES if not (kb_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{kb_dir}: no scispaCy index ({', '.join(missing)} missing); "
                                f"build it with python stages/link_kb.py GRAPH_DIR {kb_dir}")
    index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
    index.loadIndex(str(kb_dir / "nmslib_index.bin"), load_data=True)
    index.setQueryTimeParams({"efSearch": ef_search})
    aliases = json.loads((kb_dir / "concept_aliases.json").read_text())
    return CandidateGenerator(index, joblib.load(kb_dir / "tfidf_vectorizer.joblib"), aliases, kb)


def load_ner(model: str):
    import spacy

    try:
        return spacy.load(model, exclude=["parser", "lemmatizer", "attribute_ruler", "tagger"])
    except OSError:
        sys.exit(f"link: spaCy NER model {model!r} is not installed. scispaCy models are not on PyPI: "
                 f"pip install https://s3-us-west-2.amazonaws.com/ai2-s2-scispacy/releases/v0.5.4/{model}-0.5.4.tar.gz "
                 f"(or set link.scispacy.ner_model to an installed spaCy model)")


class Linker:
    """NER spans -> candidate concepts above `threshold`, the best `max_entities_per_mention` kept."""

    def __init__(self, nodes: pl.DataFrame, kb_dir: Path, p: dict, nlp=None):
        self.kb = knowledge_base(nodes)
        self.generator = load_generator(self.kb, kb_dir, p["ef_search"])
        self.nlp = nlp or load_ner(p["ner_model"])
        self.p = p
        self.node_of = dict(zip(nodes["cui"], nodes["node_id"]))

    def mentions(self, sentences: pl.DataFrame, stats: dict) -> pl.DataFrame:
        spans = []  # (doc_id, sent_id, start, end, text)
        for (doc_id, sent_id, text), doc in zip(sentences.select("doc_id", "sent_id", "text").iter_rows(),
                                                self.nlp.pipe(sentences["text"].to_list(), batch_size=128)):
            spans += [(doc_id, sent_id, e.start_char, e.end_char, e.text) for e in doc.ents]
        rows = []
        for span, cands in zip(spans, self.generator([s[4] for s in spans], self.p["k"])):
            scored = sorted(((max(c.similarities), c.concept_id) for c in cands), key=lambda x: (-x[0], x[1]))
            kept = [(score, cui) for score, cui in scored if score >= self.p["threshold"]]
            stats["ner_spans"] = stats.get("ner_spans", 0) + 1
            rows += [(*span, cui, self.node_of[cui], score, "scispacy")
                     for score, cui in kept[:self.p["max_entities_per_mention"]]]
        return pl.DataFrame(rows, orient="row", schema={
            "doc_id": pl.String, "sent_id": pl.Int32, "start": pl.Int32, "end": pl.Int32, "text": pl.String,
            "cui": pl.String, "node_id": pl.UInt32, "score": pl.Float32, "method": pl.String})


class ShardLinker:
    """The `scispacy` method behind the link stage's interface (every node is a candidate; the stage
    drops concepts outside the kept types)."""

    typed = False

    def __init__(self, linker: Linker):
        self.linker = linker

    def mentions(self, shard, stats: dict) -> pl.DataFrame:
        return self.linker.mentions(shard.sentences, stats)


def build(ctx) -> ShardLinker:
    q = ctx.p["scispacy"]
    return ShardLinker(Linker(ctx.all_nodes, Path(q["kb_dir"]), q))
