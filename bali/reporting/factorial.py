"""The rules of ablations/published.yaml and ablations/regime.yaml applied to their tables: which
suspect each row confirms or rejects and which regime candidate is chosen, as sentences written from
the numbers (docs/method.md's generated block). The rules are those files' comments; this module is
their reading, so a new table changes the words.

Figures are dev acc@1 (`dev acc@1`) and dev parent hit@10 (`dev parent hit@10`): a row's seed mean
when all its seeds have run, else its base-seed run, which no rule decides on.
"""
from __future__ import annotations

import re
import statistics

from bali.reporting import verdict

ACC, HIT = "dev acc@1", "dev parent hit@10"
FIGURES = {ACC: "dev acc@1", HIT: "dev hit@10"}
VS_PUB = {ACC: "dev acc@1 Δ vs pub (pts) [95 % CI], p", HIT: "dev hit@10 Δ vs pub (pts) [95 % CI], p"}
SUSPECTS = {"pub-no-mlm": "the MLM term", "pub-mlm-0.1": "the MLM term", "pub-freeze-100": "the MLM term (a fresh head)",
            "pub-mlm-only": "MLM alone already hurting", "pub-lm-2e-5": "the LM's learning rate",
            "pub-residual": "a collapsing encoder", "pub-identity": "a collapsing encoder",
            "pub-steps-4x": "too few steps", "pub-steps-10x": "too few steps"}
ROUND2 = "reg-mlm-0.1-4x"  # regime.yaml's round 2: the chosen setting for 1,200 steps
ROUND3, ROUND3_CURVE = "reg-mlm-0.1-10x", "curve-regime-3000"  # rule 6: round 3 runs if this curve's last point allows
# regime.yaml's later rounds, fewest steps first: (its row there, ordinal, steps, its row, the MLM-alone
# control and the identity-encoder control at the same steps in ablations/demo.yaml (None: not run))
ROUNDS = [(ROUND2, "2", 1200, "bali-regime-4x", "mlm-only-4x", None),
          (ROUND3, "3", 3000, "bali-regime-10x", "mlm-only-10x", "no-gnn-10x")]


def row_named(rows: list[dict], name: str) -> dict | None:
    return next((r for r in rows if r["row"] == name), None)


def runs(row: dict, figure: str) -> list[float]:
    """Every seed's value ("mean ± std (v1, v2, v3)"), or [the base-seed run's] when the seeds have not all run."""
    cell = row.get(f"{figure} over seeds", "")
    if "(" in cell:
        return [float(v) for v in cell[cell.index("(") + 1:cell.rindex(")")].split(",")]
    return [float(row[figure])] if row.get(figure) else []


def base_of(row: dict, figure: str) -> float:
    """The base model's dev value: the row's base-seed value minus its Δ vs base (points)."""
    delta = row["dev Δ vs base (pts)" if figure == ACC else "dev hit@10 Δ vs base (pts)"]
    return round(float(row[figure]) - float(delta) / 100, 3)


def seeded(row: dict) -> bool:
    return len(runs(row, ACC)) > 1


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(row: dict, figure: str) -> str:
    m, s = mean_sd(runs(row, figure))
    return f"{m:.3f} ± {s:.3f}" if seeded(row) else f"{m:.3f} (seed 29 only)"


def p_value(text: str) -> float | None:
    m = re.search(r"p ([0-9.e+-]+)$", text or "")
    return float(m.group(1)) if m else None


