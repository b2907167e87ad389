"""`torchrun --nproc_per_node 2` on the CPU (gloo) trains the same model as one process with the
same global batch: each rank takes half the rows, the contrastive loss all-gathers every rank's
vectors and the MLM loss is normalised over the global batch."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from conftest import ROOT, make_dataset

pytestmark = pytest.mark.slow


def test_two_processes_match_one(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertForMaskedLM(config).save_pretrained(tmp_path / "lm")
    ds = make_dataset(tmp_path / "ds")
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"model{procs}"
        sets = [f"pretrain.{k}={v}" for k, v in dict(
            model=tmp_path / "lm", batch_size=8, max_steps=3, workers=0, dropout=0.0, attention_dropout=0.0,
            mlm_weight=1.0, lm_lr=1e-3, other_lr=1e-3, checkpoint_dir=tmp_path / f"ckpt{procs}",
            dvclive_dir=tmp_path / f"live{procs}").items()]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"] \
            if procs == 2 else [sys.executable]
        cmd = [*launcher, str(ROOT / "stages" / "pretrain.py"), str(ds), str(out), *[x for s in sets for x in ("-S", s)]]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stderr[-3000:]
        runs[procs] = {**load_file(out / "model.safetensors"), **{f"graph.{k}": v for k, v in
                                                                  load_file(out / "graph_encoder.safetensors").items()}}
    base = {k.removeprefix("bert."): v for k, v in load_file(tmp_path / "lm" / "model.safetensors").items()}
    moved = [k for k in runs[1] if k in base and not torch.equal(runs[1][k], base[k])]
    assert moved  # training changed the weights
    for k in runs[1]:
        assert torch.allclose(runs[1][k], runs[2][k], atol=1e-5, rtol=1e-4), k
