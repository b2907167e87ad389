"""PubMedQA (PQA-L) from its release files, with the official protocol.

TASK_DIR holds `ori_pqal.json` (1,000 expert-labelled questions: PMID -> {QUESTION, CONTEXTS[],
final_decision, ...}) and `test_ground_truth.json` (PMID -> label of the 500 official test questions).

The official split is remade from the release, by the rule of PubMedQA's `preprocess/split_dataset.py`
(here in words; the code below is written from this description):
  one random stream, Python's `random` seeded with 0, serves every draw, in this order;
  "split N ways, stratified": take the questions in file order, group them by final_decision in the
  order yes, no, maybe; shuffle each group (one shuffle per group, in that order) and cut it into N
  consecutive chunks of ceil(len / N) questions (the last chunk takes what is left); part i is chunk i
  of yes, then of no, then of maybe. If the last part ends up with a different size from the first,
  for each part but the last (in order) one of its questions is drawn at random (`choice` over the
  part in its order) and moved to the end of the last part;
  the 1,000 questions are split 2 ways: part 0 is the cross-validation pool, part 1 the test set (it
  must equal `test_ground_truth.json`'s 500 PMIDs: checked); the pool is then split 10 ways, and fold
  k trains on the 9 other parts (450 questions) and selects on part k (50).
Each fold fine-tunes a fresh classifier (reasoning-required setting: question and the joined contexts
as a sentence pair; single-label cross-entropy over yes / no / maybe, not the reference code's one-hot
BCE), keeps its best epoch by dev accuracy, and is scored on the 500 test questions: accuracy and
macro-F1, mean ± std over folds (x seeds).
"""
from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

from bali.evaluation import inputs
from bali.lm import finetune
from bali.evaluation.classification import Classifier
from bali.metrics import macro_f1

LABELS = ["yes", "no", "maybe"]  # the split rule's group order


def stratified_parts(pmids: list[str], label: dict[str, str], n: int, rng: random.Random) -> list[list[str]]:
    parts: list[list[str]] = [[] for _ in range(n)]
    for lab in LABELS:
        group = [p for p in pmids if label[p] == lab]
        rng.shuffle(group)
        size = math.ceil(len(group) / n)
        for i in range(n):
            parts[i] += group[i * size:(i + 1) * size] if i < n - 1 else group[i * size:]
    if len(parts[-1]) != len(parts[0]):
        for part in parts[:-1]:
            moved = rng.choice(part)
            part.remove(moved)
            parts[-1].append(moved)
    return parts


def official_split(pmids: list[str], label: dict[str, str]) -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """(test PMIDs, [(train PMIDs, dev PMIDs) of fold k for k in 0..9]) of PQA-L, as PubMedQA makes them."""
    rng = random.Random(0)
    pool, test = stratified_parts(pmids, label, 2, rng)
    parts = stratified_parts(pool, label, 10, rng)
    folds = [([p for j, part in enumerate(parts) if j != k for p in part], parts[k]) for k in range(10)]
    return test, folds


def read_release(task_dir: Path, problems: inputs.Problems) -> tuple[dict, list[str], dict[str, str], dict[str, str]]:
    """(usable rows by PMID, every PMID in file order, final_decision by PMID, test labels by PMID)."""
    path, truth_path = task_dir / "ori_pqal.json", task_dir / "test_ground_truth.json"
    for f in (path, truth_path):
        if not f.exists():
            raise inputs.BadInput(f"{task_dir}: no {f.name} (PubMedQA's release files: ori_pqal.json, "
                                  "test_ground_truth.json)")
    pqal, text = inputs.json_document(path)
    truth, _ = inputs.json_document(truth_path)
    if not isinstance(pqal, dict) or not isinstance(truth, dict):
        raise inputs.BadInput(f"{path.name} and {truth_path.name} must each be one JSON object keyed by PMID")
    line_of = {m.group(1): text.count("\n", 0, m.start()) + 1
               for m in re.finditer(r'^\s{0,8}"([^"]+)"\s*:\s*\{', text, re.M)}
    rows, label = {}, {}
    for pmid, e in pqal.items():
        where = (path.name, line_of.get(pmid, 0))
        decision = e.get("final_decision") if isinstance(e, dict) else None
        if decision not in LABELS:
            raise inputs.BadInput(f"{where[0]}:{where[1]}: PMID {pmid}: final_decision {decision!r} is not yes/no/"
                                  "maybe: the official split cannot be remade")
        label[pmid] = decision
        contexts = e.get("CONTEXTS")
        if not isinstance(e.get("QUESTION"), str) or not e["QUESTION"].strip():
            problems.skip(*where, f"PMID {pmid}: no QUESTION")
        elif not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts) or \
                not any(c.strip() for c in contexts):
            problems.skip(*where, f"PMID {pmid}: CONTEXTS is not a list of texts")
        else:
            problems.good()
            # as LinkBERT's preprocess_blurb.py joins them
            context = " ".join(c.strip() for c in contexts if c.strip())
            rows[pmid] = {"id": pmid, "text": (e["QUESTION"].strip(), context), "label": decision, "where": where}
    test_labels = {}
    for pmid, lab in truth.items():
        if pmid not in label:
            problems.skip(truth_path.name, 0, f"PMID {pmid} is not in {path.name}")
        elif lab != label[pmid]:
            problems.skip(truth_path.name, 0, f"PMID {pmid}: label {lab!r} differs from {path.name}'s {label[pmid]!r}")
        else:
            test_labels[pmid] = lab
    return rows, list(pqal), label, test_labels


