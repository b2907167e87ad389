"""Base vs aligned on real data nobody here wrote: GSC+ (HPO phenotype mentions in PubMed abstracts,
linked against every name of the graph), BC5CDR-disease (BioSyn format, MEDIC) and UMNSRS
similarity / relatedness. Run after `make demo` (it needs models/base, models/bali, data/graph):

  python bench/real_eval.py [--models base bali] [--out data/eval_real]

Each (model, task) is one run of the evaluate stage with the task given as an override — exactly
the command the README shows — so the figures are the pipeline's, not a re-implementation. Prints
a table (figures, paired tests against the first model, wall time and peak RSS of each run) and
ends with one JSON line. Timings are wall-clock on whatever machine runs it.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import yaml

from bali import real_data
from bali.reporting.ablations import flow
from bali.reporting.report import paired_hits, paired_spearman


def tasks() -> list[dict]:
    """The real tasks of ablations/demo.yaml (one list for the ablation table and this bench), their
    data/real/ folders read from $BALI_REAL_DATA (`bali.real_data`)."""
    real = yaml.safe_load((ROOT / "ablations" / "demo.yaml").read_text(encoding="utf-8"))["real_tasks"]
    return [{k: (str(real_data.resolve(v)) if k in ("dir", "dictionary") and v != "graph" else v) for k, v in t.items()}
            for t in real]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["base", "bali"], help="folders under models/ (first = baseline)")
    ap.add_argument("--out", default="data/eval_real")
    ap.add_argument("--seed", type=int, default=29)
    args = ap.parse_args(argv)
    out = ROOT / args.out
    items = tasks()
    override = f"evaluate.tasks={flow(items)}"
    print(f"tasks override: -S '{override}'")
    runs = []
    for model in args.models:
        for t in items:
            cmd = [sys.executable, "stages/evaluate.py", f"models/{model}", t["dir"], str(out / model / t["name"]),
                   "--task", t["name"], "-S", override]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            runs.append({"model": model, "task": t["name"], "wall_s": round(wall, 1)})
            print(f"  {model:>6} {t['name']:<15} {wall:7.1f} s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    base = args.models[0]
    result = {"peak_rss_gib_largest_run": round(peak, 2), "runs": runs, "figures": {}}
    print(f"\n{'task':<28} {'model':>6} {'figure':>24}  paired vs {base}")
    for model in args.models:
        for t in items:
            m = json.loads((out / model / t["name"] / "results.json").read_text())
            if t["kind"] == "similarity":
                for f, v in m["files"].items():
                    fig = {"spearman": round(v["spearman"], 3), "ci95": [round(v["ci95_low"], 3), round(v["ci95_high"], 3)],
                           "pairs": v["pairs"]}
                    if model != base:
                        p = paired_spearman(out, t["name"], f, base, model, args.seed)
                        fig["delta"] = {k: round(x, 3) for k, x in p.items()}
                    result["figures"][f"{t['name']}/{f}/{model}"] = fig
                    print(f"{t['name'] + '/' + f:<28} {model:>6} {'rho ' + format(v['spearman'], '.3f'):>24}  "
                          f"{fig.get('delta', '')}")
                continue
            fig = {"acc@1": round(m["acc@1"], 3), "acc@5": round(m["acc@5"], 3), "queries": m["queries"],
                   "dictionary_names": m["dictionary_names"], "input_issues": m["input_issues"]["counts"]}
            if "top1_errors" in m:
                e = m["top1_errors"]
                fig["top1_errors_parent_child_sibling"] = round(e["share_parent_child_sibling"], 3)
                fig["top1_errors_mean_distance_capped_5"] = round(e["mean_distance_capped_5"], 2)
            if model != base:
                p = paired_hits(out, t["name"], base, model, args.seed, ["qid"], "hit@1")
                fig["paired_hit@1"] = {k: (round(x, 4) if isinstance(x, float) else x) for k, x in p.items()}
            result["figures"][f"{t['name']}/{model}"] = fig
            print(f"{t['name']:<28} {model:>6} {'acc@1/@5 ' + format(m['acc@1'], '.3f') + ' / ' + format(m['acc@5'], '.3f'):>24}  "
                  f"{fig.get('paired_hit@1', '')}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
