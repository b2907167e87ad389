"""Scoring the link stage against gold-annotated text: concept recognition, as PhenoTagger reports it.

The gold folder is read the way the pipeline reads text: a GSC+ folder (`corpus/<PMID>` texts,
`ann/<PMID>` lines, HP ids) is first written out as PubTator with live HP ids; a PubTator file (or
folder) is used as it is. The corpus stage's code splits it into sentences and keeps its mentions as
gold annotations, the link stage's code links the sentences with the params given, and gold ids
become graph CUIs through `codes.parquet` exactly as `link.method: pretagged` maps them.

Figures (micro-averaged precision, recall, F1 over the whole folder):
- `mention_exact`: a (document, start, end, CUI) is right when gold has the same span and concept;
- `mention_overlap`: a predicted (span, CUI) is right when a gold mention of that CUI overlaps it, and
  a gold mention is found when an overlapping prediction has its CUI;
- `document`: the set of CUIs per document against gold's.
A mention linked to several concepts (an ambiguous name) counts once per concept, as it enters training.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import polars as pl

from bali.kg import ontology
from bali.evaluation.el_data import Issues, gsc_live_id, gsc_mentions
from bali.linking.pretagged import id_table

SPAN = ["doc_id", "start", "end", "cui"]


def gsc_to_pubtator(gsc_dir: Path, obo: Path, out_file: Path, documents: set[str] | None = None) -> Issues:
    """GSC+ as one PubTator file: an empty title, the text as abstract (so offsets move by the one
    space the corpus reader puts between title and abstract), ids as live `HP:` ids."""
    issues = Issues()
    alias = ontology.live_ids(ontology.parse_obo(obo))
    docs: dict[str, tuple[str, list]] = {}
    for pmid, text, start, end, hp, mention, where in gsc_mentions(gsc_dir, issues):
        if documents is None or pmid in documents:
            docs.setdefault(pmid, (text, []))[1].append((start, end, mention, gsc_live_id(hp, alias, where, issues)))
    with open(out_file, "w", encoding="utf-8") as f:
        for pmid, (text, mentions) in docs.items():
            body = text.replace("\n", " ")  # one PubTator line; offsets stay as they are
            f.write(f"{pmid}|t|\n{pmid}|a|{body}\n")
            for start, end, mention, hp in mentions:
                f.write(f"{pmid}\t{start + 1}\t{end + 1}\t{mention}\tPhenotype\t{hp}\n")
            f.write("\n")
    return issues


def gold_mentions(corpus_dir: Path, codes: pl.DataFrame, link_params: dict) -> tuple[pl.DataFrame, dict]:
    """The corpus's annotations as (doc_id, start, end, cui, text) in document offsets, and the gold ids
    that are no graph concept, by prefix."""
    ann = pl.read_parquet(corpus_dir / "annotations.parquet")
    ann = ann.with_row_index("mention").explode("ids").rename({"ids": "id"}).drop_nulls("id")
    table = id_table(ann["id"], codes, link_params["pretagged_sources"], link_params["pretagged_keep_prefix"])
    linked = ann.join(table, on="id", how="left")
    missing = dict(linked.filter(pl.col("cui").is_null()).group_by("prefix").len().sort("prefix").iter_rows())
    gold = linked.drop_nulls("cui").select(*SPAN, "text").unique(SPAN).sort(SPAN)
    return gold, missing


def predicted_mentions(corpus_dir: Path, link_dir: Path) -> pl.DataFrame:
    """The link stage's mentions in document offsets."""
    sents = pl.read_parquet(corpus_dir / "sentences.parquet").select("doc_id", "sent_id", s_start="start")
    found = pl.read_parquet(link_dir / "mentions.parquet").join(sents, on=["doc_id", "sent_id"])
    return (found.select("doc_id", start=pl.col("start") + pl.col("s_start"), end=pl.col("end") + pl.col("s_start"),
                         cui="cui", text="text").unique(SPAN).sort(SPAN))


def prf(tp_pred: int, n_pred: int, tp_gold: int, n_gold: int) -> dict:
    p = tp_pred / n_pred if n_pred else 0.0
    r = tp_gold / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "predicted": n_pred, "gold": n_gold}


