"""Evaluate one model on one task; run for the base and the aligned model with the same protocol.

  python stages/evaluate.py MODEL_DIR TASK_DIR OUT_DIR --task NAME [-S evaluate.KEY=VALUE ...] [--KEY VALUE ...]

NAME is one of `evaluate.tasks` (params.yaml). dvc.yaml also writes the task's whole entry on the command
line (`--name NAME --kind KIND --dir DIR ...`, DVC's dict unpacking): a cell's command then changes exactly
when its own entry does, so editing one task reruns that task's cells alone. The entry itself is read
from params.yaml (YAML keeps its types); the command's copy must agree with it. The entry's kind:
  entity_linking  zero-shot nearest-name ranking; `format`: pairs (TASK_DIR/{queries or SPLIT,dictionary}.txt,
                  CUI||text), gsc (GSC+ corpus/ + ann/), biosyn (*.concept); `dictionary`: a file or `graph`
  hierarchy       TASK_DIR/names.txt + TASK_DIR/SPLIT.txt (CHILD||PARENT): parent rank among all names
  similarity      TASK_DIR/*.csv (Term1, Term2, Mean): Spearman rho of cosine against the rating
  ner             TASK_DIR/{train,dev,test}.{PubTator,txt} (PubTator, or CoNLL-style BIO): fine-tuning
  classification  TASK_DIR/{train,dev,test}.{json,tsv} (BLURB: LinkBERT JSON lines, GAD TSV): fine-tuning
  pubmedqa        TASK_DIR/{ori_pqal,test_ground_truth}.json (PubMedQA's release): the official 10 folds
  multiple_choice TASK_DIR/{train,dev,test}.jsonl (MedQA-USMLE or MedMCQA): fine-tuning
Writes OUT_DIR/metrics.json (the few figures the task is compared on: a DVC metric),
OUT_DIR/results.json (everything: protocol, data sizes, seeds, input issues, figures),
OUT_DIR/predictions.parquet (for error analysis and paired tests) and OUT_DIR/params.json.
"""
from pathlib import Path

import torch

from bali import params
from bali.evaluation import Context
from bali.evaluation.kinds import evaluate, figures
from bali.evaluation.inputs import BadInput
from bali.io import atomic_outputs, write_json


def main(argv=None):
    ap = params.stage_parser(__doc__, ("model_dir", "an HF model folder (AutoModel)"), ("task_dir", "task data"),
                             ("out_dir", "output folder"))
    ap.add_argument("--task", required=True, help="a task name of evaluate.tasks")
    args, entry = ap.parse_known_args(argv)
    p = params.load("evaluate", args.overrides, args.params)
    tasks = {t["name"]: t for t in p["tasks"]}
    if args.task not in tasks:
        raise SystemExit(f"evaluate: no task {args.task!r} in evaluate.tasks ({', '.join(tasks)})")
    if entry and params.unpacked(entry) != params.unpacked(params.unpack(tasks[args.task])):
        raise SystemExit(f"evaluate {args.task}: the command's task entry {' '.join(entry)} is not the one in "
                         f"evaluate.tasks ({tasks[args.task]}): is dvc.yaml's command out of date?")
    device = p["device"] if p["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(p["base"]["seed"])
    ctx = Context(Path(args.model_dir), p, device, p["base"]["seed"])
    try:
        metrics, preds = evaluate(ctx, args.task_dir, tasks[args.task])
    except (BadInput, FileNotFoundError) as e:  # bad input is a report, not a traceback
        raise SystemExit(f"evaluate {args.task}: {e}") from None
    short = figures(metrics)
    with atomic_outputs(args.out_dir) as tmp:
        preds.write_parquet(tmp / "predictions.parquet", compression="zstd")
        write_json(tmp / "results.json", metrics)
        write_json(tmp / "metrics.json", short)
        params.save_resolved(p, tmp, model_dir=str(args.model_dir), task_dir=str(args.task_dir), task=args.task)
    print(f"evaluate {args.task}: {args.model_dir}: {short} -> {args.out_dir}")


if __name__ == "__main__":
    main()
