"""Evaluate one model on one task; run for the base and the aligned model with the same protocol.

  python stages/evaluate.py MODEL_DIR TASK_DIR OUT_DIR --task NAME [-S evaluate.KEY=VALUE ...]

NAME is one of `evaluate.tasks` (params.yaml), which gives its kind:
  entity_linking  TASK_DIR/{queries,dictionary}.txt (CUI||text): zero-shot nearest-name ranking
  ner             TASK_DIR/{train,dev,test}.{PubTator,txt} (PubTator, or CoNLL-style BIO): fine-tuning
  classification  TASK_DIR/{train,dev,test}.{json,tsv} (BLURB: LinkBERT JSON lines, GAD TSV): fine-tuning
  pubmedqa        TASK_DIR/{ori_pqal,test_ground_truth}.json (PubMedQA's release): the official 10 folds
  multiple_choice TASK_DIR/{train,dev,test}.jsonl (MedQA-USMLE or MedMCQA): fine-tuning
Writes OUT_DIR/metrics.json (protocol, data sizes, seeds, figures), OUT_DIR/predictions.parquet
(for error analysis and paired tests) and OUT_DIR/params.json.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402
import torch  # noqa: E402

from bali import params  # noqa: E402
from bali.io import atomic_outputs, write_json  # noqa: E402


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
    if task["kind"] == "entity_linking":
        from bali.evaluation import entity_linking

        metrics, preds = entity_linking.run(args.model_dir, args.task_dir, p["entity_linking"], device,
                                            seen_concepts(p["entity_linking"]["seen_from"]))
    elif task["kind"] == "ner":
        from bali.evaluation import ner

        metrics, preds = ner.run(args.model_dir, args.task_dir, p["ner"], device, p["base"]["seed"])
    elif task["kind"] in ("classification", "pubmedqa", "multiple_choice"):
        import importlib

        from bali.evaluation.inputs import BadInput

        kind = importlib.import_module(f"bali.evaluation.{task['kind']}")
        try:
            metrics, preds = kind.run(args.model_dir, args.task_dir, task, p[task["kind"]], device, p["base"]["seed"])
        except (BadInput, FileNotFoundError) as e:  # bad input is a report, not a traceback
            raise SystemExit(f"evaluate {args.task}: {e}") from None
    else:
        raise SystemExit(f"evaluate: task kind must be entity_linking, ner, classification, pubmedqa or "
                         f"multiple_choice, not {task['kind']!r}")
    metrics = {"task": args.task, "kind": task["kind"], "model": str(args.model_dir), **metrics}
    with atomic_outputs(args.out_dir) as tmp:
        preds.write_parquet(tmp / "predictions.parquet", compression="zstd")
        write_json(tmp / "metrics.json", metrics)
        params.save_resolved(p, tmp, model_dir=str(args.model_dir), task_dir=str(args.task_dir), task=args.task)
    figures = {k: v for k, v in metrics.items() if isinstance(v, float)}
    print(f"evaluate {args.task}: {args.model_dir}: {figures} -> {args.out_dir}")


if __name__ == "__main__":
    main()
