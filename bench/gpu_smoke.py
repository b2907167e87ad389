"""GPU smoke check before a long run (`make gpu-smoke`, after `make demo`; <= 10 minutes on one H100/H200).

  python bench/gpu_smoke.py [--device cuda|cpu] [--dry] [--dataset data/dataset] [--out reports/gpu_smoke.json]

Needs the demo's data/dataset (and data/demo/el, data/demo/hierarchy for the dev curves) and a CUDA
build of torch; imports no stage-only package (dvc, dvclive, spaCy): the training loop logs into a
JSON-lines recorder here. Parts, each one summary line and one entry of the JSON file:
  a. train  the paper profile's pretrain settings on a randomly initialised BERT-base-sized LM, batch
            256, 100 steps across the demo's epoch boundaries, validation loss and dev curves at steps
            0, 50 and 100, a checkpoint at 50; the process is SIGKILLed after step 52 and started again:
            it must resume at 50 and log steps 51-52 with the killed run's losses (bf16 tolerance).
  b. bench  `bench/pretrain.py --shape paper` (BALI vs plain MLM step, MFU) with TORCH_LOGS=recompiles.
  c. tests  `pytest -m gpu tests/test_gpu.py`.
  d. ddp    2 processes on the one GPU (gloo; NCCL refuses two ranks on one device): the compiled LM
            under DDP, grad_accum 2 (`no_sync`), validation collectives, rank 0's evaluation behind the
            gloo barrier; both ranks must end with identical weights.
Figures: step time, tokens/s (real tokens), peak GPU memory, MFU (part b), compiled graphs and
recompiles. Without CUDA (`--device cuda`) it says so and exits 0. `--device cpu --dry`: a tiny LM,
batch 16, a few steps, parts b and c skipped: the parts' logic, checked by the CPU tests.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PART_TIMEOUT_S = {"train": 330, "bench": 180, "tests": 150, "ddp": 120}
# The CPU dry run's two gloo ranks share a 2-core machine with whatever else runs there (the test suite,
# a pre-training queue): its limits are this many times the GPU's, so load alone does not kill a rank.
DRY_SLACK = 4


class Recorder:
    """The dvclive calls `bali.training.loop.train` makes, written as JSON lines as they happen (a killed
    run keeps what it logged). With `kill_at`, the process SIGKILLs itself after that many steps."""

    def __init__(self, path: Path, kill_at: int | None = None):
        self.path, self.kill_at, self.trained, self.metrics, self.step = path, kill_at, 0, {}, 0

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_param(self, name, value):
        self.write({"param": name, "value": value})

    def log_metric(self, name, value, plot=True):
        if name == "resumed_from_step":  # the points replayed from the checkpoint were the killed run's
            self.metrics = {}
            self.write({name: value})
            return
        self.metrics[name] = value

    def next_step(self):
        self.write({"time": time.perf_counter(), "step": self.step, "metrics": self.metrics})
        self.step += 1
        self.trained += "train/loss" in self.metrics  # not the evaluation before the first step
        self.metrics = {}
        if self.trained == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def pretrain_params(dry: bool, device: str, **overrides) -> dict:
    import yaml

    from bali import params

    p = params.load("pretrain", (), ROOT / "params.yaml")
    p.update(yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())["pretrain"])
    p.update(device=device, batch_size=16 if dry else 256, epochs=1000, workers=0 if dry else 4, val_batches=2 if dry else 5)
    return {**p, **overrides}


def save_lm(path: Path, vocab: int, dry: bool, small: bool = False) -> str:
    """A randomly initialised BERT with its MLM head: BERT-base (12 x 768), or a small one."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    size = {} if not (dry or small) else dict(hidden_size=64 if dry else 256, num_hidden_layers=2 if dry else 4,
                                                num_attention_heads=2 if dry else 4, intermediate_size=128 if dry else 1024)
    BertForMaskedLM(BertConfig(vocab_size=vocab, **size)).save_pretrained(path)
    return str(path)


