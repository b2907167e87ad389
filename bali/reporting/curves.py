"""Learning curves: the dev figures a pre-training run's own evaluation callback logged every
`pretrain.eval_every` steps (dvclive: el/acc@1 and hierarchy/hit@10), read back from each experiment
of a spec in the DVC cache, drawn on one figure and kept as JSON.

  python -m bali.reporting.curves ablations/curves.yaml   # -> docs/results/curves.png, docs/results/curves.json
  python -m bali.reporting.curves ablations/curves.yaml --partial   # rows not run here keep their recorded curve

Step 0 is the callback's evaluation before the first update: the base model, measured the same way.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bali.reporting import ablations

PLOTS = "dvclive/pretrain/plots/metrics"
CURVES = {"el/acc@1.tsv": "dev acc@1", "hierarchy/hit@10.tsv": "dev parent hit@10"}
OUT_JSON, OUT_PNG = Path("docs/results/curves.json"), Path("docs/results/curves.png")


def read_curves(plots_dir_file: Path) -> dict[str, list[tuple[int, float]]]:
    """{figure: [(step, value)]} from a cached dvclive plots folder (its `.dir` listing in the cache)."""
    cache = plots_dir_file.parents[1]  # files/md5/XX/REST.dir -> files/md5
    out = {}
    for entry in json.loads(plots_dir_file.read_text(encoding="utf-8")):
        if entry["relpath"] in CURVES:
            f = cache / entry["md5"][:2] / entry["md5"][2:]
            lines = f.read_text(encoding="utf-8").split("\n")[1:]
            out[CURVES[entry["relpath"]]] = [(int(s), float(v)) for s, v in (ln.split("\t") for ln in lines if ln)]
    return out


def collect(spec_path: Path) -> dict[str, dict]:
    """{row: {"what", "commit", "curves"}} of the spec's rows that have run at the current pipeline."""
    spec = ablations.spec_of(spec_path)
    found = ablations.by_row(spec, ablations.experiments(spec.get("current_only", True)))
    out = {}
    for row in spec["rows"]:
        exp = found.get(row["name"])
        if exp is None:
            continue
        plots = ablations.cached_outputs(exp["rev"]).get(PLOTS)
        if plots is not None and plots.exists():
            out[row["name"]] = {"what": row["what"], "commit": exp["commit"], "curves": read_curves(plots)}
    return out


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(10, 3.8), squeeze=False)
    for ax, figure in zip(axes[0], CURVES.values()):
        for name, r in rows.items():
            points = r["curves"].get(figure, [])
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
                ax.axhline(points[0][1], color="grey", lw=0.8, ls="--")  # step 0: the base model
        ax.set_xlabel("pre-training step")
        ax.set_title(figure)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=9, loc="center right")  # clear of the curves that fall below the base
    fig.suptitle("dev figures during pre-training (dashed: step 0, the base model)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", type=Path)
    ap.add_argument("--partial", action="store_true",
                    help="a row with no current experiment keeps the curve docs/results/curves.json has for it "
                         "(its commit says which code made it), as `ablations table --partial` keeps a csv line")
    args = ap.parse_args(argv)
    found = collect(args.spec)
    recorded = json.loads(OUT_JSON.read_text(encoding="utf-8")) if args.partial and OUT_JSON.exists() else {}
    names = [r["name"] for r in ablations.spec_of(args.spec)["rows"]]  # the spec's order
    rows = {n: found.get(n) or recorded[n] for n in names if n in found or n in recorded}
    if not found:
        raise SystemExit(f"curves: no experiment of {args.spec} has run at the current pipeline")
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    plot(rows, OUT_PNG)
    print(f"curves: {', '.join(rows)} -> {OUT_JSON}, {OUT_PNG}")


if __name__ == "__main__":
    main()