def read_published(rows: list[dict]) -> list[tuple[str, str]]:
    """(row, reading) of each suspect row under published.yaml's rules 1 and 2."""
    by = {r["row"]: r for r in rows}
    pub = by.get("pub")
    if pub is None:
        return []
    base = {f: base_of(pub, f) for f in FIGURES}
    out = []
    for name, r in by.items():
        if name == "pub":
            continue
        if not (seeded(r) and seeded(pub)):
            out.append((name, "undecided: the rule needs three seeds of it and of `pub`"))
            continue
        if name == "pub-mlm-only":  # a control, not a fix: it says whether MLM alone already hurts
            drop = {f: mean_sd(runs(r, f))[0] - base[f] for f in FIGURES}
            hurt = all(drop[f] < -max(0.02, 2 * mean_sd(runs(r, f))[1]) for f in FIGURES)
            out.append((name, f"{', '.join(f'{100 * drop[f]:+.1f}' for f in FIGURES)} points against the base: MLM alone "
                        + ("hurts" if hurt else "does not clearly hurt") + " (beyond max(2, twice its noise) on both)"))
            continue
        gains, confirmed = {}, True
        for f in FIGURES:
            (m, s), (mp, sp) = mean_sd(runs(r, f)), mean_sd(runs(pub, f))
            gains[f] = m - mp
            confirmed &= gains[f] > max(0.02, 2 * max(s, sp))
        p = [p_value(r.get(VS_PUB[f], "")) for f in FIGURES]
        confirmed &= any(x is not None and x < 0.01 for x in p)
        gain = ", ".join(f"{100 * gains[f]:+.1f}" for f in FIGURES)
        if not confirmed:
            out.append((name, f"rejected: {gain} points over `pub` (acc@1, hit@10), not beyond max(2, twice the noise) on both"))
            continue
        means = {f: mean_sd(runs(r, f))[0] for f in FIGURES}
        harm = all(means[f] >= base[f] - 0.01 for f in FIGURES)
        helps = harm and means[HIT] >= base[HIT] + 0.02
        out.append((name, f"confirmed ({gain} points over `pub`)" + ("; it makes BALI help (rule 2)" if helps else
                   "; it removes the harm (rule 2)" if harm else "; still below the base (rule 2)")))
    return out


def dev_target(row: dict, base: dict) -> bool:
    """regime.yaml's rule 3: dev hit@10 at least 5 points above the base in every seed, no dev mean below it."""
    hits, accs = runs(row, HIT), runs(row, ACC)
    return all(h >= base[HIT] + 0.05 for h in hits) and statistics.mean(accs) >= base[ACC] \
        and statistics.mean(hits) >= base[HIT]


def seed_sentence(row: dict, base: dict) -> str:
    hits, accs = runs(row, HIT), runs(row, ACC)
    return (f"dev hit@10 is {', '.join(f'{h:.3f}' for h in hits)} "
            f"({', '.join(f'{100 * (h - base[HIT]):+.1f}' for h in hits)} points against the base) and dev acc@1 "
            f"{', '.join(f'{a:.3f}' for a in accs)}: it {'meets' if dev_target(row, base) else 'does not meet'} the dev "
            "target (rule 3: hit@10 at least 5 points above the base in every seed, no dev mean below the base)")


def read_round(name: str, ordinal: str, steps: int, row: dict | None, base: dict) -> list[str]:
    """Sentences of one of regime.yaml's later rounds (the chosen setting at more steps) under rule 3."""
    if row is None:
        return []
    said = f"Round {ordinal} (`{name}`, the same setting for {steps:,} steps)"
    if not seeded(row):
        return [f"{said}: seed 29 alone so far, dev hit@10 {runs(row, HIT)[0]:.3f}, acc@1 {runs(row, ACC)[0]:.3f}; "
                "rule 3 waits for seeds 30 and 31."]
    return [f"{said}, over its three seeds: {seed_sentence(row, base)}."]


