"""The `paper` profile against REFERENCE.md's table of the published setting, row by row, and the
profile's overrides against params.yaml."""
import re

import pytest
import yaml

from bali import profiles
from conftest import ROOT, SHARED

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
     lambda v: {k for k, sab in v.items() if sab} == {"MESH", "OMIM", "NCBITaxon", "Cellosaurus"}),
    ("sentences", r"capped at 128 subword tokens", "dataset.max_length", 128),
    ("sentences", r"`mention_masking_prob` 0\.15: all of a mention's tokens", "pretrain.mention_masking_prob", 0.15),
    ("subgraph", r"up to 3 one-hop neighbours", "pretrain.neighbors", 3),
    ("subgraph", r"per target \*\*occurrence\*\*", "pretrain.sample_per", "occurrence"),
    ("node features", r"`concept_name_masking_prob` 0\.15: the target's own name", "pretrain.concept_name_masking_prob", 0.15),
    ("subgraph", r"up to 3 one-hop neighbours", "dataset.hops", 1),
    ("node features", r"≤ 32 tokens", "dataset.name_max_length", 32),
    ("UMLS", r"self loops kept", "dataset.self_loops", True),
    ("graph encoder", r"5 × GATv2", "pretrain.layers", 5),
    ("graph encoder", r"5 × GATv2", "pretrain.graph_encoder", "gatv2"),
    ("graph encoder", r"2 heads", "pretrain.heads", 2),
    ("graph encoder", r"2 heads \*\*concatenated\*\*, each of size hidden / heads", "pretrain.concat_heads", True),
    ("graph encoder", r"without it a 5-layer stack stops depending on its input", "pretrain.gat_self_loops", True),
    ("graph encoder", r"attention dropout 0\.1", "pretrain.attention_dropout", 0.1),
    ("graph encoder", r"dropout 0\.1 \+ GELU", "pretrain.dropout", 0.1),
    ("graph encoder", r"no residual from the input name", "pretrain.residual", False),
    ("graph encoder", r"nothing zero-initialised", "pretrain.zero_init", False),
    ("losses", r"MLM \(15 %", "pretrain.mlm_probability", 0.15),
    ("losses", r"InfoNCE \(pytorch-metric-learning `NTXentLoss`, cosine", "pretrain.loss", "nt_xent"),
    ("losses", r"τ = 0\.07", "pretrain.temperature", 0.07),
    ("losses", r"fresh, \*\*untied\*\* `BertLMPredictionHead`", "pretrain.fresh_mlm_head", True),
    ("losses", r"plain sum of the active terms", "pretrain.mlm_weight", 1.0),
    ("losses", r"plain sum of the active terms", "pretrain.contrastive_weight", 1.0),
    ("losses", r"plain sum of the active terms", "pretrain.name_weight", 0.0),
    ("losses", r"plain sum of the active terms", "pretrain.synonym_weight", 0.0),
    ("losses", r"link-prediction variants .* exist only as options", "pretrain.link_weight", 0.0),
    ("optimisation", r"weight decay 0\.01", "pretrain.weight_decay", 0.01),
    ("optimisation", r"no gradient clipping", "pretrain.max_grad_norm", 0),
    ("optimisation", r"`--parallel` wraps only the LM in `nn.DataParallel` \(the loss sees the whole batch\)",
     "pretrain.gather_negatives", True),
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


def test_every_dependency_param_is_a_path_under_demo_and_paper(tmp_path):
    demo = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = profiles.dependency_params()
    assert "dataset.held_out" in keys and "corpus.input" in keys and "report.ablations" not in keys
    for params in (demo, profiles.resolved("paper")):
        profiles.check_dependencies(params)  # a non-empty path each: DVC can collect every stage
    with pytest.raises(ValueError, match="dataset.held_out"):
        profiles.check_dependencies({**demo, "dataset": {**demo["dataset"], "held_out": ""}})


def test_write_applies_the_profile_and_keeps_comments(tmp_path):
    (tmp_path / "profiles").mkdir()
    for f in ("params.yaml", "dvc.yaml", "profiles/paper.yaml"):
        (tmp_path / f).write_text((ROOT / f).read_text())
    profiles.main(["paper", "--write", "--params", str(tmp_path / "params.yaml")])
    text = (tmp_path / "params.yaml").read_text()
    assert yaml.safe_load(text) == profiles.resolved("paper")
    assert "# One section per DVC stage" in text and "# published: 5" in text  # comments kept
    assert profiles.write("paper", tmp_path / "params.yaml") == 0  # applying it twice changes nothing


BERN2_IDS = [  # (as BERN2 v1.0 / v1.1 writes it, normalised, the SAB and CODE the paper profile looks up)
    ("MESH:D009369", "MESH:D009369", ("MSH", "D009369")), ("mesh:D009369", "MESH:D009369", ("MSH", "D009369")),
    ("D009369", "MESH:D009369", ("MSH", "D009369")), ("OMIM:608627", "OMIM:608627", ("OMIM", "608627")),
    ("mim:608627", "OMIM:608627", ("OMIM", "608627")), ("NCBI:txid10095", "NCBITaxon:10095", ("NCBI", "10095")),
    ("NCBITaxon:10095", "NCBITaxon:10095", ("NCBI", "10095")), ("CVCL_J260", "Cellosaurus:CVCL_J260", ("CVCL", "CVCL_J260")),
    ("cellosaurus:CVCL_J260", "Cellosaurus:CVCL_J260", ("CVCL", "CVCL_J260")),
    ("cellosaurus:J260", "Cellosaurus:CVCL_J260", ("CVCL", "CVCL_J260")),
    ("EntrezGene:10533", "NCBIGene:10533", None), ("NCBIGene:10533", "NCBIGene:10533", None),
    ("CL_0000021", "CL:0000021", None), ("CL:0000021", "CL:0000021", None), ("CHEBI:15377", "CHEBI:15377", None),
]


def test_bern2_ids_reach_their_umls_source_under_the_paper_profile():
    import polars as pl

    from bali.corpus.pubtator import normalise_id, split_ids
    from bali.linking.pretagged import id_table

    assert [normalise_id(raw) for raw, _, _ in BERN2_IDS] == [norm for _, norm, _ in BERN2_IDS]
    assert split_ids("OMIM:608627,MESH:C563895") == ["OMIM:608627", "MESH:C563895"]  # BERN2 v1.0 joins with ','
    assert split_ids("tmVar:p|SUB|V|600|E;HGVS:p.V600E") == ["tmVar:p|SUB|V|600|E;HGVS:p.V600E"]
    assert split_ids("CUI-less") == [] and split_ids("-1") == []
    link = profiles.resolved("paper")["link"]
    codes = pl.DataFrame([(sab, code, f"C{i}") for i, (_, _, key) in enumerate(BERN2_IDS) if key for sab, code in [key]],
                         schema=["sab", "code", "cui"], orient="row")
    table = id_table(pl.Series([raw for raw, _, _ in BERN2_IDS]), codes.unique(["sab", "code"]), link["pretagged_sources"],
                     link["pretagged_keep_prefix"])
    mapped = dict(table.select("id", "cui").iter_rows())
    for raw, norm, key in BERN2_IDS:
        assert (mapped[raw] is not None) == (key is not None), raw  # genes, cell types, ChEBI: dropped as published
    assert dict(table.filter(pl.col("cui").is_null()).group_by("prefix").len().iter_rows()) == {"NCBIGene": 2, "CL": 2, "CHEBI": 1}