def run(ctx, task_dir: str | Path, task: dict, p: dict):
    """One fine-tuning per official fold (the first `run_folds` of 10) and seed; (metrics, test predictions)."""
    import polars as pl

    model_dir, device, seed = ctx.model_dir, ctx.device, ctx.seed
    p = inputs.task_params(p, task)
    problems = inputs.Problems(p["max_malformed_fraction"])
    rows, pmids, label, test_labels = read_release(Path(task_dir), problems)
    test_ids, folds = official_split(pmids, label)
    if set(test_ids) != set(test_labels):
        raise inputs.BadInput(f"{task_dir}: the split remade from ori_pqal.json does not give test_ground_truth.json's "
                              f"{len(test_labels)} questions ({len(set(test_ids) ^ set(test_labels))} differ): not "
                              "PubMedQA's release files")
    problems.check()
    test = inputs.sample([rows[i] for i in test_ids if i in rows], p["max_eval_examples"], seed)
    clf = Classifier(model_dir, "single_label", LABELS, p, device)
    test_enc = clf.encode(test)

    def figures(rs, pred):
        gold = [r["label"] for r in rs]
        return {"accuracy": sum(g == y for g, y in zip(gold, pred)) / len(gold), "macro_f1": macro_f1(gold, pred, LABELS)}

    if not 1 <= p["run_folds"] <= 10:
        raise inputs.BadInput(f"pubmedqa.run_folds must be 1..10 (the official folds run), not {p['run_folds']}")
    runs, out_rows, examples = {"dev": [], "test": []}, [], {}
    for k, (train_ids, dev_ids) in enumerate(folds[:p["run_folds"]]):
        train = inputs.sample([rows[i] for i in train_ids if i in rows], p["max_train_examples"], seed + k)
        dev = inputs.sample([rows[i] for i in dev_ids if i in rows], p["max_eval_examples"], seed + k)
        examples = {"train": len(train), "dev": len(dev), "test": len(test)}
        train_enc, dev_enc = clf.encode(train), clf.encode(dev)
        for s in p["seeds"]:
            model, _ = clf.fit(train_enc, dev_enc, s, lambda pred, dev=dev: figures(dev, pred)["accuracy"],
                               f"{task['name']} fold {k} seed {s}")
            runs["dev"].append(figures(dev, clf.predict(model, dev_enc)))
            pred = clf.predict(model, test_enc)
            runs["test"].append(figures(test, pred))
            out_rows += [{"fold": k, "seed": s, "id": r["id"], "gold": json.dumps(r["label"]), "pred": json.dumps(y),
                          "correct": r["label"] == y} for r, y in zip(test, pred)]
    budget = ", ".join(f"{key} {p[key]}" for key in ("max_train_examples", "max_eval_examples") if p[key])
    metrics = {
        "protocol": f"PubMedQA PQA-L, reasoning-required (question + contexts), official split remade from the release "
                    f"(test = test_ground_truth.json's {len(test_labels)}), {p['run_folds']} of its 10 folds (450 train / 50 "
                    f"dev) x {len(p['seeds'])} seed(s); single-label cross-entropy over yes/no/maybe, {p['epochs']} "
                    f"epochs (lr {p['lr']}, batch {p['batch_size']}, max length {p['max_length']}), "
                    + ("best epoch by dev accuracy" if p["select_best_on_dev"] else "last epoch")
                    + "; accuracy and macro-F1, mean ± std over folds" + (f"; budget: {budget}" if budget else ""),
        "labels": LABELS, "examples": examples, "folds": p["run_folds"], "seeds": list(p["seeds"]), "metric": "accuracy",
        "input": problems.summary(),
        **{s: {m: finetune.mean_std([r[m] for r in rs]) for m in ("accuracy", "macro_f1")} for s, rs in runs.items()},
        "finetune": {k: p[k] for k in ("lr", "epochs", "batch_size", "max_length", "warmup_fraction", "weight_decay")},
    }
    metrics["score"] = metrics["test"]["accuracy"]["mean"]
    return metrics, pl.DataFrame(out_rows)
