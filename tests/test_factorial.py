"""The factorial's rules read from its tables (bali.reporting.factorial): hand-made rows whose
readings are worked out by hand from the rules in ablations/published.yaml and ablations/regime.yaml."""
from bali.reporting import factorial


def row(name, acc, hit, seeds=None, p="p 0.5"):
    """A table row: base-seed values, Δ vs a base of 0.418 / 0.453, optional seed runs, p vs pub."""
    r = {"row": name, "dev acc@1": f"{acc:.3f}", "dev parent hit@10": f"{hit:.3f}",
         "dev Δ vs base (pts)": f"{100 * (acc - 0.418):+.1f}", "dev hit@10 Δ vs base (pts)": f"{100 * (hit - 0.453):+.1f}",
         factorial.VS_PUB[factorial.ACC]: f"+1.0 [-1.0, +3.0], {p}", factorial.VS_PUB[factorial.HIT]: "+1.0 [-1.0, +3.0], p 0.5"}
    if seeds:
        for figure, values in zip((factorial.ACC, factorial.HIT), seeds):
            r[f"{figure} over seeds"] = f"0 ± 0 ({', '.join(f'{v:.3f}' for v in values)})"
    return r


def test_suspects_confirmed_rejected_or_undecided():
    pub = row("pub", 0.38, 0.27, [(0.38, 0.37, 0.39), (0.27, 0.25, 0.29)])
    fixed = row("pub-residual", 0.46, 0.48, [(0.46, 0.45, 0.47), (0.48, 0.46, 0.50)], p="p 1e-07")
    # beats pub by 3 points on both, but pub's hit@10 std is 2 points: twice the noise is 4 -> rejected
    near = row("pub-lm-2e-5", 0.41, 0.30, [(0.41, 0.40, 0.42), (0.30, 0.29, 0.31)], p="p 0.001")
    once = row("pub-no-mlm", 0.36, 0.31)
    readings = dict(factorial.read_published([pub, fixed, near, once]))
    # +8.0 / +21.0 over pub; mean 0.460 >= base 0.418 - 1 and 0.480 >= 0.453 + 2 points: helps
    assert readings["pub-residual"] == "confirmed (+8.0, +21.0 points over `pub`); it makes BALI help (rule 2)"
    assert readings["pub-lm-2e-5"].startswith("rejected: +3.0, +3.0 points")
    assert readings["pub-no-mlm"].startswith("undecided")
    text = factorial.block([pub, fixed], [], ["pub", "pub-residual", "pub-steps-4x"])
    assert "| `pub-steps-4x` | too few steps | | | not run yet |" in text and "0.460 ± 0.010" in text


def test_regime_choice_and_target():
    eligible = row("reg-a", 0.43, 0.51)  # acc@1 >= 0.418, hit@10 >= 0.453 + 5 points
    below = row("reg-b", 0.41, 0.56)  # the higher hit@10, but acc@1 under the base: not eligible
    said = " ".join(factorial.read_regime([eligible, below], None))
    assert "rule 2 chooses `reg-a`" in said and "waits for `reg-a`'s seeds" in said
    seeded = row("reg-a", 0.43, 0.51, [(0.43, 0.44, 0.42), (0.51, 0.505, 0.49)])
    said = " ".join(factorial.read_regime([seeded, below], None))
    assert "does not meet the dev target" in said and "+3.7 points" in said  # 0.490 is 3.7 points over 0.453
    none = " ".join(factorial.read_regime([below], row("pub-residual", 0.456, 0.476)))
    assert "No candidate met rule 1" in none and "chooses `reg-b`" in none  # the highest hit@10 of the pool


def test_targets_on_the_demo_table():
    """The issue's targets read from the demo table (held-out hit@10 only here): base 0.478."""
    def demo_row(name, seeds):
        return {"row": name, "held-out parent hit@10": f"{seeds[0]:.3f}",
                "hit@10 Δ vs base (pts) [95 % CI]": f"{100 * (seeds[0] - 0.478):+.1f} [-1.0, +1.0]",
                "held-out parent hit@10 over seeds": f"0 ± 0 ({', '.join(f'{v:.3f}' for v in seeds)})"}
    rows = [demo_row("demo", [0.59, 0.60, 0.58]), demo_row("bali-regime", [0.503, 0.501, 0.533]),
            demo_row("mlm-only", [0.44, 0.45, 0.43])]
    said = " ".join(factorial.read_targets(rows))
    # +2.5, +2.3, +5.5 over the base: one seed of three at +5; mean 0.512 is 7.2 points above mlm-only's 0.440
    assert "+2.5, +2.3, +5.5 points (1 of 3 seeds at +5 or more)" in said
    assert "+7.2 points of held-out hit@10" in said and "held-out hit@10 under +5 points in 2 seeds" in said
    assert "no figure below the base" in said