def read_regime(candidates: list[dict], residual: dict | None) -> list[str]:
    """Sentences of regime.yaml's rules 1-3 on its round-1 candidates (and `pub-residual`), then the later rounds."""
    later = [(name, ordinal, steps, row_named(candidates, name)) for name, ordinal, steps, *_ in ROUNDS]
    candidates = [r for r in candidates if r["row"] not in {name for name, *_ in ROUNDS}]
    if not candidates:
        return ["No regime candidate has run yet."]
    base = {f: base_of(candidates[0], f) for f in FIGURES}
    first = {r["row"]: {f: float(r[f]) for f in FIGURES} for r in candidates}
    eligible = [n for n, v in first.items() if v[ACC] >= base[ACC] and v[HIT] >= base[HIT] + 0.05]
    pool = eligible or [*first, *(["pub-residual"] if residual else [])]
    values = {**first, **({"pub-residual": {f: float(residual[f]) for f in FIGURES}} if residual else {})}
    chosen = max(pool, key=lambda n: (values[n][HIT], values[n][ACC]))
    out = [f"Base model on dev: acc@1 {base[ACC]:.3f}, parent hit@10 {base[HIT]:.3f}. "
           + ("Candidates meeting rule 1 (acc@1 at least the base's, hit@10 at least 5 points above it, seed 29): "
              + ", ".join(f"`{n}`" for n in eligible) if eligible else
              "No candidate met rule 1 (acc@1 at least the base's and hit@10 at least 5 points above it, seed 29)")
           + f"; rule 2 chooses `{chosen}` (dev hit@10 {values[chosen][HIT]:.3f}, acc@1 {values[chosen][ACC]:.3f})."]
    row = next((r for r in candidates if r["row"] == chosen), residual if chosen == "pub-residual" else None)
    if row is None or not seeded(row):
        out.append(f"Rule 3 waits for `{chosen}`'s seeds 30 and 31.")
    else:
        out.append(f"Over its three seeds, {seed_sentence(row, base)}.")
    return out + [said for name, ordinal, steps, row in later for said in read_round(name, ordinal, steps, row, base)]


def read_targets(demo_rows: list[dict], regime: str = "bali-regime", control: str = "mlm-only",
                 identity: str | None = None) -> list[str]:
    """The targets for a regime row (`bali-regime`) on the demo table's test and real-data figures (over
    its seeds): no figure's seed interval wholly below the base, held-out hit@10 at least 5 points above
    the base in every seed, and at least 3 points above its MLM-alone control in the seeds' mean; then,
    not a target, what the graph adds beside its identity-encoder control (`identity`) when that has run."""
    ts = [t for t in verdict.tasks(demo_rows) if regime in t["runs"]]
    if not ts:
        return []
    below = [f"{t['short']} ({verdict.said_diff(t, *verdict.compare(t, regime, 'base'))})"
             for t in ts if verdict.compare(t, regime, "base")[2] < 0]
    out = [f"`{regime}` on the demo's test halves and real data (`ablations/demo.csv`, "
           f"{len(ts[0]['runs'][regime])} seeds): "
           + (f"below the base on {verdict.join(below)}" if below else "no figure below the base") + "."]
    held = next((t for t in ts if t["short"] == "held-out hit@10"), None)
    if held:
        gains = [v - held["base"] for v in held["runs"][regime]]
        out.append(f"Held-out hit@10 against the base: {', '.join(f'{100 * g:+.1f}' for g in gains)} points "
                   f"({sum(g >= 0.05 for g in gains)} of {len(gains)} seeds at +5 or more).")
        if control in held["runs"]:
            d, lo, hi = verdict.compare(held, regime, control)
            n = len(held["runs"][control])
            seeds = f"; its {n} seed{'s' if n > 1 else ''} against {len(held['runs'][regime])}" \
                if n < len(held["runs"][regime]) else ""
            out.append(f"Against MLM alone (`{control}`, the contrastive term off{seeds}): {100 * d:+.1f} points of "
                       f"held-out hit@10 [{100 * lo:+.1f}, {100 * hi:+.1f}] (the target asks +3).")
    short = ([f"figures below the base ({len(below)})"] if below else []) + \
        ([f"held-out hit@10 under +5 points in {short_seeds(held, regime)}"]
         if held and any(v - held["base"] < 0.05 for v in held["runs"][regime]) else []) + \
        (["under +3 points above MLM alone"] if held and control in held["runs"]
         and verdict.compare(held, regime, control)[0] < 0.03 else []) + \
        (["no MLM-alone control yet"] if not held or control not in held["runs"] else [])
    out.append(f"It does not meet the targets: {verdict.join(short)}." if short else "It meets the targets.")
    return out + graph_adds(ts, regime, identity)


