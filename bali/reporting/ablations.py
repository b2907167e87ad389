"""Ablations as DVC experiments: each row of ablations/NAME.yaml is one `dvc exp run --temp -n ROW
-S ...` of the pipeline, and the table is read back from `dvc exp show --json`.

  python -m bali.reporting.ablations run ablations/demo.yaml     # runs the rows the current pipeline lacks
  python -m bali.reporting.ablations run ablations/demo.yaml --jobs 2   # two at a time, from DVC's queue
  python -m bali.reporting.ablations table ablations/demo.yaml   # -> ablations/demo.csv (the report's table)

Only experiments of the current pipeline count: a row is current while DVC would not rerun its
pre-training and evaluation cells at HEAD (`bali.reporting.staleness`: the same commands, code,
upstream data and defaults), so a commit that touches only the report, the docs or a stage whose
output stays the same keeps the rows; each row names its experiment's baseline commit. A
spec may list `real_tasks` (evaluate tasks on ../shared data): when their folders are all there, every row
evaluates them too, as test data. `columns: dev` keeps a table to its dev columns (a search, where
settings are chosen, never reads test figures); `current_only: false` keeps rows of any commit (a
search's log of what was tried, code changing along the way). `reference: ROW` adds paired
comparisons of every row with that one (McNemar and bootstrap over the same items, as the report
pairs a model with the base), from each experiment's own predictions in the DVC cache. A row's
`seeds: [30, 31]` trains the same setting again from those pre-training seeds (`pretrain.seed`;
experiments ROW-seed30, ROW-seed31) and adds each value's mean ± std over the row's seeds.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import polars as pl
import yaml

from bali import real_data
from bali.reporting import staleness
from bali.reporting.report import paired_hits, paired_spearman

# Settings are compared on dev (entity linking's dev half, the hierarchy probe's dev links) and
# reported on test (never used to choose).
DEV = {"dev acc@1": ("demo_el_dev", "value"), "dev Δ vs base (pts)": ("demo_el_dev", "delta"),
       "dev parent hit@10": ("hierarchy_dev", "value"), "dev hit@10 Δ vs base (pts)": ("hierarchy_dev", "delta")}
TEST = {"test acc@1": ("demo_el_test", "value"), "test Δ vs base (pts) [95 % CI]": ("demo_el_test", "ci"),
        "test McNemar p": ("demo_el_test", "p"), "held-out parent hit@10": ("hierarchy_held_out", "value"),
        "hit@10 Δ vs base (pts) [95 % CI]": ("hierarchy_held_out", "ci"), "hit@10 McNemar p": ("hierarchy_held_out", "p")}
REAL = {"GSC+ acc@1": ("gsc_plus", "value"), "GSC+ Δ [95 % CI]": ("gsc_plus", "ci"),
        "GSC+ near-miss share of errors": ("gsc_plus", "near_miss"),
        "BC5CDR-D acc@1": ("bc5cdr_disease", "value"), "BC5CDR-D Δ [95 % CI]": ("bc5cdr_disease", "ci"),
        "UMNSRS rel ρ": ("umnsrs/UMNSRS_relatedness", "value"), "UMNSRS rel Δρ [95 % CI]": ("umnsrs/UMNSRS_relatedness", "rho"),
        "UMNSRS sim ρ": ("umnsrs/UMNSRS_similarity", "value"), "UMNSRS sim Δρ [95 % CI]": ("umnsrs/UMNSRS_similarity", "rho")}


def spec_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def exp_show() -> list[dict]:
    """`dvc exp show --json` of the commits that have experiments (their baselines, named in the
    refs/exps/XX/REST/NAME refs): `--all-commits` reads every commit of the history, minutes on a long one."""
    refs = subprocess.run(["git", "for-each-ref", "--sort=-committerdate", "refs/exps", "--format=%(refname)"],
                          capture_output=True, text=True, check=True).stdout.split()
    # newest experiment first, so of two experiments with one name the newer is listed (and kept) first
    baselines = list(dict.fromkeys("".join(r.split("/")[2:4]) for r in refs if r.count("/") >= 4))
    if not baselines:
        return []
    revs = [a for b in baselines for a in ("--rev", b)]
    return json.loads(subprocess.run(["dvc", "exp", "show", "--json", "--no-pager", *revs], capture_output=True,
                                     text=True, check=True).stdout)


def experiments(current_only: bool = True) -> dict[str, dict]:
    """{experiment name: {"commit", "data", "rev"}} of the experiments whose measured stages DVC would
    not rerun at HEAD (`staleness`; or of every commit: a search's log); of two with one name, the
    first `dvc exp show` lists (the newest commit)."""
    found = {}
    if current_only:
        staleness.check_lock()
        head = staleness.head_lock()
    for rev in exp_show():
        commit = rev.get("rev", "")
        if commit == "workspace" or not rev.get("experiments"):
            continue
        baseline = staleness.git_yaml(commit, "params.yaml") if current_only else {}
        for exp in rev["experiments"]:
            executor = exp.get("executor")  # a queued run keeps one: "success" once it has finished
            if executor and executor.get("state") != "success":  # running, queued or failed: no figures yet
                continue
            for r in exp.get("revs", []):
                if not (r.get("name") and r.get("data")) or r["name"] in found:
                    continue
                if current_only and not staleness.same_measurement(staleness.git_yaml(r.get("rev", ""), "dvc.lock"),
                                                                    baseline, head):
                    continue
                found[r["name"]] = {"commit": commit[:7], "data": r["data"], "rev": r.get("rev", "")}
    return found


def task_items(spec: dict) -> list[dict] | None:
    """The params' evaluate tasks plus the spec's real tasks (absolute paths: an experiment runs in a
    temporary copy of the repository), or None when the spec has none or their data is missing."""
    real = spec.get("real_tasks") or []
    if not real:
        return None
    root = Path.cwd()
    items = []
    for t in real:
        t = dict(t)
        for key in ("dir", "dictionary"):
            if key in t and t[key] != "graph":
                p = real_data.resolve(t[key])  # data/real/... is read from $BALI_REAL_DATA
                t[key] = str((p if p.is_absolute() else root / p).resolve())
        items.append(t)
    if not all(Path(t["dir"]).exists() for t in items):
        print("ablations: real_tasks data not found; rows evaluate the demo tasks only")
        return None
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    return params["evaluate"]["tasks"] + items


def flow(items: list[dict]) -> str:
    """Tasks as one flow sequence, as `-S 'evaluate.tasks=[…]'` takes it (DVC's and the stages' own -S)."""
    return "[" + ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in t.items()) + "}" for t in items) + "]"


def runs(row: dict) -> list[tuple[str, list[str]]]:
    """(experiment name, overrides) of a row: the row itself, then one per extra pre-training seed
    (`seeds: [30, 31]` -> ROW-seed30, ROW-seed31: the same setting, trained again from another seed).
    A row with `experiment: NAME` reads the experiments of another spec's row NAME (the same
    overrides and tasks, run once) instead of running its own."""
    name = row.get("experiment", row["name"])
    return [(name, row["set"])] + [(f"{name}-seed{s}", [*row["set"], f"pretrain.seed={s}"])
                                   for s in row.get("seeds", [])]


def by_row(spec: dict, found: dict) -> dict:
    """`found` plus, for each row that reads another row's experiments, those under its own run names."""
    for row in spec["rows"]:
        if "experiment" in row:
            mine = runs({**row, "experiment": row["name"]})
            found.update({m: found[e] for (m, _), (e, _) in zip(mine, runs(row)) if e in found})
    return found


