"""Training examples: tokenised sentences with mention -> token spans, the training graph, node names.

  python stages/dataset.py GRAPH_DIR CORPUS_DIR LINK_DIR OUT_DIR [-S dataset.KEY=VALUE ...]

Writes OUT_DIR/examples.parquet (shards as in the corpus: doc_id, sent_id, split, input_ids,
mention_start/end as token spans, mention_node), nodes.parquet (training node -> graph node, CUI),
names.parquet (tokenised lower-cased names, held-out strings removed), graph.npz (CSR of the
undirected training graph with REL/RELA codes; self loops only with dataset.self_loops), tokenizer/ (the tokenizer used), stats.json, params.json.
"""
from pathlib import Path


import numpy as np
import polars as pl
import pyarrow as pa

from bali import params
from bali.data.examples import build_examples, contains_held_out, load_tokenizer, read_held_out
from bali.data.subgraph import node_names, restrict
from bali.hf import save_tokenizer
from bali.io import atomic_outputs, run_figures, write_json
from bali.names import name_keys
from bali.corpus import shard_names


def training_node_ids(mention_node: pl.Series, old_ids: np.ndarray) -> pl.Series:
    """Graph node ids -> training node ids (positions in the sorted `old_ids`, which hold every
    mentioned node): one binary search over the flat values, no per-shard hash map of the graph."""
    flat = np.searchsorted(old_ids, mention_node.explode().drop_nulls().to_numpy())
    offsets = np.zeros(len(mention_node) + 1, dtype=np.int64)
    np.cumsum(mention_node.list.len().fill_null(0).to_numpy(), out=offsets[1:])
    arr = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.uint32)))
    return pl.Series(mention_node.name, arr).cast(mention_node.dtype)


def main(argv=None):
    ap = params.stage_parser(__doc__, ("graph_dir", "umls_graph output"), ("corpus_dir", "corpus output"),
                             ("link_dir", "link output"), ("out_dir", "output folder"))
    args = ap.parse_args(argv)
    p = params.load("dataset", args.overrides, args.params)
    graph_dir, corpus_dir, link_dir = Path(args.graph_dir), Path(args.corpus_dir), Path(args.link_dir)
    tokenizer = load_tokenizer(p["tokenizer"])
    held_out = read_held_out(p["held_out"])
    seeds = (pl.scan_parquet(link_dir / "mentions.parquet").select("node_id").unique()
             .collect(engine="streaming")["node_id"].to_numpy())
    # The edge table and the node table are scanned, never loaded whole: memory follows the training graph.
    g = restrict(pl.scan_parquet(graph_dir / "edges.parquet"), seeds, p["hops"], p["self_loops"])
    stats = {key: 0 for key in ("sentences_with_mentions", "mentions_in", "mentions_kept", "mentions_dropped_truncated",
                                "sentences_dropped_no_mention_left", "mentions_dropped_held_out",
                                "sentences_dropped_held_out")}
    old_ids, graph_edges = g["old_ids"], len(g["indices"])
    with atomic_outputs(args.out_dir) as tmp:
        # The graph, the nodes and their names are written and let go before the sentences are read:
        # the peak is the larger of the two phases, not their sum.
        np.savez(tmp / "graph.npz", **g)
        del g
        nodes = (pl.scan_parquet(graph_dir / "nodes.parquet").select("node_id", "cui", "name", "names")
                 .filter(pl.col("node_id").is_in(pl.Series(old_ids).implode())).collect(engine="streaming").sort("node_id"))
        names = node_names(nodes, old_ids, held_out, tokenizer, p["name_max_length"], stats)
        names.write_parquet(tmp / "names.parquet", compression="zstd")
        n_names = names.height
        nodes.select("node_id", "cui", "name").with_row_index("node").write_parquet(tmp / "nodes.parquet", compression="zstd")
        del nodes, names
        (tmp / "examples.parquet").mkdir()
        split_counts = {"train": 0, "val": 0}
        for name in shard_names(corpus_dir):
            sentences = pl.read_parquet(corpus_dir / "sentences.parquet" / f"{name}.parquet")
            mentions = pl.read_parquet(link_dir / "mentions.parquet" / f"{name}.parquet")
            # A sentence holding a held-out string would still train on it as context of other
            # mentions: it is dropped whole (with its mentions), so no held-out string is ever seen.
            held_sent = sentences.filter(contains_held_out(sentences["text"], held_out)).select("doc_id", "sent_id")
            stats["sentences_dropped_held_out"] += held_sent.height
            held = name_keys(mentions["text"]).is_in(sorted(held_out))
            stats["mentions_dropped_held_out"] += int(held.sum())
            mentions = mentions.filter(~held).join(held_sent, on=["doc_id", "sent_id"], how="anti")
            sentences = sentences.join(held_sent, on=["doc_id", "sent_id"], how="anti")
            ex = build_examples(sentences, mentions, tokenizer, p["max_length"], p["base"]["seed"],
                                p["val_fraction"], stats)
            del sentences, mentions
            ex = ex.with_columns(training_node_ids(ex["mention_node"], old_ids))
            ex.write_parquet(tmp / "examples.parquet" / f"{name}.parquet", compression="zstd")
            for split, n in ex.group_by("split").len().iter_rows():
                split_counts[split] += n
        save_tokenizer(tokenizer, tmp / "tokenizer")
        stats.update(examples=split_counts, graph_nodes=len(old_ids), graph_edges=graph_edges,
                     mentioned_concepts=len(seeds), names=n_names, held_out_strings=len(held_out))
        write_json(tmp / "stats.json", {**stats, "run": run_figures()})
        params.save_resolved(p, tmp, graph_dir=str(graph_dir), corpus_dir=str(corpus_dir), link_dir=str(link_dir))
    print(f"dataset: {split_counts['train']:,} train / {split_counts['val']:,} val sentences, "
          f"{stats['mentions_kept']:,} mentions, graph of {len(old_ids):,} nodes -> {args.out_dir}")


if __name__ == "__main__":
    main()