def dev_curves(dataset: Path):
    """stages/pretrain.py's dev-curve evaluation (entity linking, hierarchy) when the demo's tasks exist."""
    import importlib.util

    el, hierarchy = ROOT / "data" / "demo" / "el", ROOT / "data" / "demo" / "hierarchy"
    el = Path(os.environ.get("BALI_SMOKE_EL", el))
    if not (el / "dictionary.txt").exists():
        return None
    spec = importlib.util.spec_from_file_location("pretrain_stage", ROOT / "stages" / "pretrain.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage.dev_curves(el, hierarchy if (hierarchy / "held_out_dev.txt").exists() else None, dataset / "tokenizer")


def child(args) -> None:
    """One training process of part a (args.rank None) or d (a DDP rank)."""
    import torch

    from bali.training.loop import train

    cfg = json.loads(Path(args.config).read_text())
    p, rank, world = cfg["params"], 0, 1
    if args.rank is not None:
        rank, world = args.rank, 2
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    evaluate = dev_curves(Path(cfg["dataset"])) if rank == 0 and p["eval_every"] else None
    live = Recorder(Path(cfg["log"]), cfg.get("kill_at")) if rank == 0 else None
    if rank == 0:
        live.write({"evaluate": evaluate is not None})
    model = train(Path(cfg["dataset"]), Path(cfg["run_dir"]), p, cfg["lm"], rank, world, live=live, evaluate=evaluate)
    cuda = torch.cuda.is_available() and p["device"] != "cpu"
    if args.rank is not None:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(cfg["run_dir"]) / f"rank{rank}.pt")
        torch.distributed.destroy_process_group()
    if rank == 0:
        live.write({"peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})


def run_child(cfg: dict, workdir: Path, name: str, timeout: float, ranks=(None,)) -> list[subprocess.CompletedProcess]:
    (workdir / f"{name}.json").write_text(json.dumps(cfg))
    base = [sys.executable, __file__, "--child", "--config", str(workdir / f"{name}.json")]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if ranks != (None,):
        with socket.socket() as s:  # a free port for the rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", LOCAL_RANK="0")
    procs = [subprocess.Popen(base + ([] if r is None else ["--rank", str(r)]), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**env, "RANK": str(r or 0)}) for r in ranks]
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def read_log(path: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    steps = [x for x in lines if "metrics" in x]
    return steps, {k: v for x in lines if "metrics" not in x for k, v in x.items()}


def step_figures(steps: list[dict], p: dict, mean_tokens: float) -> dict:
    """Median seconds per step over steps without an evaluation, real tokens/s from it."""
    times = [b["time"] - a["time"] for a, b in zip(steps, steps[1:]) if not any(k.startswith("val/") for k in b["metrics"])]
    step_s = statistics.median(times) if times else None
    graphs = [s["metrics"]["compiled_graphs"] for s in steps if "compiled_graphs" in s["metrics"]]
    return {"step_s": step_s, "tokens_per_s": p["batch_size"] * p["grad_accum"] * mean_tokens / step_s if step_s else None,
            "compiled_graphs": graphs[-1] if graphs else None}


def part_train(a, workdir: Path, dataset: Path, lm: str, mean_tokens: float, per_epoch: int) -> dict:
    total, every, kill_at = (4, 2, 3) if a.dry else (100, 50, 52)
    p = pretrain_params(a.dry, a.device, max_steps=total, checkpoint_every=every, eval_every=every)
    cfg = {"params": p, "dataset": str(dataset), "lm": lm, "run_dir": str(workdir / "train-run")}
    killed = run_child({**cfg, "log": str(workdir / "killed.jsonl"), "kill_at": kill_at}, workdir, "killed",
                       PART_TIMEOUT_S["train"])[0]
    resumed = run_child({**cfg, "log": str(workdir / "resumed.jsonl")}, workdir, "resumed", PART_TIMEOUT_S["train"])[0]
    (k_steps, _), (r_steps, extra) = read_log(workdir / "killed.jsonl"), read_log(workdir / "resumed.jsonl")
    killed_train = {s["step"]: s["metrics"]["train/loss"] for s in k_steps if "train/loss" in s["metrics"]}
    resumed_train = {s["step"]: s["metrics"]["train/loss"] for s in r_steps if "train/loss" in s["metrics"]}
    resumed_from = extra.get("resumed_from_step")
    redone = [(killed_train[s], v) for s, v in sorted(resumed_train.items()) if s in killed_train]  # trained twice
    rel = max((abs(x - y) / max(abs(x), 1e-8) for x, y in redone), default=None)
    tol = 1e-5 if a.device == "cpu" else 3e-2  # bf16 autocast and GPU atomics are not bit-exact
    val_points = sum(any(k.startswith("val/") for k in s["metrics"]) for s in k_steps + r_steps)
    curve_points = sum(any(k.startswith("el/") for k in s["metrics"]) for s in k_steps + r_steps)
    ok = (killed.returncode == -signal.SIGKILL and resumed.returncode == 0 and resumed_from == every
          and len(redone) == kill_at - every and rel is not None and rel <= tol and len(killed_train) == kill_at
          and sorted(resumed_train) == list(range(every + 1, total + 1)))
    return {"ok": ok, "killed_rc": killed.returncode, "resumed_rc": resumed.returncode, "steps": total,
            "killed_after": len(killed_train), "resumed_from": resumed_from, "redone_steps": len(redone),
            "redone_loss_max_rel_diff": rel, "tolerance": tol, "epoch_boundaries_crossed": (total - 1) // per_epoch,
            "validation_points": val_points, "dev_curve_points": curve_points, "evaluate": extra.get("evaluate"),
            "peak_gpu_gib": extra.get("peak_gpu_gib"), **step_figures(r_steps, p, mean_tokens),
            "stderr_tail": "" if resumed.returncode == 0 else resumed.stderr[-1500:]}


def part_bench(a, workdir: Path, dataset: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "pretrain.py"), "--shape", "paper", "--device", a.device,
           "--dataset", str(dataset), "--warmup", "3", "--steps", "3"]
    env = {**os.environ, "TORCH_LOGS": "recompiles", "PYTHONPATH": str(ROOT)}
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=PART_TIMEOUT_S["bench"])
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {PART_TIMEOUT_S['bench']} s"}
    last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "{}"
    figures = json.loads(last) if res.returncode == 0 else {}
    keep = ("bali_step_s", "mlm_step_s", "ratio", "tokens_per_s", "peak_gpu_gib", "mfu_bali_step", "mfu_mlm_step",
            "compiled_graphs_bali", "compiled_graphs_total")
    return {"ok": res.returncode == 0, **{k: figures.get(k) for k in keep},
            "recompiles": res.stderr.count("Recompiling function"),
            "stderr_tail": "" if res.returncode == 0 else res.stderr[-1500:]}


