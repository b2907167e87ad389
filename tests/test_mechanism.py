"""The published objective's mechanism on a tiny model and graph, where a test can see it:
- the contrastive term's gradient reaches the LM and every layer of the graph encoder (a detached
  graph branch is caught);
- a few optimiser steps move each mention's vector towards its own concept's graph vector more than
  towards other concepts' (a mis-indexed positive is caught), while the MLM loss falls;
- `lm_freeze_steps` holds the LM still while the head and the graph encoder learn, and a run
  resumed across the freeze ends where an uninterrupted one does;
- bench/published_gpu.py's path on the CPU (`--dry`), and its refusal to write figures without a GPU.

The movement test runs the `paper` profile's objective (MLM with a fresh untied head + mention <->
graph NT-Xent, masking 0.15, one star per occurrence, 5 x GATv2) with the encoder's residual and
zero-init on. With the reference's own initialisation a 5-layer GATv2 over a random tiny LM gives
the targets of different concepts graph vectors of pairwise cosine ~0.99, so every mention is pulled
towards one direction and its own and other concepts' cosines rise together for tens of steps: the
collapse the factorial in ablations/published.yaml measures, not the wiring this test checks.
"""
import importlib.util
import json

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from bali.data.batches import AlignmentBatches, TrainingData
from bali.modeling.graph_encoders import GraphEncoder
from bali.modeling.model import BaliModel
from bali.training.loop import build_model, optimizer, train
from conftest import ROOT, make_dataset, pretrain_params, profile_pretrain

RUN_ONLY = ("batch_size", "epochs", "max_steps", "workers", "checkpoint_every")  # the profile's run length, not its objective
PAPER = {k: v for k, v in profile_pretrain("paper").items() if k not in RUN_ONLY}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """make_dataset's names and graph (10 concepts named "concept i" and "synonym number i of it"),
    with 64 sentences whose two mentions are written as their concept's name ("concept 3"), so a
    mention's text says which concept it is."""
    d = make_dataset(tmp_path_factory.mktemp("mech"))
    tok = TrainingData(d).tokenizer
    fill = tok.convert_tokens_to_ids("the patient has a with and of".split())
    concept, digits = tok.convert_tokens_to_ids("concept"), tok.convert_tokens_to_ids([str(i) for i in range(10)])
    rng = np.random.default_rng(0)
    rows = []
    for i in range(64):
        ids, starts, ends = [tok.cls_token_id], [], []
        nodes = [int(n) for n in rng.choice(10, 2, replace=False)]
        for n in nodes:
            ids += [int(x) for x in rng.choice(fill, 2)]
            starts.append(len(ids))
            ids += [concept, digits[n]]
            ends.append(len(ids))
        ids += [int(x) for x in rng.choice(fill, 2)] + [tok.sep_token_id]
        rows.append((f"d{i}", 0, "train", ids, starts, ends, nodes))
    pl.DataFrame(rows, orient="row", schema={"doc_id": pl.String, "sent_id": pl.Int32, "split": pl.String,
                                             "input_ids": pl.List(pl.UInt32), "mention_start": pl.List(pl.UInt16),
                                             "mention_end": pl.List(pl.UInt16), "mention_node": pl.List(pl.UInt32)}
                 ).write_parquet(d / "examples.parquet")
    return d


def paper_params(**overrides) -> dict:
    return pretrain_params(**{**PAPER, "lm_lr": 1e-3, "other_lr": 1e-3, **overrides})


def paper_batch(dataset, p: dict) -> dict:
    data = TrainingData(dataset)
    return AlignmentBatches(data, seed=7, neighbors=p["neighbors"], mlm_probability=p["mlm_probability"],
                            mention_masking_prob=p["mention_masking_prob"], name_masking_prob=p["concept_name_masking_prob"],
                            per_occurrence=p["sample_per"] == "occurrence")[(0, 0, np.arange(16))]


def reached(model: BaliModel, loss: torch.Tensor) -> set[str]:
    """The parts a loss's gradient reaches: lm, each graph layer (conv0..., out), head."""
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)

    def moved(params) -> bool:
        return any(q.grad is not None and bool(q.grad.abs().sum() > 0) for q in params)

    parts = {"lm": model.lm.encoder.parameters(), "out": model.graph.out.parameters(),
             "head": model.mlm_model.cls.parameters(),
             **{f"conv{i}": c.parameters() for i, c in enumerate(model.graph.convs)}}
    return {name for name, params in parts.items() if moved(list(params))}


@pytest.mark.parametrize("graph_branch", ["intact", "detached"])
def test_contrastive_gradient_reaches_the_lm_and_every_graph_layer(dataset, lm, monkeypatch, graph_branch):
    p = paper_params()
    if graph_branch == "detached":  # what a detached graph branch would do: the check must see it
        forward = GraphEncoder.forward
        monkeypatch.setattr(GraphEncoder, "forward", lambda self, *a: forward(self, *a).detach())
    torch.manual_seed(0)
    model = build_model(p, lm)
    assert isinstance(model.graph, GraphEncoder) and len(model.graph.convs) == 5  # the reference's 5 x GATv2
    out = model(paper_batch(dataset, p))
    graph = {f"conv{i}" for i in range(5)} | {"out"}
    expected = {"lm"} | (graph if graph_branch == "intact" else set())
    assert reached(model, out["contrastive"]) == expected  # never the MLM head
    assert {"lm", "head"} <= reached(model, out["mlm"])