def run(path: Path, jobs: int = 1, only: list[str] | None = None, start: bool = True) -> None:
    """Run the spec's missing experiments (or those of them named in `only`, in that order): one
    after another (`dvc exp run --temp`), or with jobs > 1 queued and run that many at a time
    (`dvc exp run --run-all -j`), each with cores / jobs threads. `start=False` only queues them, so
    runs of several specs share one queue (the last call, or `dvc exp run --run-all -j N`, starts it)."""
    spec = spec_of(path)
    done = experiments(spec.get("current_only", True))
    items = task_items(spec)
    extra = ["-S", f"evaluate.tasks={flow(items)}"] if items else []
    queued = 0
    todo = [r for row in spec["rows"] for r in runs(row)]
    if only:
        unknown = set(only) - {name for name, _ in todo}
        if unknown:
            raise SystemExit(f"ablations: {path} has no run named {', '.join(sorted(unknown))}")
        todo = sorted((r for r in todo if r[0] in only), key=lambda r: only.index(r[0]))
    for name, overrides in todo:
        if name in done:
            print(f"ablations: {name} already ran (on {done[name]['commit']})")
            continue
        cmd = ["dvc", "exp", "run", "--queue" if jobs > 1 else "--temp", "-n", name] + \
            [a for o in overrides for a in ("-S", o)] + extra
        print("ablations:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        queued += 1
    if jobs > 1 and start and queued:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))  # jobs x threads <= cores: no oversubscription
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        subprocess.run(["dvc", "exp", "run", "--run-all", "-j", str(jobs)], check=True, env=env)


