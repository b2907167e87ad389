"""Sentence / sentence-pair classification and regression in the BLURB (LinkBERT) JSON-lines format:
TASK_DIR/{train,dev,test}.json, one object per line with `sentence` (or `sentence1` + `sentence2`)
and `label`. The label's type decides the objective:
  a string or int  single-label, cross-entropy (ChemProt, DDI, GAD, PubMedQA, BioASQ): the published
                   code's one-hot labels under BCE are not repeated;
  a number         regression, MSE (BIOSSES);
  a list           multi-label, BCE per label (HoC).
The task's `metric` (params): micro_f1 (with `negative`: the class left out, ChemProt `false`, DDI
`DDI-false`), accuracy, pearson, or multilabel_micro_f1.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from bali.evaluation import finetune
from bali.evaluation.metrics import micro_f1, multilabel_micro_f1, pearson


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for no, line in enumerate(open(path, encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{no}: not JSON ({e.msg})") from None
        if "label" not in row or not ("sentence" in row or {"sentence1", "sentence2"} <= row.keys()):
            raise ValueError(f"{path}:{no}: needs `label` and `sentence` (or `sentence1` and `sentence2`)")
        rows.append(row)
    return rows


def kind_of(rows: list[dict]) -> str:
    label = rows[0]["label"]
    if isinstance(label, list):
        return "multi_label_classification"
    if isinstance(label, float):
        return "regression"
    return "single_label_classification"


def score(metric: str, gold: list, pred: list, negative) -> float:
    if metric == "micro_f1":
        return micro_f1([str(g) for g in gold], [str(p) for p in pred], None if negative is None else str(negative))
    if metric == "accuracy":
        return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0
    if metric == "pearson":
        return pearson(gold, pred)
    if metric == "multilabel_micro_f1":
        return multilabel_micro_f1([set(g) for g in gold], [set(p) for p in pred])
    raise ValueError(f"metric must be micro_f1, accuracy, pearson or multilabel_micro_f1, not {metric!r}")


def run(model_dir: str | Path, task_dir: str | Path, task: dict, p: dict, device: str) -> tuple[dict, "pl.DataFrame"]:
    """Fine-tune once per seed; (metrics with mean ± std, test predictions of every seed)."""
    import polars as pl
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = {s: read_jsonl(f) for s, f in finetune.split_files(Path(task_dir)).items()}
    problem = kind_of(data["train"])
    if problem == "single_label_classification":
        labels = sorted({str(r["label"]) for r in data["train"]})
    elif problem == "multi_label_classification":
        labels = sorted({str(x) for r in data["train"] for x in r["label"]})
    else:
        labels = ["score"]
    index = {lab: i for i, lab in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(rows):
        texts = [(r["sentence"],) if "sentence" in r else (r["sentence1"], r["sentence2"]) for r in rows]
        out = []
        for r, t in zip(rows, texts):
            ids = tok(*t, truncation=True, max_length=p["max_length"])["input_ids"]
            if problem == "single_label_classification":
                if str(r["label"]) not in index:
                    raise ValueError(f"{task_dir}: label {r['label']!r} is not in the training labels")
                y = index[str(r["label"])]
            elif problem == "multi_label_classification":
                y = [float(lab in {str(x) for x in r["label"]}) for lab in labels]
            else:
                y = float(r["label"])
            out.append({"input_ids": ids, "label": y})
        return out

    def collate(batch):
        ids, mask = finetune.padded([b["input_ids"] for b in batch])
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([b["label"] for b in batch])}

    def decode(logits: torch.Tensor) -> list:
        if problem == "single_label_classification":
            return [labels[i] for i in logits.argmax(-1).tolist()]
        if problem == "multi_label_classification":
            return [[lab for lab, on in zip(labels, row) if on] for row in (logits > 0).tolist()]
        return logits[:, 0].tolist()

    def gold(rows):
        if problem == "single_label_classification":
            return [str(r["label"]) for r in rows]
        return [[str(x) for x in r["label"]] for r in rows] if problem == "multi_label_classification" \
            else [float(r["label"]) for r in rows]

    enc = {s: encode(rows) for s, rows in data.items()}
    runs, out_rows = {"dev": [], "test": []}, []
    for seed in p["seeds"]:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=len(labels), problem_type=problem, id2label=dict(enumerate(labels)), label2id=index)
        finetune.train(model, enc["train"], collate, p, seed, device, desc=f"{task['name']} seed {seed}")
        for split in ("dev", "test"):
            logits = torch.cat(finetune.predict_logits(model, enc[split], collate, p["eval_batch_size"], device))
            pred = decode(logits)
            runs[split].append(score(task["metric"], gold(data[split]), pred, task.get("negative")))
            if split == "test":
                out_rows += [(seed, str(r.get("id", i)), json.dumps(g), json.dumps(y))
                             for i, (r, g, y) in enumerate(zip(data["test"], gold(data["test"]), pred))]
    metrics = {
        "protocol": f"{problem.replace('_', ' ')} fine-tuned {p['epochs']} epochs per seed (lr {p['lr']}, batch "
                    f"{p['batch_size']}), no model selection on dev; {task['metric']}"
                    + (f" without the negative class {task['negative']!r}" if task.get("negative") is not None else ""),
        "labels": labels, "examples": {s: len(v) for s, v in data.items()}, "seeds": list(p["seeds"]),
        "metric": task["metric"], **{split: {task["metric"]: finetune.mean_std(rs)} for split, rs in runs.items()},
    }
    metrics["score"] = metrics["test"][task["metric"]]["mean"]
    preds = pl.DataFrame(out_rows, schema={"seed": pl.Int64, "id": pl.String, "gold": pl.String, "pred": pl.String},
                         orient="row")
    return metrics, preds
