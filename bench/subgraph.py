"""Benchmark: the dataset stage's training graph (`bali.data.subgraph.restrict`) at the published scale.

  python bench/subgraph.py [--nodes 3000000] [--edges 12000000] [--seeds 600000] [--workdir /tmp/bali-bench]
                           [--baseline-rev REV]

Writes a synthetic graph-stage edge table (uniform random src/dst over NODES, UMLS-like REL and RELA
labels; cached in WORKDIR) and restricts it to the one-hop neighbourhood of SEEDS random nodes, each
run in its own process so each peak RSS is its own: the keys sorted in one part (`part_rows` above
the row count), in bounded parts (the default), and, with --baseline-rev, the restrict of that git
revision's bali/data/subgraph.py. Prints wall time, edge rows/s, the peak RSS above the process's
RSS before the call, the output's size, and the ratios; all runs must give the same graph. The last
line is one JSON object with the figures.
"""
import argparse
import hashlib
import json
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
RELS = ["CHD", "PAR", "RB", "RN", "RO", "RQ", "SIB", "SY", "AQ", "QB"]


def edges_file(workdir: Path, nodes: int, edges: int) -> Path:
    path = workdir / f"edges-{nodes}-{edges}.parquet"
    if not path.exists():
        rng = np.random.default_rng(0)
        relas = [""] + [f"rela_{i}" for i in range(600)]
        workdir.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"src": rng.integers(0, nodes, edges, dtype=np.uint32),
                      "dst": rng.integers(0, nodes, edges, dtype=np.uint32),
                      "rel": pl.Series(RELS).gather(rng.integers(0, len(RELS), edges)),
                      "rela": pl.Series(relas).gather(rng.zipf(1.5, edges).clip(1, len(relas)) - 1)}).write_parquet(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return path


def status_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc: unlike getrusage's ru_maxrss, which
    Linux carries over from the parent through fork and exec, VmHWM starts afresh with the new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(impl: str, path: Path, nodes: int, seeds: int, rev: str | None) -> None:
    if impl == "baseline":
        code = subprocess.run(["git", "show", f"{rev}:bali/data/subgraph.py"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "subgraph.py").write_text(code, encoding="utf-8")
            restrict = runpy.run_path(str(Path(tmp) / "subgraph.py"))["restrict"]
        extra = {}
    else:
        from bali.data.subgraph import restrict
        extra = {"part_rows": 1 << 62} if impl == "one part" else {}
    seed_ids = np.random.default_rng(1).choice(nodes, seeds, replace=False)
    before = status_bytes("VmRSS")
    t0 = time.perf_counter()
    g = restrict(pl.scan_parquet(path), seed_ids, 1, False, **extra)
    wall = time.perf_counter() - t0
    peak = status_bytes("VmHWM")
    digest = hashlib.sha256()
    for k in ("old_ids", "indptr", "indices", "rel", "rela"):
        digest.update(np.ascontiguousarray(g[k]).tobytes())
    print(json.dumps({"wall_s": wall, "peak_rss": peak, "rss_before": before, "entries": int(len(g["indices"])),
                      "graph_nodes": int(len(g["old_ids"])), "out_bytes": int(sum(g[k].nbytes for k in
                      ("old_ids", "indptr", "indices", "rel", "rela"))), "sha256": digest.hexdigest()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3_000_000)
    ap.add_argument("--edges", type=int, default=12_000_000)
    ap.add_argument("--seeds", type=int, default=600_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bali-bench"))
    ap.add_argument("--baseline-rev", help="also run the restrict of this git revision's bali/data/subgraph.py")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    path = edges_file(a.workdir, a.nodes, a.edges)
    if a.child:
        return child(a.child, path, a.nodes, a.seeds, a.baseline_rev)
    impls = ["one part", "parts"] + (["baseline"] if a.baseline_rev else [])
    figures = {}
    for impl in impls:
        cmd = [sys.executable, __file__, "--child", impl, "--nodes", str(a.nodes), "--edges", str(a.edges),
               "--seeds", str(a.seeds), "--workdir", str(a.workdir)] + \
              (["--baseline-rev", a.baseline_rev] if a.baseline_rev else [])
        f = figures[impl] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                                      cwd=ROOT).stdout.strip().splitlines()[-1])
        above = f["peak_rss"] - f["rss_before"]
        print(f"{impl:>9}: {f['wall_s']:7.1f} s  {a.edges / f['wall_s']:12,.0f} edge rows/s  peak RSS "
              f"{f['peak_rss'] / 2**30:.2f} GiB ({above / 2**30:.2f} above the {f['rss_before'] / 2**30:.2f} GiB "
              f"before the call)  output {f['out_bytes'] / 2**30:.2f} GiB: peak {f['peak_rss'] / f['out_bytes']:.1f}x, "
              f"call {above / f['out_bytes']:.1f}x  ({f['graph_nodes']:,} nodes, {f['entries']:,} entries)", flush=True)
    if len({f["sha256"] for f in figures.values()}) != 1:
        raise SystemExit("subgraph bench: the runs gave different graphs")
    one, parts = figures["one part"], figures["parts"]
    print(f"parts / one part: wall {parts['wall_s'] / one['wall_s']:.2f}x, peak RSS "
          f"{parts['peak_rss'] / one['peak_rss']:.2f}x (same graph)")
    if "baseline" in figures:
        base = figures["baseline"]
        print(f"parts / baseline ({a.baseline_rev}): wall {parts['wall_s'] / base['wall_s']:.2f}x, peak RSS "
              f"{parts['peak_rss'] / base['peak_rss']:.2f}x (same graph)")
    from throughput import cpu_model  # imports torch: only here, in the parent, after the measured runs

    print(json.dumps({"cpu": cpu_model(), **{k.replace(" ", "_"): v for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
