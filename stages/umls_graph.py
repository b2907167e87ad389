"""UMLS Metathesaurus -> concept graph.

  python stages/umls_graph.py META_DIR OUT_DIR [-S umls_graph.KEY=VALUE ...]

META_DIR holds MRCONSO.RRF and MRREL.RRF (MRSTY.RRF when present), e.g. a release's
`2020AB/META`. Writes OUT_DIR/{nodes,edges,codes}.parquet, stats.json (counts by reason) and
params.json (the resolved params). Params: the `umls_graph` section of params.yaml.
"""
import sys


from bali import params
from bali.kg import graph
from bali.io import atomic_outputs, run_figures, write_json
from bali.kg.umls import MalformedInputError


def main(argv=None):
    ap = params.stage_parser(__doc__, ("meta_dir", "UMLS META folder"), ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("umls_graph", args.overrides, args.params)
    try:
        with atomic_outputs(args.out_dir) as tmp:
            stats = graph.build(args.meta_dir, p, tmp)
            write_json(tmp / "stats.json", {**stats, "run": run_figures()})
            params.save_resolved(p, tmp, meta_dir=str(args.meta_dir))
    except MalformedInputError as e:
        sys.exit(f"umls_graph: {e}")
    print(f"umls_graph: {stats['nodes']:,} nodes, {stats['edges']:,} edges, "
          f"{stats['malformed_lines']} malformed lines -> {args.out_dir}")


if __name__ == "__main__":
    main()
