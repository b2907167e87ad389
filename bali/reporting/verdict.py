"""The verdict: the aligned model beside its controls (the base, no graph, the graph encoder replaced
by the identity, the published recipe) on the same tasks, each pre-trained model over its
pre-training seeds with a 95 % t interval, and the sentences that say what those numbers show.
The sentences are written here from the numbers, so they change when the numbers do.

A difference between two pre-trained rows counts when the 95 % Welch t interval of the difference
of their seed means excludes 0; a row is below the base when its whole seed interval lies under
the base's value (the base is not pre-trained: one value).
"""
from __future__ import annotations

import math
import statistics

import numpy as np

from bali.metrics import runs_interval

# The tasks, as the demo's ablation table (bali.reporting.ablations) names its columns: `value` the
# figure of the base seed's run, `value + " over seeds"` every seed's, `delta` that run's paired Δ
# against the base (in points of a share, or of ρ).
TASKS = [
    dict(label="Demo entity linking, test (acc@1)", short="demo EL test", metric="acc@1", group="demo",
         value="test acc@1", delta="test Δ vs base (pts) [95 % CI]", points=True),
    dict(label="Demo hierarchy, held-out links (parent hit@10)", short="held-out hit@10", metric="parent hit@10",
         group="demo", value="held-out parent hit@10", delta="hit@10 Δ vs base (pts) [95 % CI]", points=True),
    dict(label="GSC+ entity linking (acc@1)", short="GSC+", metric="acc@1", group="real", value="GSC+ acc@1",
         delta="GSC+ Δ [95 % CI]", points=True, near_miss="GSC+ near-miss share of errors"),
    dict(label="BC5CDR-disease entity linking (acc@1)", short="BC5CDR-D", metric="acc@1", group="real",
         value="BC5CDR-D acc@1", delta="BC5CDR-D Δ [95 % CI]", points=True),
    dict(label="UMNSRS relatedness (Spearman ρ)", short="UMNSRS rel", metric="ρ", group="real",
         value="UMNSRS rel ρ", delta="UMNSRS rel Δρ [95 % CI]", points=False),
    dict(label="UMNSRS similarity (Spearman ρ)", short="UMNSRS sim", metric="ρ", group="real",
         value="UMNSRS sim ρ", delta="UMNSRS sim Δρ [95 % CI]", points=False),
]
# ablations/demo.yaml's rows -> the name a table column gives them, and the name a sentence does
ROLES = {"demo": "aligned", "mention-name-only": "no graph", "no-gnn": "identity encoder",
         "published": "published recipe", "bali-regime": "BALI, regime", "mlm-only": "MLM alone",
         "bali-regime-4x": "BALI, regime, 1,200 steps", "mlm-only-4x": "MLM alone, 1,200 steps",
         "bali-regime-10x": "BALI, regime, 3,000 steps", "mlm-only-10x": "MLM alone, 3,000 steps",
         "no-gnn-10x": "identity encoder, 3,000 steps"}
SAID = {"base": "the base", "demo": "the aligned model", "mention-name-only": "no graph (`mention-name-only`)",
        "no-gnn": "the identity encoder (`no-gnn`)", "published": "the published recipe",
        "bali-regime": "BALI's own objective in its regime (`bali-regime`)", "mlm-only": "MLM alone (`mlm-only`)",
        "bali-regime-4x": "the same regime for 1,200 steps (`bali-regime-4x`)",
        "mlm-only-4x": "MLM alone for 1,200 steps (`mlm-only-4x`)",
        "bali-regime-10x": "the same regime for 3,000 steps (`bali-regime-10x`)",
        "mlm-only-10x": "MLM alone for 3,000 steps (`mlm-only-10x`)",
        "no-gnn-10x": "the identity encoder for 3,000 steps (`no-gnn-10x`)"}
FIGURE_PROTOCOL = ("The base (one value) and each pre-trained model's mean over its pre-training seeds, error bars: "
                   "the 95 % t interval over the seeds; the demo's test halves and real data in separate panels.")


def runs_of(row: dict, t: dict) -> list[float]:
    """Every seed's value of a row for a task ("mean ± std (v1, v2, …)"), or its one run's value."""
    seeds = row.get(t["value"] + " over seeds", "")
    if "(" in seeds:
        return [float(v) for v in seeds[seeds.index("(") + 1:seeds.rindex(")")].split(",")]
    return [float(row[t["value"]])] if row.get(t["value"]) else []


def seed_cell(row: dict, t: dict) -> str:
    runs = runs_of(row, t)
    if not runs:
        return ""
    lo, hi = runs_interval(runs)
    return f"{statistics.mean(runs):.3f} [{lo:.3f}, {hi:.3f}]"


