"""The scispaCy linker's knowledge-base index (TF-IDF char 3-grams + nmslib HNSW) over the graph's names.

  python stages/link_kb.py GRAPH_DIR KB_DIR [--link-method METHOD] [-S link_kb.KEY=VALUE ...]

Built once and kept as its own DVC output, so `link.method=scispacy` runs reuse it. dvc.yaml passes
`link.method`: for any other linker KB_DIR holds only stats.json and params.json saying the index was
not built (minutes of work the demo does not use); switching to scispacy changes the command, so
DVC rebuilds this stage before `link`. Build settings
are the `link_kb` params (scispaCy's own defaults, M=100 and efConstruction=2000, take hours on
2 cores; the demo's build in seconds).
"""
from pathlib import Path


import polars as pl

from bali import params
from bali.io import atomic_outputs, write_json
from bali.linking.scispacy_linker import build_index, knowledge_base


def main(argv=None):
    ap = params.stage_parser(__doc__, ("graph_dir", "umls_graph output"), ("kb_dir", "output folder"))
    ap.add_argument("--link-method", default="scispacy", help="the link stage's method: the index is built "
                    "only for scispacy (default: %(default)s)")
    args = ap.parse_args(argv)
    p = params.load("link_kb", args.overrides, args.params)
    with atomic_outputs(args.kb_dir) as tmp:
        if args.link_method == "scispacy":
            nodes = pl.read_parquet(Path(args.graph_dir) / "nodes.parquet")
            build_index(knowledge_base(nodes), tmp, p)
            stats = {"built": True, "concepts": nodes.height}
        else:
            stats = {"built": False, "reason": f"link.method is {args.link_method}, not scispacy"}
        # No run figures here: KB_DIR is one DVC output whose hash must not change with timings.
        write_json(tmp / "stats.json", stats)
        params.save_resolved(p, tmp, graph_dir=str(args.graph_dir), link_method=args.link_method)
    done = f"index of {stats['concepts']:,} concepts' names" if stats["built"] else f"not built ({stats['reason']})"
    print(f"link_kb: {done} -> {args.kb_dir}")


if __name__ == "__main__":
    main()
