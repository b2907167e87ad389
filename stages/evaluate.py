"""Evaluate one model on one task; run for the base and the aligned model with the same protocol.

  python stages/evaluate.py MODEL_DIR TASK_DIR OUT_DIR --task NAME [-S evaluate.KEY=VALUE ...]

NAME is one of `evaluate.tasks` (params.yaml), which gives its kind:
  entity_linking  zero-shot nearest-name ranking; `format`: pairs (TASK_DIR/{queries or SPLIT,dictionary}.txt,
                  CUI||text), gsc (GSC+ corpus/ + ann/), biosyn (*.concept); `dictionary`: a file or `graph`
  hierarchy       TASK_DIR/names.txt + TASK_DIR/SPLIT.txt (CHILD||PARENT): parent rank among all names
  similarity      TASK_DIR/*.csv (Term1, Term2, Mean): Spearman rho of cosine against the rating
  ner             TASK_DIR/{train,dev,test}.{PubTator,txt} (PubTator, or CoNLL-style BIO): fine-tuning
  classification  TASK_DIR/{train,dev,test}.{json,tsv} (BLURB: LinkBERT JSON lines, GAD TSV): fine-tuning
  pubmedqa        TASK_DIR/{ori_pqal,test_ground_truth}.json (PubMedQA's release): the official 10 folds
  multiple_choice TASK_DIR/{train,dev,test}.jsonl (MedQA-USMLE or MedMCQA): fine-tuning
Writes OUT_DIR/metrics.json (protocol, data sizes, seeds, figures), OUT_DIR/predictions.parquet
(for error analysis and paired tests) and OUT_DIR/params.json.
"""
from pathlib import Path


import polars as pl
import torch

from bali import params
from bali.demo import hp_obo_path
from bali.io import atomic_outputs, write_json

EMBEDDING_KINDS = ("entity_linking", "hierarchy", "similarity")  # zero-shot: vectors of the model as it is


def seen_concepts(dataset_dir: str) -> set[str] | None:
    """CUIs mentioned in the pre-training dataset's training sentences."""
    if not dataset_dir:
        return None
    d = Path(dataset_dir)
    nodes = pl.scan_parquet(d / "examples.parquet").filter(pl.col("split") == "train") \
        .select(pl.col("mention_node").explode().alias("node")).unique()
    return set(pl.scan_parquet(d / "nodes.parquet").join(nodes, on="node").select("cui").collect()["cui"])


def main(argv=None):
    ap = params.stage_parser(__doc__, ("model_dir", "an HF model folder (AutoModel)"), ("task_dir", "task data"),
                             ("out_dir", "output folder"))
    ap.add_argument("--task", required=True, help="a task name of evaluate.tasks")
    args = ap.parse_args(argv)
    p = params.load("evaluate", args.overrides, args.params)
    tasks = {t["name"]: t for t in p["tasks"]}
    if args.task not in tasks:
        raise SystemExit(f"evaluate: no task {args.task!r} in evaluate.tasks ({', '.join(tasks)})")
    task = tasks[args.task]
    device = p["device"] if p["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(p["base"]["seed"])
    kind = task["kind"]
    if kind in EMBEDDING_KINDS:
        from bali.evaluation.embeddings import Encoder

        encoder = Encoder(args.model_dir, p["entity_linking"], device, p["embedding_cache"])
    if kind == "entity_linking":
        from bali.evaluation import entity_linking

        obo = Path(p["obo"]) if p["obo"] else hp_obo_path()
        metrics, preds = entity_linking.run(encoder, args.task_dir, task, p["entity_linking"], p["graph_dir"], obo,
                                            seen_concepts(p["entity_linking"]["seen_from"]))
    elif kind == "hierarchy":
        from bali.evaluation import hierarchy

        metrics, preds = hierarchy.run(encoder, args.task_dir, task, p["hierarchy"])
    elif kind == "similarity":
        from bali.evaluation import similarity

        metrics, preds = similarity.run(encoder, args.task_dir, task, p["similarity"], p["base"]["seed"])
    elif kind == "ner":
        from bali.evaluation import ner

        metrics, preds = ner.run(args.model_dir, args.task_dir, p["ner"], device, p["base"]["seed"])
    elif kind in ("classification", "pubmedqa", "multiple_choice"):
        import importlib

        from bali.evaluation.inputs import BadInput

        module = importlib.import_module(f"bali.evaluation.{kind}")
        try:
            metrics, preds = module.run(args.model_dir, args.task_dir, task, p[kind], device, p["base"]["seed"])
        except (BadInput, FileNotFoundError) as e:  # bad input is a report, not a traceback
            raise SystemExit(f"evaluate {args.task}: {e}") from None
    else:
        raise SystemExit(f"evaluate: task kind must be entity_linking, hierarchy, similarity, ner, classification, "
                         f"pubmedqa or multiple_choice, not {kind!r}")
    if kind in EMBEDDING_KINDS:
        metrics["embedding"] = encoder.stats
    metrics = {"task": args.task, "kind": task["kind"], "model": str(args.model_dir), **metrics}
    with atomic_outputs(args.out_dir) as tmp:
        preds.write_parquet(tmp / "predictions.parquet", compression="zstd")
        write_json(tmp / "metrics.json", metrics)
        params.save_resolved(p, tmp, model_dir=str(args.model_dir), task_dir=str(args.task_dir), task=args.task)
    figures = {k: v for k, v in metrics.items() if isinstance(v, float)}
    print(f"evaluate {args.task}: {args.model_dir}: {figures} -> {args.out_dir}")


if __name__ == "__main__":
    main()
