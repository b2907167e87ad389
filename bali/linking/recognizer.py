"""The link stage's `recognizer` method: PhenoTagger's recipe (Luo et al. 2021) on PyPI-only parts,
trained from the ontology alone.

PhenoTagger keeps a dictionary's matches and adds the n-grams of each sentence that a classifier,
trained on the ontology's names (the concept as label) against n-grams that are no concept's name,
links with a high enough score; overlapping n-grams are resolved by score, then length. Here:

- candidates: every window of 1..`max_ngram` word tokens of a sentence that holds no punctuation,
  neither starts nor ends with a stop word, and has a content word of some name (token form
  `singular`, so "tumours" counts), and that no dictionary match overlaps (those are kept as found);
- features: the base LM's input word-piece embeddings, mean-pooled over the lower-cased text and
  L2-normalised. A transformer pass per n-gram would cost ~10 ms on a CPU; a table lookup keeps the
  method at dictionary-like speed;
- the concept: the kept name with the highest cosine (`min_cosine` at least);
- whether it is a concept mention at all: a logistic regression over the features, fitted by the
  `recognizer_model` stage on every name (positive) against name fragments and corpus n-grams that
  are no name (negative); `min_probability` at least.
Abbreviations defined in a document link like their long form, as in the dictionary method.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import polars as pl

from bali.linking.dictionary import index_from_params
from bali.linking.variants import singular
from bali.names import tokens

MODEL_FILES = ("model.npz", "meta.json")
WORD = re.compile(r"^[^\W_]+$")


def stop_words() -> set[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return {w.lower() for w in STOP_WORDS}


class Features:
    """Mean-pooled, L2-normalised input embeddings of the base LM's word pieces (lower-cased text)."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoModel, AutoTokenizer

        from bali.hf import quiet

        if not (Path(model_dir) / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: no language model (config.json) to take word-piece vectors from")
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        with quiet():
            table = AutoModel.from_pretrained(model_dir).get_input_embeddings().weight.detach().float().numpy()
        self.table = table
        self.special = set(self.tok.all_special_ids)

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.table.shape[1]), np.float32)
        ids = self.tok([t.lower() for t in texts], add_special_tokens=False, truncation=True, max_length=32)["input_ids"]
        lengths = np.array([max(len(x), 1) for x in ids])
        flat = np.fromiter((i for x in ids for i in (x or [self.tok.unk_token_id])), np.int64, lengths.sum())
        sums = np.add.reduceat(self.table[flat], np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        vecs = sums / lengths[:, None]
        return (vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def windows(text: str, max_ngram: int, stop: set[str], content: set[str]) -> list[tuple[int, int, str]]:
    """(start, end, text) of the candidate n-grams of a sentence (offsets into the text)."""
    toks = tokens(text)
    out = []
    for i in range(len(toks)):
        if not WORD.match(toks[i][0]) or toks[i][0] in stop:
            continue
        has_content = False
        for j in range(i, min(i + max_ngram, len(toks))):
            t = toks[j][0]
            if not WORD.match(t):
                break
            has_content = has_content or singular(t) in content
            if has_content and t not in stop:
                out.append((toks[i][1], toks[j][2], text[toks[i][1]:toks[j][2]]))
    return out


def training_texts(nodes: pl.DataFrame, corpus_texts: list[str], p: dict, seed: int) -> tuple[list[str], list[str]]:
    """(positives, negatives): every distinct name; name fragments and corpus n-grams that are no
    name (compared lower-cased), `negatives_per_name` of them per name, half from each where there are."""
    rng = random.Random(seed)
    names = nodes.select(pl.col("names").explode()).drop_nulls()["names"].unique(maintain_order=True).to_list()
    known = {n.lower() for n in names}
    stop = stop_words()
    content = {singular(t) for n in names for t, _, _ in tokens(n) if WORD.match(t) and t not in stop}
    fragments = {w for n in names for _, _, w in windows(n, p["max_ngram"], stop, content)}
    fragments = sorted(w for w in fragments if w.lower() not in known)
    from_corpus = sorted({w for t in corpus_texts for _, _, w in windows(t, p["max_ngram"], stop, content)
                          if w.lower() not in known})
    want = int(len(names) * p["negatives_per_name"])
    rng.shuffle(fragments)
    rng.shuffle(from_corpus)
    half = min(len(from_corpus), want // 2)
    return names, from_corpus[:half] + fragments[:want - half]


def fit(nodes: pl.DataFrame, corpus_texts: list[str], encoder: str | Path, out_dir: Path, p: dict,
        seed: int) -> dict:
    """Fit the concept / no-concept classifier and write model.npz and meta.json to out_dir."""
    from sklearn.linear_model import LogisticRegression

    pos, neg = training_texts(nodes, corpus_texts, p, seed)
    if not pos or not neg:
        raise ValueError(f"recognizer_model: {len(pos)} names and {len(neg)} negatives: nothing to fit")
    feats = Features(encoder)
    x = np.concatenate([feats(pos), feats(neg)])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.random.default_rng(seed).permutation(len(y))
    n_dev = int(len(y) * p["dev_fraction"])
    dev, train = order[:n_dev], order[n_dev:]
    clf = LogisticRegression(C=p["c"], max_iter=p["max_iter"]).fit(x[train], y[train])
    acc = float((clf.predict(x[dev]) == y[dev]).mean()) if n_dev else None
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "model.npz", weight=clf.coef_[0].astype(np.float32), bias=np.float32(clf.intercept_[0]))
    meta = {"encoder": str(encoder), "features": "mean input word-piece embeddings", "max_ngram": p["max_ngram"]}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    return {"names": len(pos), "negatives": len(neg), "dev_examples": n_dev, "dev_accuracy": acc}


class Linker:
    """The `recognizer` method: the dictionary's matches, plus classified n-grams around them."""

    typed = True

    def __init__(self, ctx):
        q = ctx.p["recognizer"]
        model = Path(q["model"])
        missing = [f for f in MODEL_FILES if not (model / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{model}: no recognizer model ({', '.join(missing)} missing); fit it with "
                                    f"python stages/recognizer_model.py GRAPH_DIR CORPUS_DIR BASE_MODEL {model}")
        with np.load(model / "model.npz") as z:
            self.weight, self.bias = z["weight"], float(z["bias"])
        meta = json.loads((model / "meta.json").read_text())
        self.features = Features(q.get("encoder") or meta["encoder"])
        if self.features.table.shape[1] != len(self.weight):
            raise ValueError(f"{model}: fitted on {len(self.weight)}-dim vectors, the encoder gives "
                             f"{self.features.table.shape[1]}")
        self.p, self.q, self.cuis = ctx.p, q, ctx.all_nodes["cui"]
        self.max_ngram = q.get("max_ngram") or meta["max_ngram"]
        self.index = index_from_params(ctx.nodes, ctx.p)
        names = ctx.nodes.select("node_id", text="names").explode("text").drop_nulls("text").unique(maintain_order=True)
        self.name_node, self.name_vecs = names["node_id"].to_numpy(), self.features(names["text"].to_list())
        self.stop = stop_words()
        self.content = {singular(t) for n in names["text"].to_list() for t, _, _ in tokens(n)
                        if WORD.match(t) and t not in self.stop}
        ctx.stats["dictionary"] = self.index.stats
        ctx.stats.update(recognizer_candidates=0, recognizer_mentions=0, recognizer_sentences_skipped=0)

    def classify(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probability of a concept mention, nearest kept name's node, its cosine) per text; the
        nearest name is looked up only where the probability reaches `min_probability` (cosine 0
        elsewhere): the classifier is cheap, the search over every name is not."""
        v = self.features(texts)
        prob = 1 / (1 + np.exp(-(v @ self.weight + self.bias)))
        node, cos = np.zeros(len(v), np.int64), np.zeros(len(v), np.float32)
        todo = np.flatnonzero(prob >= self.q["min_probability"])
        for a in range(0, len(todo), 4096):  # memory: 4096 x names scores at a time
            rows = todo[a:a + 4096]
            s = v[rows] @ self.name_vecs.T
            best = s.argmax(1)
            node[rows], cos[rows] = self.name_node[best], s[np.arange(len(rows)), best]
        return prob, node, cos

    def mentions(self, shard, stats: dict) -> pl.DataFrame:
        from bali.linking.base import add_abbreviations, spans_frame

        sentences = shard.sentences
        texts = sentences["text"].to_list()
        spans, taken = {}, {}  # (row, start, end) -> (node ids, method, score); row -> spans taken
        for m in self.index.match(texts):
            ids, ambiguous = self.index.concepts(m.key, self.p["ambiguity"])
            stats["ambiguous_mentions"] += int(ambiguous)
            spans[(m.sentence, m.start, m.end)] = (ids, "dictionary", 1.0)
            taken.setdefault(m.sentence, []).append((m.start, m.end))
        cands = []
        for r, text in enumerate(texts):
            if len(text) > self.q["max_sentence_chars"]:
                stats["recognizer_sentences_skipped"] += 1  # a run-on "sentence" would make ~n * max_ngram windows
                continue
            busy = taken.get(r, [])
            cands += [(r, a, b, w) for a, b, w in windows(text, self.max_ngram, self.stop, self.content)
                      if not any(a < y and x < b for x, y in busy)]
        stats["recognizer_candidates"] += len(cands)
        prob, node, cos = self.classify([w for *_, w in cands])
        ok = (prob >= self.q["min_probability"]) & (cos >= self.q["min_cosine"])
        # overlapping candidates: the higher score first, then the longer span
        picked = sorted((float(cos[i] * prob[i]), cands[i][2] - cands[i][1], i) for i in np.flatnonzero(ok))
        for score, _, i in reversed(picked):
            r, a, b, _ = cands[i]
            if any(a < y and x < b for x, y in taken.get(r, [])):
                continue
            taken.setdefault(r, []).append((a, b))
            spans[(r, a, b)] = (np.array([node[i]]), "recognizer", score)
            stats["recognizer_mentions"] += 1
        if self.p["abbreviations"]:
            add_abbreviations(spans, sentences, shard.documents, stats)
        return spans_frame(spans, sentences, self.cuis)


def build(ctx) -> Linker:
    return Linker(ctx)
