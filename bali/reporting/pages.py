"""The report's figures as Markdown: reports/report.md (the report stage), and the pages written from
committed inputs by one command:

  python -m bali.reporting.pages [--compare reports/compare.json]   # after `make demo` (and `make ablations`)
  python -m bali.reporting.pages --check                            # exit 1 when a committed page is stale

`--compare` first copies the demo's comparison into docs/results/demo.json (committed, small). The
pages are rebuilt from files in the repository: docs/results/demo.json (when there is one),
ablations/*.csv, ablations/demo.yaml and params.yaml (the seeds) and bali/real_data_manifest.json.
They are docs/results.md, the verdict in README.md and docs/index.md (the aligned model beside its
controls, its sentences written from the numbers by bali.reporting.verdict), docs/datasets.md's
table of the real data sets, and the figures under docs/results/ (the stage graph in README.md and
docs/index.md is bali.reporting.dag's). Every table has at most MAX_COLUMNS columns.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from bali import real_data
from bali.reporting import ablations, factorial, report, verdict

MAX_COLUMNS = 7
ROOT = Path(__file__).resolve().parents[2]
DEMO_JSON = Path("docs/results/demo.json")
RESULTS_PAGE, INDEX, DATASETS, README = Path("docs/results.md"), Path("docs/index.md"), Path("docs/datasets.md"), Path("README.md")
METHOD = Path("docs/method.md")
FIGURE, CONTROLS_FIGURE = Path("docs/results/comparison.png"), Path("docs/results/controls.png")
MARK = "written by python -m bali.reporting.pages"
BLOCKS = {"headline": (f"<!-- headline: {MARK} -->", "<!-- /headline -->"),
          "datasets": (f"<!-- datasets: {MARK} from bali/real_data_manifest.json -->", "<!-- /datasets -->"),
          "factorial": (f"<!-- factorial: {MARK} from ablations/published.csv and ablations/regime.csv -->",
                        "<!-- /factorial -->")}
INTERVALS = ("Intervals are 95 %: a bootstrap over the task's items (1,000 resamples) for zero-shot tasks, a t "
             "interval over fine-tuning runs (seeds or folds) for fine-tuned ones. Δ is paired over the same items.")
MODEL_NAMES = {"bali": "aligned"}  # the pages' name for the pipeline's aligned model folder


def shown(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def fmt(v) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


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
    and are left out unless `dev`); the task names the model when several are compared."""
    by = {(r["task"], r["model"]): r for r in rows}
    several = len({r["model"] for r in rows if r["model"] != base}) > 1
    out = [[f"{r['task']} ({shown(r['model'])})" if several else r["task"], r["metric"], with_interval(by[(r["task"], base)]),
            with_interval(r), delta(r), p_value(r)]
           for r in rows if r["model"] != base and r["task"].endswith("_dev") == dev and (r["task"], base) in by]
    return table(["task", "metric", f"{base} [95 % CI]", "aligned [95 % CI]", "Δ [95 % CI]", "McNemar p"], out)


def details(rows: list[dict]) -> list[str]:
    out = []
    el = [r for r in rows if r["kind"] == "entity_linking"]
    if el:
        share = lambda r, x: r.get(f"top1 errors share_{x}")  # noqa: E731
        out += ["### Entity linking in detail", "",
                table(["task", "model", "queries", "dictionary names", "acc@1", "acc@5"],
                      [[r["task"], shown(r["model"]), r.get("queries"), r.get("dictionary_names"), r["value"],
                        r.get("acc@5")] for r in el]), "",
                table(["task", "model", "seen queries", "seen acc@1", "unseen queries", "unseen acc@1"],
                      [[r["task"], shown(r["model"]), r.get("seen queries"), r.get("seen acc@1"), r.get("unseen queries"),
                        r.get("unseen acc@1")] for r in el]), "",
                table(["task", "model", "top-1 errors: parent", "child", "sibling", "mean distance (≤ 5)"],
                      [[r["task"], shown(r["model"]), share(r, "parent"), share(r, "child"), share(r, "sibling"),
                        r.get("top1 errors mean_distance_capped_5")] for r in el]),
                "", "Seen: the query's concept is mentioned in the pre-training sentences. Top-1 errors: the share "
                    "of wrong top-1 concepts that are a parent, child or sibling of the gold concept in the graph, "
                    "and their mean shortest-path distance to it (capped at 5).", ""]
    hi = [r for r in rows if r["kind"] == "hierarchy"]
    if hi:
        out += ["### Hierarchy probe in detail", "",
                table(["task", "model", "links", "parent hit@1", "McNemar p (hit@1)", hi[0]["metric"], "MRR"],
                      [[r["task"], shown(r["model"]), r["links"], r["hit@1"],
                        f"{r['paired_hit@1']['mcnemar_p']:.2g}" if "paired_hit@1" in r else "", r["value"], r["mrr"]]
                       for r in hi]),
                "", "held_out: is_a links kept out of the training graph; seen: links it trained with.", ""]
    tuned = [r for r in rows if "examples" in r]
    if tuned:
        out += ["### Fine-tuned tasks in detail", "",
                table(["task", "model", "metric", "mean ± std", "runs", "train / dev / test examples"],
                      [[r["task"], shown(r["model"]), r["metric"], f"{r['value']:.3f} ± {r['std']:.3f}", r["runs"],
                        " / ".join(str(r["examples"].get(s, "")) for s in ("train", "dev", "test"))] for r in tuned]), ""]
    return out + ["Protocols:", ""] + sorted({f"- {r['task']}: {r['protocol']}" for r in rows if r.get("protocol")})


