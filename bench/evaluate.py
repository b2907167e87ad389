"""Benchmark: zero-shot entity-linking ranking against a full-UMLS-size dictionary kept on disk.

  python bench/evaluate.py [--names 8000000] [--dim 768] [--queries 1000] [--workdir /tmp/bali-bench-eval]

A dictionary of `--names` unit vectors of `--dim` dimensions (clusters of ~50 near-synonyms around
random centres, as names of one concept sit together) is written once, chunk by chunk, as the
float16 file the embedding cache keeps (8 M x 768: 12 GB on disk); queries are noisy copies of
random names. Each figure comes from its own process, so each peak RSS is its own:
(1) `exact`: the evaluate stage's default ranking (`ranking.exact_top_k`, chunked reads);
(2) `ivfpq`: FAISS IVF-PQ with exact re-ranking (`ranking.ivfpq_top_k`, index build included and
timed apart), and its recall@k against (1);
(3) `baseline`: what the stage did before, every dictionary vector in RAM as float32 and the chunked
top-k over it, on the first `--baseline-names` names (the full dictionary would need
names x dim x 4 bytes: 24.6 GB at 8 M x 768, more than a 24 GB machine has), so its RSS per name
can be set against (1)'s. Last line: one JSON object.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLUSTER = 50  # names per synthetic concept cluster


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def dictionary(args) -> Path:
    """The float16 dictionary file, generated chunk by chunk (never whole in memory) and cached."""
    path = Path(args.workdir) / f"dict-{args.names}x{args.dim}.f16"
    if path.exists() and path.stat().st_size == args.names * args.dim * 2:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    centres = g.standard_normal((-(-args.names // CLUSTER), args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for lo in range(0, args.names, 262144):
            n = min(262144, args.names - lo)
            v = centres[np.arange(lo, lo + n) // CLUSTER] + g.standard_normal((n, args.dim), dtype=np.float32) * (0.6 / args.dim ** 0.5)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            f.write(v.astype(np.float16).tobytes())
    tmp.rename(path)
    return path


def queries(args, path: Path):
    import torch

    from bali.lm.ranking import VectorRows

    g = np.random.default_rng(1)
    src = VectorRows(path, args.dim, np.arange(args.names)).gather(np.sort(g.choice(args.names, args.queries, replace=False)))
    q = src.astype(np.float32) + g.standard_normal(src.shape, dtype=np.float32) * (0.3 / args.dim ** 0.5)
    return torch.nn.functional.normalize(torch.from_numpy(q), dim=1)


def part(args) -> dict:
    import torch

    from bali.lm import encoder, ranking

    torch.set_num_threads(args.threads)
    import faiss
    faiss.omp_set_num_threads(args.threads)
    path = dictionary(args)
    q = queries(args, path)
    store = ranking.VectorRows(path, args.dim, np.arange(args.names))
    before = peak_rss_gib()  # interpreter, libraries and queries: what the ranking adds is extra_gib
    out = {"part": args.part}
    t0 = time.perf_counter()
    if args.part == "exact":
        _, idx = ranking.exact_top_k(q, store, args.k)
        np.save(Path(args.workdir) / "exact.npy", idx.numpy())
    elif args.part == "ivfpq":
        p = {"nlist": args.nlist, "m": args.m, "nprobe": args.nprobe, "rerank": args.rerank, "train_size": args.train_size}
        index = ranking.build_ivfpq(store, p)
        out["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, idx = ranking.ivfpq_top_k(q, store, args.k, p, index=index)
        exact = torch.from_numpy(np.load(Path(args.workdir) / "exact.npy"))
        out[f"recall@{args.k}"] = ranking.recall_at(idx, exact)
    else:
        n = min(args.baseline_names, args.names)
        names = torch.from_numpy(store.read(0, n).astype(np.float32))  # the old cache: float32, whole, in RAM
        t0 = time.perf_counter()
        encoder.top_k(q, names, args.k)
        out["names"] = n
    seconds = time.perf_counter() - t0
    return {**out, "seconds": seconds, "queries_per_s": args.queries / seconds, "peak_rss_gib": peak_rss_gib(),
            "extra_gib": peak_rss_gib() - before}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=8_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--nprobe", type=int, default=256)
    ap.add_argument("--rerank", type=int, default=200)
    ap.add_argument("--train-size", type=int, default=100_000)
    ap.add_argument("--baseline-names", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/bali-bench-eval")
    ap.add_argument("--keep", action="store_true", help="keep the dictionary file (default: deleted at the end)")
    ap.add_argument("--part", choices=["generate", "exact", "ivfpq", "baseline"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "generate":
        dictionary(args)
        return
    if args.part:
        print(json.dumps(part(args)))
        return
    t0 = time.perf_counter()
    # Generated in a child: a process's ru_maxrss is inherited across fork and exec, so a parent
    # that had held the generator's arrays would raise every part's reported peak to its own.
    subprocess.run([sys.executable, __file__, "--part", "generate"] + [a for a in sys.argv[1:] if a != "--keep"], check=True)
    path = Path(args.workdir) / f"dict-{args.names}x{args.dim}.f16"
    print(f"dictionary: {args.names:,} x {args.dim} float16 = {path.stat().st_size / 2**30:.1f} GiB on disk "
          f"({time.perf_counter() - t0:.0f} s to write or find)", flush=True)
    figures = {"dictionary_names": args.names, "dim": args.dim, "queries": args.queries, "k": args.k,
               "ivfpq_params": {"nlist": args.nlist, "m": args.m, "nprobe": args.nprobe, "rerank": args.rerank}}
    for name in ("exact", "ivfpq", "baseline"):
        cmd = [sys.executable, __file__, "--part", name] + [a for a in sys.argv[1:] if a != "--keep"]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        figures[name] = r
        extra = f", index build {r['build_s']:.0f} s, recall@{args.k} {r[f'recall@{args.k}']:.4f}" if name == "ivfpq" else ""
        extra += f" (first {r['names']:,} names in RAM)" if name == "baseline" else ""
        print(f"{name:8s}: {r['queries_per_s']:,.1f} queries/s ({r['seconds']:.1f} s), peak RSS "
              f"{r['peak_rss_gib']:.2f} GiB{extra}", flush=True)
    base = figures["baseline"]
    figures["baseline_gib_at_full_size"] = round(args.names * args.dim * 4 / 2**30, 1)
    figures["summary"] = {"peak_rss_gib_exact": round(figures["exact"]["peak_rss_gib"], 2),
                          "peak_rss_gib_ivfpq": round(figures["ivfpq"]["peak_rss_gib"], 2),
                          "queries_per_s_exact": round(figures["exact"]["queries_per_s"], 2),
                          "queries_per_s_ivfpq": round(figures["ivfpq"]["queries_per_s"], 2),
                          f"recall@{args.k}_ivfpq": round(figures["ivfpq"][f"recall@{args.k}"], 4),
                          "baseline_vectors_gib_per_million_names": round(base["extra_gib"] / base["names"] * 1e6, 2)}
    print(f"exact: {figures['summary']['queries_per_s_exact']} queries/s at {figures['summary']['peak_rss_gib_exact']} GiB; "
          f"ivfpq: {figures['summary']['queries_per_s_ivfpq']} queries/s at {figures['summary']['peak_rss_gib_ivfpq']} GiB, "
          f"recall@{args.k} {figures['summary'][f'recall@{args.k}_ivfpq']}; the old float32-in-RAM ranking would hold "
          f"{figures['baseline_gib_at_full_size']} GiB of vectors")
    if not args.keep:
        path.unlink()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