def base_value(rows: list[dict], t: dict) -> float | None:
    """The base's value: each row's value minus its paired Δ (the median: the rows agree up to rounding)."""
    got = [float(r[t["value"]]) - float(r[t["delta"]].split()[0]) / (100 if t["points"] else 1)
           for r in rows if r.get(t["value"]) and r.get(t["delta"])]
    return statistics.median(got) if got else None


def tasks(rows: list[dict]) -> list[dict]:
    """The verdict's tasks with {"base": value, "runs": {row: seed values}}, for a table that has the
    aligned model's row (`demo`); [] for any other table."""
    by = {r["row"]: r for r in rows}
    if "demo" not in by:
        return []
    out = []
    for t in TASKS:
        base = base_value(rows, t)
        runs = {name: runs_of(by[name], t) for name in ROLES if name in by}
        if base is not None and runs.get("demo"):
            out.append({**t, "base": base, "runs": {k: v for k, v in runs.items() if v}})
    return out


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95 % Welch t interval over the runs."""
    from scipy.stats import t as student

    va = np.var(a, ddof=1) / len(a) if len(a) > 1 else 0.0
    vb = np.var(b, ddof=1) / len(b) if len(b) > 1 else 0.0
    d = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return d, d, d
    df = (va + vb) ** 2 / sum(v ** 2 / (len(x) - 1) for v, x in ((va, a), (vb, b)) if len(x) > 1)
    half = float(student.ppf(0.975, df)) * math.sqrt(va + vb)
    return d, d - half, d + half


def compare(t: dict, a: str, b: str) -> tuple[float, float, float]:
    """Row a against row b (or "base", a fixed value) on one task: the difference and its interval."""
    if b == "base":
        lo, hi = runs_interval(t["runs"][a])
        return statistics.mean(t["runs"][a]) - t["base"], lo - t["base"], hi - t["base"]
    return welch(t["runs"][a], t["runs"][b])


def said_diff(t: dict, d: float, lo: float, hi: float) -> str:
    if t["points"]:
        return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] pts"
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def versus(ts: list[dict], a: str, b: str) -> tuple[list[str], list[str], list[str]]:
    """Tasks where row a is ahead of b, behind it (each with its difference), and level with it."""
    ahead, behind, level = [], [], []
    for t in ts:
        if a not in t["runs"] or (b != "base" and b not in t["runs"]):
            continue
        d, lo, hi = compare(t, a, b)
        if lo > 0:
            ahead.append(f"{t['short']} ({said_diff(t, d, lo, hi)})")
        elif hi < 0:
            behind.append(f"{t['short']} ({said_diff(t, d, lo, hi)})")
        else:
            level.append(t["short"])
    return ahead, behind, level


def said_versus(ahead: list[str], behind: list[str], level: list[str]) -> str:
    """"ahead on …, behind on … and level on …", each part only where it has tasks."""
    return join(([f"ahead on {join(ahead)}"] if ahead else []) + ([f"behind on {join(behind)}"] if behind else [])
                + ([f"level on {join(level)}"] if level else []))


def one_run(names: list[str]) -> list[str]:
    if not names:
        return []
    one = len(names) == 1
    return [f"{join([f'`{n}`' for n in names])} {'has' if one else 'have'} one pre-training run so far: no interval "
            f"over seeds, so {'it is' if one else 'they are'} in the tables and in none of these sentences."]


def leads(ts: list[dict]) -> str:
    """Which row has the highest mean on each task, and which of those leads the seeds resolve."""
    best, resolved = {}, []
    for t in ts:
        means = sorted([(t["base"], "base")] + [(statistics.mean(v), k) for k, v in t["runs"].items()], reverse=True)
        (_, first), (_, second) = means[0], means[1]
        best.setdefault(first, []).append(t["short"])
        if first == "base":
            gap = -compare(t, second, "base")[2]  # the runner-up's whole interval under the base
        else:
            gap = compare(t, first, second)[1]
        if gap > 0:
            resolved.append(t["short"])
    if len(best) == 1:
        head = f"{SAID[next(iter(best))]} has the highest mean on every task"
    else:
        head = "Highest mean per task: " + "; ".join(f"{SAID[k]} on {join(v)}" for k, v in best.items())
    if not resolved:
        tail = "no lead is larger than the 95 % interval of its difference from the runner-up"
    elif len(resolved) == len(ts):
        tail = "every lead is larger than the 95 % interval of its difference from the runner-up"
    else:
        tail = f"only the lead on {join(resolved)} is larger than the 95 % interval of its difference from the runner-up"
    return f"{head[0].upper()}{head[1:]}; {tail}."  # a row name may start the sentence


def sentences(ts: list[dict]) -> list[str]:
    """What the verdict table says: which row leads, whether the graph encoder adds anything beyond
    its controls, and where a model is below the base. A row with one run so far has no interval
    over seeds, so it is in the tables only, and the sentence after the leads says so."""
    single = sorted({k for t in ts for k, v in t["runs"].items() if len(v) < 2})
    ts = [{**t, "runs": {k: v for k, v in t["runs"].items() if len(v) >= 2}} for t in ts]
    out = [leads(ts)] + one_run(single)
    ahead, behind, level = versus(ts, "demo", "no-gnn")
    if ahead or behind or level:
        if not ahead and not behind:
            out.append(f"The graph encoder adds nothing beyond the identity: the aligned model and the identity encoder "
                       f"(`no-gnn`, the same training with the encoder replaced by the identity) are level on all "
                       f"{len(level)} tasks.")
        else:
            parts = ([f"adds on {join(ahead)}"] if ahead else []) + ([f"costs on {join(behind)}"] if behind else []) \
                + ([f"is level on {join(level)}"] if level else [])
            out.append(f"Beyond the identity encoder (`no-gnn`), the graph encoder {join(parts)}.")
    ahead, behind, level = versus(ts, "demo", "mention-name-only")
    if ahead or behind or level:
        if not ahead and not behind:
            out.append(f"Against no graph (`mention-name-only`) the aligned model is level on all {len(level)} tasks.")
        else:
            out.append(f"Against no graph (`mention-name-only`) the aligned model is {said_versus(ahead, behind, level)}.")
    for a, b in (("bali-regime", "base"), ("bali-regime", "mlm-only"), ("bali-regime-4x", "base"),
                 ("bali-regime-4x", "mlm-only-4x"), ("bali-regime-10x", "base"), ("bali-regime-10x", "mlm-only-10x"),
                 ("bali-regime-10x", "no-gnn-10x")):
        ahead, behind, level = versus(ts, a, b)
        if ahead or behind or level:
            out.append(f"{SAID[a][0].upper()}{SAID[a][1:]} against {SAID[b]}: {said_versus(ahead, behind, level)}.")
    below = []
    for name in ROLES:
        hit = [t["short"] for t in ts if name in t["runs"] and runs_interval(t["runs"][name])[1] < t["base"]]
        if hit:
            below.append(f"{SAID[name]} on {'every task' if len(hit) == len(ts) else join(hit)}")
    out.append("Below the base (the whole seed interval under its value): " + "; ".join(below) + "." if below else
               "No model is below the base on any task (no seed interval lies wholly under its value).")
    return out


# ablations/precision.yaml: the demo setting under each precision, three seeds each. Its rule: bf16 stays
# `auto`'s choice on a CPU that runs it natively while both dev figures' differences are within the noise.
PRECISION_DEV, PRECISION_TEST = ("dev acc@1", "dev parent hit@10"), ("test acc@1", "held-out parent hit@10")


def precision_choice(rows: list[dict]) -> list[str]:
    """What ablations/precision.csv says under its rule, once both rows have every seed: the
    differences bf16 − float32 of the seed means with their Welch intervals, the rule's choice (dev),
    and which test figures moved beyond the seeds' noise."""
    by = {r["row"]: r for r in rows}
    if not {"prec-bf16", "prec-float32"} <= by.keys():
        return []
    diffs = {}
    for col in PRECISION_DEV + PRECISION_TEST:
        a, b = (runs_of(by[name], {"value": col}) for name in ("prec-bf16", "prec-float32"))
        if len(a) < 2 or len(b) < 2:
            return []
        diffs[col] = welch(a, b)
    moved = [c for c, (_, lo, hi) in diffs.items() if lo > 0 or hi < 0]
    said = "; ".join(f"{c} {said_diff({'points': True}, *diff)}" for c, diff in diffs.items())
    dev = [c for c in PRECISION_DEV if c in moved]
    test = [c for c in PRECISION_TEST if c in moved]
    out = [f"bf16 minus float32, difference of the {len(a)} seeds' means [95 % Welch t interval]: {said}."]
    out.append(f"Under the file's rule bf16 moved {join(dev)} beyond the seeds' noise, so on CPUs `auto` is float32 and "
               "bf16 is opt-in." if dev else
               "Under the file's rule neither dev figure moved beyond the seeds' noise, so `auto` keeps bf16 where the "
               "CPU runs it natively.")
    out.append(f"On the test halves {join(test)} moved beyond it." if test else
               "No test figure moved beyond the seeds' noise.")
    return out


