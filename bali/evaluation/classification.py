"""Sentence / sentence-pair classification and regression on BLURB's released formats, fine-tuned.

Files: TASK_DIR/{train,dev,test}.{json,tsv}:
  JSON lines (LinkBERT's BLURB `*_hf` files): one object per line, `sentence` (or `sentence1` +
      `sentence2`), `label`, optional `id`;
  TSV as released by BioBERT/BLURB (GAD, ChemProt, DDI): `index<TAB>sentence<TAB>label` (a header line
      `index sentence label` is skipped; two fields are `sentence label`).
The label's type decides the objective:
  a string or int       single-label, cross-entropy (ChemProt, DDI, GAD, PubMedQA, BioASQ): the published
                        code's one-hot labels under BCE are not repeated;
  a 0/1 list            multi-hot over positional labels "0".."K-1", BCE per label (HoC in LinkBERT's format);
  a list of names       multi-label, BCE per label;
  a float               regression, MSE (BIOSSES).
`metric` (the task's): micro_f1 (with `negative`, the class left out: ChemProt `false`, DDI `DDI-false`,
GAD `0`), accuracy, macro_f1, pearson, multilabel_micro_f1, or hoc_f1 (LinkBERT's HoC figure).
`folds` > 0 is the cross-validated protocol (BioASQ as the BALI authors ran it): the train and dev rows
pooled, split by scikit-learn's KFold(folds, shuffle=True, random_state=fold_seed), one fine-tuning per
fold (dev = the held-out part) and seed, every one scored on the test file.
A row with a missing field or a label outside the label set is skipped and reported with file and line;
above `max_malformed_fraction` of the rows the task fails with that report.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from bali.evaluation import inputs
from bali.lm import finetune
from bali.hf import load_pretrained
from bali.metrics import hoc_f1, macro_f1, micro_f1, multilabel_micro_f1, pearson

METRICS = ("micro_f1", "accuracy", "macro_f1", "pearson", "multilabel_micro_f1", "hoc_f1")


def read_rows(path: Path, problems: inputs.Problems) -> list[dict]:
    """{id, text: (sentence,) or (sentence1, sentence2), label, where} of every usable row of a file."""
    return read_tsv(path, problems) if path.suffix == ".tsv" else read_jsonl(path, problems)


def read_jsonl(path: Path, problems: inputs.Problems) -> list[dict]:
    rows = []
    for no, r in inputs.json_lines(path, problems):
        text = (r.get("sentence"),) if "sentence" in r else (r.get("sentence1"), r.get("sentence2"))
        if "label" not in r:
            problems.skip(path, no, "no `label`")
        elif not all(isinstance(t, str) and t.strip() for t in text):
            problems.skip(path, no, "no `sentence` (or `sentence1` and `sentence2`) text")
        else:
            problems.good()
            rows.append({"id": str(r.get("id", f"{path.name}:{no}")), "text": text, "label": r["label"],
                         "where": (path.name, no)})
    return rows


def read_tsv(path: Path, problems: inputs.Problems) -> list[dict]:
    rows = []
    for no, line in inputs.text_lines(path, problems):
        fields = line.split("\t")
        if no == 1 and [x.strip().lower() for x in fields] == ["index", "sentence", "label"]:
            continue
        if not line.strip():
            continue
        if len(fields) not in (2, 3) or not fields[-2].strip():
            problems.skip(path, no, f"expected `index sentence label` (3 tab-separated fields), got {len(fields)}")
            continue
        problems.good()
        rows.append({"id": fields[0] if len(fields) == 3 else f"{path.name}:{no}", "text": (fields[-2],),
                     "label": fields[-1].strip(), "where": (path.name, no)})
    return rows


def problem_of(rows: list[dict]) -> str:
    label = rows[0]["label"]
    if isinstance(label, list):
        multi_hot = all(isinstance(x, int) and not isinstance(x, bool) and x in (0, 1) for x in label)
        return "multi_hot" if multi_hot and label else "multi_label"
    if isinstance(label, float):
        return "regression"
    return "single_label"


def label_set(rows: list[dict], problem: str, given) -> list[str]:
    if given:
        return [str(x) for x in given]
    if problem == "single_label":
        return sorted({str(r["label"]) for r in rows})
    if problem == "multi_hot":
        return [str(i) for i in range(len(rows[0]["label"]))]
    if problem == "multi_label":
        return sorted({str(x) for r in rows for x in r["label"]})
    return ["score"]


def label_error(label, problem: str, labels: list[str]) -> str | None:
    """Why a row's label does not fit the task, or None."""
    if problem == "single_label":
        return None if not isinstance(label, (list, dict, float)) and str(label) in labels else \
            f"label {label!r} is not in the label set {labels}"
    if problem == "multi_hot":
        ok = isinstance(label, list) and len(label) == len(labels) and all(x in (0, 1) for x in label)
        return None if ok else f"label is not a {len(labels)}-value 0/1 list"
    if problem == "multi_label":
        bad = [x for x in label if str(x) not in labels] if isinstance(label, list) else [label]
        return f"labels {bad} are not in the label set" if bad else None
    return None if isinstance(label, (int, float)) and not isinstance(label, bool) else f"label {label!r} is not a number"


