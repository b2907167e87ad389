"""The published recipe at its own batch on one GPU (`make gpu-published`, after `make demo`):

  python bench/published_gpu.py [--minutes 6] [--batch 256] [--model models/base] [--out reports/published_gpu.json]
  python bench/published_gpu.py --dry --dataset DIR --el DIR --hierarchy DIR --out FILE   # CPU, tiny random BERT

Trains the paper profile's pretrain settings (profiles/paper.yaml over params.yaml: MLM with a fresh
untied head + mention <-> graph NT-Xent, 5 x GATv2, LM lr 2e-5, graph / head lr 1e-4, masking 0.15,
one star per occurrence, no clipping) at batch 256 on the demo's data/dataset, starting from the
demo's base LM (`--model`), for as many steps as fit in `--minutes` of training: a short calibration
run times the step (and torch.compile's first-step cost), and the run's cosine schedule then spans
exactly the steps that fit. Then the base LM and the aligned one are evaluated under the evaluate
stage's protocol (mean-pooled, lower-cased names of <= 32 tokens, cosine ranking) on the demo's
entity-linking dev and test halves (acc@1, acc@5) and its hierarchy probe's held-out dev and test
links (parent hit@1, hit@10), each paired over the same items (gain, paired-bootstrap 95 % interval,
exact McNemar p when scipy is there). One JSON file holds both models' figures, the steps done, the
collapse diagnostics (bali.training.diagnostics) at the start and the end, the GPU's name and the times.

Figures are only written from a GPU: without CUDA the script refuses (exit 2) unless `--dry`, which
runs the same path on the CPU with a tiny random BERT, batch 4 and 2 steps (its JSON says "dry": true;
tests/test_mechanism.py runs it). Imports no stage-only package (dvc, dvclive, spaCy).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALIBRATION_STEPS = 12  # the first few carry torch.compile's specialisations; the step time is the median of the rest


class Recorder:
    """The dvclive calls `bali.training.loop.train` makes, kept in memory: {name: {step: value}} and the
    time each step's record was closed."""

    def __init__(self):
        self.step, self.series, self.times, self.params = 0, {}, [], {}

    def log_param(self, name, value):
        self.params[name] = value

    def log_metric(self, name, value, plot=True):
        self.series.setdefault(name, {})[self.step] = value

    def next_step(self):
        self.times.append((self.step, time.perf_counter()))
        self.step += 1


def recipe(dry: bool, device: str, batch: int, steps: int, run_dir: Path) -> dict:
    """params.yaml's pretrain section with the paper profile's values, at this batch and step count."""
    import yaml

    from bali import params

    p = params.load("pretrain", (), ROOT / "params.yaml")
    p.update(yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())["pretrain"])
    p.update(device=device, batch_size=batch, max_steps=steps, epochs=1000, eval_every=0, checkpoint_every=10**9,
             keep_checkpoints=1, checkpoint_dir=str(run_dir), workers=0 if dry else 8)
    return p


def save_tiny_lm(path: Path, vocab: int) -> str:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    return str(path)


def timed_train(dataset: Path, p: dict, lm: str, run_dir: Path):
    from bali.training.loop import train

    live, t0 = Recorder(), time.perf_counter()
    model = train(dataset, run_dir, p, lm, live=live)
    return model, live, time.perf_counter() - t0


