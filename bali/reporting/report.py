"""The report's figures: base vs aligned per task, each model's value with a 95 % interval
(bootstrap over items for zero-shot tasks, t over runs for fine-tuned ones) and the paired gain
(McNemar and bootstrap over the same items), plus the plots. `bali.reporting.pages` writes them as Markdown."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl

from bali.metrics import (bootstrap_ci, mcnemar_exact, paired_bootstrap, paired_bootstrap_stat, runs_interval,
                                     spearman)


def load_evals(eval_dir: Path) -> dict[tuple[str, str], dict]:
    """{(model, task): results} of every data/eval/<model>/<task>/results.json."""
    return {(f.parent.parent.name, f.parent.name): json.loads(f.read_text())
            for f in sorted(eval_dir.glob("*/*/results.json"))}


def headline(m: dict) -> tuple[str, float, float | None]:
    """The figure a task is compared on: (name, value, std over seeds or None)."""
    if m["kind"] == "entity_linking":
        return "acc@1", m["acc@1"], None
    if m["kind"] == "hierarchy":
        return f"parent hit@{m['k']}", m[f"hit@{m['k']}"], None
    if m["kind"] == "ner":
        return "entity F1", m["test"]["f1"]["mean"], m["test"]["f1"]["std"]
    return m["metric"], m["test"][m["metric"]]["mean"], m["test"][m["metric"]]["std"]


def item_interval(eval_dir: Path, model: str, task: str, keys: list[str], column: str, seed: int) -> tuple[float, float]:
    """Bootstrap 95 % interval (1,000 resamples) of the share of items whose `column` is true."""
    hit = pl.read_parquet(eval_dir / model / task / "predictions.parquet").unique(keys, keep="first", maintain_order=True)[
        column].to_numpy().astype(float)
    return bootstrap_ci(lambda idx: hit[idx].mean(), len(hit), seed=seed) if len(hit) else (0.0, 0.0)


def el_keys(eval_dir: Path, model: str, task: str) -> list[str]:
    """A query's key in entity-linking predictions: its id (a composite mention has several rows)."""
    return ["qid"] if "qid" in pl.read_parquet_schema(eval_dir / model / task / "predictions.parquet") else ["cui", "query"]


