"""The evaluation kinds by name, and the one entry point that runs a task through its kind's module.

The registry lives apart from the package's `__init__`: a module that imports one kind (pre-training's
dev curves import entity linking) does not load, nor depend on, every other kind.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from bali import precision
from bali.evaluation import Context

KINDS = {
    "entity_linking": "bali.evaluation.entity_linking",    # zero-shot nearest-name ranking
    "hierarchy": "bali.evaluation.hierarchy",              # the parent's rank among all names
    "similarity": "bali.evaluation.similarity",            # Spearman rho against ratings
    "ner": "bali.evaluation.ner",                          # token classification, fine-tuned
    "classification": "bali.evaluation.classification",    # BLURB sentence / relation classification
    "pubmedqa": "bali.evaluation.pubmedqa",                # PubMedQA's official folds
    "multiple_choice": "bali.evaluation.multiple_choice",  # MedQA-USMLE, MedMCQA
}


def evaluate(ctx: Context, task_dir: str | Path, task: dict) -> tuple[dict, object]:
    """Run `task` (an `evaluate.tasks` entry) with its kind's module and params; (metrics, predictions)."""
    from bali.evaluation.inputs import BadInput

    kind = task.get("kind")
    if kind not in KINDS:
        raise BadInput(f"task {task.get('name')!r}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    # `evaluate.precision` reaches the fine-tuning loop through its kind's params; recorded as resolved here
    numerics = precision.resolve(ctx.params.get("precision", "auto"), ctx.device)
    metrics, preds = importlib.import_module(KINDS[kind]).run(ctx, task_dir, task,
                                                              {**ctx.params[kind], "precision": numerics})
    if ctx._encoder is not None:
        metrics["embedding"] = ctx._encoder.stats
    return {"task": task["name"], "kind": kind, "model": str(ctx.model_dir), "numeric_precision": numerics,
            **metrics}, preds


def figures(metrics: dict) -> dict[str, float]:
    """The few numbers a run is compared on (the DVC metric of an evaluation): the top-level figures
    of its full results, speeds aside, and Spearman's rho per file of a similarity task. Counts,
    protocol, input issues and per-seed runs stay in the full results."""
    out = {k: v for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_per_s")}
    for name, f in metrics.get("files", {}).items():
        out[f"{name} rho"] = f["spearman"]
    return out
