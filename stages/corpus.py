"""Corpus files -> documents, sentences and gold annotations.

  python stages/corpus.py INPUT OUT_DIR [-S corpus.KEY=VALUE ...]

INPUT is a file, a directory or a glob of PubMed/MEDLINE XML (.xml, .xml.gz: baseline and update
files, applied in name order), PubTator, or JSON Lines (id, title, abstract|text). Writes
OUT_DIR/{documents,sentences,annotations}.parquet (directories of shards), stats.json (counts
by reason) and params.json. Params: the `corpus` section of params.yaml.
"""
import sys


from bali import params
from bali.corpus.build import CorpusError, build, discover
from bali.io import atomic_outputs, run_figures, write_json


def main(argv=None):
    ap = params.stage_parser(__doc__, ("input", "corpus file, folder or glob"), ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("corpus", args.overrides, args.params)
    try:
        inputs = discover(args.input)
        with atomic_outputs(args.out_dir) as tmp:
            stats = build(inputs, tmp, p)
            write_json(tmp / "stats.json", {**stats, "run": run_figures()})
            params.save_resolved(p, tmp, input=str(args.input))
    except CorpusError as e:
        sys.exit(f"corpus: {e}")
    print(f"corpus: {stats['documents']:,} documents, {stats['sentences']:,} sentences, "
          f"{stats['malformed_records']} malformed records -> {args.out_dir}")


if __name__ == "__main__":
    main()
