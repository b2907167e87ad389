"""On CUDA (skipped without it; run `pytest -m gpu` on a GPU machine): 3 steps of the demo setting
and of the paper setting (5 x GATv2, MLM on with a fresh head, bf16 autocast, the speed levers on)
on a tiny random BERT; a run stopped after a checkpoint and resumed ends where the whole run ends;
with >= 2 GPUs, `torchrun` with NCCL trains the weights one process trains."""

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from bali.training import train
from conftest import ROOT, make_dataset, run_pretrain

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

PAPER = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())["pretrain"]
SETTINGS = {"demo": {}, "paper": {k: v for k, v in PAPER.items()
                                  if k not in ("batch_size", "epochs", "max_steps", "workers", "checkpoint_every")}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp / "lm")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    return make_dataset(tmp / "ds"), tmp, {"base": p["base"], **p["pretrain"], "device": "cuda", "workers": 2,
                                           "batch_size": 16, "max_steps": 3, "checkpoint_every": 1}


def close(a, b) -> bool:
    """GPU kernels (atomics in scatter/index_add, bf16) are not bit-exact from run to run."""
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=2e-3, rtol=2e-2) for k in a)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_three_steps_checkpoint_stop_resume(setup, setting, tmp_path):
    ds, tmp, p = setup
    p = {**p, **SETTINGS[setting]}
    logged = []

    class Live:
        def log_metric(self, name, value, plot=True):
            logged.append((name, value))

        def next_step(self):
            pass

    whole = train(ds, tmp_path / "a", p, str(tmp / "lm"), live=Live())
    assert next(whole.parameters()).device.type == "cuda"
    assert all(torch.isfinite(torch.tensor(v)) for name, v in logged if name.startswith("train/"))
    assert sum(name == "train/loss" for name, _ in logged) == 3
    train(ds, tmp_path / "b", p, str(tmp / "lm"), stop_after=2)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["rng"][0]["cuda"] is not None  # the GPU's RNG is kept for dropout
    resumed = train(ds, tmp_path / "b", p, str(tmp / "lm"))
    assert close(whole, resumed)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_torchrun_nccl_matches_one_process(setup, tmp_path):
    ds, tmp, _ = setup
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"model{procs}"
        # link_weight 0: the link term is each rank's own (its pairs and negatives are not gathered)
        run_pretrain(ds, out, procs, 29534, model=tmp / "lm", batch_size=16, max_steps=3, workers=2, link_weight=0.0,
                     dropout=0.0, attention_dropout=0.0, mlm_weight=1.0, fresh_mlm_head=True, layers=5, lm_lr=1e-3,
                     other_lr=1e-3,
                     checkpoint_dir=tmp_path / f"ckpt{procs}", dvclive_dir=tmp_path / f"live{procs}")
        runs[procs] = load_file(out / "model.safetensors")
    for k in runs[1]:
        assert torch.allclose(runs[1][k].float(), runs[2][k].float(), atol=2e-3, rtol=2e-2), k
