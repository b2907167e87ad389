"""Pre-training: an interrupted run resumed from its checkpoint (with other loader workers) ends
with the same weights as an uninterrupted one, building only the batches it had not trained on;
every tensor of a batch reaches the device; the validation loss is logged; the saved LM reloads
with AutoModel and gives the same vectors; the loss falls."""
import math
import shutil

import polars as pl
import pytest
import torch
import yaml
from transformers import AutoModel, BertConfig, BertForMaskedLM

from bali.checkpoints import checkpoints
from bali.data.batches import AlignmentBatches, TrainingData
from bali.training import make_loader, to_device, train
from conftest import ROOT, make_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp / "lm")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = {"base": p["base"], **p["pretrain"], "workers": 0, "batch_size": 8, "max_steps": 6, "checkpoint_every": 2,
              "mlm_weight": 1.0, "other_lr": 1e-3, "lm_lr": 1e-3, "dropout": 0.1}
    return make_dataset(tmp / "ds"), tmp, params


def same_weights(x, y) -> bool:
    a, b = x.state_dict(), y.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_gives_the_same_weights(setup, monkeypatch):
    ds, tmp, p = setup
    whole = train(ds, tmp / "run-a", p, str(tmp / "lm"))
    train(ds, tmp / "run-b", p, str(tmp / "lm"), stop_after=3)  # "crashes" after step 3; last checkpoint: step 2
    # resumed with other values of params that do not change training: still resumed
    resumed = train(ds, tmp / "run-b", {**p, "workers": 1, "checkpoint_every": 5, "eval_every": 0}, str(tmp / "lm"))
    assert same_weights(whole, resumed)
    assert [step for step, _ in checkpoints(tmp / "run-b")] == [6, 5]  # the newest keep_checkpoints (2)
    train(ds, tmp / "run-b", {**p, "lm_lr": 5e-4, "max_steps": 2}, str(tmp / "lm"))  # other params: not resumed
    assert [step for step, _ in checkpoints(tmp / "run-b")] == [2]
    # the sampler starts after the checkpoint's batches: only steps 3 to 6 are built
    train(ds, tmp / "run-c", p, str(tmp / "lm"), stop_after=3)
    built = []
    getitem = AlignmentBatches.__getitem__
    monkeypatch.setattr(AlignmentBatches, "__getitem__", lambda self, key: built.append(key[1]) or getitem(self, key))
    assert same_weights(whole, train(ds, tmp / "run-c", p, str(tmp / "lm")))
    assert built == [2, 3, 4, 5]


def tensors(x):
    if torch.is_tensor(x):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for v in x for t in tensors(v)] if isinstance(x, (list, tuple)) else []


@pytest.mark.parametrize("linear", [False, True])
def test_every_tensor_of_a_batch_reaches_the_device(setup, linear):
    ds, _, p = setup
    dl, _ = make_loader(TrainingData(ds), {**p, "graph_encoder": "linear" if linear else "gatv2"}, torch.device("cpu"))
    batch = next(iter(dl))
    moved = tensors(to_device(batch, torch.device("meta")))
    assert len(moved) == len(tensors(batch)) > 10 and all(t.device.type == "meta" for t in moved)
    assert linear or tensors(batch["name_chunks"])  # nested tensors (a list of dicts) are among them


class Live:
    def __init__(self):
        self.step, self.logged = 0, []

    def log_metric(self, name, value, plot=True):
        self.logged.append((self.step, name, value))

    def next_step(self):
        self.step += 1


def test_validation_loss_logged_every_eval_every_steps(setup, tmp_path):
    ds, tmp, p = setup
    val = tmp_path / "ds"
    shutil.copytree(ds, val)
    ex = pl.read_parquet(val / "examples.parquet")
    ex.with_columns(split=pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.lit("val")).otherwise("split")
                    ).write_parquet(val / "examples.parquet")
    runs = []
    for run in ("a", "b"):
        live = Live()
        train(val, tmp_path / run, {**p, "max_steps": 4, "eval_every": 2, "val_batches": 0}, str(tmp / "lm"), live=live)
        runs.append([(step, name, value) for step, name, value in live.logged if name.startswith("val/")])
    steps = sorted({step for step, _, _ in runs[0]})
    assert steps == [0, 2, 4]  # before the first step, after steps 2 and 4 (dvclive steps: 0 = before training)
    assert {name for _, name, _ in runs[0]} == {"val/loss", "val/mlm", "val/contrastive", "val/name", "val/synonym",
                                                "val/link"}
    assert all(math.isfinite(v) for _, _, v in runs[0]) and runs[0] == runs[1]  # the same batches and masks each time
    first = {name: v for step, name, v in runs[0] if step == 0}
    last = {name: v for step, name, v in runs[0] if step == 4}
    assert first["val/loss"] != last["val/loss"]


def test_saved_lm_reloads(setup, tmp_path):
    ds, tmp, p = setup
    model = train(ds, tmp_path / "run", {**p, "max_steps": 2}, str(tmp / "lm")).eval()
    model.lm.save_pretrained(tmp_path / "out")
    again = AutoModel.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([[101, 2000, 3000, 102]])
    with torch.no_grad():
        assert torch.allclose(model.lm(input_ids=ids).last_hidden_state, again(input_ids=ids).last_hidden_state)


def test_loss_falls(setup, tmp_path):
    ds, tmp, p = setup
    model = train(ds, tmp_path / "run", {**p, "max_steps": 30, "checkpoint_every": 100}, str(tmp / "lm")).eval()
    untrained = train(ds, tmp_path / "run0", {**p, "max_steps": 1, "lm_lr": 0.0, "other_lr": 0.0,
                                              "checkpoint_every": 100}, str(tmp / "lm")).eval()
    dl, _ = make_loader(TrainingData(ds), {**p, "workers": 0}, torch.device("cpu"))
    batch = next(iter(dl))
    with torch.no_grad():
        assert model(batch)["loss"] < untrained(batch)["loss"]


def test_evaluation_curve_points(setup, tmp_path):
    ds, tmp, p = setup
    calls = []

    def evaluate(lm):
        calls.append(lm.training)
        return {"el/acc@1": 0.5}

    train(ds, tmp_path / "run", {**p, "max_steps": 5, "eval_every": 2, "checkpoint_every": 100}, str(tmp / "lm"),
          evaluate=evaluate)
    assert calls == [False, False, False, False]  # before step 1, after steps 2, 4 and the last (5), in eval mode
