"""Pre-tagged mentions (PubTator gold, BERN2 ids such as mesh:D003550, mim:…, NCBITaxon:…, CVCL_…) mapped
to UMLS concepts through MRCONSO's (SAB, CODE) -> CUI table (codes.parquet of the graph stage).

Ids are first brought to one spelling per source by `bali.corpus.pubtator.normalise_id` (again here,
so annotations from any reader map the same way): `MESH:`, `OMIM:`, `NCBITaxon:`, `NCBIGene:`,
`Cellosaurus:CVCL_…`, `CL:`, `CHEBI:`, `HP:`, `HGNC:`, `UMLS:`.

`sources` maps an id prefix to the UMLS source that holds its codes; the prefix is kept in the CODE
for sources that write it there (HPO codes are `HP:0000118`, HGNC codes `HGNC:5`). `UMLS:C…` ids are
CUIs already. An id whose prefix has no source, or whose code is not in the table, is counted by
prefix, never guessed.
"""
from __future__ import annotations

import polars as pl

from bali.corpus.pubtator import normalise_id


def id_table(ids: pl.Series, codes: pl.DataFrame, sources: dict, keep_prefix: list) -> pl.DataFrame:
    """id (as written), its normalised prefix and its cui (null when it does not map): one row per
    distinct id and concept."""
    frame = pl.DataFrame({"id": ids.unique()}).with_columns(
        norm=pl.col("id").map_elements(normalise_id, return_dtype=pl.String))  # distinct ids only: cheap
    frame = frame.with_columns(prefix=pl.col("norm").str.split_exact(":", 1).struct.field("field_0")
                               .fill_null("no_id"),
                               local=pl.col("norm").str.splitn(":", 2).struct.field("field_1"))
    direct = frame.filter(pl.col("prefix") == "UMLS").select("id", cui=pl.col("local"))
    coded = frame.filter(pl.col("prefix") != "UMLS").with_columns(
        sab=pl.col("prefix").replace_strict(sources, default=None),
        code=pl.when(pl.col("prefix").is_in(keep_prefix)).then(pl.col("norm")).otherwise(pl.col("local")))
    via = coded.join(codes, on=["sab", "code"], how="inner").select("id", "cui")
    found = pl.concat([direct, via]).unique()
    return frame.select("id", "prefix").join(found, on="id", how="left").sort("id", "cui", nulls_last=True)


def mentions(annotations: pl.DataFrame, sentences: pl.DataFrame, nodes: pl.DataFrame, codes: pl.DataFrame,
             sources: dict, keep_prefix: list, stats: dict) -> pl.DataFrame:
    """One row per (mention, concept) in sentence offsets; counts what could not be linked (by the
    id's normalised prefix: a source without a SAB, a code not in the release, a concept not a node)."""
    ann = annotations.with_row_index("mention").explode("ids").rename({"ids": "id"}).drop_nulls("id")
    table = id_table(ann["id"], codes, sources, keep_prefix)
    linked = ann.join(table, on="id", how="left").join(nodes.select("cui", "node_id"), on="cui", how="left")
    for prefix, n in linked.filter(pl.col("node_id").is_null()).group_by("prefix").len().sort("prefix").iter_rows():
        stats["ids_not_linked"][prefix] = stats["ids_not_linked"].get(prefix, 0) + n
    linked = linked.filter(pl.col("node_id").is_not_null())
    sents = sentences.select("doc_id", "sent_id", s_start="start", s_end="end", sentence="text")
    placed = (linked.join(sents, on="doc_id", how="inner")
              .filter((pl.col("start") >= pl.col("s_start")) & (pl.col("end") <= pl.col("s_end"))))
    stats["mentions_across_sentences"] += linked["mention"].n_unique() - placed["mention"].n_unique()
    return (placed.select("doc_id", "sent_id", start=pl.col("start") - pl.col("s_start"),
                          end=pl.col("end") - pl.col("s_start"), text="text", cui="cui", node_id="node_id",
                          score=pl.lit(1.0), method=pl.lit("pretagged"))
            .unique(["doc_id", "sent_id", "start", "end", "node_id"], maintain_order=True))


class Linker:
    """The `pretagged` method: the shard's annotations; the stage drops concepts outside the kept types."""

    typed = False

    def __init__(self, ctx):
        self.codes = pl.read_parquet(ctx.graph_dir / "codes.parquet")
        self.nodes, self.p = ctx.all_nodes, ctx.p

    def mentions(self, shard, stats: dict) -> pl.DataFrame:
        from bali.linking.base import MENTION_SCHEMA

        return mentions(shard.annotations, shard.sentences, self.nodes, self.codes, self.p["pretagged_sources"],
                        self.p["pretagged_keep_prefix"], stats).cast(MENTION_SCHEMA)


def build(ctx) -> Linker:
    return Linker(ctx)