def graph_adds(ts: list[dict], regime: str, identity: str | None) -> list[str]:
    """What the graph encoder adds to the regime row: the row against the same run with the encoder
    replaced by the identity (the mention then aligns with its concept's own name), task by task."""
    if identity is None or not any(identity in t["runs"] for t in ts):
        return []
    n = max(len(t["runs"][identity]) for t in ts if identity in t["runs"])
    if n == 1:  # no interval over seeds yet: the same seed's difference, said as no more than that
        diffs = []
        for t in ts:
            if identity in t["runs"]:
                d = t["runs"][regime][0] - t["runs"][identity][0]
                diffs.append(f"{t['short']} {100 * d:+.1f} pts" if t["points"] else f"{t['short']} {d:+.3f}")
        return [f"What the graph adds (a control, not a target): `{identity}` (`{regime}` with the graph encoder "
                f"replaced by the identity) has one run so far (seed 29); `{regime}`'s seed 29 minus it: "
                f"{', '.join(diffs)} — one seed, no interval, not yet a finding."]
    return [f"What the graph adds (a control, not a target): `{regime}` against the same run with the graph encoder "
            f"replaced by the identity (`{identity}`, {n} seeds) is {verdict.said_versus(*verdict.versus(ts, regime, identity))}."]


def short_seeds(held: dict, regime: str) -> str:
    n = sum(v - held["base"] < 0.05 for v in held["runs"][regime])
    return f"{n} seed{'s' if n != 1 else ''}"


def regime_targets(regime: list[dict], demo: list[dict]) -> list[list[str]]:
    """The targets read for `bali-regime`, and for each later round's demo row once its regime.yaml row
    has met rule 3 on dev (rules 5 and 6); what BALI needs is said once, by the round with the fewest
    steps that meets the targets (else by the first below the base nowhere)."""
    if not demo:
        return []
    out, said = [read_targets(demo)], []
    for name, _, steps, shown, control, identity in ROUNDS:
        row = row_named(regime, name)
        if row is None or not seeded(row) or not any(r["row"] == shown for r in demo):
            continue
        if not dev_target(row, {f: base_of(row, f) for f in FIGURES}):
            out.append([f"`{shown}` missed the dev target, so its test figures are not judged (regime.yaml's rule 5)."])
            continue
        read = read_targets(demo, shown, control, identity)
        if read:
            out.append(read)
            said.append(("It meets the targets." in read, len(out) - 1, needs(demo, shown, steps)))
    meets = [s for s in said if s[0] and s[2]] or [s for s in said if s[2]]
    if meets:
        out[meets[0][1]] += meets[0][2]
    return out


def needs(demo: list[dict], name: str, steps: int) -> list[str]:
    """What the rows say BALI's objective needs on this LM, when the regime row `name` (`steps` long) is
    below the base nowhere and above it on held-out hit@10 in the seeds' mean."""
    every = verdict.tasks(demo)
    ts = [t for t in every if name in t["runs"]]
    held = next((t for t in ts if t["short"] == "held-out hit@10"), None)
    if not held or any(verdict.compare(t, name, "base")[2] < 0 for t in ts):
        return []
    gain = verdict.compare(held, name, "base")[0]
    shorter = [("bali-regime", "at 300 steps"), *((shown, f"at {n:,} steps") for _, _, n, shown, *_ in ROUNDS if n < steps),
               ("published", "with the encoder randomly initialised (the published recipe)")]
    below = [s for row, s in shorter if any(row in t["runs"] and verdict.compare(t, row, "base")[2] < 0 for t in every)]
    return [f"What BALI's own objective needs on this sentence-embedding LM, as far as these rows go: the graph "
            f"encoder starting as the identity (residual + zero-init), the MLM term weighted 0.1 and {steps:,} steps of "
            f"16. With them no test or real-data figure is below the base and held-out hit@10 is {100 * gain:+.1f} "
            f"points above it in the seeds' mean" + (f"; {verdict.join(below)} some figures are below it"
                                                     if below else "") + "."]