def gold_of(row: dict, problem: str, labels: list[str]):
    if problem == "single_label":
        return str(row["label"])
    if problem == "multi_hot":
        return [lab for lab, on in zip(labels, row["label"]) if on]
    if problem == "multi_label":
        return sorted(str(x) for x in row["label"])
    return float(row["label"])


def score(metric: str, gold: list, pred: list, negative=None, ids=None, labels=None) -> float:
    if metric == "micro_f1":
        return micro_f1([str(g) for g in gold], [str(p) for p in pred], None if negative is None else str(negative))
    if metric == "accuracy":
        return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0
    if metric == "macro_f1":
        return macro_f1(gold, pred, labels)
    if metric == "pearson":
        return pearson(gold, pred)
    if metric == "multilabel_micro_f1":
        return multilabel_micro_f1([set(g) for g in gold], [set(p) for p in pred])
    if metric == "hoc_f1":
        return hoc_f1([set(g) for g in gold], [set(p) for p in pred], ids)
    raise inputs.BadInput(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")


class Classifier:
    """One task's problem, label set and tokenizer: encodes rows, fine-tunes a fresh head per run,
    decodes logits. Shared by the classification and PubMedQA kinds."""

    def __init__(self, model_dir, problem: str, labels: list[str], p: dict, device: str):
        from transformers import AutoTokenizer

        self.model_dir, self.problem, self.labels, self.p, self.device = model_dir, problem, labels, p, device
        self.index = {lab: i for i, lab in enumerate(labels)}
        self.tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(self, rows: list[dict]) -> list[dict]:
        out = []
        for r in rows:
            ids = self.tok(*r["text"], truncation=True, max_length=self.p["max_length"])["input_ids"]
            if self.problem == "single_label":
                y = self.index[str(r["label"])]
            elif self.problem == "multi_hot":
                y = [float(x) for x in r["label"]]
            elif self.problem == "multi_label":
                y = [float(lab in {str(x) for x in r["label"]}) for lab in self.labels]
            else:
                y = float(r["label"])
            out.append({"input_ids": ids, "label": y})
        return out

    def collate(self, batch):
        ids, mask = finetune.padded([b["input_ids"] for b in batch], self.tok.pad_token_id or 0)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([b["label"] for b in batch])}

    def decode(self, logits: torch.Tensor) -> list:
        if self.problem == "single_label":
            return [self.labels[i] for i in logits.argmax(-1).tolist()]
        if self.problem in ("multi_hot", "multi_label"):
            return [[lab for lab, on in zip(self.labels, row) if on] for row in (logits > 0).tolist()]
        return logits[:, 0].tolist()

    def predict(self, model, encoded: list[dict]) -> list:
        if not encoded:
            return []
        return self.decode(torch.cat(finetune.predict_logits(model, encoded, self.collate, self.p["eval_batch_size"],
                                                             self.device)))

    def fit(self, train: list[dict], dev: list[dict], seed: int, dev_metric, desc: str):
        """A fresh model fine-tuned on `train` (encoded); with `select_best_on_dev`, its best epoch by
        `dev_metric(predictions on dev)`. Returns (model, per-epoch dev scores)."""
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(seed)  # the new head's initial weights
        hf_problem = {"single_label": "single_label_classification", "multi_hot": "multi_label_classification",
                      "multi_label": "multi_label_classification", "regression": "regression"}[self.problem]
        model = load_pretrained(AutoModelForSequenceClassification, self.model_dir, finetune.HEAD_NOTE,
                                num_labels=len(self.labels), problem_type=hf_problem,
                                id2label=dict(enumerate(self.labels)), label2id=self.index)[0]
        select = (lambda m: dev_metric(self.predict(m, dev))) if self.p["select_best_on_dev"] and dev else None
        curve = finetune.train(model, train, self.collate, self.p, seed, self.device, desc=desc, dev_score=select)
        return model, curve


def load_splits(task_dir: Path, task: dict, p: dict, seed: int, problems: inputs.Problems) -> tuple[dict, str]:
    """{train, dev, test} rows and how they were made; `train_from_test` > 0 carves train (and
    `dev_from_test` dev) out of the test file, seeded, and says so."""
    n_train, n_dev = task.get("train_from_test", 0), task.get("dev_from_test", 0)
    if n_train:
        test_file = finetune.split_files(task_dir, ("test",))["test"]
        rows = read_rows(test_file, problems)
        train, dev, test = inputs.carve(rows, n_train, n_dev, seed)
        return {"train": train, "dev": dev, "test": test}, (
            f"TRAINED ON PART OF THE TEST FILE (not a result): {n_train} train and {n_dev} dev rows drawn with "
            f"seed {seed} from {test_file.name}, scored on the other {len(test)}")
    files = finetune.split_files(task_dir)
    return {s: read_rows(f, problems) for s, f in files.items()}, ", ".join(f"{s} {f.name}" for s, f in files.items())