def margin(model: BaliModel, batch: dict) -> tuple[float, float, float]:
    """(mean cosine of each mention to its own occurrence's graph vector, that minus its mean cosine to
    other concepts' graph vectors, the MLM loss), dropout off."""
    model.eval()
    with torch.no_grad():
        out = model(batch)
    model.train()
    mentions, graph, labels = out["vectors"]
    s = F.normalize(mentions, dim=-1) @ F.normalize(graph, dim=-1).T
    other = labels[:, None] != labels[None, :]
    own = float(s.diagonal().mean())
    return own, own - float((s * other).sum(1).div(other.sum(1)).mean()), float(out["mlm"])


@pytest.mark.parametrize("positives", ["right", "mis-indexed"])
def test_a_mention_moves_towards_its_own_concepts_graph_vector(dataset, lm, monkeypatch, positives):
    p = paper_params(residual=True, zero_init=True)
    if positives == "mis-indexed":  # each mention paired with the next row's graph vector: the test must fail it
        align = BaliModel.align_loss
        monkeypatch.setattr(BaliModel, "align_loss", lambda self, a, b, labels, b_labels=None:
                            align(self, a, b.roll(1, 0), labels, b_labels))
    torch.manual_seed(0)
    model = build_model(p, lm)
    opt = optimizer(model, p)
    batch = paper_batch(dataset, p)
    own0, margin0, mlm0 = margin(model, batch)
    for _ in range(8):
        model(batch)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    own, gained, mlm = margin(model, batch)
    assert own > own0 and mlm < mlm0 - 0.5
    # own concept's graph vector pulled closer than the others' (about +0.05 over 8 steps; -0.02 mis-indexed)
    assert (gained - margin0 > 0.02) == (positives == "right")


def same(a: dict, b: dict, prefix: str = "") -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_lm_freeze_steps_hold_the_lm_still_and_resume_exactly(tmp_path, lm):
    ds = make_dataset(tmp_path / "ds")
    p = pretrain_params(workers=0, batch_size=8, max_steps=4, checkpoint_every=1, mlm_weight=1.0, fresh_mlm_head=True,
                        lm_lr=1e-3, other_lr=1e-3, lm_freeze_steps=2, diagnostics_every=0)
    start = train(ds, tmp_path / "init", {**p, "lm_lr": 0.0, "other_lr": 0.0, "max_steps": 1}, lm).state_dict()
    lm_keys = "mlm_model." + BaliModel(lm, layers=1).mlm_model.base_model_prefix + "."
    after2 = train(ds, tmp_path / "a", p, lm, stop_after=2).state_dict()
    assert same(start, after2, lm_keys)  # frozen: not one LM weight moved (nor decayed)
    assert not same(start, after2, "mlm_model.cls.") and not same(start, after2, "graph.")  # head and encoder learned
    after3 = train(ds, tmp_path / "a", p, lm, stop_after=3).state_dict()  # resumed from step 2's checkpoint
    assert not same(start, after3, lm_keys)  # step 3: the LM trains
    resumed = train(ds, tmp_path / "a", p, lm).state_dict()
    assert same(resumed, train(ds, tmp_path / "b", p, lm).state_dict())  # the same as without interruptions
    assert not same(resumed, train(ds, tmp_path / "c", {**p, "lm_freeze_steps": 0}, lm).state_dict())


def published_gpu():
    spec = importlib.util.spec_from_file_location("published_gpu", ROOT / "bench" / "published_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_gpu_dry_path_and_no_figures_without_a_gpu(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    el, hierarchy = tmp_path / "el", tmp_path / "hierarchy"
    el.mkdir()
    hierarchy.mkdir()
    (el / "dictionary.txt").write_text("".join(f"C{i}||concept {i}\n" for i in range(10)))
    for split in ("dev", "test"):
        (el / f"{split}.txt").write_text("".join(f"C{i}||synonym number {i} of it\n" for i in range(10)))
    (hierarchy / "names.txt").write_text("".join(f"C{i}||concept {i}\n" for i in range(10)))
    for split in ("held_out_dev", "held_out"):
        (hierarchy / f"{split}.txt").write_text("".join(f"C{i}||C0\n" for i in range(1, 6)))
    bench, out = published_gpu(), tmp_path / "published.json"
    args = ["--dataset", str(ds), "--el", str(el), "--hierarchy", str(hierarchy), "--out", str(out)]
    assert not torch.cuda.is_available()  # the tests' CPU-only fixture
    assert bench.main(args) == 2 and not out.exists()  # no figures of the published recipe from a CPU
    assert "nothing written" in capsys.readouterr().out
    assert bench.main(args + ["--dry"]) == 0
    figures = json.loads(out.read_text())
    assert figures["dry"] is True and figures["device"] == "cpu" and figures["steps"] == 2 and figures["batch_size"] == 4
    assert set(figures["tasks"]) == {"el_dev", "el_test", "hierarchy_dev", "hierarchy_test"}
    for task, r in figures["tasks"].items():
        metric = "acc@1" if task.startswith("el") else "hit@10"
        assert 0 <= r["base"][metric] <= 1 and 0 <= r["aligned"][metric] <= 1 and r["paired_hit"]["items"] in (5, 10)
    assert {"collapse/graph_cosine", "collapse/name_cosine", "collapse/name_base_cosine"} <= set(figures["collapse"])
    assert figures["params"]["lm_lr"] == 2e-5 and figures["params"]["layers"] == 5  # the paper profile's recipe
