"""The report's figures as Markdown: reports/report.md (the report stage), and the documentation's
results page and the README's headline table, written from committed inputs by one command:

  python -m bali.reporting.pages [--compare reports/compare.json]   # after `make demo` (and `make ablations`)
  python -m bali.reporting.pages --check                            # exit 1 when a committed page is stale

`--compare` first copies the demo's comparison into docs/results/demo.json (committed, small), so
the pages are rebuilt from files in the repository: docs/results/demo.json (when there is one) and
ablations/*.csv. The README's headline is the demo run of docs/results/demo.json (base against aligned
on the demo's test halves, paired), or without one the demo setting's row of ablations/demo.csv. Every table has
at most MAX_COLUMNS columns: the ablation tables are split by what they measure.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bali.reporting import ablations, report

MAX_COLUMNS = 10
ROOT = Path(__file__).resolve().parent.parent
DEMO_JSON = Path("docs/results/demo.json")
RESULTS_PAGE = Path("docs/results.md")
FIGURE = Path("docs/results/comparison.png")
README = Path("README.md")
BEGIN, END = "<!-- headline: written by python -m bali.reporting.pages -->", "<!-- /headline -->"
INTERVALS = ("Intervals are 95 %: a bootstrap over the task's items (1,000 resamples) for zero-shot tasks, a t "
             "interval over fine-tuning runs (seeds or folds) for fine-tuned ones. Δ is paired over the same items.")


def fmt(v) -> str:
    if v is None or v == "":
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(header: list[str], rows: list[list]) -> str:
    if len(header) > MAX_COLUMNS:
        raise ValueError(f"a table of {len(header)} columns (at most {MAX_COLUMNS}): {header}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows])


def with_interval(r: dict) -> str:
    return f"{r['value']:.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]" if "ci95_low" in r else fmt(r["value"])


def delta(r: dict) -> str:
    if "paired" not in r:
        return ""
    d = r["paired"]
    if r["kind"] == "similarity":  # a difference of rho, not of a share
        return f"{d['delta']:+.3f} [{d['ci95_low']:+.3f}, {d['ci95_high']:+.3f}]"
    on_accuracy = " (accuracy)" if "questions" in d and r["metric"] != "accuracy" else ""
    return f"{100 * d['delta']:+.1f} [{100 * d['ci95_low']:+.1f}, {100 * d['ci95_high']:+.1f}] pts{on_accuracy}"


def p_value(r: dict) -> str:
    return f"{r['paired']['mcnemar_p']:.2g}" if "mcnemar_p" in r.get("paired", {}) else ""


def headline(rows: list[dict], base: str, dev: bool = False) -> str:
    """Base against each aligned model, one line per reported task (`_dev` tasks choose settings
    and are left out unless `dev`)."""
    by = {(r["task"], r["model"]): r for r in rows}
    out = []
    for r in rows:
        if r["model"] == base or r["task"].endswith("_dev") != dev or (r["task"], base) not in by:
            continue
        b = by[(r["task"], base)]
        out.append([r["task"], r["metric"], with_interval(b), r["model"], with_interval(r), delta(r), p_value(r)])
    return table(["task", "metric", f"{base} [95 % CI]", "aligned", "aligned [95 % CI]", "Δ [95 % CI]", "McNemar p"],
                 out)


def details(rows: list[dict]) -> list[str]:
    out = []
    el = [r for r in rows if r["kind"] == "entity_linking"]
    if el:
        out += ["### Entity linking in detail", "",
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
                    "and their mean shortest-path distance to it (capped at 5).", ""]
    hi = [r for r in rows if r["kind"] == "hierarchy"]
    if hi:
        out += ["### Hierarchy probe in detail", "",
                table(["task", "model", "links", "parent hit@1", "McNemar p (hit@1)", hi[0]["metric"], "MRR"],
                      [[r["task"], r["model"], r["links"], r["hit@1"],
                        f"{r['paired_hit@1']['mcnemar_p']:.2g}" if "paired_hit@1" in r else "", r["value"], r["mrr"]]
                       for r in hi]),
                "", "held_out: is_a links kept out of the training graph; seen: links it trained with.", ""]
    tuned = [r for r in rows if "examples" in r]
    if tuned:
        out += ["### Fine-tuned tasks in detail", "",
                table(["task", "model", "metric", "mean ± std", "runs", "train / dev / test examples"],
                      [[r["task"], r["model"], r["metric"], f"{r['value']:.3f} ± {r['std']:.3f}", r["runs"],
                        " / ".join(str(r["examples"].get(s, "")) for s in ("train", "dev", "test"))] for r in tuned]), ""]
    return out + ["Protocols:", ""] + sorted({f"- {r['task']}: {r['protocol']}" for r in rows if r.get("protocol")})


ABLATION_GROUPS = {"demo_el": "Entity linking (demo)", "hierarchy": "Hierarchy probe (demo)",
                   "gsc_plus": "Real data: entity linking", "bc5cdr": "Real data: entity linking",
                   "umnsrs": "Real data: similarity"}


def ablation_tables(rows: list[dict]) -> list[str]:
    """An ablation CSV as narrow tables: what each row is, then one table per kind of figure (the
    columns' tasks, see bali.reporting.ablations), then the comparisons with the reference row."""
    if not rows:
        return []
    where = {**ablations.DEV, **ablations.TEST, **ablations.REAL}
    groups: dict[str, list[str]] = {}
    for col in rows[0]:
        if col in ("row", "commit", "what", "overrides"):
            continue
        task = where.get(col, ("",))[0]
        title = next((t for prefix, t in ABLATION_GROUPS.items() if task.startswith(prefix)), "Against the reference row")
        if col in ablations.GRAPH:
            title = "The graph encoder at the last training step"
        elif col.endswith(" over seeds"):
            title = "Over pre-training seeds: mean ± std (each seed's value)"
        groups.setdefault(title, []).append(col)
    out = [table(["row", "what", "overrides"], [[r["row"], r["what"], r["overrides"]] for r in rows]), ""]
    for title, cols in groups.items():
        for i in range(0, len(cols), MAX_COLUMNS - 1):
            part = cols[i:i + MAX_COLUMNS - 1]
            out += [f"**{title}**", "", table(["row", *part], [[r["row"], *(r[c] for c in part)] for r in rows]), ""]
    return out


def figure(path: str, alt: str, protocol: str) -> list[str]:
    return [f"![{alt}]({path})", "", f"*{protocol}*", ""]


COMPARISON_PROTOCOL = ("Each task's figure for each model on the same data; error bars: 95 % intervals (bootstrap "
                       "over items for zero-shot tasks, t over runs for fine-tuned ones).")


def render_runs(runs: list[dict]) -> str:
    """reports/runs.md: the data stages' own wall time and peak RSS (bali.io.run_figures), as their
    stats.json hold them. Its own file: timings differ from run to run, report.md must not."""
    rows = [[r["stage"], f"{r['wall_s']:.1f}", f"{r['peak_rss_gib']:.2f}", f"{r['children_peak_rss_gib']:.2f}"]
            for r in runs]
    return "\n".join(["# Stage runs", "", table(["stage", "wall s", "peak RSS GiB", "largest child's peak RSS GiB"], rows),
                      "", "*Each stage's own figures from its `stats.json` (`run`): wall seconds from its process start, "
                      "interpreter and imports included, as of its last run (a stage DVC restored from its cache keeps "
                      "the figures of the run that made it).*"]) + "\n"


def render_report(rows: list[dict], figures: dict[str, str], ablation_rows: list[dict], base: str) -> str:
    """reports/report.md: the headline first, then the figures, the details and the ablations."""
    out = ["# bali report", "", f"Base model `{base}` against the aligned model(s) with the same protocol and data. "
           + INTERVALS, "", "## Headline", "", headline(rows, base), ""]
    if any(r["task"].endswith("_dev") for r in rows):
        out += ["Dev tasks (where settings are chosen, never reported as results):", "", headline(rows, base, dev=True), ""]
    captions = {"comparison": ("Comparison", COMPARISON_PROTOCOL),
                "losses": ("Pre-training losses", "dvclive's per-step training losses of the aligned model, moving mean "
                                                  "of 10 steps."),
                "el_curve": ("The LM on dev during pre-training", "Zero-shot entity linking (dev queries) and parent "
                             "hit@10 (dev links) of the LM at every `pretrain.eval_every` steps."),
                "encoder_share": ("The graph encoder's share of the graph vector",
                                  "Per training step: mean ||graph vector - target's name vector|| / ||name vector|| "
                                  "and their mean cosine, moving mean of 10 steps.")}
    for key, (title, protocol) in captions.items():
        if key in figures:
            out += [f"## {title}", ""] + figure(figures[key], title, protocol)
    out += ["## Details", ""] + details(rows)
    if ablation_rows:
        out += ["", "## Ablations", "", "Each row is a `dvc exp run -S …` of the demo; Δ in points of the share.", ""]
        out += ablation_tables(ablation_rows)
    out += ["", "Each data stage's wall time and peak memory: [runs.md](runs.md)."]
    return "\n".join(out).rstrip() + "\n"


def render_results(rows: list[dict], base: str, tables: dict[str, list[dict]]) -> str:
    """docs/results.md from the demo's comparison (when committed) and the ablation CSVs."""
    out = ["# Results", "", "Written by `python -m bali.reporting.pages` from `docs/results/demo.json` (the demo's "
           "`reports/compare.json`) and `ablations/*.csv`; do not edit by hand. " + INTERVALS, ""]
    if rows:
        out += ["## The demo: base against aligned", "", headline(rows, base), ""]
        out += figure("results/comparison.png", "base vs aligned", COMPARISON_PROTOCOL)
        out += ["Dev tasks (settings are chosen here):", "", headline(rows, base, dev=True), "", "## Details", ""]
        out += details(rows) + [""]
    titles = {"demo": ("Ablations of the demo", "Each row is one `dvc exp run -S …` of the demo setting "
                       "(`ablations/demo.yaml`, `make ablations`), evaluated on the test halves and paired with the base "
                       "model and with the reference row over the same items."),
              "search": ("The search that chose the demo setting", "Settings tried on dev data only "
                         "(`ablations/search.yaml`): the dev columns decided; test figures were never read here."),
              "encoder": ("Where the graph encoder carries the graph", "Settings tried on dev data only "
                          "(`ablations/encoder.yaml`, its rule in that file), each paired with `f-no-gnn`: the demo "
                          "setting with the encoder replaced by the identity. The encoder's share and the "
                          "graph·name cosine are the pre-training's last step.")}
    for name, rows_ in tables.items():
        title, text = titles.get(name, (f"Ablations: {name}", f"`ablations/{name}.yaml`."))
        out += [f"## {title}", "", text, ""] + ablation_tables(rows_)
    return "\n".join(out).rstrip() + "\n"


# (task, the ablation CSV's columns: aligned value, Δ vs base [95 % CI], McNemar p)
README_HEADLINE = [
    ("demo entity linking, test (acc@1)", "test acc@1", "test Δ vs base (pts) [95 % CI]", "test McNemar p"),
    ("demo hierarchy, held-out links (parent hit@10)", "held-out parent hit@10", "hit@10 Δ vs base (pts) [95 % CI]",
     "hit@10 McNemar p"),
    ("GSC+ entity linking (acc@1)", "GSC+ acc@1", "GSC+ Δ [95 % CI]", None),
    ("BC5CDR-disease entity linking (acc@1)", "BC5CDR-D acc@1", "BC5CDR-D Δ [95 % CI]", None),
    ("UMNSRS relatedness (Spearman ρ)", "UMNSRS rel ρ", "UMNSRS rel Δρ [95 % CI]", None),
    ("UMNSRS similarity (Spearman ρ)", "UMNSRS sim ρ", "UMNSRS sim Δρ [95 % CI]", None),
]


def readme_block(demo_row: dict, rows: list[dict], base: str) -> str:
    """The demo run's base-vs-aligned table when there is one, else the ablation table's demo row."""
    if rows:
        body = headline(rows, base)
    else:
        body = table(["task (figure)", "aligned", "Δ vs base [95 % CI]", "McNemar p"],
                     [[task, demo_row[v], demo_row[d], demo_row[p] if p else ""]
                      for task, v, d, p in README_HEADLINE if demo_row.get(v)])
    return "\n".join([BEGIN, body, "", "Δ in points for shares, in ρ for correlations; 95 % intervals by paired "
                      "bootstrap over the same items. Details, real data, ablations and the search: "
                      "[docs/results.md](docs/results.md).", END])


def load_rows(path: Path) -> list[dict]:
    return list(json.loads(path.read_text(encoding="utf-8")).values())


def pages(root: Path) -> dict[Path, str]:
    """{file: its text} of the generated pages, from the committed inputs under `root`."""
    rows = load_rows(root / DEMO_JSON) if (root / DEMO_JSON).exists() else []
    aligned = {r["model"] for r in rows if "paired" in r}
    base = next((r["model"] for r in rows if r["model"] not in aligned), "base")
    tables = {f.stem: report.read_ablations(f) for f in sorted((root / "ablations").glob("*.csv"))}
    readme = (root / README).read_text(encoding="utf-8")
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README}: no {BEGIN} … {END} block for the headline table")
    head, rest = readme.split(BEGIN, 1)
    readme = head + readme_block(tables["demo"][0], rows, base) + rest.split(END, 1)[1]
    return {root / RESULTS_PAGE: render_results(rows, base, tables), root / README: readme}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", type=Path, help="the demo's reports/compare.json, copied to " + str(DEMO_JSON))
    ap.add_argument("--check", action="store_true", help="exit 1 when a committed page differs from what is written")
    args = ap.parse_args(argv)
    if args.compare:
        (ROOT / DEMO_JSON).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.compare, ROOT / DEMO_JSON)
    written = pages(ROOT)
    stale = [f for f, text in written.items() if not f.exists() or f.read_text(encoding="utf-8") != text]
    if args.check:
        if stale:
            sys.exit(f"stale: {', '.join(str(f.relative_to(ROOT)) for f in stale)}; run `python -m bali.reporting.pages`")
        return
    for f, text in written.items():
        tmp = f.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(f)
    if (ROOT / DEMO_JSON).exists():
        report.plot_comparison(load_rows(ROOT / DEMO_JSON), ROOT / FIGURE)
    print(f"pages: {', '.join(str(f.relative_to(ROOT)) for f in written)} from {DEMO_JSON} and ablations/*.csv")


if __name__ == "__main__":
    main()