def runs_of(data: dict, p: dict) -> list[tuple[dict, list, list]]:
    """(run keys, train rows, dev rows) of every fine-tuning run: seeds, or folds x seeds."""
    if not p["folds"]:
        return [({"seed": s}, data["train"], data["dev"]) for s in p["seeds"]]
    from sklearn.model_selection import KFold

    pool = data["train"] + data["dev"]
    folds = KFold(n_splits=p["folds"], shuffle=True, random_state=p["fold_seed"]).split(pool)
    return [({"fold": k, "seed": s}, [pool[i] for i in tr], [pool[i] for i in dv])
            for k, (tr, dv) in enumerate(folds) for s in p["seeds"]]


def run(ctx, task_dir: str | Path, task: dict, p: dict):
    """Fine-tune once per run (seed, or fold x seed); (metrics with mean ± std, test predictions of every run)."""
    import polars as pl

    model_dir, device, seed = ctx.model_dir, ctx.device, ctx.seed
    p = inputs.task_params(p, task)
    metric = task["metric"]
    if metric not in METRICS:
        raise inputs.BadInput(f"task {task['name']!r}: metric must be one of {', '.join(METRICS)}, not {metric!r}")
    problems = inputs.Problems(p["max_malformed_fraction"])
    data, source = load_splits(Path(task_dir), task, p, seed, problems)
    if not data["train"]:
        raise inputs.BadInput(f"{task_dir}: no usable training rows\n  " + "\n  ".join(problems.lines()))
    problem = problem_of(data["train"])
    labels = label_set(data["train"], problem, task.get("labels"))
    for split, rows in data.items():
        kept = []
        for r in rows:
            why = label_error(r["label"], problem, labels)
            if why:
                problems.reject(*r["where"], why)
            else:
                kept.append(r)
        data[split] = kept
    problems.check()
    data = {s: inputs.sample(rows, p["max_train_examples"] if s == "train" else p["max_eval_examples"], seed)
            for s, rows in data.items()}
    clf = Classifier(model_dir, problem, labels, p, device)

    def metric_on(rows, pred):
        return score(metric, [gold_of(r, problem, labels) for r in rows], pred, task.get("negative"),
                     [r["id"] for r in rows], labels)

    test_enc = clf.encode(data["test"])
    runs = runs_of(data, p)
    scores, out_rows = {"dev": [], "test": []}, []
    for keys, train, dev in runs:
        dev_enc = clf.encode(dev)
        model, _ = clf.fit(clf.encode(train), dev_enc, keys["seed"], lambda pred, dev=dev: metric_on(dev, pred),
                           f"{task['name']} {keys}")
        if dev:
            scores["dev"].append(metric_on(dev, clf.predict(model, dev_enc)))
        pred = clf.predict(model, test_enc)
        scores["test"].append(metric_on(data["test"], pred))
        for r, y in zip(data["test"], pred):
            g = gold_of(r, problem, labels)
            out_rows.append({**keys, "id": r["id"], "gold": json.dumps(g), "pred": json.dumps(y),
                             **({"correct": g == y} if problem == "single_label" else {})})
    metrics = {
        "protocol": protocol(problem, p, metric, task.get("negative"), source),
        "labels": labels, "examples": {s: len(v) for s, v in data.items()}, "runs": [k for k, _, _ in runs],
        "seeds": list(p["seeds"]), "metric": metric, "input": problems.summary(),
        **{s: {metric: finetune.mean_std(v)} for s, v in scores.items() if v},
        "finetune": {k: p[k] for k in ("lr", "epochs", "batch_size", "max_length", "warmup_fraction", "weight_decay")},
    }
    metrics["score"] = metrics["test"][metric]["mean"]
    return metrics, pl.DataFrame(out_rows)


def protocol(problem: str, p: dict, metric: str, negative, source: str) -> str:
    runs = (f"{p['folds']}-fold cross-validation over train+dev (KFold, shuffled, seed {p['fold_seed']}) x "
            f"{len(p['seeds'])} seed(s)") if p["folds"] else f"{len(p['seeds'])} seed(s)"
    budget = ", ".join(f"{k} {p[k]}" for k in ("max_train_examples", "max_eval_examples") if p[k])
    return (f"{problem.replace('_', '-')} fine-tuning, {runs}, {p['epochs']} epochs (lr {p['lr']}, batch "
            f"{p['batch_size']}, max length {p['max_length']}), "
            + ("best epoch on dev" if p["select_best_on_dev"] else "last epoch, no model selection on dev")
            + f"; {metric}" + (f" without the negative class {negative!r}" if negative is not None else "")
            + (f"; budget: {budget}" if budget else "") + f"; data: {source}")