ABLATION_GROUPS = {"demo_el": "Entity linking (demo)", "hierarchy": "Hierarchy probe (demo)"}
REAL_PREFIXES = ("GSC+", "BC5CDR", "UMNSRS")


def split_p(header: str, cells: list[str]) -> tuple[list[str], list[list[str]]]:
    """A "Δ [95 % CI], p" column as two: one figure per column."""
    if not header.endswith(", p"):
        return [header], [[c] for c in cells]
    name = header[:-len(", p")]
    parts = [c.split(", p ") if ", p " in c else [c, ""] for c in cells]
    return [name, f"{name.split(' Δ')[0]} McNemar p"], parts


def real_tables(rows: list[dict], seed: int | None) -> list[str]:
    """Per real-data task: each row's base, aligned and Δ (one run, paired over items) and its mean over seeds."""
    out = []
    run = f"seed {seed}" if seed is not None else "one run"
    for t in verdict.TASKS:
        if t["group"] != "real" or t["value"] not in rows[0]:
            continue
        base = verdict.base_value(rows, t)
        unit = " (pts)" if t["points"] else ""
        header = ["row", f"base {t['metric']}", f"{t['metric']}, {run}", f"Δ {t['metric']} vs base{unit} [95 % CI]",
                  f"{t['metric']} over seeds [95 % CI]"] + (["near-miss share of errors"] if t.get("near_miss") else [])
        body = [[r["row"], fmt(base), r[t["value"]], r[t["delta"]], verdict.seed_cell(r, t)]
                + ([r[t["near_miss"]]] if t.get("near_miss") else []) for r in rows]
        out += [f"**{t['label']}**", "", table(header, body), ""]
    if out:
        out += ["Base: each row's value minus its paired Δ (the table keeps the aligned figures; every row gives the "
                "same base to ± 0.001). Δ: that run against the base over the same items.", ""]
    return out


def ablation_tables(rows: list[dict], seed: int | None = None) -> list[str]:
    """An ablation CSV as narrow tables: what each row is, then one table per kind of figure (the
    columns' tasks, see bali.reporting.ablations), dev and test apart, real data per task."""
    if not rows:
        return []
    where = {**ablations.DEV, **ablations.TEST}
    groups: dict[str, list[str]] = {}
    for col in rows[0]:
        if col in ("row", "commit", "what", "overrides") or col in ablations.REAL:
            continue
        part = "real data" if col.startswith(REAL_PREFIXES) else "dev" if col.startswith("dev ") else "test"
        if col in ablations.GRAPH:
            title = "The graph encoder at the last training step"
        elif col.endswith(" over seeds"):
            title = f"Over pre-training seeds, {part}: mean ± std (each seed's value)"
        elif col not in where:
            title = f"Against the reference row, {part}"
        else:
            title = next((t for prefix, t in ABLATION_GROUPS.items() if where[col][0].startswith(prefix)), "Other")
        groups.setdefault(title, []).append(col)
    def tables_of(title: str) -> list[str]:
        header, cells = [], [[] for _ in rows]
        for col in groups[title]:
            names, parts = split_p(col, [r[col] for r in rows])
            header += names
            for c, p in zip(cells, parts):
                c += p
        w = MAX_COLUMNS - 1
        return [x for i in range(0, len(header), w) for x in
                (f"**{title}**", "", table(["row", *header[i:i + w]], [[r["row"], *c[i:i + w]] for r, c in zip(rows, cells)]), "")]

    later = ("Against", "Over")  # the comparisons between rows come after each row's own figures
    out = [table(["row", "what", "overrides"], [[r["row"], r["what"], r["overrides"]] for r in rows]), ""]
    out += [x for title in groups if not title.startswith(later) for x in tables_of(title)] + real_tables(rows, seed)
    return out + [x for prefix in later for title in groups if title.startswith(prefix) for x in tables_of(title)]


