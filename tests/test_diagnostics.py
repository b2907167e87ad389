"""Collapse diagnostics: the mean pairwise cosine across concepts by hand, and a short run whose
dvclive record holds the collapse series (batch figures every step, the name sample every
`diagnostics_every` steps, its cosine to the base LM 1 before training) without changing training."""
import math

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from bali.training.diagnostics import mean_pairwise_cosine
from bali.training.loop import train
from conftest import make_dataset, pretrain_params


def test_mean_pairwise_cosine_by_hand():
    # rows 0 and 1 are concept 7, row 2 concept 9: the pairs across concepts are (0, 2) and (1, 2)
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([7, 7, 9])
    by_hand = (0.0 + 1 / math.sqrt(2)) / 2  # cos(row 0, row 2) = 0, cos(row 1, row 2) = 1 / sqrt 2
    assert mean_pairwise_cosine(x, labels).item() == pytest.approx(by_hand)
    assert mean_pairwise_cosine(x * torch.tensor([[3.0], [0.5], [2.0]]), labels).item() == pytest.approx(by_hand)
    # with three concepts the same-concept pair (0, 1) (cosine 1 / sqrt 2) counts too
    assert mean_pairwise_cosine(x, torch.tensor([1, 2, 3])).item() == pytest.approx((0 + 2 / math.sqrt(2)) / 3)
    assert math.isnan(mean_pairwise_cosine(x, torch.tensor([4, 4, 4])).item())  # no pair across concepts


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diag")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(tmp / "lm")
    p = pretrain_params(workers=0, batch_size=8, max_steps=4, checkpoint_every=100, mlm_weight=1.0,
                        fresh_mlm_head=True, lm_lr=1e-3, other_lr=1e-3)
    return make_dataset(tmp / "ds"), str(tmp / "lm"), p


def series(live_dir, name):
    rows = (live_dir / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return {int(r.split("\t")[0]): float(r.split("\t")[-1]) for r in rows}


def test_collapse_series_in_the_dvclive_record(setup, tmp_path):
    from dvclive import Live

    ds, lm, p = setup
    live = Live(str(tmp_path / "live"), resume=False, save_dvc_exp=False, dvcyaml=None)
    watched = train(ds, tmp_path / "a", {**p, "diagnostics_every": 3}, lm, live=live)
    live.end()
    graph, mentions = series(tmp_path / "live", "collapse/graph_cosine"), series(tmp_path / "live", "collapse/mention_cosine")
    names, base = series(tmp_path / "live", "collapse/name_cosine"), series(tmp_path / "live", "collapse/name_base_cosine")
    assert sorted(graph) == sorted(mentions) == [1, 2, 3, 4]
    assert sorted(names) == sorted(base) == [0, 3, 4]  # before training, every 3 steps, after the last
    assert all(-1 <= v <= 1 for s in (graph, mentions, names, base) for v in s.values())
    assert base[0] == pytest.approx(1.0, abs=1e-5) and base[4] < 1 - 1e-4  # the base LM, then a trained one
    assert names[0] != names[4]
    # the probe changes nothing that is trained: the same weights without it
    plain = train(ds, tmp_path / "b", {**p, "diagnostics_every": 0}, lm)
    a, b = watched.state_dict(), plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
