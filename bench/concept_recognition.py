"""Concept recognition on gold-annotated text: the link stage, every method, scored on GSC+.

  python bench/concept_recognition.py [--gsc ../shared/data/gsc-plus] [--graph data/graph]
                                      [--split test|dev|all] [--seed 29] [--ner-threshold 0.8]
                                      [--ner-model models/ner] [--methods dictionary ner ...]

Run after `make demo` (it needs the demo's HPO graph, data/graph). GSC+'s 228 abstracts are split by
a seeded shuffle of their PMIDs into a dev half (for choosing a method's settings) and a test half
(for reporting); `--split` picks the half scored. Each method runs the corpus and link stages' code
with params.yaml's `corpus` and `link` sections and the method's overrides (`ner` with the tagger in
`link.ner.model`, when it holds one: `dvc exp run -S link.method=ner` or the ner_model stage trains
it), then is scored against
the gold mentions (`bali.evaluation.concept_recognition`): mention-level (exact span + concept, and
overlapping span + concept) and document-level micro P / R / F1, with the most frequent false
positives and misses. Prints a table and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
from pathlib import Path

import yaml

from bali.kg.ontology import hp_obo_path
from bali.evaluation.concept_recognition import gsc_to_pubtator, recognise

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # name -> link overrides
    "dictionary": {"method": "dictionary"},
    "dictionary, T033 only": {"method": "dictionary", "semantic_types": ["T033"]},
    "scispacy": {"method": "scispacy"},
    "ner": {"method": "ner"},
    "ner, T033 only": {"method": "ner", "semantic_types": ["T033"]},
}


def halves(gsc: Path, seed: int) -> dict[str, set[str]]:
    """dev / test halves of the annotated PMIDs, by a seeded shuffle of their sorted list."""
    pmids = sorted(f.name for f in (gsc / "ann").iterdir())
    random.Random(seed).shuffle(pmids)
    return {"dev": set(pmids[: len(pmids) // 2]), "test": set(pmids[len(pmids) // 2:]), "all": set(pmids)}


def scispacy_available(p: dict) -> str | None:
    """Why the scispaCy method cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec(p["scispacy"]["ner_model"]) is None:
        return f"the spaCy model {p['scispacy']['ner_model']} is not installed (not on PyPI)"
    if not Path(p["scispacy"]["kb_dir"]).is_dir():
        return f"no scispaCy index at {p['scispacy']['kb_dir']} (run the link_kb stage)"
    return None


def ner_available(p: dict) -> str | None:
    """Why the ner method cannot run here, or None."""
    if not (Path(p["ner"]["model"]) / "config.json").exists():
        return f"no tagger at {p['ner']['model']} (dvc exp run -S link.method=ner, or the ner_model stage)"
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsc", default=str(ROOT.parent / "shared" / "data" / "gsc-plus"))
    ap.add_argument("--graph", default=str(ROOT / "data" / "graph"))
    ap.add_argument("--split", choices=["dev", "test", "all"], default="test")
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--ner-threshold", type=float, help="link.ner.threshold (default: params.yaml's)")
    ap.add_argument("--ner-model", help="link.ner.model: a tagger folder (default: params.yaml's)")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD",
                    help=f"the methods scored (default: all of {', '.join(METHODS)})")
    a = ap.parse_args(argv)
    os.chdir(ROOT)  # params.yaml's paths (models/ner, models/base, the embedding cache) are the repository's
    doc = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    corpus_p = {**doc["corpus"], "base": doc["base"]}
    gsc, graph = Path(a.gsc), Path(a.graph)
    docs = halves(gsc, a.seed)[a.split]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        gold_file = Path(tmp) / "gsc.pubtator"
        issues = gsc_to_pubtator(gsc, hp_obo_path(), gold_file, docs)
        print(f"GSC+ {a.split} half: {len(docs)} abstracts; gold issues {issues.as_dict()['counts']}")
        for name in a.methods:
            link_p = {**doc["link"], **METHODS[name], "base": doc["base"]}
            ner_overrides = {"threshold": a.ner_threshold, "model": a.ner_model}
            link_p["ner"] = {**link_p["ner"], **{k: v for k, v in ner_overrides.items() if v is not None}}
            why = scispacy_available(link_p) if link_p["method"] == "scispacy" else \
                ner_available(link_p) if link_p["method"] == "ner" else None
            if why:
                print(f"{name}: skipped: {why}")
                results[name] = {"skipped": why}
                continue
            results[name] = recognise(gold_file, graph, Path(tmp) / name.replace(" ", "_").replace(",", ""),
                                      corpus_p, link_p)
    print(f"\n{'method':<24} {'exact P / R / F1':<20} {'overlap P / R / F1':<20} {'document P / R / F1':<20} "
          f"{'link abstracts/s':>16}")
    for name, r in results.items():
        if "skipped" in r:
            continue
        cells = [" / ".join(f"{r[k][m]:.3f}" for m in ("precision", "recall", "f1"))
                 for k in ("mention_exact", "mention_overlap", "document")]
        print(f"{name:<24} {cells[0]:<20} {cells[1]:<20} {cells[2]:<20} {r['abstracts_per_s_link']:>16.1f}")
    for name, r in results.items():
        if "ner_tagging_seconds" in r["link_stats"] if "skipped" not in r else False:
            ls = r["link_stats"]
            print(f"{name}: tagging {r['documents'] / ls['ner_tagging_seconds']:.1f} abstracts/s, span linking "
                  f"{r['documents'] / ls['ner_linking_seconds']:.1f} abstracts/s (the names' vectors: "
                  f"{ls['ner_index_seconds']:.1f} s, cached after the first run)")
    for name, r in results.items():
        if "skipped" not in r:
            print(f"\n{name}: top false positives {r['top_false_positives'][:10]}")
            print(f"{name}: top misses {r['top_misses'][:10]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"split": a.split, "abstracts": len(docs), "peak_rss_gib": round(peak, 3),
                      "methods": {n: ({k: r[k] for k in ("mention_exact", "mention_overlap", "document",
                                                         "abstracts_per_s_link", "seconds")} if "skipped" not in r
                                      else r) for n, r in results.items()}}))


if __name__ == "__main__":
    main()
