"""On CUDA (marker `gpu`, skipped without it: `pytest -m gpu` on a GPU machine; BALI_GPU_TEST_DEVICE=cpu
runs the same checks on the CPU): the demo and the paper setting with bf16 autocast and the speed
levers, grad_accum 2 over an epoch of 17 micro-batches (one left over), validation and the
evaluation callback every 4 steps, an epoch boundary crossed; a run stopped at the boundary and
resumed against the uninterrupted one; 2 DDP ranks (NCCL with 2 GPUs, else gloo with both ranks on
GPU 0) against one process.

Tolerances: GPU arithmetic is not bit-exact (bf16, atomics), so per-step losses are compared at 2 %
and weights by how far apart two runs end relative to how far they moved. The learning rate (3e-3)
makes each AdamW step move every weight by up to ~3e-3, so a resume that loses its optimiser
moments, data position or schedule ends a sizeable fraction of the run's own movement away,
far outside the tolerance.
"""
import os

import polars as pl
import pytest
import torch

from bali.training.checkpoints import name_for
from bali.training.loop import build_model, train
from conftest import make_dataset, pretrain_params, profile_pretrain

DEVICE = os.environ.get("BALI_GPU_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")]

SETTINGS = {"demo": {}, "paper": {k: v for k, v in profile_pretrain("paper").items()
                                  if k not in ("batch_size", "epochs", "max_steps", "workers", "checkpoint_every")}}
LOSS_RTOL = 2e-2   # bf16 autocast: about 3 significant digits per op, a few ops deep
DRIFT = 0.2        # |run a - run b| / |run a's movement| for runs that should end at the same weights


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    tmp = tmp_path_factory.mktemp("gpu")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=64)).save_pretrained(tmp / "lm")
    ds = make_dataset(tmp / "ds")  # 300 sentences: 270 train (17 batches of 16), 30 validation
    ex = pl.read_parquet(ds / "examples.parquet")
    ex.with_columns(split=pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.lit("val")).otherwise("split")
                    ).write_parquet(ds / "examples.parquet")
    p = pretrain_params(device=DEVICE, workers=2, batch_size=16, grad_accum=2, epochs=2, max_steps=12,
                        checkpoint_every=4, eval_every=4, val_batches=0, lm_lr=3e-3, other_lr=3e-3)
    return ds, str(tmp / "lm"), p


class Live:
    def __init__(self):
        self.step, self.logged = 0, {}

    def log_metric(self, name, value, plot=True):
        self.logged.setdefault(name, {})[self.step] = value

    def next_step(self):
        self.step += 1


def flat(model) -> torch.Tensor:
    return torch.cat([v.detach().float().flatten().cpu() for v in model.state_dict().values()])


def drift(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor) -> float:
    return float((a - b).norm() / (a - start).norm())


def assert_losses_close(got: dict, want: dict) -> None:
    for step, v in got.items():
        assert abs(v - want[step]) <= LOSS_RTOL * abs(want[step]), (step, v, want[step])


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_resume_at_an_epoch_boundary(setup, setting, tmp_path):
    """Catches: a resume that ignores the checkpoint (it would train and evaluate steps 1-8 again),
    restores no schedule (other learning rates), takes other batches or loses the dropout RNG (other
    losses), or loses AdamW's moments (weights DRIFT or more apart); leftover gradients of the epoch's
    odd micro-batch reaching step 9 in one run only; validation or evaluation out of eval mode."""
    ds, lm, p = setup
    p = {**p, **SETTINGS[setting]}
    calls, resumed_calls = [], []

    def evaluate(model_lm, into=calls):
        into.append(model_lm.training)
        return {"el/acc@1": 0.0}

    whole_live, resumed_live = Live(), Live()
    whole = train(ds, tmp_path / "a", p, lm, live=whole_live, evaluate=evaluate)
    assert next(whole.parameters()).device.type == DEVICE
    at_boundary = flat(train(ds, tmp_path / "b", p, lm, stop_after=8))  # 17 micro-batches, grad_accum 2: 8 steps
    state = torch.load(tmp_path / "b" / name_for(8), map_location="cpu", weights_only=True)
    assert state["step"] == 8 and (DEVICE == "cpu" or state["rng"][0]["cuda"] is not None)
    resumed = train(ds, tmp_path / "b", p, lm, live=resumed_live,
                    evaluate=lambda model_lm: evaluate(model_lm, resumed_calls))
    w, r = whole_live.logged, resumed_live.logged
    # the resumed record: steps 1-8 replayed from the checkpoint, 9-12 trained; each step once
    assert sorted(w["train/loss"]) == sorted(r["train/loss"]) == list(range(1, 13))
    assert len(calls) == 4 and len(resumed_calls) == 1  # evaluated at 0, 4, 8, 12; the resumed run at 12 only
    assert all(torch.isfinite(torch.tensor(v)) for v in w["train/loss"].values())
    for name in ("train/loss", "train/contrastive", "val/loss"):
        assert_losses_close(r[name], w[name])
    assert r["lr/lm"] == pytest.approx(w["lr/lm"])
    assert drift(flat(whole), flat(resumed), at_boundary) < DRIFT
    assert calls and not any(calls + resumed_calls)


def _rank(rank, world, ds, lm, p, out, init):
    import torch.distributed as dist

    os.environ["LOCAL_RANK"] = str(rank if p["device"] == "cuda" and torch.cuda.device_count() >= world else 0)
    backend = "nccl" if p["device"] == "cuda" and torch.cuda.device_count() >= world else "gloo"
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    live = Live()
    model = train(ds, out / f"run{rank}", p, lm, rank, world, live=live if rank == 0 else None,
                  evaluate=(lambda _: {"el/acc@1": 0.0}) if rank == 0 else None)
    torch.save({"weights": flat(model), "losses": live.logged}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ddp_ranks_train_what_one_process_trains(setup, tmp_path):
    """Catches: replicas that drift apart (a missed all-reduce, `no_sync` at the step's last
    micro-batch, ranks resuming differently), a rank without its share of a loss term or a term
    that sees only its own rows (other per-term training or validation losses), the evaluation
    barrier or the validation collectives hanging or erroring, and the compiled LM failing under
    DDP. What DDP cannot reproduce is off: the link term (per rank by design) and dropout, both
    the graph encoder's (`dropout`, `attention_dropout`) and the LM's own (its config's): each
    rank draws masks for its own rows, which are not the masks one process draws for the whole
    batch, so with either on the runs agree only in distribution."""
    import torch.multiprocessing as mp
    from transformers import AutoModelForMaskedLM

    ds, lm_with_dropout, p = setup
    p = {**p, "link_weight": 0.0, "dropout": 0.0, "attention_dropout": 0.0, "max_steps": 6}
    lm = str(tmp_path / "lm")
    AutoModelForMaskedLM.from_pretrained(lm_with_dropout, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
                                         ).save_pretrained(lm)
    one_live = Live()
    one = flat(train(ds, tmp_path / "one", p, lm, live=one_live))
    torch.manual_seed(p["base"]["seed"])
    start = flat(build_model(p, lm))
    mp.spawn(_rank, args=(2, ds, lm, p, tmp_path, f"file://{tmp_path / 'store'}"), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])
    for name in ("train/loss", "train/contrastive", "train/name", "train/synonym", "val/loss"):
        assert_losses_close(ranks[0]["losses"][name], one_live.logged[name])
    assert drift(one, ranks[0]["weights"], start) < DRIFT