def calibrate(dataset: Path, p: dict, lm: str, work: Path) -> dict:
    """Seconds per optimiser step once compiled, and the run's fixed cost beyond its steps (start-up,
    compilation, the final checkpoint), from a short run of the same recipe."""
    _, live, wall = timed_train(dataset, {**p, "max_steps": CALIBRATION_STEPS}, lm, work / "calibration")
    ends = [t for _, t in live.times]
    gaps = [b - a for a, b in zip(ends, ends[1:])][CALIBRATION_STEPS // 2 - 1:]
    step_s = statistics.median(gaps)
    return {"steps": CALIBRATION_STEPS, "wall_s": wall, "step_s": step_s, "overhead_s": max(0.0, wall - CALIBRATION_STEPS * step_s)}


def ranking_figures(lm, tok, el_dir: Path, hierarchy_dir: Path, device: str) -> dict:
    """{task: (per-item 0/1 hits, {metric: value})}: entity linking's dev and test halves against its
    dictionary, the hierarchy probe's held-out dev and test links against every concept's name."""
    import numpy as np

    from bali.evaluation import entity_linking as el
    from bali.evaluation.hierarchy import parent_ranks
    from bali.lm.encoder import embed, top_k

    out = {}
    d_cuis, d_texts = el.read_pairs(el_dir / "dictionary.txt")
    names = embed(lm, tok, d_texts, device=device)
    for split in ("dev", "test"):
        q_cuis, q_texts = el.read_pairs(el_dir / f"{split}.txt")
        hit = el.hits(q_cuis, d_cuis, top_k(embed(lm, tok, q_texts, device=device), names, 5, device=device)[1])
        out[f"el_{split}"] = (hit[:, :1].any(1), el.accuracy_at(hit, (1, 5)))
    h_cuis, h_names = el.read_pairs(hierarchy_dir / "names.txt")
    row = {c: i for i, c in enumerate(h_cuis)}
    vecs = embed(lm, tok, h_names, device=device).cpu()
    for task, split in (("hierarchy_dev", "held_out_dev"), ("hierarchy_test", "held_out")):
        links = [(row[c], row[q]) for c, q in zip(*el.read_pairs(hierarchy_dir / f"{split}.txt")) if c in row and q in row]
        child, parent = (np.array(x, dtype=np.int64) for x in zip(*links))
        ranks = parent_ranks(vecs, child, parent)
        out[task] = (ranks <= 10, {"hit@1": float((ranks == 1).mean()), "hit@10": float((ranks <= 10).mean())})
    return out


def paired(base_hits, aligned_hits, seed: int) -> dict:
    import numpy as np

    from bali.metrics import mcnemar_exact, paired_bootstrap

    a, b = np.asarray(base_hits, float), np.asarray(aligned_hits, float)
    lo, hi = paired_bootstrap(a, b, seed=seed)
    try:
        p = mcnemar_exact(a > 0.5, b > 0.5)
    except ImportError:  # a bare GPU machine may lack scipy
        p = None
    return {"items": len(a), "delta": float(b.mean() - a.mean()), "ci95_low": lo, "ci95_high": hi, "mcnemar_p": p}


def ends(series: dict) -> dict:
    """First and last logged value of each series (the collapse figures, the losses)."""
    return {name: {"first": pts[min(pts)], "last": pts[max(pts)], "first_step": min(pts), "last_step": max(pts)}
            for name, pts in sorted(series.items()) if pts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=6.0, help="training time budget (calibration and evaluation on top)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"), help="the base LM (the demo's: MiniLM)")
    ap.add_argument("--dataset", default=str(ROOT / "data" / "dataset"))
    ap.add_argument("--el", default=str(ROOT / "data" / "demo" / "el"))
    ap.add_argument("--hierarchy", default=str(ROOT / "data" / "demo" / "hierarchy"))
    ap.add_argument("--out", default=str(ROOT / "reports" / "published_gpu.json"))
    ap.add_argument("--dry", action="store_true", help="CPU, tiny random BERT, batch 4, 2 steps: the path, not figures")
    a = ap.parse_args(argv)
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bali.hf import load_pretrained
    from bali.training.diagnostics import Eager

    if not a.dry and not torch.cuda.is_available():
        print(f"published-gpu: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
              "figures of the published recipe come only from a GPU run, nothing written (--dry runs the path on the CPU)")
        return 2
    dataset = Path(a.dataset)
    if not (dataset / "examples.parquet").exists():
        raise SystemExit(f"published-gpu: {dataset} has no examples.parquet: run `make demo` first (or pass --dataset)")
    device = "cpu" if a.dry else "cuda"
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(dataset / "tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = save_tiny_lm(work / "lm", len(tok)) if a.dry else a.model
        batch = 4 if a.dry else a.batch
        p = recipe(a.dry, device, batch, 2, work / "run")
        calibration = None
        if a.dry:
            steps = 2
        else:
            calibration = calibrate(dataset, p, base, work)
            steps = max(1, int((60 * a.minutes - calibration["overhead_s"]) / calibration["step_s"]))
            print(f"published-gpu: {calibration['step_s']:.3f} s per step at batch {batch}: {steps} steps in "
                  f"{a.minutes:g} minutes", flush=True)
        p["max_steps"] = steps
        model, live, train_s = timed_train(dataset, p, base, work / "run")
        # the LM's plain forward: the compiled one would compile again for evaluation's eval mode and shapes
        aligned = Eager(model.lm)
        base_lm = load_pretrained(AutoModel, base, "the vectors pool the last hidden states")[0].to(device).eval()
        t_eval = time.perf_counter()
        before = ranking_figures(base_lm, tok, Path(a.el), Path(a.hierarchy), device)
        after = ranking_figures(aligned, tok, Path(a.el), Path(a.hierarchy), device)
        eval_s = time.perf_counter() - t_eval
    seed = p["base"]["seed"]
    tasks = {task: {"base": before[task][1], "aligned": after[task][1],
                    "paired_hit": paired(before[task][0], after[task][0], seed)} for task in before}
    collapse = {k: v for k, v in live.series.items() if k.startswith("collapse/")}
    losses = {k: v for k, v in live.series.items() if k.startswith(("train/", "lr/"))}
    figures = {
        "dry": a.dry, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__, "base_model": str(base) if not a.dry else "tiny random BERT",
        "recipe": "profiles/paper.yaml pretrain over params.yaml", "batch_size": batch, "steps": steps,
        "minutes_budget": None if a.dry else a.minutes, "calibration": calibration, "train_s": train_s,
        "eval_s": eval_s, "wall_s": time.perf_counter() - t0, "sentences_seen": steps * batch,
        "precision": live.params.get("precision"),
        "params": {k: p[k] for k in ("lm_lr", "other_lr", "mlm_weight", "contrastive_weight", "layers", "residual",
                                     "zero_init", "lm_freeze_steps", "warmup_fraction", "max_grad_norm") if k in p},
        "tasks": tasks, "collapse": ends(collapse), "collapse_series": collapse, "losses": ends(losses),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(figures, indent=2))
    os.replace(tmp_out, out)
    for task, r in tasks.items():
        metric = "acc@1" if task.startswith("el") else "hit@10"
        d = r["paired_hit"]
        print(f"published-gpu {task}: {metric} base {r['base'][metric]:.3f} aligned {r['aligned'][metric]:.3f} "
              f"(paired {'hit@1' if task.startswith('el') else 'hit@10'} Δ {100 * d['delta']:+.1f} "
              f"[{100 * d['ci95_low']:+.1f}, {100 * d['ci95_high']:+.1f}] pts)")
    print(f"published-gpu: {steps} steps of batch {batch} on {figures['device']} in {train_s:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