def cell(compare: dict, task: str, what: str) -> str:
    r = compare.get(f"{task}/bali", {})
    paired = r.get("paired", {})
    if what == "value":
        return f"{r['value']:.3f}" if "value" in r else ""
    if what == "near_miss":
        share = r.get("top1 errors share_parent_child_sibling")
        return f"{share:.3f}" if share is not None else ""
    if not paired:
        return ""
    if what == "p":
        return f"{paired['mcnemar_p']:.2g}" if "mcnemar_p" in paired else ""
    if what == "rho":  # a difference of correlations, not of accuracies: no points
        return f"{paired['delta']:+.3f} [{paired['ci95_low']:+.3f}, {paired['ci95_high']:+.3f}]"
    ci = f" [{100 * paired['ci95_low']:+.1f}, {100 * paired['ci95_high']:+.1f}]" if what == "ci" and "ci95_low" in paired else ""
    return f"{100 * paired['delta']:+.1f}{ci}"


# Paired with the reference row: (task, what) with what = hits:COLUMN or spearman:FILE.
VERSUS_DEV = {"dev acc@1 Δ vs REF (pts) [95 % CI], p": ("demo_el_dev", "hits:hit@1"),
              "dev hit@10 Δ vs REF (pts) [95 % CI], p": ("hierarchy_dev", "hits:hit@10")}
VERSUS_TEST = {"test acc@1 Δ vs REF (pts) [95 % CI], p": ("demo_el_test", "hits:hit@1"),
               "held-out hit@10 Δ vs REF (pts) [95 % CI], p": ("hierarchy_held_out", "hits:hit@10")}
VERSUS_REAL = {"GSC+ acc@1 Δ vs REF (pts) [95 % CI], p": ("gsc_plus", "hits:hit@1"),
               "BC5CDR-D acc@1 Δ vs REF (pts) [95 % CI], p": ("bc5cdr_disease", "hits:hit@1"),
               "UMNSRS rel Δρ vs REF [95 % CI]": ("umnsrs", "spearman:UMNSRS_relatedness"),
               "UMNSRS sim Δρ vs REF [95 % CI]": ("umnsrs", "spearman:UMNSRS_similarity")}