def test_round_two_judged_by_rule_three_before_its_test_figures():
    """regime.yaml's round 2: the 1,200-step row's test figures are read only once it meets rule 3 on dev."""
    chosen = row("reg-a", 0.43, 0.51, [(0.43, 0.44, 0.42), (0.51, 0.505, 0.49)])

    def demo_row(name, seeds):
        return {"row": name, "held-out parent hit@10": f"{seeds[0]:.3f}",
                "hit@10 Δ vs base (pts) [95 % CI]": f"{100 * (seeds[0] - 0.478):+.1f} [-1.0, +1.0]",
                "held-out parent hit@10 over seeds": f"0 ± 0 ({', '.join(f'{v:.3f}' for v in seeds)})"}
    demo = [demo_row("demo", [0.59, 0.60, 0.58]), demo_row("bali-regime", [0.50, 0.50, 0.50]), demo_row("bali-regime-4x", [0.54, 0.53, 0.55]),
            demo_row("mlm-only-4x", [0.40, 0.41, 0.42])]
    # 0.503 and 0.502 are 5 points over 0.453, 0.497 is 4.4: missed in one seed -> not judged
    missed = row(factorial.ROUND2, 0.47, 0.503, [(0.47, 0.46, 0.48), (0.503, 0.502, 0.497)])
    said = factorial.regime_targets([chosen, missed], demo)
    assert "Round 2" in " ".join(factorial.read_regime([chosen, missed], None))
    assert said[-1] == ["`bali-regime-4x` missed the dev target, so its test figures are not judged (regime.yaml's rule 5)."]
    met = row(factorial.ROUND2, 0.47, 0.51, [(0.47, 0.46, 0.48), (0.51, 0.505, 0.52)])
    said = " ".join(factorial.regime_targets([chosen, met], demo)[-1])
    # +6.2, +5.2, +7.2 over 0.478 in every seed; 0.540 is 13.0 points above mlm-only-4x's 0.410
    assert "`bali-regime-4x` on the demo's" in said and "(3 of 3 seeds at +5 or more)" in said
    assert "+13.0 points of held-out hit@10" in said and "It meets the targets." in said
    # below the base nowhere: the page says what the regime needs, with the mean gain (0.540 - 0.478)
    assert said.endswith("held-out hit@10 is +6.2 points above it in the seeds' mean.")


def test_curves_read_against_step_zero():
    """A curve's last point against its step 0 (the base, same callback), and its hit@10 peak when earlier."""
    curves = {"c": {"curves": {factorial.ACC: [(0, 0.418), (1000, 0.47), (3000, 0.49)],
                               factorial.HIT: [(0, 0.453), (1000, 0.53), (3000, 0.50)]}}}
    said = " ".join(factorial.read_curves(curves))
    assert "`c` ends at step 3,000 with dev hit@10 0.500 (+4.7 points against step 0) and dev acc@1 0.490 (+7.2)" in said
    assert "peaked at step 1,000 (0.530)" in said
    assert factorial.read_curves({"c": {"curves": {factorial.ACC: [(0, 0.4)], factorial.HIT: [(0, 0.4)]}}}) == []


def test_round_three_runs_only_if_the_long_curve_allows():
    """regime.yaml's rule 6: the 3,000-step curve's last point against round 2's seed-29 run at 1,200 steps."""
    round2 = row(factorial.ROUND2, 0.486, 0.517, [(0.486, 0.498, 0.496), (0.517, 0.532, 0.515)])
    curve = lambda acc, hit: {factorial.ROUND3_CURVE: {"curves": {factorial.ACC: [(0, 0.418), (3000, acc)],
                                                                  factorial.HIT: [(0, 0.453), (3000, hit)]}}}
    go = " ".join(factorial.read_round3([round2], curve(0.520, 0.528)))
    assert "(0.517, 0.486)" in go and "round 3 (`reg-mlm-0.1-10x`" in go and "not run yet" in go
    stop = " ".join(factorial.read_round3([round2], curve(0.520, 0.510)))  # hit@10 under round 2's 0.517
    assert "more steps did not help on dev" in stop
    assert factorial.read_round3([], curve(0.52, 0.53)) == []