# The verdict's tables, a page's width each: the demo setting beside its controls, then BALI's own
# objective (the published recipe, the regime that keeps its objective, and MLM alone), then that regime
# trained longer beside its controls at the same steps.
GROUPS = [["demo", "mention-name-only", "no-gnn", "published"], ["published", "bali-regime", "mlm-only"],
          ["bali-regime-4x", "mlm-only-4x"], ["bali-regime-10x", "mlm-only-10x", "no-gnn-10x"]]


def table_of(ts: list[dict], table) -> str:
    """The verdict tables: one task per line, the base and each row's seed mean [95 % t interval]."""
    out, shown = [], set()
    for group in GROUPS:
        names = [n for n in group if any(n in t["runs"] for t in ts)]
        if not names or set(names) <= shown:  # a group whose rows the tables above already hold
            continue
        shown |= set(names)
        body = []
        for t in ts:
            cells = []
            for n in names:
                v = t["runs"].get(n)
                cells.append("" if not v else f"{v[0]:.3f} (1 run)" if len(v) == 1 else
                             f"{statistics.mean(v):.3f} [{runs_interval(v)[0]:.3f}, {runs_interval(v)[1]:.3f}]")
            body.append([t["label"], f"{t['base']:.3f}", *cells])
        out.append(table(["task (metric)", "base", *(ROLES[n] for n in names)], body))
    return "\n\n".join(out)


