"""Token classification with BIO tags, shared by the NER evaluation and the link stage's tagger:
gold files (PubTator, CoNLL) to word / tag sentences, subword encoding with the label on each
word's first subword, batching, and one predicted tag per word.

PubTator → BIO: the corpus stage's sentence splitter; words are `\\w+` runs and single symbols,
also cut at every mention boundary, so a mention that starts or ends inside a word
(`BRCA1-associated`) keeps its exact extent; a composite mention is one entity; a mention crossing
a sentence boundary joins the two sentences; of overlapping mentions the first (longest) is kept.
"""
from __future__ import annotations

import re
from pathlib import Path

from bali.lm import finetune

WORD = re.compile(r"\w+|[^\w\s]")


def is_pubtator(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    return re.match(r"[^\t|]+\|t\|", first) is not None


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    sents, words, tags = [], [], []
    for no, line in enumerate(open(path, encoding="utf-8"), 1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if words:
                sents.append((words, tags))
            words, tags = [], []
            continue
        if len(cols) < 2 or not re.fullmatch(r"O|[BI]-\S+", cols[-1]):
            raise ValueError(f"{path}:{no}: expected 'token ... BIO-label', got {line.strip()[:80]!r}")
        words.append(cols[0])
        tags.append(cols[-1])
    if words:
        sents.append((words, tags))
    return sents


def doc_to_bio(text: str, mentions: list[tuple[int, int, str]], sentences: list[tuple[int, int]], entity_type: str,
               stats: dict) -> list[tuple[list[str], list[str]]]:
    """BIO sentences of one document; `mentions` (start, end, type) as offsets into `text`."""
    kept, last_end = [], -1
    for s, e, t in sorted(mentions, key=lambda m: (m[0], -m[1])):
        if s < last_end:
            stats["mentions_overlapping_dropped"] += 1
            continue
        kept.append((s, e, entity_type or t))
        last_end = e
    merged: list[list[int]] = []
    for s, e in sentences:
        if merged and any(ms < merged[-1][1] < me for ms, me, _ in kept):
            merged[-1][1] = e
            stats["sentences_joined_at_mentions"] += 1
        else:
            merged.append([s, e])
    cuts = sorted({x for s, e, _ in kept for x in (s, e)})
    out = []
    for s0, e0 in merged:
        spans = []
        for m in WORD.finditer(text, s0, e0):
            inner = [c for c in cuts if m.start() < c < m.end()]
            stats["words_cut_at_mentions"] += bool(inner)
            bounds = [m.start(), *inner, m.end()]
            spans += list(zip(bounds, bounds[1:]))
        tags = ["O"] * len(spans)
        for s, e, t in kept:
            inside = [i for i, (a, b) in enumerate(spans) if s <= a and b <= e]
            for j, i in enumerate(inside):
                tags[i] = ("B-" if j == 0 else "I-") + t
        if spans:
            out.append(([text[a:b] for a, b in spans], tags))
    return out


def read_pubtator_bio(path: Path, splitter, entity_type: str, stats: dict) -> list[tuple[list[str], list[str]]]:
    from bali.corpus import pubtator
    from bali.corpus.records import RecordError

    docs = []
    for item in pubtator.read(path):
        if isinstance(item, RecordError):  # a gold mention whose offsets miss its text: counted, reported
            stats["unreadable_lines"] += 1
            stats.setdefault("unreadable_examples", [])
            if len(stats["unreadable_examples"]) < 10:
                stats["unreadable_examples"].append(str(item))
            continue
        docs.append(item)
    texts = [d.title + " " + d.sections[0][1] for d in docs]
    segments = [[(0, len(d.title)), (len(d.title) + 1, len(t))] for d, t in zip(docs, texts)]
    sentences = splitter.split(list(zip(texts, segments)))
    out = []
    for d, text, sents in zip(docs, texts, sentences):
        stats["mentions"] += len(d.mentions)
        out += doc_to_bio(text, [(m.start, m.end, m.type) for m in d.mentions], sents, entity_type, stats)
    return out


def encode(tokenizer, sents, label_ids: dict, max_length: int) -> list[dict]:
    """Subword ids with the word's label on its first subword (-100 elsewhere)."""
    out = []
    for words, tags in sents:
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        word_ids = enc.word_ids()
        labels, prev = [], None
        for w in word_ids:
            labels.append(-100 if w is None or w == prev else label_ids[tags[w]])
            prev = w
        out.append({"input_ids": enc["input_ids"], "labels": labels, "word_ids": word_ids, "n_words": len(words)})
    return out


def collate(batch: list[dict]) -> dict:
    ids, mask = finetune.padded([b["input_ids"] for b in batch])
    labels, _ = finetune.padded([b["labels"] for b in batch], -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def predict_tags(model, encoded: list[dict], labels: list[str], batch_size: int, device: str) -> list[list[str]]:
    """One tag per word; words cut off by truncation are O."""
    out = []
    for start, logits in zip(range(0, len(encoded), batch_size),
                             finetune.predict_logits(model, encoded, collate, batch_size, device)):
        for b, row in zip(encoded[start:start + batch_size], logits.argmax(-1).tolist()):
            tags, prev = ["O"] * b["n_words"], None
            for pos, w in enumerate(b["word_ids"]):
                if w is not None and w != prev:
                    tags[w] = labels[row[pos]]
                prev = w
            out.append(tags)
    return out
