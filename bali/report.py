"""The report: base vs aligned per task (paired tests for entity linking), training curves, the
ablation table — one Markdown file with its figures, what a paper's appendix would hold."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl

from bali.evaluation.metrics import mcnemar_exact, paired_bootstrap


def load_evals(eval_dir: Path) -> dict[tuple[str, str], dict]:
    """{(model, task): metrics} of every data/eval/<model>/<task>/metrics.json."""
    return {(f.parent.parent.name, f.parent.name): json.loads(f.read_text())
            for f in sorted(eval_dir.glob("*/*/metrics.json"))}


def headline(m: dict) -> tuple[str, float, float | None]:
    """The figure a task is compared on: (name, value, std over seeds or None)."""
    if m["kind"] == "entity_linking":
        return "acc@1", m["acc@1"], None
    if m["kind"] == "ner":
        return "entity F1", m["test"]["f1"]["mean"], m["test"]["f1"]["std"]
    return m["metric"], m["test"][m["metric"]]["mean"], m["test"][m["metric"]]["std"]


def el_paired(eval_dir: Path, task: str, base: str, model: str, seed: int) -> dict:
    """Paired comparison of per-query hit@1: exact McNemar p and a bootstrap 95 % interval of the gain."""
    a, b = (pl.read_parquet(eval_dir / m / task / "predictions.parquet").sort("cui", "query") for m in (base, model))
    if a.select("cui", "query").rows() != b.select("cui", "query").rows():
        raise ValueError(f"{task}: {base} and {model} were evaluated on different queries")
    ha, hb = a["hit@1"].to_numpy(), b["hit@1"].to_numpy()
    lo, hi = paired_bootstrap(ha, hb, seed=seed)
    # scalars only: DVC's metrics (dvc exp show) keep numbers, not lists
    return {"delta": float(hb.mean() - ha.mean()), "ci95_low": lo, "ci95_high": hi, "mcnemar_p": mcnemar_exact(ha, hb),
            "only_base": int((ha & ~hb).sum()), "only_aligned": int((~ha & hb).sum())}


def finetune_paired(eval_dir: Path, task: str, base: str, model: str, seed: int) -> dict:
    """Paired comparison of fine-tuned predictions (single-label classification, PubMedQA, multiple
    choice) over the same test questions: per question, the fraction of runs (seeds, folds) that got it
    right; a paired-bootstrap 95 % interval of the gain over questions, and exact McNemar on "right in
    most runs" (with one run: right or wrong)."""
    a, b = (pl.read_parquet(eval_dir / m / task / "predictions.parquet").group_by("id").agg(pl.col("correct").mean())
            .sort("id") for m in (base, model))
    if a["id"].to_list() != b["id"].to_list():
        raise ValueError(f"{task}: {base} and {model} were evaluated on different questions")
    ca, cb = a["correct"].to_numpy(), b["correct"].to_numpy()
    lo, hi = paired_bootstrap(ca, cb, seed=seed)
    ha, hb = ca > 0.5, cb > 0.5
    return {"delta": float(cb.mean() - ca.mean()), "ci95_low": lo, "ci95_high": hi, "mcnemar_p": mcnemar_exact(ha, hb),
            "only_base": int((ha & ~hb).sum()), "only_aligned": int((~ha & hb).sum()), "questions": len(ca)}


def pairs_by_question(eval_dir: Path, model: str, task: str) -> bool:
    f = eval_dir / model / task / "predictions.parquet"
    return f.exists() and {"id", "correct"} <= set(pl.read_parquet_schema(f))


def comparison(eval_dir: Path, base: str, seed: int) -> list[dict]:
    evals = load_evals(eval_dir)
    rows = []
    for (model, task), m in evals.items():
        name, value, std = headline(m)
        row = {"task": task, "kind": m["kind"], "model": model, "metric": name, "value": value, "std": std,
               "protocol": m["protocol"]}
        if m["kind"] == "entity_linking":
            row.update({k: m[k] for k in ("acc@5", "dictionary_names", "queries") if k in m})
            for part in ("seen", "unseen"):
                if part in m:
                    row[f"{part} acc@1"] = m[part]["acc@1"]
                    row[f"{part} queries"] = m[part]["queries"]
            if model != base and (base, task) in evals:
                row["paired"] = el_paired(eval_dir, task, base, model, seed)
        elif model != base and (base, task) in evals and all(pairs_by_question(eval_dir, m_, task) for m_ in (base, model)):
            row["paired"] = finetune_paired(eval_dir, task, base, model, seed)
        if m["kind"] in ("classification", "pubmedqa", "multiple_choice"):
            row["examples"], row["runs"] = m["examples"], len(m["test"][m["metric"]]["runs"])
        rows.append(row)
    return sorted(rows, key=lambda r: (r["task"], r["model"] != base, r["model"]))


