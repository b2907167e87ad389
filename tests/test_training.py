"""Pre-training: an interrupted run resumed from its checkpoint (with other loader workers) ends
with the same weights as an uninterrupted one, building only the batches it had not trained on, and
with the same dvclive record (each step once); a damaged newest checkpoint falls back to the one
before it (or a fresh start) with a one-line report;
every tensor of a batch reaches the device; the validation loss is logged; the saved LM reloads
with AutoModel and gives the same vectors; the loss falls."""
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import AutoModel, BertConfig, BertForMaskedLM

from bali.training.checkpoints import checkpoints, name_for
from bali.data.batches import AlignmentBatches
from bali.data.training_data import TrainingData
from bali.training.loop import make_loader, pick_device, to_device, train
from conftest import ROOT, make_dataset, pretrain_params


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp / "lm")
    params = pretrain_params(workers=0, batch_size=8, max_steps=6, checkpoint_every=2, mlm_weight=1.0, other_lr=1e-3,
                             lm_lr=1e-3, dropout=0.1)
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
                                                "val/link", "val/encoder_share", "val/graph_name_cosine"}
    assert all(math.isfinite(v) for _, _, v in runs[0]) and runs[0] == runs[1]  # the same batches and masks each time
    first = {name: v for step, name, v in runs[0] if step == 0}
    last = {name: v for step, name, v in runs[0] if step == 4}
    assert first["val/loss"] != last["val/loss"]


def test_pretraining_seed_varies_training_alone(setup, tmp_path):
    ds, tmp, p = setup
    q = {**p, "max_steps": 2, "checkpoint_every": 100}
    by_base = train(ds, tmp_path / "a", {**q, "seed": None}, str(tmp / "lm"))  # null: the pipeline's base.seed
    assert same_weights(by_base, train(ds, tmp_path / "b", {**q, "seed": p["base"]["seed"]}, str(tmp / "lm")))
    assert not same_weights(by_base, train(ds, tmp_path / "c", {**q, "seed": p["base"]["seed"] + 1}, str(tmp / "lm")))


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


def test_cpu_tests_never_pick_a_gpu(setup, monkeypatch):
    """As on a GPU machine: the fixtures' params still resolve to the CPU (no CUDA call is made),
    and a process a test starts sees no GPU."""
    _, _, p = setup
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail(f"a CPU test chose {device}"))
    assert pick_device(p) == torch.device("cpu")
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == ""


def test_epoch_boundary_with_accumulation_resumes_exactly(setup, tmp_path):
    """grad_accum 3 over an epoch of 38 micro-batches (12 steps and 2 left over): stopped at the
    epoch's last step and resumed, the run ends with the uninterrupted run's weights (the left-over
    micro-batches' gradients must not reach the next epoch's first step in either)."""
    ds, tmp, p = setup
    p = {**p, "grad_accum": 3, "epochs": 2, "max_steps": 14, "checkpoint_every": 6}
    whole = train(ds, tmp_path / "a", p, str(tmp / "lm"))
    train(ds, tmp_path / "b", p, str(tmp / "lm"), stop_after=12)
    state = torch.load(tmp_path / "b" / name_for(12), weights_only=True)
    assert (state["step"], state["epoch"], state["batches_done"]) == (12, 0, 36)
    assert same_weights(whole, train(ds, tmp_path / "b", p, str(tmp / "lm")))