def figure(path: str, alt: str, protocol: str) -> list[str]:
    return [f"![{alt}]({path})", "", f"*{protocol}*", ""]


COMPARISON_PROTOCOL = ("Each task's figure for each model on the same data, dev tasks (where settings are chosen) "
                       "apart from test ones; error bars: 95 % intervals (bootstrap over items for zero-shot tasks, "
                       "t over runs for fine-tuned ones).")


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
    if ablation_rows and verdict.tasks(ablation_rows):
        out += ["## Beside its controls", "", *(f"- {x}" for x in verdict.sentences(verdict.tasks(ablation_rows))), "",
                verdict.table_of(verdict.tasks(ablation_rows), table), ""]
    captions = {"comparison": ("Comparison", COMPARISON_PROTOCOL),
                "losses": ("Pre-training losses", "dvclive's per-step training losses of the aligned model, moving mean "
                                                  "of 10 steps."),
                "el_curve": ("The LM on dev during pre-training", "Zero-shot entity linking (dev queries) and parent "
                             "hit@10 (dev links) of the LM at every `pretrain.eval_every` steps."),
                "encoder_share": ("The graph encoder's share of the graph vector",
                                  "Per training step: mean ||graph vector - target's name vector|| / ||name vector|| "
                                  "and their mean cosine, moving mean of 10 steps."),
                "collapse": ("Collapse diagnostics",
                             "Mean pairwise cosine between different concepts' graph vectors and mention vectors of each "
                             "batch, and of a fixed sample of dictionary names every `pretrain.diagnostics_every` steps; "
                             "the sampled names' mean cosine to their base-model vectors. A run whose vectors of "
                             "different concepts converge on one direction shows it here while it runs.")}
    for key, (title, protocol) in captions.items():
        if key in figures:
            out += [f"## {title}", ""] + figure(figures[key], title, protocol)
    out += ["## Details", ""] + details(rows)
    if ablation_rows:
        out += ["", "## Ablations", "", "Each row is a `dvc exp run -S …` of the demo; Δ in points of the share.", ""]
        out += ablation_tables(ablation_rows)
    out += ["", "Each data stage's wall time and peak memory: [runs.md](runs.md)."]
    return "\n".join(out).rstrip() + "\n"


def learning_curves(curves: dict) -> list[str]:
    """The results page's learning curves (docs/results/curves.json, `python -m bali.reporting.curves`)."""
    if not curves:
        return []
    out = ["## Learning curves", "", "Dev figures from the pre-training run's own evaluation every `pretrain.eval_every` "
           "steps (`ablations/curves.yaml`, `python -m bali.reporting.curves ablations/curves.yaml`); step 0 is the base "
           "model, evaluated the same way. One pre-training seed per curve.", ""]
    out += figure("results/curves.png", "dev acc@1 and dev parent hit@10 against pre-training steps",
                  "Each run's dev entity-linking acc@1 and dev parent hit@10 at each evaluated step; dashed: step 0.")
    for name, r in curves.items():
        steps = sorted({s for pts in r["curves"].values() for s, _ in pts})
        values = {f: dict(pts) for f, pts in r["curves"].items()}
        out += [f"`{name}` ({r['what']}):", "",
                table(["step", *values], [[str(s), *(f"{values[f][s]:.3f}" if s in values[f] else "" for f in values)]
                                          for s in steps]), ""]
    return out


def precision_of(rows: list[dict]) -> str:
    """What the comparison's embeddings ran in (each evaluation records its resolved precision)."""
    got = sorted({r["numeric_precision"] for r in rows if r.get("numeric_precision")})
    if not got:
        return ""
    return (f" Its evaluations ran in {' and '.join(got)} (`precision: auto` on the machine that made this comparison: "
            "bf16 where its CPU or GPU runs bf16 natively, else float32).")


