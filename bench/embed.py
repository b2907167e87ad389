"""Benchmark: dictionary names embedded by the base model through `bali.lm.encoder.embed`, against
the same run's plain-matmul bound.

  python bench/embed.py [--precision float32|bf16] [--names 4096] [--source dictionary|dataset] [--threads 2]
                        [--device cpu|cuda] [--profile]

Names: a seeded sample of `--names` rows of the demo's entity-linking dictionary
(data/demo/el/dictionary.txt: what the evaluate stage embeds) or of the dataset's concept names
(data/dataset/names.parquet, after `dvc repro dataset`), embedded with models/base under
`evaluate.entity_linking`'s protocol (pooling, lower-casing, max length, batch size; params.yaml)
and the precision asked for (default: what `precision: auto` resolves to here).
One untimed pass under torch's FlopCounterMode counts the FLOPs the model runs (padding included)
and warms up; one timed pass gives names/s and the achieved FLOP/s; then the bound
(`throughput.matmul_flops_per_s`) at the same precision and thread count, their ratio, and the
bf16 matmul's FLOP/s over the float32 one's (about 1 where bf16 is emulated, as `auto` assumes).
`--profile`: torch.profiler's table of one more pass, by self CPU time. The last line is one JSON
object with the figures.
"""
import argparse
import json
import random
import time
from pathlib import Path

import torch
import yaml

from bali import precision as numerics
from bali.lm.encoder import embed

from throughput import bf16_over_float32, counting_flops, cpu_model, matmul_flops_per_s, sync

ROOT = Path(__file__).resolve().parents[1]


def names_of(source: str, n: int, seed: int = 0) -> list[str]:
    if source == "dataset":
        import polars as pl

        texts = pl.read_parquet(ROOT / "data" / "dataset" / "names.parquet", columns=["name"])["name"].to_list()
    else:
        lines = (ROOT / "data" / "demo" / "el" / "dictionary.txt").read_text(encoding="utf-8").splitlines()
        texts = [line.split("||", 1)[1] for line in lines if "||" in line]
    return random.Random(seed).sample(texts, min(n, len(texts)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", choices=("float32", "bf16"), help="default: what `auto` resolves to here")
    ap.add_argument("--names", type=int, default=4096)
    ap.add_argument("--source", choices=("dictionary", "dataset"), default="dictionary")
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one more pass")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    resolved = a.precision or numerics.resolve("auto", device)
    from transformers import AutoModel, AutoTokenizer

    from bali.hf import load_pretrained

    model = load_pretrained(AutoModel, a.model, "unused: vectors pool the last hidden states")[0].to(device).eval()
    tok = AutoTokenizer.from_pretrained(a.model)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]["entity_linking"]
    texts = names_of(a.source, a.names)
    kw = dict(pooling=p["pooling"], batch_size=p["batch_size"], max_length=p["max_length"], lowercase=p["lowercase"],
              device=a.device, precision=resolved)
    with counting_flops() as counter:
        embed(model, tok, texts, **kw)
    flops = counter.get_total_flops()
    sync(device)
    t0 = time.perf_counter()
    embed(model, tok, texts, **kw)
    sync(device)
    seconds = time.perf_counter() - t0
    bound = matmul_flops_per_s(resolved, device)
    distinct = len(set(t.lower() if p["lowercase"] else t for t in texts))
    lengths = [len(x) for x in tok([t.lower() for t in texts], truncation=True, max_length=p["max_length"])["input_ids"]]
    figures = {
        "names": len(texts), "distinct_names": distinct, "source": a.source, "model": Path(a.model).name,
        "precision": resolved, "threads": a.threads, "device": a.device,
        "cpu": cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "native_bf16": numerics.native_bf16(device), "seconds": seconds,
        "names_per_s": len(texts) / seconds, "model_flops": flops, "flops_per_s": flops / seconds,
        "matmul_flops_per_s": bound, "mfu_vs_matmul": flops / seconds / bound,
        "matmul_bf16_over_float32": bf16_over_float32(resolved, bound, device),
        "mean_tokens": sum(lengths) / len(lengths),
    }
    print(f"{len(texts):,} names ({distinct:,} distinct) of the {a.source}, {figures['model']} on {figures['cpu']}, "
          f"{resolved}, {a.threads} threads (bf16 native here: {figures['native_bf16']}):")
    print(f"  {figures['names_per_s']:,.0f} names/s; model {flops / seconds / 1e9:,.1f} GFLOP/s "
          f"({flops / len(texts) / 1e6:,.1f} MFLOP a name, padding included) against a plain matmul's "
          f"{bound / 1e9:,.1f} GFLOP/s: {figures['mfu_vs_matmul']:.0%}; a bf16 matmul runs at "
          f"{figures['matmul_bf16_over_float32']:.2f}x a float32 one here")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            embed(model, tok, texts, **kw)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