def test_damaged_checkpoints_fall_back_to_a_good_one(setup, capfd):
    """A checkpoint cut to half its bytes (a full disk, a broken copy): the previous one is resumed,
    or, when none is good, training starts afresh; one line says which file and why, no traceback."""
    ds, tmp, p = setup
    whole = train(ds, tmp / "run-d0", p, str(tmp / "lm"))
    for run, stop, resumed_step in (("run-d1", 5, 2), ("run-d2", 3, None)):
        train(ds, tmp / run, p, str(tmp / "lm"), stop_after=stop)  # checkpoints after steps 2 and 4, or 2 only
        newest = max((tmp / run).glob("checkpoint*.pt"), key=lambda f: f.stat().st_mtime_ns)
        size = newest.stat().st_size
        newest.write_bytes(newest.read_bytes()[:size // 2])
        capfd.readouterr()
        assert same_weights(whole, train(ds, tmp / run, p, str(tmp / "lm")))
        err = capfd.readouterr().err
        assert [line for line in err.splitlines() if "damaged" in line] == \
            [f"pretrain: checkpoint {newest} is damaged ({size // 2:,} of {size:,} bytes); removed"]
        assert "Traceback" not in err
        assert ("resumed from step 2 of 6" in err) == (resumed_step == 2)


def _pretrain_stage():
    spec = importlib.util.spec_from_file_location("pretrain_stage", ROOT / "stages" / "pretrain.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def test_a_killed_and_resumed_run_keeps_a_true_record(setup, tmp_path, monkeypatch, capfd):
    """The stage killed after step 6 (last checkpoint: step 4) and run again: its dvclive series hold
    steps 1..8 once each, equal to an uninterrupted run's (throughput aside), the model files are
    byte-identical, and the resume is in the log and in dvclive's metrics."""
    import bali.training.loop

    ds, tmp, p = setup
    stage = _pretrain_stage()
    sets = {"model": tmp / "lm", "batch_size": 8, "max_steps": 8, "checkpoint_every": 4, "workers": 0, "mlm_weight": 1.0,
            "fresh_mlm_head": True, "lm_lr": 1e-3, "other_lr": 1e-3, "eval_every": 0}

    def run(name):
        argv = [str(ds), str(tmp_path / name / "model"), "-S", f"pretrain.checkpoint_dir={tmp_path / name / 'ckpt'}",
                "-S", f"pretrain.dvclive_dir={tmp_path / name / 'live'}", "--params", str(ROOT / "params.yaml")]
        stage.main(argv + [a for k, v in sets.items() for a in ("-S", f"pretrain.{k}={v}")])

    run("whole")
    step = bali.training.loop.optimizer_step
    calls = []

    def dies_at_step_7(*args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt("killed")
        step(*args)

    monkeypatch.setattr(bali.training.loop, "optimizer_step", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run("resumed")
    monkeypatch.setattr(bali.training.loop, "optimizer_step", step)
    capfd.readouterr()
    run("resumed")
    assert f"pretrain: resumed from step 4 of 8 (checkpoint {tmp_path / 'resumed' / 'ckpt'}" in capfd.readouterr().err
    series = {name: {f.relative_to(tmp_path / name / "live"): f.read_text()
                     for f in (tmp_path / name / "live").rglob("*.tsv")} for name in ("whole", "resumed")}
    assert series["whole"].keys() == series["resumed"].keys()
    loss = [line.split("\t")[0] for line in series["resumed"][Path("plots/metrics/train/loss.tsv")].splitlines()]
    assert loss == ["step"] + [str(i) for i in range(1, 9)]
    for f, text in series["whole"].items():
        assert f.name == "examples_per_s.tsv" or series["resumed"][f] == text, f
    assert json.loads((tmp_path / "resumed" / "live" / "metrics.json").read_text())["resumed_from_step"] == 4
    for f in ("model.safetensors", "graph_encoder.safetensors"):
        assert (tmp_path / "whole" / "model" / f).read_bytes() == (tmp_path / "resumed" / "model" / f).read_bytes(), f
    cards = [(tmp_path / name / "model" / "README.md").read_text().split("## Final metrics")[1] for name in ("whole", "resumed")]
    assert cards[0] == cards[1] and "loss" in cards[0]  # the card's final losses (its params name other folders)
    assert not list((tmp_path / "resumed" / "ckpt").iterdir())  # finished: no checkpoint left


def test_the_section_is_one_typed_config():
    """Every pretrain key is a field: a typo or a missing key fails at once; the model is built from the
    fields marked `model`; a checkpoint is resumed across a change of where a run goes, never of what it trains."""
    from bali import params
    from bali.training.config import PretrainConfig
    from bali.training.loop import run_key

    p = params.load("pretrain", [], ROOT / "params.yaml")
    c = PretrainConfig.of(p)
    assert c.model_args()["layers"] == p["layers"] and "lm_lr" not in c.model_args()
    with pytest.raises(KeyError, match="unknown \\['layer'\\]"):
        PretrainConfig.of({**p, "layer": 3})
    key = run_key(p, ROOT / "no-dataset", "lm")
    assert run_key({**p, "workers": 0, "checkpoint_every": 7}, ROOT / "no-dataset", "lm") == key
    assert run_key({**p, "temperature": 0.05}, ROOT / "no-dataset", "lm") != key
    assert run_key({**p, "base": {"seed": 1}}, ROOT / "no-dataset", "lm") != key  # the seed, when pretrain.seed is null