def overlap_hits(a: pl.DataFrame, b: pl.DataFrame) -> pl.Series:
    """For each row of a, whether a row of b in the same document with the same CUI overlaps it."""
    pairs = (a.with_row_index("i").join(b.select("doc_id", "cui", b_start="start", b_end="end"), on=["doc_id", "cui"])
             .filter((pl.col("start") < pl.col("b_end")) & (pl.col("b_start") < pl.col("end"))))
    return pl.Series(range(a.height)).is_in(pairs["i"].unique().cast(pl.Int64).implode())


def score(gold: pl.DataFrame, pred: pl.DataFrame, top: int = 15) -> dict:
    """Mention-level (exact, overlapping) and document-level micro P/R/F1, with the most frequent
    false positives and misses (exact level) by lower-cased text."""
    exact_tp = pred.join(gold, on=SPAN, how="semi").height
    pred_hit, gold_hit = overlap_hits(pred, gold), overlap_hits(gold, pred)
    pd, gd = pred.select("doc_id", "cui").unique(), gold.select("doc_id", "cui").unique()
    doc_tp = pd.join(gd, on=["doc_id", "cui"], how="semi").height
    fps = pred.join(gold, on=SPAN, how="anti")["text"].str.to_lowercase()
    misses = gold.join(pred, on=SPAN, how="anti")["text"].str.to_lowercase()
    return {"mention_exact": prf(exact_tp, pred.height, exact_tp, gold.height),
            "mention_overlap": prf(int(pred_hit.sum()), pred.height, int(gold_hit.sum()), gold.height),
            "document": prf(doc_tp, pd.height, doc_tp, gd.height),
            "top_false_positives": Counter(fps.to_list()).most_common(top),
            "top_misses": Counter(misses.to_list()).most_common(top)}


def gold_corpus(gold_input: Path, corpus_dir: Path, corpus_params: dict) -> tuple[dict, float]:
    """The corpus stage's code on a PubTator file or folder (sentences, gold annotations) into an empty
    `corpus_dir`: its stats and the seconds it took (spaCy's sentence splitting, most of them)."""
    from bali.corpus.build import build, discover

    corpus_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    stats = build(discover(gold_input), corpus_dir, corpus_params)
    return stats, time.perf_counter() - t0


def link_and_score(corpus_dir: Path, graph_dir: Path, link_dir: Path, link_params: dict) -> dict:
    """The link stage's code on a built corpus, scored against its gold mentions. Throughput is the
    shard loop's (`linking_seconds`: matching, abbreviations, the mention table), apart from the
    method's setup (an index built or a model loaded once per run)."""
    from bali.linking.link import link

    link_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    link_stats = link(graph_dir, corpus_dir, link_dir, link_params)
    seconds = time.perf_counter() - t0
    documents = pl.read_parquet(corpus_dir / "documents.parquet", columns=["doc_id"]).height
    gold, missing = gold_mentions(corpus_dir, pl.read_parquet(graph_dir / "codes.parquet"), link_params)
    figures = score(gold, predicted_mentions(corpus_dir, link_dir))
    linking = link_stats.get("linking_seconds", seconds)
    return {**figures, "documents": documents, "gold_ids_not_in_graph": missing,
            "seconds": {"link": seconds, "setup": link_stats.get("setup_seconds", 0.0), "linking": linking},
            "abstracts_per_s_link": documents / max(seconds, 1e-9),
            "abstracts_per_s_linking": documents / max(linking, 1e-9), "link_stats": link_stats}


def recognise(gold_input: Path, graph_dir: Path, work_dir: Path, corpus_params: dict, link_params: dict) -> dict:
    """Run the corpus and link stages' code on a PubTator file or folder and score the links against
    its gold mentions; `work_dir` (empty) receives corpus/ and link/. Adds `seconds` per step."""
    corpus_stats, sentence_seconds = gold_corpus(gold_input, work_dir / "corpus", corpus_params)
    r = link_and_score(work_dir / "corpus", graph_dir, work_dir / "link", link_params)
    r["seconds"]["sentences"] = sentence_seconds
    return {**r, "documents": corpus_stats["documents"]}
