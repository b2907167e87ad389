"""Concept mentions in sentences, linked to UMLS graph nodes.

  python stages/link.py GRAPH_DIR CORPUS_DIR OUT_DIR [-S link.KEY=VALUE ...]

GRAPH_DIR is the umls_graph stage's output (nodes.parquet, codes.parquet), CORPUS_DIR the corpus
stage's. `link.method` picks the linker (bali.linking.methods.LINKERS): dictionary (default), pretagged,
scispacy, ner or recognizer. Writes OUT_DIR/mentions.parquet (a directory of shards), stats.json
(counts by reason) and params.json.
"""
from pathlib import Path


from bali import params
from bali.io import atomic_outputs, run_figures, write_json
from bali.linking.link import link


def main(argv=None):
    ap = params.stage_parser(__doc__, ("graph_dir", "umls_graph output"), ("corpus_dir", "corpus output"),
                             ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("link", args.overrides, args.params)
    with atomic_outputs(args.out_dir) as tmp:
        stats = link(Path(args.graph_dir), Path(args.corpus_dir), tmp, p)
        write_json(tmp / "stats.json", {**stats, "run": run_figures()})
        params.save_resolved(p, tmp, graph_dir=str(args.graph_dir), corpus_dir=str(args.corpus_dir))
    print(f"link ({p['method']}): {stats['mentions']:,} mentions of {stats['distinct_concepts']:,} concepts in "
          f"{stats['sentences_with_mention']:,} of {stats['sentences']:,} sentences -> {args.out_dir}")


if __name__ == "__main__":
    main()
