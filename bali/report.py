"""The report: base vs aligned per task (paired tests for entity linking), training curves, the
ablation table — one Markdown file with its figures, what a paper's appendix would hold."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl

from bali.evaluation.metrics import mcnemar_exact, paired_bootstrap, paired_bootstrap_stat, spearman


def load_evals(eval_dir: Path) -> dict[tuple[str, str], dict]:
    """{(model, task): metrics} of every data/eval/<model>/<task>/metrics.json."""
    return {(f.parent.parent.name, f.parent.name): json.loads(f.read_text())
            for f in sorted(eval_dir.glob("*/*/metrics.json"))}


def headline(m: dict) -> tuple[str, float, float | None]:
    """The figure a task is compared on: (name, value, std over seeds or None)."""
    if m["kind"] == "entity_linking":
        return "acc@1", m["acc@1"], None
    if m["kind"] == "hierarchy":
        return f"parent hit@{m['k']}", m[f"hit@{m['k']}"], None
    if m["kind"] == "ner":
        return "entity F1", m["test"]["f1"]["mean"], m["test"]["f1"]["std"]
    return m["metric"], m["test"][m["metric"]]["mean"], m["test"][m["metric"]]["std"]


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
                       "ci95_low": f["ci95_low"], "ci95_high": f["ci95_high"]}
                if compare:
                    row["paired"] = paired_spearman(eval_dir, task, file, base, model, seed)
                rows.append(row)
            continue
        name, value, std = headline(m)
        row = {"task": task, "kind": m["kind"], "model": model, "metric": name, "value": value, "std": std,
               "protocol": m["protocol"]}
        if m["kind"] == "entity_linking":
            row.update({k: m[k] for k in ("acc@5", "dictionary_names", "queries") if k in m})
            row.update({f"top1 errors {k}": v for k, v in m.get("top1_errors", {}).items()})
            for part in ("seen", "unseen"):
                if part in m:
                    row[f"{part} acc@1"] = m[part]["acc@1"]
                    row[f"{part} queries"] = m[part]["queries"]
            if compare:
                keys = ["qid"] if "qid" in pl.read_parquet_schema(eval_dir / model / task / "predictions.parquet") \
                    else ["cui", "query"]
                row["paired"] = paired_hits(eval_dir, task, base, model, seed, keys, "hit@1")
        elif m["kind"] == "hierarchy":
            row.update({"hit@1": m["hit@1"], "mrr": m["mrr"], "links": m["links"]})
            if compare:
                row["paired"] = paired_hits(eval_dir, task, base, model, seed, ["child", "parent"], name.split()[-1])
                row["paired_hit@1"] = paired_hits(eval_dir, task, base, model, seed, ["child", "parent"], "hit@1")
        elif compare and all(pairs_by_question(eval_dir, m_, task) for m_ in (base, model)):
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


def _delta(r: dict) -> str:
    if "paired" not in r:
        return ""
    d = r["paired"]
    if r["kind"] == "similarity":  # a difference of rho, not of a share
        return f"{d['delta']:+.3f} [{d['ci95_low']:+.3f}, {d['ci95_high']:+.3f}]"
    return f"{100 * d['delta']:+.1f} [{100 * d['ci95_low']:+.1f}, {100 * d['ci95_high']:+.1f}] pts" + on_accuracy(r)


def render(rows: list[dict], figures: dict[str, str], ablations: list[dict], base: str) -> str:
    out = ["# bali report", "",
           f"Base model `{base}` against the aligned model(s) on every evaluation task, with the same protocol "
           "and data for both. Differences are paired over the same items: for entity linking (hit@1) and the "
           "hierarchy probe (parent hit@k) an exact McNemar test and a paired-bootstrap 95 % interval of the gain; "
           "for similarity a paired-bootstrap 95 % interval of the difference of Spearman's rho. Entity-linking "
           "`_dev` tasks are for choosing settings, `_test` tasks are the reported figures. Fine-tuned tasks (value "
           "± std over seeds or folds) with single-answer predictions are paired over the same test questions: per "
           "question the fraction of runs right, bootstrap interval of the gain, McNemar on \"right in most runs\".", "",
           "## Base vs aligned", ""]
    out.append(table(["task", "model", "metric", "value", "Δ vs base [95 % CI]", "McNemar p"],
                     [[r["task"], r["model"], r["metric"], _fmt(r["value"], r["std"]), _delta(r),
                       f"{r['paired']['mcnemar_p']:.2g}" if "mcnemar_p" in r.get("paired", {}) else ""] for r in rows]))
    el = [r for r in rows if r["kind"] == "entity_linking"]
    if el:
        out += ["", "### Entity linking in detail", "",
                table(["task", "model", "acc@1", "acc@5", "seen acc@1 (queries)", "unseen acc@1 (queries)",
                       "dictionary names", "top-1 errors: parent / child / sibling", "mean distance (≤ 5)"],
                      [[r["task"], r["model"], r["value"], r.get("acc@5"),
                        f"{r['seen acc@1']:.3f} ({r['seen queries']})" if "seen acc@1" in r else "",
                        f"{r['unseen acc@1']:.3f} ({r['unseen queries']})" if "unseen acc@1" in r else "",
                        r.get("dictionary_names"),
                        " / ".join(f"{r[f'top1 errors share_{x}']:.2f}" for x in ("parent", "child", "sibling"))
                        if "top1 errors share_parent" in r else "",
                        r.get("top1 errors mean_distance_capped_5")] for r in el]),
                "", "Seen: the query's concept is mentioned in the pre-training sentences. Top-1 errors: the share "
                    "of wrong top-1 concepts that are a parent, child or sibling of the gold concept in the graph, "
                    "and their mean shortest-path distance to it (capped at 5)."]
    hi = [r for r in rows if r["kind"] == "hierarchy"]
    if hi:
        out += ["", "### Hierarchy probe in detail", "",
                table(["task", "model", "links", "parent hit@1", "McNemar p (hit@1)", hi[0]["metric"],
                       "MRR"],
                      [[r["task"], r["model"], r["links"], r["hit@1"],
                        f"{r['paired_hit@1']['mcnemar_p']:.2g}" if "paired_hit@1" in r else "", r["value"], r["mrr"]]
                       for r in hi]),
                "", "held_out: is_a links kept out of the training graph; seen: links it trained with."]
    tuned = [r for r in rows if "examples" in r]
    if tuned:
        out += ["", "### Downstream (fine-tuned) tasks in detail", "",
                table(["task", "model", "metric", "value", "runs", "train / dev / test examples"],
                      [[r["task"], r["model"], r["metric"], _fmt(r["value"], r["std"]), r["runs"],
                        " / ".join(str(r["examples"].get(s, "")) for s in ("train", "dev", "test"))] for r in tuned])]
    out += ["", "Protocols:", ""] + sorted({f"- {r['task']}: {r['protocol']}" for r in rows})
    for title, key in (("Comparison", "comparison"), ("Pre-training losses", "losses"),
                       ("The LM on dev during pre-training", "el_curve"),
                       ("The graph encoder's share of the graph vector", "encoder_share")):
        if key in figures:
            out += ["", f"## {title}", "", f"![{title}]({figures[key]})"]
    if ablations:
        out += ["", "## Ablations", "", "Each row is a `dvc exp run -S …` of the demo (see README).", "",
                table(list(ablations[0]), [list(a.values()) for a in ablations])]
    return "\n".join(out) + "\n"
