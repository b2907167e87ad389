"""Pre-training: an interrupted run resumed from its checkpoint ends with the same weights as an
uninterrupted one; the saved LM reloads with AutoModel and gives the same vectors; the loss falls."""
import pytest
import torch
import yaml
from transformers import AutoModel, BertConfig, BertForMaskedLM

from bali.training import train
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


def test_resume_gives_the_same_weights(setup):
    ds, tmp, p = setup
    whole = train(ds, tmp / "run-a", p, str(tmp / "lm"))
    train(ds, tmp / "run-b", p, str(tmp / "lm"), stop_after=3)  # "crashes" after step 3; last checkpoint: step 2
    resumed = train(ds, tmp / "run-b", p, str(tmp / "lm"))
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(tmp / "run-b" / "checkpoint.pt", weights_only=True)["step"] == 6
    train(ds, tmp / "run-b", {**p, "lm_lr": 5e-4, "max_steps": 2}, str(tmp / "lm"))  # other params: not resumed
    assert torch.load(tmp / "run-b" / "checkpoint.pt", weights_only=True)["step"] == 2


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
    from bali.data.batches import TrainingData, loader

    model = train(ds, tmp_path / "run", {**p, "max_steps": 30, "checkpoint_every": 100}, str(tmp / "lm")).eval()
    untrained = train(ds, tmp_path / "run0", {**p, "max_steps": 1, "lm_lr": 0.0, "other_lr": 0.0,
                                              "checkpoint_every": 100}, str(tmp / "lm")).eval()
    dl, _ = loader(TrainingData(ds), 8, 29, synonyms=True)
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
