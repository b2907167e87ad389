"""The `paper` profile against REFERENCE.md's table of the published setting, row by row, and the
profile's overrides against params.yaml."""
import re

import pytest
import yaml

from bali import profiles
from conftest import ROOT, SHARED, needs_shared

# (REFERENCE row, text the row states, param, the value that states it)
CHECKS = [
    ("UMLS", r"release 2020AB", "umls_graph.meta_dir", lambda v: "2020AB" in v),
    ("UMLS", r"English rows \(LAT=ENG\)", "umls_graph.languages", ["ENG"]),
    ("UMLS", r"no SAB / SUPPRESS / TTY filter", "umls_graph.sources_keep", []),
    ("UMLS", r"no SAB / SUPPRESS / TTY filter", "umls_graph.sources_drop", []),
    ("UMLS", r"no SAB / SUPPRESS / TTY filter", "umls_graph.suppress_drop", []),
    ("UMLS", r"self loops kept", "umls_graph.self_loops", True),
    ("corpus", r"pre-annotated by BERN2", "link.method", "pretagged"),
    ("corpus", r"MeSH, OMIM, NCBI Taxonomy, Cellosaurus", "link.pretagged_sources",
     lambda v: {k for k, sab in v.items() if sab} == {"MESH", "OMIM", "NCBITaxon", "CVCL"}),
    ("sentences", r"capped at 128 subword tokens", "dataset.max_length", 128),
    ("subgraph", r"up to 3 one-hop neighbours", "pretrain.neighbors", 3),
    ("subgraph", r"up to 3 one-hop neighbours", "dataset.hops", 1),
    ("node features", r"≤ 32 tokens", "dataset.name_max_length", 32),
    ("graph encoder", r"5 × GATv2", "pretrain.layers", 5),
    ("graph encoder", r"5 × GATv2", "pretrain.graph_encoder", "gatv2"),
    ("graph encoder", r"2 heads", "pretrain.heads", 2),
    ("graph encoder", r"attention dropout 0\.1", "pretrain.attention_dropout", 0.1),
    ("graph encoder", r"dropout 0\.1 \+ GELU", "pretrain.dropout", 0.1),
    ("graph encoder", r"then Linear → LayerNorm → Dropout", "pretrain.residual", False),
    ("graph encoder", r"then Linear → LayerNorm → Dropout", "pretrain.zero_init", False),
    ("losses", r"MLM \(15 %", "pretrain.mlm_probability", 0.15),
    ("losses", r"InfoNCE \(NT-Xent, cosine, τ = 0\.07\)", "pretrain.loss", "nt_xent"),
    ("losses", r"τ = 0\.07", "pretrain.temperature", 0.07),
    ("losses", r"plain sum of the two", "pretrain.mlm_weight", 1.0),
    ("losses", r"plain sum of the two", "pretrain.contrastive_weight", 1.0),
    ("losses", r"plain sum of the two", "pretrain.name_weight", 0.0),
    ("losses", r"plain sum of the two", "pretrain.synonym_weight", 0.0),
    ("optimisation", r"weight decay 0\.01", "pretrain.weight_decay", 0.01),
    ("optimisation", r"LR 2e-5 for the LM", "pretrain.lm_lr", 2e-5),
    ("optimisation", r"1e-4 for graph encoder / heads", "pretrain.other_lr", 1e-4),
    ("optimisation", r"warm-up min\(10 % of steps, 10 000\)", "pretrain.warmup_fraction", 0.1),
    ("optimisation", r"warm-up min\(10 % of steps, 10 000\)", "pretrain.warmup_max_steps", 10000),
    ("optimisation", r"10 epochs", "pretrain.epochs", 10),
    ("optimisation", r"10 epochs", "pretrain.max_steps", 0),
    ("optimisation", r"batch 256", "pretrain.batch_size", 256),
    ("optimisation", r"seed 29", "base.seed", 29),
]


def reference_rows() -> dict[str, str]:
    text = (SHARED / "REFERENCE.md").read_text(encoding="utf-8")
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"^\| ([^|]+?) \| (.+) \|$", text, re.M)}


def get(params: dict, dotted: str):
    for k in dotted.split("."):
        params = params[k]
    return params


@pytest.mark.skipif(not (SHARED / "REFERENCE.md").exists(), reason="../shared/REFERENCE.md is not present")
@pytest.mark.parametrize("row,states,param,value", CHECKS, ids=[f"{c[0]}:{c[2]}" for c in CHECKS])
def test_paper_profile_matches_reference(row, states, param, value):
    text = reference_rows()[row]
    assert re.search(states, text), f"REFERENCE.md's {row!r} row no longer says {states!r}"
    got = get(profiles.resolved("paper"), param)
    assert value(got) if callable(value) else (got == value and type(got) is type(value)), f"{param} = {got!r}"


def test_every_published_param_is_reachable_and_demo_differs_only_in_values():
    demo = yaml.safe_load((ROOT / "params.yaml").read_text())
    paper = profiles.resolved("paper")
    assert demo.keys() == paper.keys()
    for section in demo:
        assert demo[section].keys() == paper[section].keys(), section
    args = profiles.overrides("paper")
    assert "pretrain.layers=5" in args and "link.pretagged_sources.HGNC=null" in args
    with pytest.raises(KeyError, match="not in params.yaml"):
        profiles.flatten({"pretrain": {"layerz": 5}}, demo)
