"""The concept / no-concept classifier of `link.method: recognizer`, fitted from the graph's names.

  python stages/recognizer_model.py GRAPH_DIR CORPUS_DIR BASE_MODEL OUT_DIR [-S recognizer_model.KEY=VALUE -S link.KEY=VALUE ...]

Positives are the names and synonyms of the kept concepts (`link.semantic_types`,
`link.descendants_of`); negatives are n-grams of those names and of up to `corpus_sentences` corpus
sentences that are no kept concept's name (bali/linking/recognizer.py). Features are BASE_MODEL's
input word-piece embeddings, mean-pooled. Writes OUT_DIR: model.npz (the logistic regression),
meta.json, stats.json (training data, accuracy on a held-out share) and params.json. When
`link.method` is not `recognizer` nothing is fitted: OUT_DIR holds only a note and params.json.
"""
import time
from pathlib import Path

import polars as pl

from bali import params
from bali.io import atomic_outputs, write_json
from bali.corpus import shard_names
from bali.linking.link import descendants, typed_nodes
from bali.linking.recognizer import fit

# What the fit reads of the link section: whether it is needed, and which concepts it learns (dvc.yaml's
# params list these keys; a test keeps the two together).
BORROWED = {"link": ("method", "semantic_types", "descendants_of")}


def corpus_texts(corpus_dir: Path, limit: int) -> list[str]:
    texts = []
    for name in shard_names(corpus_dir):
        if len(texts) >= limit:
            break
        texts += pl.read_parquet(corpus_dir / "sentences.parquet" / f"{name}.parquet", columns=["text"])["text"].to_list()
    return texts[:limit]


def main(argv=None):
    ap = params.stage_parser(__doc__, ("graph_dir", "umls_graph output"), ("corpus_dir", "corpus output"),
                             ("base_model", "the LM whose word-piece embeddings are the features"),
                             ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("recognizer_model", args.overrides, args.params, borrow=BORROWED)
    link_p = p["link"]
    with atomic_outputs(args.out_dir) as tmp:
        params.save_resolved(p, tmp, graph_dir=args.graph_dir, corpus_dir=args.corpus_dir, base_model=args.base_model)
        if link_p["method"] != "recognizer":
            (tmp / "README.md").write_text(f"No recognizer: link.method is {link_p['method']!r}; "
                                           "`-S link.method=recognizer` fits one here.\n")
            print(f"recognizer_model: not needed (link.method {link_p['method']}) -> {args.out_dir}")
            return
        t0 = time.perf_counter()
        graph_dir = Path(args.graph_dir)
        nodes = typed_nodes(pl.read_parquet(graph_dir / "nodes.parquet"), link_p["semantic_types"])
        nodes = descendants(graph_dir, nodes, link_p["descendants_of"])
        texts = corpus_texts(Path(args.corpus_dir), p["corpus_sentences"])
        stats = fit(nodes, texts, args.base_model, tmp, p, p["base"]["seed"])
        write_json(tmp / "stats.json", {**stats, "concepts": nodes.height, "corpus_sentences": len(texts),
                                        "seconds": time.perf_counter() - t0})
    print(f"recognizer_model: {stats['names']:,} names, {stats['negatives']:,} negatives; held-out accuracy "
          f"{stats['dev_accuracy']} -> {args.out_dir}")


if __name__ == "__main__":
    main()
