"""Multiple-choice QA (MedQA-USMLE, MedMCQA), fine-tuned with AutoModelForMultipleChoice: the question
paired with each option, one score per option, cross-entropy over the options.

Files: TASK_DIR/{train,dev,test}.{jsonl,json}, one question per line, in either release's format:
  MedQA-USMLE   {question, options: {A: .., B: .., ...}, answer_idx: "B"} (4 or 5 options);
  MedMCQA       {question, opa, opb, opc, opd, cop, id}: `cop` is 1-4 in the original release and 0-3
                in the Hugging Face copy: detected per file (a 0 means 0-based, a 4 means 1-based; a file
                with neither is read as the release's 1-4 unless `cop_base` says otherwise) and stated
                in metrics.json. MedMCQA's test answers are not public: use its dev file as test.
Every question of a task must have the number of options its first training question has. A missing
or empty option, an answer key outside the options, a malformed line: skipped and reported with file
and line; above `max_malformed_fraction` the task fails with that report.
Protocol: one fine-tuning per seed on train, best epoch by dev accuracy (`select_best_on_dev`), test
accuracy mean ± std over seeds with a bootstrap 95 % interval over questions.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bali.evaluation import inputs
from bali.lm import finetune
from bali.hf import load_pretrained
from bali.metrics import bootstrap_ci

MEDMCQA_FIELDS = ("opa", "opb", "opc", "opd")


def cop_base(rows: list[tuple[int, dict]], setting) -> tuple[int, str]:
    """0 or 1: what MedMCQA's `cop` counts from in one file, and how that was decided."""
    seen = {r.get("cop") for _, r in rows if "opa" in r}
    if setting in (0, 1):
        return setting, f"cop_base {setting} (param)"
    if 0 in seen and 4 in seen:
        raise inputs.BadInput("MedMCQA `cop` has both 0 and 4 in one file: neither 0-3 nor 1-4")
    if 0 in seen:
        return 0, "cop 0-3 (detected: a 0 is present; the Hugging Face copy)"
    if 4 in seen:
        return 1, "cop 1-4 (detected: a 4 is present; the original release)"
    return 1, "cop read as 1-4 (the original release; neither 0 nor 4 present)"


def read_questions(path: Path, p: dict, problems: inputs.Problems, n_options: int | None) -> tuple[list[dict], str]:
    """{id, question, options [..], answer (index), where} of every usable question, and the answer-key note."""
    lines = list(inputs.json_lines(path, problems))
    base, note = cop_base(lines, p["cop_base"])
    out = []
    for no, r in lines:
        q = r.get("question")
        if "options" in r:  # MedQA
            opts = r["options"]
            keys = sorted(opts) if isinstance(opts, dict) else []
            options = [opts[k] for k in keys]
            answer = keys.index(r.get("answer_idx")) if r.get("answer_idx") in keys else None
            why_answer = f"answer_idx {r.get('answer_idx')!r} is not one of the options {keys}"
        elif "opa" in r or "cop" in r:  # MedMCQA
            keys = list(MEDMCQA_FIELDS)
            options = [r.get(k) for k in keys]
            cop = r.get("cop")
            answer = cop - base if isinstance(cop, int) and not isinstance(cop, bool) and 0 <= cop - base < 4 else None
            why_answer = f"cop {cop!r} is outside {base}-{base + 3}"
        else:
            problems.skip(path, no, "neither MedQA (`options`, `answer_idx`) nor MedMCQA (`opa`..`opd`, `cop`) fields")
            continue
        if not isinstance(q, str) or not q.strip():
            problems.skip(path, no, "no question")
        elif not options or not all(isinstance(o, str) and o.strip() for o in options):
            problems.skip(path, no, "missing option")
        elif n_options is not None and len(options) != n_options:
            problems.skip(path, no, f"{len(options)} options, the task has {n_options}")
        elif answer is None:
            problems.skip(path, no, why_answer)
        else:
            problems.good()
            n_options = n_options or len(options)
            out.append({"id": str(r.get("id", f"{path.name}:{no}")), "question": q, "options": options,
                        "keys": keys, "answer": answer, "where": (path.name, no)})
    return out, f"{path.name}: {note}" if any("opa" in r for _, r in lines) else ""


def load(task_dir: Path, task: dict, p: dict, seed: int, problems: inputs.Problems) -> tuple[dict, str, list[str]]:
    n_train, n_dev = task.get("train_from_test", 0), task.get("dev_from_test", 0)
    files = finetune.split_files(task_dir, ("test",) if n_train else ("train", "dev", "test"))
    data, notes, n_options = {}, [], None
    for split in ("train", "dev", "test"):
        if split in files:
            data[split], note = read_questions(files[split], p, problems, n_options)
            n_options = n_options or (len(data[split][0]["options"]) if data[split] else None)
            notes += [note] if note else []
    if n_train:
        data["train"], data["dev"], data["test"] = inputs.carve(data["test"], n_train, n_dev, seed)
        source = (f"TRAINED ON PART OF THE TEST FILE (not a result): {n_train} train and {n_dev} dev questions drawn "
                  f"with seed {seed} from {files['test'].name}, scored on the other {len(data['test'])}")
    else:
        source = ", ".join(f"{s} {f.name}" for s, f in files.items())
    return data, source, notes