def plot_comparison(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    models = sorted({r["model"] for r in rows}, key=lambda m: (m != "base", m))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(tasks), 3.2))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        got = {r["task"]: r for r in rows if r["model"] == model}
        xs = [t for t in range(len(tasks)) if tasks[t] in got]
        ax.bar([x + i * width for x in xs], [got[tasks[x]]["value"] for x in xs], width, label=model,
               yerr=[got[tasks[x]]["std"] or 0 for x in xs], capsize=3)
    ax.set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(tasks))],
                  [f"{t}\n({next(r['metric'] for r in rows if r['task'] == t)})" for t in tasks])
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("base vs aligned (error bars: std over fine-tuning seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_tsv_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    return data[:, 0], data[:, 1]


def plot_curves(live_dir: Path, names: list[str], path: Path, title: str, smooth: int = 1) -> bool:
    """Series of dvclive's plots/metrics/<name>.tsv against step; False when none exists."""
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
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def read_ablations(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt(v, std=None) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" + (f" ± {std:.3f}" if std else "")
    return str(v)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows])


def on_accuracy(r: dict) -> str:
    """A fine-tuned task's paired figures are on per-question correctness: say so where its metric differs."""
    return " (accuracy)" if "questions" in r["paired"] and r["metric"] != "accuracy" else ""


def render(rows: list[dict], figures: dict[str, str], ablations: list[dict], base: str) -> str:
    out = ["# bali report", "",
           f"Base model `{base}` against the aligned model(s) on every evaluation task, with the same protocol "
           "and data for both. Entity-linking differences are paired over the same queries: exact McNemar "
           "test on hit@1 and a paired-bootstrap 95 % interval of the gain. Fine-tuned tasks (value ± std over "
           "seeds or folds) with single-answer predictions are paired over the same test questions: per question "
           "the fraction of runs right, bootstrap interval of the gain, McNemar on \"right in most runs\".", "",
           "## Base vs aligned", ""]
    out.append(table(["task", "model", "metric", "value", "Δ vs base [95 % CI]", "McNemar p"],
                     [[r["task"], r["model"], r["metric"], _fmt(r["value"], r["std"]),
                       (f"{100 * r['paired']['delta']:+.1f} [{100 * r['paired']['ci95_low']:+.1f}, "
                        f"{100 * r['paired']['ci95_high']:+.1f}] pts" + on_accuracy(r)) if "paired" in r else "",
                       f"{r['paired']['mcnemar_p']:.2g}" if "paired" in r else ""] for r in rows]))
    el = [r for r in rows if r["kind"] == "entity_linking"]
    if el:
        out += ["", "### Entity linking in detail", "",
                table(["task", "model", "acc@1", "acc@5", "seen acc@1 (queries)", "unseen acc@1 (queries)",
                       "dictionary names"],
                      [[r["task"], r["model"], r["value"], r.get("acc@5"),
                        f"{r['seen acc@1']:.3f} ({r['seen queries']})" if "seen acc@1" in r else "",
                        f"{r['unseen acc@1']:.3f} ({r['unseen queries']})" if "unseen acc@1" in r else "",
                        r.get("dictionary_names")] for r in el]),
                "", "Seen: the query's concept is mentioned in the pre-training sentences."]
    tuned = [r for r in rows if "examples" in r]
    if tuned:
        out += ["", "### Downstream (fine-tuned) tasks in detail", "",
                table(["task", "model", "metric", "value", "runs", "train / dev / test examples"],
                      [[r["task"], r["model"], r["metric"], _fmt(r["value"], r["std"]), r["runs"],
                        " / ".join(str(r["examples"].get(s, "")) for s in ("train", "dev", "test"))] for r in tuned])]
    out += ["", "Protocols:", ""] + sorted({f"- {r['task']}: {r['protocol']}" for r in rows})
    for title, key in (("Comparison", "comparison"), ("Pre-training losses", "losses"),
                       ("Entity linking during pre-training", "el_curve")):
        if key in figures:
            out += ["", f"## {title}", "", f"![{title}]({figures[key]})"]
    if ablations:
        out += ["", "## Ablations", "", "Each row is a `dvc exp run -S …` of the demo (see README).", "",
                table(list(ablations[0]), [list(a.values()) for a in ablations])]
    return "\n".join(out) + "\n"
