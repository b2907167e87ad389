"""`torchrun --nproc_per_node 2` on the CPU (gloo) trains the same model as one process with the
same global batch: each rank takes half the rows, the contrastive loss all-gathers every rank's
vectors and the MLM loss is normalised over the global batch: a rank without a masked token
contributes 0 (not NaN), and the logged loss is the one-process loss. Two "nodes" (two torchrun
launchers over localhost) with node-local checkpoint folders, killed and run again, resume on both
nodes from rank 0's checkpoint and end with the uninterrupted run's weights."""
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from bali.training.loop import LOSSES
from conftest import ROOT, make_dataset, run_pretrain



@pytest.mark.slow
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
        # link_weight 0: the link term is each rank's own (its pairs and negatives are not gathered);
        # float32: under bf16 (`auto` on a CPU with AVX-512 BF16) half a batch rounds unlike the whole one
        run_pretrain(ds, out, procs, 29533, model=tmp_path / "lm", batch_size=8, max_steps=3, workers=0, link_weight=0.0,
                     dropout=0.0, attention_dropout=0.0, mlm_weight=1.0, lm_lr=1e-3, other_lr=1e-3, precision="float32",
                     checkpoint_dir=tmp_path / f"ckpt{procs}", dvclive_dir=tmp_path / f"live{procs}")
        runs[procs] = {**load_file(out / "model.safetensors"), **{f"graph.{k}": v for k, v in
                                                                  load_file(out / "graph_encoder.safetensors").items()}}
    base = {k.removeprefix("bert."): v for k, v in load_file(tmp_path / "lm" / "model.safetensors").items()}
    moved = [k for k in runs[1] if k in base and not torch.equal(runs[1][k], base[k])]
    assert moved  # training changed the weights
    for k in runs[1]:
        assert torch.allclose(runs[1][k], runs[2][k], atol=1e-5, rtol=1e-4), k


def _rank_losses(rank, world, lm, ds, init, out):
    """One rank of a gloo group: its rows of batch 0, rank 1's masked tokens unmasked; the logged
    (rank-averaged) losses and the all-reduced gradient of an LM weight, saved by rank 0."""
    import torch.distributed as dist

    from bali.training.loop import loss_vector, mean_over_ranks

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model, batch = _model_and_batch(lm, ds, rank, world)
    out_ = model(batch)
    out_["loss"].backward()
    grad = model.mlm_model.bert.encoder.layer[0].attention.self.query.weight.grad.clone()
    dist.all_reduce(grad)  # DDP's average
    figures = mean_over_ranks(loss_vector(out_), world)
    if rank == 0:
        torch.save({"losses": figures, "grad": grad / world}, out)
    dist.destroy_process_group()


def _model_and_batch(lm, ds, rank, world):
    import numpy as np

    from bali.data.batches import AlignmentBatches, BucketBatchSampler
    from bali.data.training_data import TrainingData
    from bali.modeling.model import BaliModel

    torch.manual_seed(0)
    model = BaliModel(lm, layers=2, dropout=0.0, attention_dropout=0.0, mlm_weight=1.0, fresh_mlm_head=True)
    data = TrainingData(ds)
    _, number, rows = next(iter(BucketBatchSampler([len(x) for x in data.input_ids], 8, 5, rank, world)))
    batch = AlignmentBatches(data, seed=5)[(0, number, rows)]
    odd = np.arange(len(rows)) % 2 == 1 if world == 1 else np.full(len(rows), rank == 1)
    labels = batch["mlm_labels"]
    unmask = torch.from_numpy(odd)[:, None] & (labels != -100)  # rank 1's rows: no masked token
    batch["input_ids"] = torch.where(unmask, labels, batch["input_ids"])
    batch["mlm_labels"] = labels.masked_fill(torch.from_numpy(odd)[:, None], -100)
    return model, batch


def test_a_rank_without_masked_tokens_gives_the_one_process_loss(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp_path / "lm")
    ds = make_dataset(tmp_path / "ds")
    mp.spawn(_rank_losses, args=(2, str(tmp_path / "lm"), str(ds), f"file://{tmp_path / 'store'}", tmp_path / "two.pt"),
             nprocs=2)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    model, batch = _model_and_batch(str(tmp_path / "lm"), str(ds), 0, 1)
    assert (batch["mlm_labels"] != -100).any()
    one = model(batch)
    one["loss"].backward()
    assert torch.isfinite(two["losses"]).all()
    # the losses (the graph figures logged after them are each rank's mean, not the global batch's)
    assert torch.allclose(two["losses"][:len(LOSSES)], torch.stack([one[k].detach() for k in LOSSES]), rtol=1e-4, atol=1e-6)
    grad = model.mlm_model.bert.encoder.layer[0].attention.self.query.weight.grad
    assert torch.allclose(two["grad"], grad, rtol=1e-3, atol=1e-6)