def _paired_frames(eval_dir: Path, task: str, base: str, model: str, keys: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    a, b = (pl.read_parquet(eval_dir / m / task / "predictions.parquet").unique(keys, keep="first", maintain_order=True)
            .sort(keys) for m in (base, model))
    if a.select(keys).rows() != b.select(keys).rows():
        raise ValueError(f"{task}: {base} and {model} were evaluated on different items")
    return a, b


def paired(sa: np.ndarray, sb: np.ndarray, seed: int) -> dict:
    """Per-item scores of the base (sa) and another model (sb) on the same items: the gain with a
    paired-bootstrap 95 % interval, and exact McNemar on the items scored > 0.5 by one model only.
    Scalars only: DVC's metrics (dvc exp show) keep numbers, not lists."""
    lo, hi = paired_bootstrap(sa, sb, seed=seed)
    ha, hb = sa > 0.5, sb > 0.5
    return {"delta": float(sb.mean() - sa.mean()), "ci95_low": lo, "ci95_high": hi,
            "mcnemar_p": mcnemar_exact(ha, hb), "only_base": int((ha & ~hb).sum()), "only_aligned": int((~ha & hb).sum())}


def paired_hits(eval_dir: Path, task: str, base: str, model: str, seed: int, keys: list[str], column: str) -> dict:
    """Paired comparison of per-item hits: exact McNemar p and a bootstrap 95 % interval of the gain."""
    a, b = _paired_frames(eval_dir, task, base, model, keys)
    return paired(a[column].to_numpy(), b[column].to_numpy(), seed)


def paired_spearman(eval_dir: Path, task: str, file: str, base: str, model: str, seed: int, n: int = 1000) -> dict:
    """Delta of Spearman's rho over the same pairs, with a paired-bootstrap 95 % interval."""
    a, b = _paired_frames(eval_dir, task, base, model, ["file", "line"])
    a, b = a.filter(pl.col("file") == file), b.filter(pl.col("file") == file)
    rho = lambda rows: spearman(rows[:, 0], rows[:, 1])  # noqa: E731
    delta, lo, hi = paired_bootstrap_stat(rho, a.select("cosine", "mean").to_numpy(), b.select("cosine", "mean").to_numpy(),
                                          n=n, seed=seed)
    return {"delta": delta, "ci95_low": lo, "ci95_high": hi}


def finetune_paired(eval_dir: Path, task: str, base: str, model: str, seed: int) -> dict:
    """Paired comparison of fine-tuned predictions (single-label classification, PubMedQA, multiple
    choice) over the same test questions: per question, the fraction of runs (seeds, folds) that got it
    right; a paired-bootstrap 95 % interval of the gain over questions, and exact McNemar on "right in
    most runs" (with one run: right or wrong)."""
    a, b = (pl.read_parquet(eval_dir / m / task / "predictions.parquet").group_by("id").agg(pl.col("correct").mean())
            .sort("id") for m in (base, model))
    if a["id"].to_list() != b["id"].to_list():
        raise ValueError(f"{task}: {base} and {model} were evaluated on different questions")
    return {**paired(a["correct"].to_numpy(), b["correct"].to_numpy(), seed), "questions": a.height}


def pairs_by_question(eval_dir: Path, model: str, task: str) -> bool:
    f = eval_dir / model / task / "predictions.parquet"
    return f.exists() and {"id", "correct"} <= set(pl.read_parquet_schema(f))


def comparison(eval_dir: Path, base: str, seed: int) -> list[dict]:
    evals = load_evals(eval_dir)
    rows = []
    for (model, task), m in evals.items():
        compare = model != base and (base, task) in evals
        if m["kind"] == "similarity":  # one figure per file of the task
            for file, f in m["files"].items():
                row = {"task": f"{task}/{file}", "kind": "similarity", "model": model, "metric": "spearman",
                       "value": f["spearman"], "std": None, "protocol": m["protocol"], "pairs": f["pairs"],
                       "numeric_precision": m.get("numeric_precision"),
                       "ci95_low": f["ci95_low"], "ci95_high": f["ci95_high"], "interval": "bootstrap over pairs"}
                if compare:
                    row["paired"] = paired_spearman(eval_dir, task, file, base, model, seed)
                rows.append(row)
            continue
        name, value, std = headline(m)
        row = {"task": task, "kind": m["kind"], "model": model, "metric": name, "value": value, "std": std,
               "protocol": m["protocol"], "numeric_precision": m.get("numeric_precision")}  # what the embedding ran in
        if m["kind"] == "entity_linking":
            row.update({k: m[k] for k in ("acc@5", "dictionary_names", "queries") if k in m})
            row.update({f"top1 errors {k}": v for k, v in m.get("top1_errors", {}).items()})
            for part in ("seen", "unseen"):
                if part in m:
                    row[f"{part} acc@1"] = m[part]["acc@1"]
                    row[f"{part} queries"] = m[part]["queries"]
            keys = el_keys(eval_dir, model, task)
            row["ci95_low"], row["ci95_high"] = item_interval(eval_dir, model, task, keys, "hit@1", seed)
            row["interval"] = "bootstrap over queries"
            if compare:
                row["paired"] = paired_hits(eval_dir, task, base, model, seed, keys, "hit@1")
        elif m["kind"] == "hierarchy":
            row.update({"hit@1": m["hit@1"], "mrr": m["mrr"], "links": m["links"]})
            row["ci95_low"], row["ci95_high"] = item_interval(eval_dir, model, task, ["child", "parent"], f"hit@{m['k']}", seed)
            row["interval"] = "bootstrap over links"
            if compare:
                row["paired"] = paired_hits(eval_dir, task, base, model, seed, ["child", "parent"], name.split()[-1])
                row["paired_hit@1"] = paired_hits(eval_dir, task, base, model, seed, ["child", "parent"], "hit@1")
        else:  # fine-tuned: the spread of the mean over runs (seeds, folds)
            runs = (m["test"]["f1"] if m["kind"] == "ner" else m["test"][m["metric"]])["runs"]
            row["ci95_low"], row["ci95_high"] = runs_interval(runs)
            row["interval"] = f"t over {len(runs)} run(s)"
            if compare and all(pairs_by_question(eval_dir, m_, task) for m_ in (base, model)):
                row["paired"] = finetune_paired(eval_dir, task, base, model, seed)
        if m["kind"] in ("classification", "pubmedqa", "multiple_choice"):
            row["examples"], row["runs"] = m["examples"], len(m["test"][m["metric"]]["runs"])
        rows.append(row)
    return sorted(rows, key=lambda r: (r["task"], r["model"] != base, r["model"]))


# the figures' name for the pipeline's aligned model folder, as the pages' tables name it
MODEL_NAMES = {"bali": "aligned"}


def _bars(ax, groups: list[str], series: list[tuple[str, list[tuple[float, float, float] | None]]], ylabel: str,
          title: str) -> None:
    """Grouped bars on one axis: per series (label, one (value, low, high) or None per group)."""
    width = 0.8 / max(1, len(series))
    for i, (label, cells) in enumerate(series):
        xs = [x for x, c in enumerate(cells) if c is not None]
        vals = [cells[x][0] for x in xs]
        err = [[cells[x][0] - cells[x][1] for x in xs], [cells[x][2] - cells[x][0] for x in xs]]
        spread = any(e for side in err for e in side)  # a fixed value (the base beside seed means) has no bar
        ax.bar([x + i * width for x in xs], vals, width, label=label, yerr=err if spread else None, capsize=3)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(groups))], groups, fontsize=8)
    ax.set_xlabel("task (metric)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)


def plot_comparison(rows: list[dict], path: Path) -> None:
    """Base against aligned per task, dev tasks (where settings are chosen) and test tasks in
    separate panels, error bars the 95 % intervals of the rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows}, key=lambda m: (m != "base", m))
    parts = [(name, sorted({r["task"] for r in rows if r["task"].endswith("_dev") == dev}))
             for name, dev in (("dev tasks (settings chosen here)", True), ("test tasks (reported)", False))]
    parts = [(n, t) for n, t in parts if t]
    # panels one above the other: the page's column is narrow, and each panel keeps its tasks readable
    fig, axes = plt.subplots(len(parts), 1, figsize=(8, 0.6 + 3.0 * len(parts)), squeeze=False)
    for ax, (name, tasks) in zip(axes[:, 0], parts):
        by = {(r["task"], r["model"]): r for r in rows}
        series = [(MODEL_NAMES.get(m, m), [(by[(t, m)]["value"], by[(t, m)].get("ci95_low", by[(t, m)]["value"]),
                                            by[(t, m)].get("ci95_high", by[(t, m)]["value"])) if (t, m) in by else None
                                           for t in tasks]) for m in models]
        labels = [f"{t}\n({next(r['metric'] for r in rows if r['task'] == t)})" for t in tasks]
        _bars(ax, labels, series, "score (acc@1, parent hit@10 or ρ)", name)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("base against aligned (error bars: 95 % intervals)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_controls(tasks: list[dict], path: Path) -> None:
    """The verdict's figure (bali.reporting.verdict.tasks): per task the base and each pre-trained
    row's mean over seeds with its 95 % t interval; the demo's test halves and real data apart."""
    import statistics

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bali.reporting.verdict import ROLES

    parts = [(name, [t for t in tasks if t["group"] == g]) for g, name in (("demo", "demo, test halves"),
                                                                          ("real", "real data"))]
    parts = [(n, ts) for n, ts in parts if ts]
    fig, axes = plt.subplots(len(parts), 1, figsize=(9, 0.9 + 3.2 * len(parts)), squeeze=False)
    for ax, (name, ts) in zip(axes[:, 0], parts):
        series = [("base", [(t["base"], t["base"], t["base"]) for t in ts])]
        for row, label in ROLES.items():
            cells = [(statistics.mean(t["runs"][row]), *runs_interval(t["runs"][row])) if row in t["runs"] else None
                     for t in ts]
            if any(cells):
                series.append((label, cells))
        _bars(ax, [t["label"].replace(" (", "\n(") for t in ts], series, "acc@1, hit@10 or Spearman ρ", name)
    handles, labels = axes[0][0].get_legend_handles_labels()
    lines = -(-len(labels) // 5)  # five to a line: ten rows' labels do not fit one line of the page's width
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9)  # below the bars, not over them
    fig.suptitle("the aligned model beside its controls\n(error bars: 95 % t intervals over pre-training seeds)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.035 + 0.03 * lines, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_tsv_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    return data[:, 0], data[:, 1]


# y-axis label per dvclive series, or per family (train/…: the loss terms; el/…, hierarchy/…: the
# LM's dev figures during pre-training)
CURVE_UNITS = {"train/encoder_share": "||graph - name|| / ||name||", "train/graph_name_cosine": "cosine",
               "train": "loss", "el": "dev acc@k", "hierarchy": "dev parent hit@10"}


def plot_curves(live_dir: Path, names: list[str], path: Path, title: str, smooth: int = 1,
                ylabel: str | None = None) -> bool:
    """Series of dvclive's plots/metrics/<name>.tsv against step; False when none exists. The y axis
    is `ylabel`, or named after the series' families (CURVE_UNITS)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [(n, live_dir / "plots" / "metrics" / f"{n}.tsv") for n in names]
    series = [(n, *read_tsv_series(f)) for n, f in found if f.exists()]
    series = [(n, x, y) for n, x, y in series if np.any(y)]  # a term weighted 0 logs zeros
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, x, y in series:
        if smooth > 1 and len(y) >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            x = x[smooth - 1:]
        ax.plot(x, y, label=name, marker="o" if len(x) < 30 else None)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel or " / ".join(sorted({CURVE_UNITS.get(n, CURVE_UNITS.get(n.split("/")[0], n))
                                                    for n, _, _ in series})))
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def stage_runs(stats_files: dict[str, str]) -> list[dict]:
    """Each stage's wall time and peak memory, from the `run` figures its stats.json holds (stages
    whose file is absent or has none are left out)."""
    out = []
    for stage, path in stats_files.items():
        f = Path(path)
        run = json.loads(f.read_text(encoding="utf-8")).get("run") if f.is_file() else None
        if run:
            out.append({"stage": stage, **run})
    return out


def read_ablations(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def summary(rows: list[dict], base: str) -> dict:
    """The report's DVC metric: per task, the aligned model's paired gain over the base (delta,
    its 95 % interval, McNemar p where the items are hits); keyed by task, and by task/model when
    several models are compared."""
    aligned = {r["model"] for r in rows if r["model"] != base}
    out = {}
    for r in rows:
        if "paired" in r:
            d = r["paired"]
            key = r["task"] if len(aligned) == 1 else f"{r['task']}/{r['model']}"
            out[key] = {"delta": d["delta"], "ci_low": d["ci95_low"], "ci_high": d["ci95_high"],
                        **({"p": d["mcnemar_p"]} if "mcnemar_p" in d else {})}
    return out