def cached_outputs(exp_rev: str) -> dict[str, Path]:
    """{output path: its file in the DVC cache} of one experiment, read from its commit's dvc.lock."""
    lock = yaml.safe_load(subprocess.run(["git", "show", f"{exp_rev}:dvc.lock"], capture_output=True, text=True,
                                         check=True).stdout)
    cache = Path(subprocess.run(["dvc", "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip())
    return {out["path"]: cache / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
            for stage in lock["stages"].values() for out in stage.get("outs", []) if "md5" in out}


def predictions(exp_rev: str) -> dict[str, Path]:
    """{task: the aligned model's predictions.parquet in the DVC cache} of one experiment."""
    return {path.split("/")[3]: f for path, f in cached_outputs(exp_rev).items()
            if path.startswith("data/eval/bali/") and path.endswith("/predictions.parquet")}


def compare_of(exp_rev: str) -> dict:
    """The experiment's reports/compare.json (an output, not a metric: it holds every figure)."""
    return json.loads(cached_outputs(exp_rev)["reports/compare.json"].read_text(encoding="utf-8"))


def versus(spec: dict, found: dict, cols: dict, seed: int) -> dict[str, dict]:
    """{row: {column: paired figure of the row against the reference row}}."""
    ref = spec["reference"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in spec["rows"]:  # eval_dir/ROW/TASK/predictions.parquet, as the report's pairing reads
            for task, path in predictions(found[r["name"]]["rev"]).items():
                (Path(tmp) / r["name"] / task).mkdir(parents=True)
                (Path(tmp) / r["name"] / task / "predictions.parquet").symlink_to(path)
        for r in spec["rows"]:
            row = out[r["name"]] = {}
            for col, (task, what) in cols.items():
                if r["name"] == ref or not all((Path(tmp) / m / task).exists() for m in (ref, r["name"])):
                    continue
                kind, arg = what.split(":")
                if kind == "spearman":
                    p = paired_spearman(Path(tmp), task, arg, ref, r["name"], seed)
                    row[col] = f"{p['delta']:+.3f} [{p['ci95_low']:+.3f}, {p['ci95_high']:+.3f}]"
                    continue
                schema = pl.read_parquet_schema(Path(tmp) / ref / task / "predictions.parquet")
                keys = ["qid"] if "qid" in schema else ["child", "parent"] if "child" in schema else ["cui", "query"]
                p = paired_hits(Path(tmp), task, ref, r["name"], seed, keys, arg)
                row[col] = (f"{100 * p['delta']:+.1f} [{100 * p['ci95_low']:+.1f}, {100 * p['ci95_high']:+.1f}], "
                            f"p {p['mcnemar_p']:.2g}")
    return out


def versus_columns(spec: dict) -> dict:
    if not spec.get("reference"):
        return {}
    cols = VERSUS_DEV if spec.get("columns") == "dev" else {**VERSUS_DEV, **VERSUS_TEST,
                                                            **(VERSUS_REAL if spec.get("real_tasks") else {})}
    return {c.replace("REF", spec["reference"]): where for c, where in cols.items()}


# the pre-training's last step (dvclive): how much of the graph vector the encoder made
GRAPH = {"encoder share": "encoder_share", "graph·name cosine": "graph_name_cosine"}


def graph_cells(exp: dict) -> dict:
    train = exp["data"]["metrics"].get("dvclive/pretrain/metrics.json", {}).get("data", {}).get("train", {})
    return {c: f"{train[k]:.3f}" if k in train else "" for c, k in GRAPH.items()}


def columns(spec: dict) -> dict:
    if spec.get("columns") == "dev":
        return DEV
    return {**DEV, **TEST, **(REAL if spec.get("real_tasks") else {})}


def over_seeds(row: dict, found: dict, seeded: dict) -> dict:
    """{column: "mean ± std (each seed's value)"} over a row's pre-training seeds (std with ddof 1:
    the run-to-run noise to read a difference between rows against), or {} for a row without seeds."""
    if not row.get("seeds"):
        return {}
    compares = [compare_of(found[name]["rev"]) for name, _ in runs({**row, "experiment": row["name"]})]
    out = {}
    for col, (task, _) in seeded.items():
        vals = [c[f"{task}/bali"]["value"] for c in compares if "value" in c.get(f"{task}/bali", {})]
        if len(vals) == len(compares):
            mean, std = statistics.mean(vals), statistics.stdev(vals)
            out[col] = f"{mean:.3f} ± {std:.3f} ({', '.join(f'{v:.3f}' for v in vals)})"
    return out


def table(path: Path, out: Path, seed: int = 29, partial: bool = False) -> None:
    """Write the spec's table. `partial`: rows whose base-seed run exists are written even when some
    of their seed runs are missing (their seed columns empty), unless the table's line for the row
    has its seeds and the same base-seed figures (then that line stays); a row with no current run
    keeps the line the table had for it (its commit says which code made it), or is left out."""
    spec = spec_of(path)
    found = by_row(spec, experiments(spec.get("current_only", True)))
    # A log (current_only: false) keeps the lines it recorded of rows whose experiments are no longer
    # here (a fresh clone has none): what was tried stays in the table.
    recorded = {r["row"]: r for r in csv.DictReader(out.open(encoding="utf-8"))} \
        if (partial or not spec.get("current_only", True)) and out.exists() else {}
    complete = [r for r in spec["rows"] if all(name in found for name, _ in runs(r))]
    ran = [r for r in spec["rows"] if runs(r)[0][0] in found] if partial else complete
    missing = [] if partial else [name for r in spec["rows"] if r not in ran and r["name"] not in recorded
                                  for name, _ in runs(r) if name not in found]
    if missing:
        raise SystemExit(f"ablations: no experiment of the current pipeline named {', '.join(missing)}; "
                         f"run `python -m bali.reporting.ablations run {path}`")
    cols, vs_cols = columns(spec), versus_columns(spec)
    vs = versus({**spec, "rows": ran}, found, vs_cols, seed) if vs_cols else {}
    seeded = {f"{c} over seeds": where for c, where in cols.items() if where[1] == "value"} \
        if any(r.get("seeds") for r in spec["rows"]) else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["row", "commit", "what", "overrides", *GRAPH, *cols, *vs_cols, *seeded])
        w.writeheader()
        for r in spec["rows"]:
            if r not in ran and r["name"] not in recorded:  # partial: a row that has not run yet
                continue
            if r not in ran:
                w.writerow({k: v for k, v in recorded[r["name"]].items() if k in w.fieldnames})
                continue
            exp = found[r["name"]]
            compare = compare_of(exp["rev"])
            cells = {c: cell(compare, *where) for c, where in cols.items()}
            old = recorded.get(r["name"], {})
            if r not in complete and any(old.get(c) for c in seeded) and all(old.get(c) == v for c, v in cells.items()):
                # its base-seed run again, to pair the others with, gave the recorded figures: the
                # recorded line, with the seed runs it was made from, stays (its commit says which code)
                w.writerow({k: v for k, v in old.items() if k in w.fieldnames})
                continue
            w.writerow({"row": r["name"], "commit": exp["commit"], "what": r["what"],
                        "overrides": " ".join(f"-S {o}" for o in r["set"]), **graph_cells(exp),
                        **cells, **vs.get(r["name"], {}),
                        **(over_seeds(r, found, seeded) if r in complete else {})})
    tmp.replace(out)
    print(f"ablations: {len(spec['rows'])} rows -> {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "table"])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--jobs", type=int, default=1, help="run: experiments at a time (queued; cores shared out)")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="run: these runs only (ROW or ROW-seedN), in this order")
    ap.add_argument("--queue-only", action="store_true",
                    help="run, with --jobs > 1: queue the runs without starting the queue (a later run starts it)")
    ap.add_argument("--partial", action="store_true",
                    help="table: rows that have their base-seed run (seed columns where all seeds ran); "
                         "the others keep their recorded lines")
    args = ap.parse_args(argv)
    if args.action == "run":
        run(args.spec, args.jobs, args.only, start=not args.queue_only)
    else:
        seed = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))["base"]["seed"]
        table(args.spec, args.spec.with_suffix(".csv"), seed, args.partial)


if __name__ == "__main__":
    main()
