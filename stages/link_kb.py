"""The scispaCy linker's knowledge-base index (TF-IDF char 3-grams + nmslib HNSW) over the graph's names.

  python stages/link_kb.py GRAPH_DIR KB_DIR [-S link_kb.KEY=VALUE ...]

Built once and kept as its own DVC output, so `link.method=scispacy` runs reuse it. Build settings
are the `link_kb` params (scispaCy's own defaults, M=100 and efConstruction=2000, take hours on
2 cores; the demo's build in seconds).
"""
from pathlib import Path


import polars as pl

from bali import params
from bali.io import atomic_outputs
from bali.linking.scispacy_linker import build_index, knowledge_base


def main(argv=None):
    ap = params.stage_parser(__doc__, ("graph_dir", "umls_graph output"), ("kb_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("link_kb", args.overrides, args.params)
    nodes = pl.read_parquet(Path(args.graph_dir) / "nodes.parquet")
    with atomic_outputs(args.kb_dir) as tmp:
        build_index(knowledge_base(nodes), tmp, p)
        params.save_resolved(p, tmp, graph_dir=str(args.graph_dir))
    print(f"link_kb: index of {nodes.height:,} concepts' names -> {args.kb_dir}")


if __name__ == "__main__":
    main()