def encode(tok, questions: list[dict], max_length: int) -> list[dict]:
    """Per question: (question, option) pairs, the question truncated first (options are short)."""
    return [{"input_ids": [tok(q["question"], o, truncation="only_first", max_length=max_length)["input_ids"]
                           for o in q["options"]], "label": q["answer"]} for q in questions]


def collate_for(pad_id: int):
    def collate(batch):
        n = len(batch[0]["input_ids"])
        ids, mask = finetune.padded([s for b in batch for s in b["input_ids"]], pad_id)
        return {"input_ids": ids.view(len(batch), n, -1), "attention_mask": mask.view(len(batch), n, -1),
                "labels": torch.tensor([b["label"] for b in batch])}
    return collate


def run(ctx, task_dir: str | Path, task: dict, p: dict):
    """One fine-tuning per seed; (metrics, test predictions of every seed)."""
    import polars as pl
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    model_dir, device, seed = ctx.model_dir, ctx.device, ctx.seed
    p = inputs.task_params(p, task)
    problems = inputs.Problems(p["max_malformed_fraction"])
    data, source, notes = load(Path(task_dir), task, p, seed, problems)
    problems.check()
    if not data["train"] or not data["test"]:
        raise inputs.BadInput(f"{task_dir}: no usable training or test questions\n  " + "\n  ".join(problems.lines()))
    data = {s: inputs.sample(q, p["max_train_examples"] if s == "train" else p["max_eval_examples"], seed)
            for s, q in data.items()}
    tok = AutoTokenizer.from_pretrained(model_dir)
    collate = collate_for(tok.pad_token_id or 0)
    enc = {s: encode(tok, q, p["max_length"]) for s, q in data.items()}

    def predict(model, split):
        if not enc[split]:
            return []
        return torch.cat(finetune.predict_logits(model, enc[split], collate, p["eval_batch_size"], device)).argmax(-1).tolist()

    def accuracy(split, pred):
        return float(np.mean([q["answer"] == y for q, y in zip(data[split], pred)]))

    scores, out_rows = {"dev": [], "test": []}, []
    for s in p["seeds"]:
        torch.manual_seed(s)
        model = load_pretrained(AutoModelForMultipleChoice, model_dir, finetune.HEAD_NOTE)[0]
        select = (lambda m: accuracy("dev", predict(m, "dev"))) if p["select_best_on_dev"] and enc["dev"] else None
        finetune.train(model, enc["train"], collate, p, s, device, desc=f"{task['name']} seed {s}", dev_score=select)
        if enc["dev"]:
            scores["dev"].append(accuracy("dev", predict(model, "dev")))
        pred = predict(model, "test")
        scores["test"].append(accuracy("test", pred))
        out_rows += [{"seed": s, "id": q["id"], "gold": json.dumps(q["keys"][q["answer"]]),
                      "pred": json.dumps(q["keys"][y]), "correct": q["answer"] == y} for q, y in zip(data["test"], pred)]
    per_question = pl.DataFrame(out_rows).group_by("id", maintain_order=True).agg(pl.col("correct").mean())["correct"]
    correct = per_question.to_numpy()
    lo, hi = bootstrap_ci(lambda idx: correct[idx].mean(), len(correct), seed=seed)
    n_options = len(data["test"][0]["options"])
    budget = ", ".join(f"{k} {p[k]}" for k in ("max_train_examples", "max_eval_examples") if p[k])
    metrics = {
        "protocol": f"multiple choice ({n_options} options; AutoModelForMultipleChoice, question paired with each option), "
                    f"{len(p['seeds'])} seed(s), {p['epochs']} epochs (lr {p['lr']}, batch {p['batch_size']}, max length "
                    f"{p['max_length']}), " + ("best epoch by dev accuracy" if select else "last epoch, no selection on dev")
                    + "; accuracy, 95 % bootstrap interval over questions" + (f"; budget: {budget}" if budget else "")
                    + f"; data: {source}" + "".join(f"; {n}" for n in notes),
        "options": n_options, "examples": {s: len(v) for s, v in data.items()}, "seeds": list(p["seeds"]),
        "metric": "accuracy", "input": problems.summary(), "answer_key": notes,
        **{s: {"accuracy": finetune.mean_std(v)} for s, v in scores.items() if v},
        "accuracy_ci95": [lo, hi],
        "finetune": {k: p[k] for k in ("lr", "epochs", "batch_size", "max_length", "warmup_fraction", "weight_decay")},
    }
    metrics["score"] = metrics["test"]["accuracy"]["mean"]
    return metrics, pl.DataFrame(out_rows)
