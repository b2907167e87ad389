"""The link stage's `ner` method: concept spans from a BIO token classifier, linked to graph nodes.

Any Hugging Face token-classification model with B-/I- labels will do (`link.ner.model`: the
`ner_model` stage's tagger by default, or a path or hub id of a user's own, e.g. a BERN2-style
biomedical NER). Each span is linked by the dictionary key of its whole text first (as the dictionary
method links a name), then by the nearest concept name in an encoder's space (`link.ner.encoder`,
mean-pooled, lower-cased) when the cosine reaches `link.ner.threshold`; short forms defined in a
document take their long form's concepts as in the dictionary method. The names' vectors are
embedded once per (encoder, protocol) and kept in the evaluation's embedding cache; ranking is the
evaluation's exact chunked top-k.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from bali import precision as numerics
from bali.lm import tagging as bio
from bali.linking.dictionary import DictionaryIndex

# The names' embedding protocol: as pre-training pools node names (mean, lower-cased, <= 32 tokens)
PROTOCOL = {"pooling": "mean", "lowercase": True, "max_length": 32, "batch_size": 256}


class Tagger:
    """Concept spans (character offsets) of texts, from a BIO token classifier (a path or hub id)."""

    def __init__(self, model: str | Path, batch_size: int, max_length: int, device: str, precision: str = "auto"):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from bali.hf import quiet

        with quiet():
            self.model = AutoModelForTokenClassification.from_pretrained(model).to(device).eval()
        self.tok = AutoTokenizer.from_pretrained(model)
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self.precision = numerics.resolve(precision, device)  # `link.precision`: bf16 only where it is native

    def spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """A span starts at a B- word (or an I- word after O) and runs over the I- words after it."""
        words = [[(m.start(), m.end()) for m in bio.WORD.finditer(t)] for t in texts]
        sents = [([t[a:b] for a, b in w], ["O"] * len(w)) for t, w in zip(texts, words)]
        enc = bio.encode(self.tok, sents, {"O": 0}, self.max_length)
        with numerics.autocast(self.device, self.precision):
            tags = bio.predict_tags(self.model, enc, self.labels, self.batch_size, self.device) if enc else []
        out = []
        for w, ts in zip(words, tags):
            spans, cur = [], None
            for (a, b), t in zip(w, ts):
                if t.startswith("I-") and cur is not None:
                    cur[1] = b
                    continue
                if cur is not None:
                    spans.append(tuple(cur))
                cur = [a, b] if t != "O" else None
            if cur is not None:
                spans.append(tuple(cur))
            out.append(spans)
        return out


def tag_in_batches(tagger: Tagger, texts: list[str], chunk: int = 4096) -> list[list[tuple[int, int]]]:
    out = []
    for i in tqdm(range(0, len(texts), chunk), desc="link (ner): tagging", unit="chunk", disable=None):
        out += tagger.spans(texts[i:i + chunk])
    return out


class NerLinker:
    """Tagger spans linked to the nodes given (already filtered by `link.semantic_types`)."""

    def __init__(self, nodes: pl.DataFrame, p: dict, device: str):
        from bali.lm.encoder import Encoder

        q = p["ner"]
        t0 = time.perf_counter()
        self.tagger = Tagger(q["model"], q["batch_size"], q["max_length"], device, p.get("precision", "auto"))
        self.index = DictionaryIndex(nodes, p["min_name_length"], p["max_name_tokens"], p["stopwords"],
                                     p["exclude_names"])
        names = nodes.select("node_id", text="names").explode("text").drop_nulls("text").unique(maintain_order=True)
        self.name_node = names["node_id"].to_numpy()
        self.encoder = Encoder(q["encoder"], PROTOCOL, device, q["embedding_cache"] or None, self.tagger.precision)
        self.name_vecs = self.encoder.vectors(names["text"].to_list(), progress="link (ner): embedding names")
        self.threshold = q["threshold"]
        self.index_seconds = time.perf_counter() - t0

    def spans(self, texts: list[str], ambiguity: str, stats: dict) -> dict:
        """{(row, start, end): (node ids, "ner", score)}: 1.0 for a dictionary key, else the cosine."""
        from bali.lm.encoder import top_k

        out, pending = {}, []
        stats["ner_numeric_precision"] = self.tagger.precision  # what `link.precision` resolved to here
        t0 = time.perf_counter()
        tagged = tag_in_batches(self.tagger, texts)
        t1 = time.perf_counter()
        for row, (text, found) in enumerate(zip(texts, tagged)):
            for a, b in found:
                stats["ner_spans"] += 1
                whole = [m for m in self.index.match([text[a:b]]) if m.start == 0 and m.end == b - a]
                if whole:
                    ids, ambiguous = self.index.concepts(whole[0].key, ambiguity)
                    stats["ambiguous_mentions"] += int(ambiguous)
                    out[(row, a, b)] = (ids, "ner", 1.0)
                    stats["ner_linked_by_name"] += 1
                else:
                    pending.append((row, a, b))
        if pending:
            with torch.no_grad():
                vecs = self.encoder.embed([texts[r][a:b] for r, a, b in pending])
                scores, idx = top_k(vecs, self.name_vecs, 1)
            for span, s, i in zip(pending, scores[:, 0].tolist(), idx[:, 0].tolist()):
                if s >= self.threshold:
                    out[span] = (np.array([self.name_node[i]]), "ner", s)
                    stats["ner_linked_by_embedding"] += 1
                else:
                    stats["ner_spans_unlinked"] += 1
        stats["ner_tagging_seconds"] += t1 - t0
        stats["ner_linking_seconds"] += time.perf_counter() - t1
        return out


class ShardTagger:
    """The `ner` method behind the link stage's interface: matches only the kept types' names itself."""

    typed = True

    def __init__(self, ctx):
        self.linker = NerLinker(ctx.nodes, ctx.p, "cuda" if torch.cuda.is_available() else "cpu")
        self.p, self.cuis = ctx.p, ctx.all_nodes["cui"]
        ctx.stats.update(ner_spans=0, ner_linked_by_name=0, ner_linked_by_embedding=0, ner_spans_unlinked=0,
                         ner_index_seconds=self.linker.index_seconds, ner_tagging_seconds=0.0,
                         ner_linking_seconds=0.0)

    def mentions(self, shard, stats: dict) -> pl.DataFrame:
        from bali.linking.base import add_abbreviations, spans_frame

        spans = self.linker.spans(shard.sentences["text"].to_list(), self.p["ambiguity"], stats)
        if self.p["abbreviations"]:
            add_abbreviations(spans, shard.sentences, shard.documents, stats)
        return spans_frame(spans, shard.sentences, self.cuis)


def build(ctx) -> ShardTagger:
    return ShardTagger(ctx)