def test_untied_unused_mlm_bias_trains_under_ddp(tmp_path):
    """A checkpoint whose MLM head has its own `predictions.bias` beside the decoder's (untied): the
    head never uses it, so DDP would fail at the second step waiting for its gradient; it is frozen."""
    import torch.distributed as dist

    from bali.data.batches import AlignmentBatches, BucketBatchSampler
    from bali.data.training_data import TrainingData
    from bali.modeling.model import BaliModel
    from bali.training.loop import freeze_unused_head

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, tie_word_embeddings=False)
    BertForMaskedLM(config).save_pretrained(tmp_path / "lm")
    data = TrainingData(make_dataset(tmp_path / "ds"))
    batches = AlignmentBatches(data, seed=5)
    keys = list(BucketBatchSampler(data.lengths(), 8, 5))[:2]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = BaliModel(str(tmp_path / "lm"), layers=1, mlm_weight=1.0)  # the checkpoint's own head
        assert freeze_unused_head(model) == ["predictions.bias"]
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        for key in keys:
            wrapped(batches[key])["loss"].backward()
        assert model.mlm_model.cls.predictions.decoder.bias.grad is not None
    finally:
        dist.destroy_process_group()


def kill_trees(procs) -> None:
    """SIGKILL each launcher and every process under it (torchrun's workers run in their own sessions)."""
    import psutil

    tree = []
    for proc in procs:
        try:
            tree += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for q in tree:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass


def two_nodes(ds, out, port, ckpt, live, lm, stop_at_checkpoint=None, **pretrain):
    """`torchrun --nnodes 2 --node-rank R --nproc-per-node 1` twice over localhost (gloo), each node
    with its own checkpoint folder (ckpt/node<R>). With `stop_at_checkpoint`, both launchers are
    killed with SIGKILL as soon as rank 0 has written that checkpoint. Returns node 0's stderr."""
    sets = {"model": lm, "dvclive_dir": live, "workers": 0, **pretrain}
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
               str(ROOT / "stages" / "pretrain.py"), str(ds), str(out), "-S", f"pretrain.checkpoint_dir={ckpt / f'node{node}'}",
               *[a for k, v in sets.items() for a in ("-S", f"pretrain.{k}={v}")]]
        with open(out.parent / f"{out.name}-node{node}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          env={**os.environ, "OMP_NUM_THREADS": "1"}))
    if stop_at_checkpoint is not None:
        mark = ckpt / "node0" / f"checkpoint-{stop_at_checkpoint:08d}.pt.json"
        deadline = time.monotonic() + 300
        while not mark.exists() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.01)
        kill_trees(procs)
    try:
        for proc in procs:
            proc.wait(timeout=300)  # a node left waiting in collectives the other never enters fails here
    finally:
        kill_trees([proc for proc in procs if proc.poll() is None])
    errs = [(out.parent / f"{out.name}-node{node}.log").read_text() for node in (0, 1)]
    if stop_at_checkpoint is None:
        assert all(proc.returncode == 0 for proc in procs), errs[0][-3000:] + errs[1][-3000:]
    return errs[0]


@pytest.mark.slow
def test_two_nodes_with_local_checkpoints_resume_the_same_step(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp_path / "lm")
    ds = make_dataset(tmp_path / "ds")
    sets = {"batch_size": 8, "max_steps": 16, "checkpoint_every": 2, "mlm_weight": 1.0, "lm_lr": 1e-3, "other_lr": 1e-3,
            "link_weight": 0.0}
    two_nodes(ds, tmp_path / "whole", 29541, tmp_path / "ckpt-whole", tmp_path / "live-whole", tmp_path / "lm", **sets)
    two_nodes(ds, tmp_path / "resumed", 29542, tmp_path / "ckpt", tmp_path / "live", tmp_path / "lm", stop_at_checkpoint=4,
              **sets)
    assert not list((tmp_path / "ckpt" / "node1").glob("checkpoint-*"))  # only global rank 0 writes
    err = two_nodes(ds, tmp_path / "resumed", 29543, tmp_path / "ckpt", tmp_path / "live", tmp_path / "lm", **sets)
    assert "pretrain: resumed from step " in err, err[-3000:]
    for f in ("model.safetensors", "graph_encoder.safetensors"):
        assert (tmp_path / "whole" / f).read_bytes() == (tmp_path / "resumed" / f).read_bytes(), f
