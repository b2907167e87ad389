"""Benchmark: every downstream kind on the real shared files, base vs aligned, under a small budget.

  python bench/downstream.py [--models models/base models/bali] [--train 32] [--dev 8] [--eval 64]
                             [--epochs 1] [--max-length 128] [--cv-folds 2] [--out DIR]

Run after `make demo` (models/base, models/bali), with ../shared/data present. Tasks:
  pubmedqa   PubMedQA release files, the official split, fold 0 only, `--train` of its 450 training
             questions, `--eval` of the 500 test questions (the official data, a budgeted protocol);
  bioasq_fmt the BioASQ kind's protocol (BLURB/LinkBERT JSON, k-fold CV over train+dev, seed 42) on
             PubMedQA's yes/no questions written as LinkBERT's pubmedqa_hf rows (BioASQ itself is
             registration-only); `--cv-folds` folds instead of 10;
  gad        GAD test.tsv as released, TRAINED ON PART OF THE TEST FILE: `--train` + `--dev` rows drawn
             from it, scored on `--eval` of the rest (a throughput and plumbing figure, not a result);
  hoc        HoC test.json (LinkBERT format, multi-hot), same carving, LinkBERT's HoC F1;
  medqa      MedQA-USMLE 4-option test file, same carving, AutoModelForMultipleChoice.
Prints per task and model the figure with its protocol, fine-tuning and inference examples/s (a
multiple-choice example is one question: its 4 option sequences), then base vs aligned paired over
the same questions (where predictions pair), peak RSS; last line: one JSON object.
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from bali import real_data

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = real_data.root()  # $BALI_REAL_DATA, else data/real


class Clock:
    """Time and examples through finetune.train / predict_logits, whatever kind calls them."""

    def __init__(self):
        from bali.lm import finetune

        self.train_s = self.train_n = self.eval_s = self.eval_n = 0
        train, predict = finetune.train, finetune.predict_logits

        def timed_train(model, examples, collate, p, *a, dev_score=None, **kw):
            t, e0 = time.perf_counter(), self.eval_s  # dev scoring inside counts as inference, not training
            out = train(model, examples, collate, p, *a, dev_score=dev_score, **kw)
            self.train_s += time.perf_counter() - t - (self.eval_s - e0)
            self.train_n += len(examples) * p["epochs"]
            return out

        def timed_predict(model, examples, *a, **kw):
            t = time.perf_counter()
            out = predict(model, examples, *a, **kw)
            self.eval_s += time.perf_counter() - t
            self.eval_n += len(examples)
            return out

        finetune.train, finetune.predict_logits = timed_train, timed_predict

    def take(self) -> dict:
        out = {"train_examples_per_s": self.train_n / self.train_s if self.train_s else 0.0,
               "eval_examples_per_s": self.eval_n / self.eval_s if self.eval_s else 0.0,
               "train_examples": self.train_n, "eval_examples": self.eval_n}
        self.train_s = self.train_n = self.eval_s = self.eval_n = 0
        return out


def bioasq_format(out: Path) -> Path:
    """PubMedQA's yes/no questions as LinkBERT's BLURB rows: pool (train, dev) and official test."""
    from bali.evaluation import inputs, pubmedqa

    rows, pmids, label, truth = pubmedqa.read_release(SHARED_DATA / "pubmedqa", inputs.Problems(0.0))
    test, folds = pubmedqa.official_split(pmids, label)
    train, dev = folds[0]
    out.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("dev", dev), ("test", test)):
        with open(out / f"{name}.json", "w", encoding="utf-8") as f:
            for i in ids:
                if label[i] != "maybe":
                    q, ctx = rows[i]["text"]
                    f.write(json.dumps({"id": i, "sentence1": q, "sentence2": ctx, "label": label[i]}) + "\n")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["models/base", "models/bali"], help="the first is the base")
    ap.add_argument("--train", type=int, default=32)
    ap.add_argument("--dev", type=int, default=8)
    ap.add_argument("--eval", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--cv-folds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--tasks", nargs="+", default=["pubmedqa", "bioasq_fmt", "gad", "hoc", "medqa"])
    ap.add_argument("--out", default="", help="keep the evaluate-layout outputs here (default: a temporary folder)")
    args = ap.parse_args()
    import torch
    import yaml

    from bali.reporting import report
    from bali.io import write_json

    if not SHARED_DATA.is_dir():
        raise SystemExit(f"bench/downstream: {SHARED_DATA} is not present")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    clock = Clock()
    from bali.evaluation import Context, classification, multiple_choice, pubmedqa

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_downstream_"))
    budget = {"seeds": [args.seed], "epochs": args.epochs, "max_length": args.max_length, "max_train_examples": args.train,
              "max_eval_examples": args.eval, "eval_batch_size": 32}
    carve = {"train_from_test": args.train, "dev_from_test": args.dev}
    tasks = {
        "pubmedqa": (pubmedqa, SHARED_DATA / "pubmedqa", {"kind": "pubmedqa"}, {"run_folds": 1}),
        "bioasq_fmt": (classification, None, {"kind": "classification", "metric": "accuracy"},
                       {"folds": args.cv_folds, "fold_seed": 42}),
        "gad": (classification, SHARED_DATA / "blurb-gad",
                {"kind": "classification", "metric": "micro_f1", "negative": "0", **carve}, {}),
        "hoc": (classification, SHARED_DATA / "blurb-hoc", {"kind": "classification", "metric": "hoc_f1", **carve}, {}),
        "medqa": (multiple_choice, SHARED_DATA / "medqa-usmle", {"kind": "multiple_choice", **carve}, {}),
    }
    names = [Path(m).name for m in args.models]
    figures = {}
    for name in args.tasks:
        module, task_dir, task, extra = tasks[name]
        task_dir = task_dir or bioasq_format(work / "bioasq_fmt_data")
        task = {"name": name, **task}
        p = {**params[task["kind"]], **budget, **extra}
        for model_dir, model in zip(args.models, names):
            t = time.perf_counter()
            m, preds = module.run(Context(Path(model_dir), params, device, args.seed), task_dir, task, p)
            seconds = time.perf_counter() - t
            rates = clock.take()
            out = work / "eval" / model / name
            out.mkdir(parents=True, exist_ok=True)
            preds.write_parquet(out / "predictions.parquet")
            write_json(out / "results.json", {"task": name, "kind": task["kind"], "model": model_dir, **m})
            figures.setdefault(name, {})[model] = {"metric": m["metric"], "value": m["score"],
                                                   "std": m["test"][m["metric"]]["std"], "seconds": seconds, **rates}
            print(f"{name} {model}: {m['metric']} {m['score']:.3f} ± {m['test'][m['metric']]['std']:.3f} "
                  f"({seconds:.0f} s; fine-tuning {rates['train_examples_per_s']:.1f} examples/s, inference "
                  f"{rates['eval_examples_per_s']:.1f} examples/s)", flush=True)
        print(f"  protocol: {m['protocol']}", flush=True)
    for row in report.comparison(work / "eval", names[0], args.seed):
        if "paired" in row:
            pr = row["paired"]
            figures[row["task"]]["paired"] = {"model": row["model"], **pr}
            print(f"{row['task']}: {row['model']} - {names[0]}, per-question accuracy: {100 * pr['delta']:+.1f} pts [{100 * pr['ci95_low']:+.1f}, "
                  f"{100 * pr['ci95_high']:+.1f}], McNemar p {pr['mcnemar_p']:.2g} over {pr['questions']} questions")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB; device {device}; outputs {work}")
    print(json.dumps({"bench": "downstream", "device": device, "budget": {k: v for k, v in vars(args).items()
                                                                         if k not in ("out", "tasks", "models")},
                      "models": args.models, "peak_rss_gib": round(peak, 3), "tasks": figures}))


if __name__ == "__main__":
    main()
