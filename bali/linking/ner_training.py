"""Training the BIO concept tagger of the link stage's `ner` method, from the base LM.

Training data, by `ner_model.train`:
- a folder of gold files (`train` / `dev` splits in PubTator or CoNLL BIO, read as the NER evaluation
  reads them; every mention one `Concept`);
- "" (default): distant supervision from the graph itself, as PhenoTagger learns HPO without annotated
  text: the corpus's sentences tagged where the dictionary linker finds a name of a kept concept
  (`link.semantic_types`), sentences without a match as negatives (a sampled share), and the graph's
  names and synonyms as one-span examples. A seeded share of the sentences is the dev split the stage
  reports its own entity F1 on.
Words are the NER evaluation's (`\\w+` runs and single symbols, cut at mention boundaries), so the
tagger sees the same units at training and at linking time.
"""
from __future__ import annotations

import random
from pathlib import Path

import polars as pl
from tqdm import tqdm

from bali import precision
from bali.lm import finetune
from bali.lm import tagging as ner
from bali.metrics import entity_prf

LABELS = ["O", "B-Concept", "I-Concept"]
ENTITY = "Concept"


def _bio(text: str, spans: list[tuple[int, int]], stats: dict) -> list[tuple[list[str], list[str]]]:
    return ner.doc_to_bio(text, [(s, e, ENTITY) for s, e in spans], [(0, len(text))], ENTITY, stats)


def silver(graph_dir: Path, corpus_dir: Path, link_p: dict, p: dict, seed: int) -> tuple[dict, dict]:
    """Distantly supervised train / dev sentences (words, tags) and what went into them."""
    from bali.linking.dictionary import DictionaryIndex
    from bali.corpus import shard_names
    from bali.linking.link import typed_nodes

    nodes = typed_nodes(pl.read_parquet(graph_dir / "nodes.parquet"), link_p["semantic_types"])
    index = DictionaryIndex(nodes, link_p["min_name_length"], link_p["max_name_tokens"], link_p["stopwords"],
                            link_p["exclude_names"])
    rng = random.Random(seed)
    stats = {k: 0 for k in ("mentions_overlapping_dropped", "sentences_joined_at_mentions", "words_cut_at_mentions")}
    positive, negative = [], []
    for name in tqdm(shard_names(corpus_dir), desc="ner_model: silver labels", unit="shard", disable=None):
        texts = pl.read_parquet(corpus_dir / "sentences.parquet" / f"{name}.parquet")["text"].to_list()
        found: dict[int, list] = {}
        for m in index.match(texts):
            found.setdefault(m.sentence, []).append((m.start, m.end))
        for row, text in enumerate(texts):
            (positive if row in found else negative).append((text, found.get(row, [])))
    rng.shuffle(positive)
    rng.shuffle(negative)
    positive = positive[:p["max_sentences"]]
    negative = negative[:int(len(positive) * p["negative_ratio"])]
    sentences = positive + negative
    rng.shuffle(sentences)
    n_dev = int(len(sentences) * p["dev_fraction"])
    names = nodes.select(pl.col("names").explode()).drop_nulls()["names"].unique(maintain_order=True).to_list()
    rng.shuffle(names)
    names = names[:p["names"]]
    train = [s for text, spans in sentences[n_dev:] for s in _bio(text, spans, stats)]
    train += [s for text in names for s in _bio(text, [(0, len(text))], stats)]
    dev = [s for text, spans in sentences[:n_dev] for s in _bio(text, spans, stats)]
    rng.shuffle(train)
    counts = {"source": "distant supervision (dictionary matches of the kept concepts' names)",
              "concepts": nodes.height, "sentences_with_match": len(positive), "sentences_without": len(negative),
              "names": len(names), "train_examples": len(train), "dev_sentences": len(dev), **stats}
    return {"train": train, "dev": dev}, counts


def gold(folder: Path, p: dict) -> tuple[dict, dict]:
    """Train / dev sentences of a gold folder (PubTator or CoNLL BIO), every mention one Concept."""
    from bali.corpus.sentences import SentenceSplitter

    stats = {k: 0 for k in ("mentions", "mentions_overlapping_dropped", "sentences_joined_at_mentions",
                            "words_cut_at_mentions", "unreadable_lines")}
    files = finetune.split_files(folder, ("train", "dev"))
    with SentenceSplitter(p["spacy_model"]) as splitter:
        data = {s: ner.read_pubtator_bio(f, splitter, ENTITY, stats) if ner.is_pubtator(f) else ner.read_conll(f)
                for s, f in files.items()}
    one_type = {s: [(w, ["O" if t == "O" else t[:2] + ENTITY for t in tags]) for w, tags in sents]
                for s, sents in data.items()}
    return one_type, {"source": f"gold files in {folder}", "train_examples": len(data["train"]),
                      "dev_sentences": len(data["dev"]), **stats}


def fine_tune(base: str | Path, data: dict, p: dict, seed: int, device: str):
    """(model, tokenizer, dev figures): the base LM with a fresh token-classification head."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from bali.hf import load_pretrained

    ids = {t: i for i, t in enumerate(LABELS)}
    tok = AutoTokenizer.from_pretrained(base)
    model, _ = load_pretrained(AutoModelForTokenClassification, base, "the tagger's head is trained here",
                               num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id=ids)
    enc = {s: ner.encode(tok, sents, ids, p["max_length"]) for s, sents in data.items()}
    finetune.train(model, enc["train"], ner.collate, p, seed, device, desc="ner_model")  # in p["precision"]
    resolved = precision.resolve(p["precision"], device)  # dev tags in the precision the link stage tags in
    with precision.autocast(device, resolved):
        pred = ner.predict_tags(model, enc["dev"], LABELS, p["eval_batch_size"], device) if enc["dev"] else []
    dev = entity_prf([t for _, t in data["dev"]], pred) if pred else {}
    return model, tok, {**dev, "numeric_precision": resolved}  # what training and these tags ran in