def read_curves(curves: dict) -> list[str]:
    """Sentences on the learning curves (docs/results/curves.json, one seed each): where each curve
    ends against its step 0 (the base, evaluated by the same callback) and where its hit@10 peaked."""
    out = []
    for name, r in curves.items():
        acc, hit = r["curves"].get(ACC), r["curves"].get(HIT)
        if not acc or not hit or len(hit) < 2:
            continue
        (last, h), (_, a), (_, h0), (_, a0) = hit[-1], acc[-1], hit[0], acc[0]
        peak = max(hit[1:], key=lambda p: p[1])
        out.append(f"`{name}` ends at step {last:,} with dev hit@10 {h:.3f} ({100 * (h - h0):+.1f} points against "
                   f"step 0) and dev acc@1 {a:.3f} ({100 * (a - a0):+.1f})"
                   + (f"; its hit@10 peaked at step {peak[0]:,} ({peak[1]:.3f})" if peak[0] != last else "") + ".")
    if not out:
        return []
    return ["**Learning curves** (`ablations/curves.yaml`, one pre-training seed each; the results page draws "
            "them):"] + out


def read_round3(regime: list[dict], curves: dict) -> list[str]:
    """regime.yaml's rule 6: round 3 (3,000 steps) runs only if the regime's 3,000-step curve (seed 29)
    ends at or above round 2's seed-29 dev figures at 1,200 steps on both."""
    round2 = row_named(regime, ROUND2)
    curve = curves.get(ROUND3_CURVE)
    if round2 is None or curve is None or not curve["curves"].get(HIT) or not curve["curves"].get(ACC):
        return []
    (step, h), (_, a) = curve["curves"][HIT][-1], curve["curves"][ACC][-1]
    h2, a2 = runs(round2, HIT)[0], runs(round2, ACC)[0]
    go = h >= h2 and a >= a2
    said = (f"Rule 6: `{ROUND3_CURVE}` ends at step {step:,} with dev hit@10 {h:.3f} and acc@1 {a:.3f}, against "
            f"round 2's seed 29 at 1,200 steps ({h2:.3f}, {a2:.3f}): ")
    if not go:
        return [said + "more steps did not help on dev, so round 2's rows stay the regime reported."]
    ran = any(r["row"] == ROUND3 for r in regime)
    return [said + f"round 3 (`{ROUND3}`, 3,000 steps, three seeds) " +
            ("ran; its readings are above." if ran else "is the next test; it has not run yet.")]


def block(published: list[dict], regime: list[dict], planned: list[str] = (), demo: list[dict] = (),
          curves: dict | None = None) -> str:
    """The generated part of docs/method.md's "What regime BALI needs" (`planned`: the spec's rows, in
    order; `demo`: the demo table, for the chosen regime's test figures; `curves`: curves.json)."""
    lines = ["| row | suspect | dev acc@1 | dev hit@10 | reading (published.yaml's rules 1-2) |", "|---|---|---|---|---|"]
    readings = dict(read_published(published))
    for r in published:
        if r["row"] == "pub":
            lines.append(f"| `pub` | (the published recipe) | {cell(r, ACC)} | {cell(r, HIT)} | the reference row |")
        else:
            lines.append(f"| `{r['row']}` | {SUSPECTS.get(r['row'], '')} | {cell(r, ACC)} | {cell(r, HIT)} | "
                         f"{readings.get(r['row'], '')} |")
    ran = {r["row"] for r in published}
    lines += [f"| `{n}` | {SUSPECTS.get(n, '')} | | | not run yet |" for n in planned if n not in ran]
    residual = row_named(published, "pub-residual")
    return "\n".join(lines) + "\n\n**The regime search** (`ablations/regime.yaml`, its rule in that file). " \
        + " ".join(read_regime(regime, residual)) + "".join("\n\n" + " ".join(s) for s in
                                                             [*regime_targets(regime, list(demo)), read_curves(curves or {}),
                                                              read_round3(regime, curves or {})] if s)