def test_what_bali_needs_is_said_by_the_fewest_steps_that_meet_the_targets():
    """Rounds 2 and 3 both meet rule 3 on dev; only round 3 meets the test targets (+5 in every seed), so
    round 3's reading, not round 2's, says what BALI needs, naming the 1,200 steps as not enough."""
    chosen = row("reg-a", 0.43, 0.51, [(0.43, 0.44, 0.42), (0.51, 0.505, 0.49)])
    dev = [(0.47, 0.46, 0.48), (0.51, 0.505, 0.52)]
    regime = [chosen, row(factorial.ROUND2, 0.47, 0.51, dev), row(factorial.ROUND3, 0.47, 0.51, dev)]

    def demo_row(name, seeds):  # held-out hit@10, base 0.478; the Δ interval's upper end decides "below the base"
        return {"row": name, "held-out parent hit@10": f"{seeds[0]:.3f}",
                "hit@10 Δ vs base (pts) [95 % CI]": f"{100 * (seeds[0] - 0.478):+.1f} [-1.0, +1.0]",
                "held-out parent hit@10 over seeds": f"0 ± 0 ({', '.join(f'{v:.3f}' for v in seeds)})"}
    demo = [demo_row("demo", [0.59, 0.60, 0.58]), demo_row("bali-regime", [0.46, 0.45, 0.44]), demo_row("bali-regime-4x", [0.54, 0.53, 0.51]),
            demo_row("mlm-only-4x", [0.40, 0.41, 0.42]), demo_row("bali-regime-10x", [0.55, 0.54, 0.56])]
    four, ten = factorial.regime_targets(regime, demo)[1:]
    assert "It does not meet the targets: held-out hit@10 under +5 points in 1 seed." in four
    # no mlm-only-10x yet, so round 3 misses only its control; no round meets the targets, so the first
    # below the base nowhere (round 2: +4.9 in the seeds' mean) says what BALI needs
    assert "It does not meet the targets: no MLM-alone control yet." in ten
    assert "1,200 steps of 16" in four[-1] and not ten[-1].startswith("What BALI")
    demo.append(demo_row("mlm-only-10x", [0.39, 0.40, 0.41]))
    four, ten = factorial.regime_targets(regime, demo)[1:]
    # 0.550 - 0.478: +7.2 in the seeds' mean, 15.0 above mlm-only-10x: round 3 meets them and says it
    assert "It meets the targets." in ten and four[-1].startswith("It does not meet")
    assert ten[-1].startswith("What BALI's own objective needs") and "3,000 steps of 16" in ten[-1]
    assert "held-out hit@10 is +7.2 points above it" in ten[-1] and "at 300 steps" in ten[-1]
    said = " ".join(factorial.read_regime(regime, None))
    assert "Round 3 (`reg-mlm-0.1-10x`, the same setting for 3,000 steps), over its three seeds" in said
    # the identity-encoder control at 3,000 steps: a sentence on what the graph adds, not a target
    assert not any("What the graph adds" in s for s in ten)
    demo.append(demo_row("no-gnn-10x", [0.555, 0.545, 0.55]))
    ten = " ".join(factorial.regime_targets(regime, demo)[2])
    assert "`bali-regime-10x` against the same run with the graph encoder replaced by the identity (`no-gnn-10x`, " \
           "3 seeds) is level on held-out hit@10." in ten and "It meets the targets." in ten
    demo[-1] = demo_row("no-gnn-10x", [0.50])
    # one run: the same seed's difference (0.550 - 0.500), said as no finding
    assert "has one run so far (seed 29); `bali-regime-10x`'s seed 29 minus it: held-out hit@10 +5.0 pts — one seed, " \
           "no interval, not yet a finding." in " ".join(factorial.regime_targets(regime, demo)[2])
