"""Benchmark: the umls_graph stage against a straightforward pandas implementation of the same logic.

  python bench/umls_graph.py [--concepts 1000000] [--workdir /tmp/bali-bench] [--skip-pandas]

Generates synthetic UMLS RRF files with ../shared/bench/gen_rrf.py (cached in WORKDIR), runs the
stage and the pandas baseline each in its own process (so each peak RSS is its own), checks that both
produce the same graph, and prints wall time, CPU seconds, input rows/s and peak RSS for each and
the ratios.
The last line is one JSON object with the figures.
"""
import argparse
import csv
import json
import os
import resource
import runpy
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEN_RRF = ROOT.parent / "shared" / "bench" / "gen_rrf.py"


def pandas_graph(meta: Path, out: Path) -> None:
    """What research code usually does: read_csv the needed columns, filter, drop_duplicates, map ids."""
    import pandas as pd

    read = dict(sep="|", header=None, quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                encoding_errors="replace", engine="c")
    conso = pd.read_csv(meta / "MRCONSO.RRF", usecols=[0, 1, 2, 4, 6, 14], **read)
    conso.columns = ["cui", "lat", "ts", "stt", "ispref", "str"]
    conso = conso[(conso.lat == "ENG") & (conso.str != "")]
    conso["pref"] = (conso.ts == "P") * 4 + (conso.stt == "PF") * 2 + (conso.ispref == "Y") * 1
    conso = conso.sort_values("cui", kind="stable")
    name = conso.loc[conso.groupby("cui", sort=True)["pref"].idxmax(), ["cui", "str"]].set_index("cui")["str"]
    names = conso.drop_duplicates(["cui", "str"]).groupby("cui", sort=True)["str"].agg(list)
    nodes = pd.DataFrame({"cui": names.index, "name": name.reindex(names.index).values, "names": names.values})
    node_id = pd.Series(range(len(nodes)), index=nodes.cui)

    rel = pd.read_csv(meta / "MRREL.RRF", usecols=[0, 3, 4, 7, 10], **read)
    rel.columns = ["cui1", "rel", "cui2", "rela", "sab"]
    rel = rel.drop_duplicates(["cui1", "cui2", "rel", "rela"])
    rel["src"], rel["dst"] = rel.cui2.map(node_id), rel.cui1.map(node_id)
    rel = rel.dropna(subset=["src", "dst"]).astype({"src": "int64", "dst": "int64"})
    edges = rel[["src", "dst", "rel", "rela", "sab"]].sort_values(["dst", "src", "rel", "rela"]).reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    nodes.to_parquet(out / "nodes.parquet")
    edges.to_parquet(out / "edges.parquet")


def bali_graph(meta: Path, out: Path) -> None:
    main = runpy.run_path(str(ROOT / "stages" / "umls_graph.py"))["main"]
    main([str(meta), str(out), "--params", str(ROOT / "params.yaml")])


def child(impl: str, meta: Path, out: Path) -> None:
    t0 = time.perf_counter()
    (bali_graph if impl == "bali" else pandas_graph)(meta, out)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": sum(os.times()[:2]),
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def run(impl: str, meta: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", impl, "--meta", str(meta), "--out", str(out)],
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def same_graph(a: Path, b: Path) -> bool:
    import polars as pl

    na, nb = pl.read_parquet(a / "nodes.parquet"), pl.read_parquet(b / "nodes.parquet")
    ea, eb = pl.read_parquet(a / "edges.parquet"), pl.read_parquet(b / "edges.parquet")
    nodes_ok = na.select("cui", "name", "names").equals(nb.select("cui", "name", "names"))
    cols = ["src", "dst", "rel", "rela", "sab"]
    eb = eb.with_columns(pl.col("src", "dst").cast(pl.UInt32))
    return nodes_ok and ea.select(cols).equals(eb.select(cols))


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(16 << 20), b""))


def truncated_mrrel(meta: Path, n: int) -> Path:
    """A sibling META folder with the same MRCONSO and MRSTY (links) and the first n MRREL rows."""
    out = meta.with_name(f"{meta.name}-rel{n}")
    if not (out / "MRREL.RRF").exists():
        out.mkdir(exist_ok=True)
        for f in ("MRCONSO.RRF", "MRSTY.RRF"):
            if not (out / f).exists():
                (out / f).symlink_to(meta / f)
        with open(meta / "MRREL.RRF", "rb") as src, open(out / "MRREL.RRF.tmp", "wb") as dst:
            dst.writelines(line for _, line in zip(range(n), src))
        (out / "MRREL.RRF.tmp").rename(out / "MRREL.RRF")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/bali-bench")
    ap.add_argument("--skip-pandas", action="store_true", help="only the stage (for full-release scale)")
    ap.add_argument("--mrrel-rows", type=int, help="keep only the first N MRREL rows (same concepts, fewer "
                    "relations: shows that peak RSS does not follow MRREL)")
    ap.add_argument("--child", choices=["bali", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--meta", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, Path(a.meta), Path(a.out))

    meta = Path(a.workdir) / f"rrf-{a.concepts}"
    if not (meta / "MRREL.RRF").exists():
        print(f"generating {a.concepts:,} concepts into {meta} ...", flush=True)
        subprocess.run([sys.executable, str(GEN_RRF), str(meta), "--concepts", str(a.concepts)], check=True)
    if a.mrrel_rows:
        meta = truncated_mrrel(meta, a.mrrel_rows)
    rows = {f: count_lines(meta / f) for f in ("MRCONSO.RRF", "MRREL.RRF")}
    n_rows = sum(rows.values())
    gib = sum((meta / f).stat().st_size for f in rows) / 2**30
    print(f"input: {rows['MRCONSO.RRF']:,} MRCONSO + {rows['MRREL.RRF']:,} MRREL rows ({gib:.2f} GiB)")

    figures = {"concepts": a.concepts, "mrconso_rows": rows["MRCONSO.RRF"], "mrrel_rows": rows["MRREL.RRF"]}
    for impl in ("bali",) + (() if a.skip_pandas else ("pandas",)):
        r = run(impl, meta, Path(a.workdir) / f"out-{impl}-{meta.name}")
        figures[impl] = {**r, "rows_per_s": n_rows / r["seconds"]}
        print(f"{impl:7s} {r['seconds']:8.1f} s ({r['cpu_seconds']:.1f} CPU s)  {n_rows / r['seconds']:>12,.0f} rows/s  "
              f"peak RSS {r['peak_rss_gb']:.2f} GiB", flush=True)
    if not a.skip_pandas:
        b, p = figures["bali"], figures["pandas"]
        figures["speedup"] = b["rows_per_s"] / p["rows_per_s"]
        figures["rss_ratio"] = b["peak_rss_gb"] / p["peak_rss_gb"]
        # On a shared machine the wall ratio follows other jobs' load; CPU seconds (the stage uses
        # both cores, pandas mostly one) do not.
        figures["cpu_ratio"] = p["cpu_seconds"] / b["cpu_seconds"]
        figures["same_graph"] = same_graph(Path(a.workdir) / f"out-bali-{meta.name}",
                                           Path(a.workdir) / f"out-pandas-{meta.name}")
        print(f"bali vs pandas: {figures['speedup']:.1f}x rows/s, {figures['cpu_ratio']:.1f}x fewer CPU seconds, "
              f"{figures['rss_ratio']:.2f}x peak RSS, "
              f"same graph: {figures['same_graph']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