def render_results(rows: list[dict], base: str, tables: dict[str, list[dict]], seeds: list[int],
                   curves: dict | None = None) -> str:
    """docs/results.md: the verdict first, then the demo's paired comparison, the ablation tables and
    the learning curves."""
    out = ["# Results", "", "Written by `python -m bali.reporting.pages` from `docs/results/demo.json` (the demo's "
           "`reports/compare.json`) and `ablations/*.csv`; do not edit by hand. " + INTERVALS, ""]
    if tables.get("demo"):
        out += ["## The verdict: the aligned model beside its controls", "",
                verdict.block(tables["demo"], rows, seeds, "", table, link=False), ""]
        out += figure("results/controls.png", "base, aligned and its controls per task", verdict.FIGURE_PROTOCOL)
    if rows:
        out += ["## The demo: base against aligned, paired", "", "One pre-training run (seed "
                f"{seeds[0] if seeds else '?'}) against the base over the same items." + precision_of(rows), "",
                headline(rows, base), ""]
        out += figure("results/comparison.png", "base against aligned, dev and test tasks", COMPARISON_PROTOCOL)
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
                          "graph·name cosine are the pre-training's last step."),
              "published": ("Why the published recipe hurts at demo scale", "The factorial of "
                            "`ablations/published.yaml` on dev data, its rule written in that file before any row ran; "
                            "each row paired with `pub` (the published recipe) over the same dev items. Under that "
                            "rule a row confirms a suspect only with its three pre-training seeds."),
              "regime": ("A regime for BALI's own objective", "Candidates of `ablations/regime.yaml` on dev data "
                         "(its rule in that file): `pub-residual` with one thing more; the chosen one is the demo "
                         "table's `bali-regime` row."),
              "precision": ("bf16 or float32 where the CPU runs bf16 natively", "The demo setting pre-trained and "
                            "evaluated under each precision on one CPU with `avx512_bf16` (`ablations/precision.yaml`, "
                            "its rule in that file), each row paired with `prec-float32` over the same items.")}
    for name, rows_ in tables.items():
        title, text = titles.get(name, (f"Ablations: {name}", f"`ablations/{name}.yaml`."))
        out += [f"## {title}", "", text, ""] + ablation_tables(rows_, seeds[0] if seeds else None)
        if name == "precision":
            out += [*(f"- {x}" for x in verdict.precision_choice(rows_)), ""]
    out += learning_curves(curves or {})
    return "\n".join(out).rstrip() + "\n"


def replace_block(text: str, key: str, body: str, where: Path) -> str:
    """`text` with the generated block `key` (between its markers) replaced by `body`."""
    begin, end = BLOCKS[key]
    if begin not in text or end not in text:
        raise SystemExit(f"{where}: no {begin} … {end} block")
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + body.strip() + "\n" + end + rest.split(end, 1)[1]


def load_rows(path: Path) -> list[dict]:
    return list(json.loads(path.read_text(encoding="utf-8")).values())


def seeds_of(root: Path) -> list[int]:
    """The demo table's pre-training seeds: params.yaml's base.seed and ablations/demo.yaml's extra ones."""
    first = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["base"]["seed"]
    spec = root / "ablations" / "demo.yaml"
    rows = yaml.safe_load(spec.read_text(encoding="utf-8"))["rows"] if spec.exists() else []
    return [first, *next((r.get("seeds", []) for r in rows if r.get("seeds")), [])]


def pages(root: Path) -> dict[Path, str]:
    """{file: its text} of the generated pages, from the committed inputs under `root`."""
    rows = load_rows(root / DEMO_JSON) if (root / DEMO_JSON).exists() else []
    aligned = {r["model"] for r in rows if "paired" in r}
    base = next((r["model"] for r in rows if r["model"] not in aligned), "base")
    tables = {f.stem: report.read_ablations(f) for f in sorted((root / "ablations").glob("*.csv"))}
    seeds = seeds_of(root)
    readme = (root / README).read_text(encoding="utf-8")
    index = (root / INDEX).read_text(encoding="utf-8")
    curves_json = root / "docs" / "results" / "curves.json"
    curves = json.loads(curves_json.read_text(encoding="utf-8")) if curves_json.exists() else {}
    out = {root / RESULTS_PAGE: render_results(rows, base, tables, seeds, curves)}
    if tables.get("demo"):
        readme = replace_block(readme, "headline", verdict.block(tables["demo"], rows, seeds, "docs/", table), README)
        index = replace_block(index, "headline", verdict.block(tables["demo"], rows, seeds, "", table), INDEX)
    out[root / README], out[root / INDEX] = readme, index
    if tables.get("published"):
        method = (root / METHOD).read_text(encoding="utf-8")
        planned = [r["name"] for r in ablations.spec_of(root / "ablations" / "published.yaml")["rows"]]
        out[root / METHOD] = replace_block(method, "factorial", factorial.block(tables["published"],
                                                                               tables.get("regime", []), planned,
                                                                               tables.get("demo", []), curves), METHOD)
    manifest = real_data.load_manifest()
    datasets = (root / DATASETS).read_text(encoding="utf-8")
    out[root / DATASETS] = replace_block(datasets, "datasets", real_data.summary_table(manifest) + "\n\n"
                                         + real_data.sources(manifest), DATASETS)
    return out


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
    demo_csv = ROOT / "ablations" / "demo.csv"
    if demo_csv.exists() and verdict.tasks(report.read_ablations(demo_csv)):
        report.plot_controls(verdict.tasks(report.read_ablations(demo_csv)), ROOT / CONTROLS_FIGURE)
    print(f"pages: {', '.join(str(f.relative_to(ROOT)) for f in written)} from {DEMO_JSON} and ablations/*.csv")


if __name__ == "__main__":
    main()
