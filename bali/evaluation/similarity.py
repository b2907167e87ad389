"""Concept similarity / relatedness (UMNSRS): Spearman's rho between the cosine of two terms'
vectors and the physicians' mean rating, one figure per `*.csv` of the task folder (columns
`Term1`, `Term2`, `Mean`; other columns ignored), with a bootstrap 95 % interval over pairs.
Rows with an empty term or a non-numeric Mean are counted and left out.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from bali.evaluation.el_data import Issues
from bali.metrics import bootstrap_ci, spearman


def read_pairs_csv(path: Path, issues: Issues) -> pl.DataFrame:
    df = pl.read_csv(path, infer_schema=False).with_row_index("line", offset=2)  # line 1 is the header
    missing = {"Term1", "Term2", "Mean"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: no column(s) {sorted(missing)} (expected UMNSRS's Term1, Term2, Mean)")
    df = df.select("line", "Term1", "Term2", mean=pl.col("Mean").str.strip_chars().cast(pl.Float64, strict=False))
    bad = df.filter(pl.col("mean").is_null() | (pl.col("Term1").str.strip_chars().fill_null("") == "")
                    | (pl.col("Term2").str.strip_chars().fill_null("") == ""))
    for line in bad["line"]:
        issues.add("malformed_row", f"{path.name}:{line}")
    if df.height == 0:
        issues.add("empty_file", path.name)
    return df.join(bad.select("line"), on="line", how="anti")


def run(ctx, task_dir: str | Path, task: dict, p: dict) -> tuple[dict, pl.DataFrame]:
    """Spearman's rho with a bootstrap interval per *.csv of the task folder; (metrics, per-pair cosines)."""
    encoder, seed = ctx.encoder(), ctx.seed
    files = sorted(Path(task_dir).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"{task_dir}: no *.csv files (Term1, Term2, Mean)")
    issues, figures, frames = Issues(), {}, []
    for path in files:
        df = read_pairs_csv(path, issues)
        a, b = encoder.vectors(df["Term1"].to_list()), encoder.vectors(df["Term2"].to_list())
        cos = (a * b).sum(1).numpy().astype(float)
        mean = df["mean"].to_numpy()
        lo, hi = bootstrap_ci(lambda idx: spearman(cos[idx], mean[idx]), len(cos), p["bootstrap"], seed)
        figures[path.stem] = {"spearman": spearman(cos, mean), "ci95_low": lo, "ci95_high": hi, "pairs": len(cos)}
        frames.append(df.with_columns(file=pl.lit(path.stem), cosine=pl.Series(cos)))
    metrics = {"protocol": f"Spearman rho of the cosine of {encoder.p['pooling']}-pooled term vectors against the "
                           f"mean rating, per file; bootstrap 95 % interval over pairs ({p['bootstrap']} resamples)",
               "files": figures, "input_issues": issues.as_dict()}
    return metrics, pl.concat(frames).select("file", "line", "Term1", "Term2", "mean", "cosine")