def part_tests(a) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_gpu.py")]
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=PART_TIMEOUT_S["tests"],
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {PART_TIMEOUT_S['tests']} s"}
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    return {"ok": res.returncode == 0, "summary": summary, "tail": "" if res.returncode == 0 else res.stdout[-2000:]}


def part_ddp(a, workdir: Path, dataset: Path, lm: str, mean_tokens: float) -> dict:
    import torch

    total = 4 if a.dry else 8
    p = pretrain_params(a.dry, a.device, max_steps=total, checkpoint_every=total, eval_every=total // 2, grad_accum=2,
                        batch_size=16 if a.dry else 64, workers=0 if a.dry else 2)
    cfg = {"params": p, "dataset": str(dataset), "lm": lm, "run_dir": str(workdir / "ddp-run"),
           "log": str(workdir / "ddp.jsonl")}
    ranks = run_child(cfg, workdir, "ddp", PART_TIMEOUT_S["ddp"] * (DRY_SLACK if a.dry else 1), ranks=(0, 1))
    steps, extra = read_log(workdir / "ddp.jsonl")
    ok = all(r.returncode == 0 for r in ranks)
    diff = None
    if ok:
        w0, w1 = (torch.load(workdir / "ddp-run" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
        diff = max(float((w0[k].float() - w1[k].float()).abs().max()) for k in w0)
    return {"ok": ok and diff == 0.0, "ranks_rc": [r.returncode for r in ranks], "steps": total,
            "replica_max_abs_diff": diff, "validation_points": sum(any(k.startswith("val/") for k in s["metrics"]) for s in steps),
            "evaluate": extra.get("evaluate"), "peak_gpu_gib": extra.get("peak_gpu_gib"),
            **step_figures(steps, p, mean_tokens),
            "stderr_tail": "" if ok else "\n".join(r.stderr[-1200:] for r in ranks)}


def summary(name: str, r: dict) -> str:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
             if k not in ("stderr_tail", "tail") and v is not None}
    return f"gpu-smoke {name}: {'ok' if r.get('ok') else 'FAILED'} " + " ".join(f"{k}={v}" for k, v in shown.items() if k != "ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--dry", action="store_true", help="tiny LM, a few steps, parts b and c skipped")
    ap.add_argument("--dataset", default=str(ROOT / "data" / "dataset"))
    ap.add_argument("--out", default=str(ROOT / "reports" / "gpu_smoke.json"))
    ap.add_argument("--parts", default="train,bench,tests,ddp")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    try:
        import torch
    except Exception as e:  # a bare machine's python without torch, or a torch built for another CUDA: one line
        print(f"gpu-smoke: no usable torch in {sys.executable} ({type(e).__name__}: {e}); nothing run")
        return 1

    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-smoke: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda}); nothing run")
        return 0
    dataset = Path(a.dataset)
    if not (dataset / "examples.parquet").exists():
        raise SystemExit(f"gpu-smoke: {dataset} has no examples.parquet: run `make demo` first (or pass --dataset)")
    from bali.data.batches import BucketBatchSampler
    from bali.data.training_data import TrainingData

    data = TrainingData(dataset)
    mean_tokens = float(data.lengths().mean())
    t0, figures = time.perf_counter(), {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
                                        "torch": torch.__version__, "dry": a.dry}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for part in a.parts.split(","):
            if a.dry and part in ("bench", "tests"):
                result = {"ok": True, "skipped": "dry run"}
            elif part == "train":
                per_epoch = len(BucketBatchSampler(data.lengths(), 16 if a.dry else 256, 0))
                lm = save_lm(workdir / "lm-base", len(data.tokenizer), a.dry)
                result = part_train(a, workdir, dataset, lm, mean_tokens, per_epoch)
            elif part == "bench":
                result = part_bench(a, workdir, dataset)
            elif part == "tests":
                result = part_tests(a)
            elif part == "ddp":
                lm = save_lm(workdir / "lm-small", len(data.tokenizer), a.dry, small=True)
                result = part_ddp(a, workdir, dataset, lm, mean_tokens)
            else:
                raise SystemExit(f"gpu-smoke: unknown part {part!r}")
            figures[part] = result
            print(summary(part, result), flush=True)
            if result.get("stderr_tail") or result.get("tail"):
                print(result.get("stderr_tail") or result.get("tail"), file=sys.stderr)
    figures["wall_s"] = time.perf_counter() - t0
    figures["ok"] = all(figures[p]["ok"] for p in a.parts.split(","))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(a.out).with_suffix(".tmp")
    tmp_out.write_text(json.dumps(figures, indent=2))
    os.replace(tmp_out, a.out)
    print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