def demo_sizes(demo_rows: list[dict]) -> str:
    """The demo's test halves' sizes, from its comparison (docs/results/demo.json)."""
    by = {r["task"]: r for r in demo_rows}
    parts = []
    if "queries" in by.get("demo_el_test", {}):
        el = by["demo_el_test"]
        parts.append(f"{el['queries']:,} entity-linking queries against {el['dictionary_names']:,} dictionary names")
    if "links" in by.get("hierarchy_held_out", {}):
        parts.append(f"{by['hierarchy_held_out']['links']:,} held-out `is_a` links")
    return f" ({'; '.join(parts)})" if parts else ""


def block(rows: list[dict], demo_rows: list[dict], seeds: list[int], prefix: str, table, link: bool = True) -> str:
    """The verdict as Markdown: the sentences, the table and how to read it. `prefix` leads the
    links to the other pages (docs/ from the README)."""
    ts = tasks(rows)
    if not ts:
        return ""
    n = max(len(v) for t in ts for v in t["runs"].values())
    over = f"pre-training seeds {join([str(s) for s in seeds])}" if len(seeds) == n else f"{n} pre-training seeds"
    fewer = {name: len(v) for t in ts for name, v in t["runs"].items() if len(v) < n}
    if fewer:  # a single run's interval is the point itself: no spread to estimate
        over += " (" + join([f"`{name}`: {k} run{'s' if k > 1 else ''} so far" + (", no interval" if k == 1 else "")
                             for name, k in sorted(fewer.items())]) + ")"
    notes = (f"Each pre-trained model: its mean over {over} [95 % t interval over the seeds]; the base model is not "
             f"pre-trained, so it has one value (each row's value minus its paired Δ in `ablations/demo.csv`). Tasks: "
             f"the demo's test halves{demo_sizes(demo_rows)}, and real data nobody here wrote "
             f"([data sets]({prefix}datasets.md)). Rows: aligned = the demo setting; no graph = `mention-name-only` "
             f"(mention ↔ a name of its concept, no graph); identity encoder = `no-gnn` (the demo setting with the graph "
             f"encoder replaced by the identity); published recipe = `published` (the reference's objective and "
             f"encoder on the demo's data)" + ("; BALI, regime = `bali-regime` (BALI's objective alone — MLM and mention ↔ "
             f"graph vector through the published encoder — with the regime chosen on dev, [method]({prefix}method.md)); "
             f"MLM alone = `mlm-only` (the same run with the contrastive term off)" if any("bali-regime" in t["runs"] for t in ts)
             else "") + ("; 1,200 steps = the same two rows trained four times as long (`bali-regime-4x`, `mlm-only-4x`)"
                         if any("bali-regime-4x" in t["runs"] for t in ts) else "")
             + ("; 3,000 steps = the same two rows trained ten times as long (`bali-regime-10x`, `mlm-only-10x`)"
                if any("bali-regime-10x" in t["runs"] for t in ts) else "")
             + ("; identity encoder, 3,000 steps = `no-gnn-10x` (`bali-regime-10x` with the graph encoder replaced by "
                "the identity: the mention aligns with its concept's own name)"
                if any("no-gnn-10x" in t["runs"] for t in ts) else "") + ". A difference counts when its 95 % Welch t interval over seeds excludes 0.")
    commits: dict[str, list[str]] = {}
    for r in rows:
        if r["row"] in ROLES and r.get("commit"):
            commits.setdefault(r["commit"], []).append(f"`{r['row']}`")
    if len(commits) > 1:
        notes += (f" The rows ran at {len(commits)} commits of the pipeline (`ablations/demo.csv` names each row's), "
                  "grouped here by commit: " + "; ".join(join(names) for names in commits.values()) + ".")
    if link:
        notes += f" Paired tests per item, real data per task and every ablation: [results]({prefix}results.md)."
    return "\n".join([*(f"- {x}" for x in sentences(ts)), "", table_of(ts, table), "", notes])
