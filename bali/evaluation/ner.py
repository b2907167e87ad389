"""NER by token-classification fine-tuning, scored with entity-level precision / recall / F1.

Input per split (train, dev, test) in TASK_DIR: PubTator (NCBI Disease, BC5CDR: converted to BIO
here) or CoNLL-style BIO (one `token ... label` line per token, a blank line between sentences;
BC2GM and JNLPBA are distributed this way). PubTator → BIO: the corpus stage's sentence splitter;
words are `\\w+` runs and single symbols, also cut at every mention boundary, so a mention that
starts or ends inside a word (`BRCA1-associated`) keeps its exact extent; a composite mention
(`breast and ovarian cancer`) is one entity; a mention crossing a sentence boundary joins the two
sentences; of overlapping mentions the first (longest) is kept; a gold line that cannot be read
(offsets that miss the mention's text) is skipped and reported with file and line. Every such
case is counted.
Dev is reported, not used to select anything: fixed epochs, one model per seed.
"""
from __future__ import annotations

from pathlib import Path


from bali.lm import finetune
from bali.lm.tagging import collate, encode, is_pubtator, predict_tags, read_conll, read_pubtator_bio
from bali.hf import load_pretrained
from bali.metrics import entity_prf


def load_splits(task_dir: Path, p: dict, stats: dict) -> dict[str, list]:
    files = finetune.split_files(task_dir)
    if not any(is_pubtator(f) for f in files.values()):
        return {s: read_conll(f) for s, f in files.items()}
    from bali.corpus.sentences import SentenceSplitter

    with SentenceSplitter(p["spacy_model"]) as splitter:
        return {s: read_pubtator_bio(f, splitter, p["entity_type"], stats) if is_pubtator(f) else read_conll(f)
                for s, f in files.items()}


def run(ctx, task_dir: str | Path, task: dict, p: dict) -> tuple[dict, "pl.DataFrame"]:
    """Fine-tune once per seed in `p['seeds']`; (metrics with mean ± std, test predictions of every seed)."""
    import polars as pl
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    stats = {k: 0 for k in ("mentions", "mentions_overlapping_dropped", "sentences_joined_at_mentions",
                            "words_cut_at_mentions", "unreadable_lines")}
    data = load_splits(Path(task_dir), p, stats)
    labels = ["O", *sorted({t for _, tags in data["train"] for t in tags} - {"O"})]
    unknown = {t for s in ("dev", "test") for _, tags in data[s] for t in tags} - set(labels)
    if unknown:
        raise ValueError(f"{task_dir}: labels {sorted(unknown)} occur in dev/test but not in train")
    label_ids = {t: i for i, t in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(ctx.model_dir)
    enc = {s: encode(tok, sents, label_ids, p["max_length"]) for s, sents in data.items()}
    truncated = sum(b["n_words"] > len({w for w in b["word_ids"] if w is not None}) for b in enc["test"])
    runs, rows = {"dev": [], "test": []}, []
    for s in p["seeds"]:
        model = load_pretrained(AutoModelForTokenClassification, ctx.model_dir, finetune.HEAD_NOTE, num_labels=len(labels),
                                id2label=dict(enumerate(labels)), label2id=label_ids)[0]
        finetune.train(model, enc["train"], collate, p, s, ctx.device, desc=f"NER seed {s}")
        for split in ("dev", "test"):
            pred = predict_tags(model, enc[split], labels, p["eval_batch_size"], ctx.device)
            runs[split].append(entity_prf([t for _, t in data[split]], pred))
            if split == "test":
                rows += [(s, i, words, gold, tags) for i, ((words, gold), tags) in enumerate(zip(data["test"], pred))]
    metrics = {
        "protocol": f"token classification fine-tuned {p['epochs']} epochs per seed (lr {p['lr']}, batch "
                    f"{p['batch_size']}), no model selection on dev; entity-level exact-match micro P/R/F1",
        "labels": labels, "sentences": {s: len(v) for s, v in data.items()},
        "test_entities": sum(t.startswith("B-") for _, tags in data["test"] for t in tags),
        "test_sentences_truncated": truncated, "conversion": stats, "seeds": list(p["seeds"]),
        **{split: {k: finetune.mean_std([r[k] for r in rs]) for k in ("precision", "recall", "f1")}
           for split, rs in runs.items()},
    }
    metrics["f1"] = metrics["test"]["f1"]["mean"]
    preds = pl.DataFrame(rows, schema={"seed": pl.Int64, "sentence": pl.Int64, "words": pl.List(pl.String),
                                       "gold": pl.List(pl.String), "pred": pl.List(pl.String)}, orient="row")
    return metrics, preds
