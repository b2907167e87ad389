"""Downstream kinds on the real shared files (PubMedQA's release, MedQA-USMLE, GAD TSV, HoC in LinkBERT's
format) with a tiny random BERT and a few dozen examples, the official PubMedQA split against its
ground truth, LinkBERT's HoC figure and macro-F1 by hand, best-epoch selection, MedMCQA's answer key,
and bad input reported with file and line."""
import json

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from transformers import AutoTokenizer

from bali import metrics
from bali.evaluation import Context, classification, inputs, multiple_choice, pubmedqa
from bali.lm import finetune
from conftest import ROOT, SHARED_DATA, needs_shared, run_stage, save_tiny_bert

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
TINY_RUN = {"seeds": [1], "epochs": 1, "lr": 1e-3, "batch_size": 8, "eval_batch_size": 16, "max_length": 48}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"))


@needs_shared
def test_pubmedqa_split_remakes_the_official_test_set():
    rows, pmids, label, truth = pubmedqa.read_release(SHARED_DATA / "pubmedqa", inputs.Problems(0.0))
    test, folds = pubmedqa.official_split(pmids, label)
    assert len(rows) == 1000 and set(test) == set(truth) and len(test) == 500
    pool = set(pmids) - set(test)
    assert [(len(t), len(d)) for t, d in folds] == [(450, 50)] * 10
    assert set().union(*(set(d) for _, d in folds)) == pool  # the dev parts partition the pool
    assert all(not set(t) & set(d) and set(t) | set(d) == pool for t, d in folds)
    # the rule's chunks of the pool's 276 yes / 169 no / 55 maybe: parts 0-8 take 28 / 17 / 6 and give one
    # question at random to part 9, which had 24 / 16 / 1 (so the last fold is the least stratified)
    for k, (_, d) in enumerate(folds):
        n = [sum(label[p] == lab for p in d) for lab in pubmedqa.LABELS]
        want = [24, 16, 1] if k == 9 else [28, 17, 6]
        assert all(x <= w for x, w in zip(n, want)) and sum(want) - sum(n) == 1 if k < 9 else \
            all(x >= w for x, w in zip(n, want)), (k, n)


@needs_shared
def test_pubmedqa_runs_on_the_release_files(tiny):
    p = {**PARAMS["pubmedqa"], **TINY_RUN, "run_folds": 1, "max_train_examples": 24, "max_eval_examples": 16}
    m, preds = pubmedqa.run(Context(tiny, PARAMS, seed=29), SHARED_DATA / "pubmedqa", {"name": "pubmedqa", "kind": "pubmedqa"}, p)
    assert m["examples"] == {"train": 24, "dev": 16, "test": 16} and m["input"]["malformed"] == 0
    assert set(m["test"]) == {"accuracy", "macro_f1"} and len(m["test"]["accuracy"]["runs"]) == 1
    assert "budget: max_train_examples 24" in m["protocol"] and "best epoch by dev accuracy" in m["protocol"]
    assert preds.height == 16 and set(preds["fold"]) == {0} and preds["correct"].mean() == m["score"]


@needs_shared
def test_blurb_gad_tsv_and_hoc_multi_hot_on_real_files(tiny):
    p = {**PARAMS["classification"], **TINY_RUN, "max_eval_examples": 24}
    gad = {"name": "gad", "kind": "classification", "metric": "micro_f1", "negative": "0",
           "train_from_test": 32, "dev_from_test": 8}
    m, preds = classification.run(Context(tiny, PARAMS, seed=29), SHARED_DATA / "blurb-gad", gad, p)
    assert m["labels"] == ["0", "1"] and m["examples"] == {"train": 32, "dev": 8, "test": 24}
    assert m["input"] == {"rows": 534, "malformed": 0, "by_reason": {}, "first": []}
    assert "TRAINED ON PART OF THE TEST FILE" in m["protocol"] and preds.height == 24 and "correct" in preds.columns
    hoc = {"name": "hoc", "kind": "classification", "metric": "hoc_f1", "train_from_test": 24, "dev_from_test": 8}
    m, preds = classification.run(Context(tiny, PARAMS, seed=29), SHARED_DATA / "blurb-hoc", hoc, p)
    assert m["labels"] == [str(i) for i in range(10)] and "multi-hot" in m["protocol"]
    assert 0.0 <= m["score"] <= 1.0 and "correct" not in preds.columns
    gold = [set(json.loads(g)) for g in preds["gold"]]
    assert metrics.hoc_f1(gold, [set(json.loads(y)) for y in preds["pred"]], preds["id"].to_list()) == m["score"]


@needs_shared
def test_medqa_multiple_choice_on_the_real_file(tiny):
    p = {**PARAMS["multiple_choice"], **TINY_RUN, "max_eval_examples": 16, "max_length": 96}
    task = {"name": "medqa", "kind": "multiple_choice", "train_from_test": 24, "dev_from_test": 8}
    m, preds = multiple_choice.run(Context(tiny, PARAMS, seed=29), SHARED_DATA / "medqa-usmle", task, p)
    assert m["options"] == 4 and m["examples"] == {"train": 24, "dev": 8, "test": 16} and m["input"]["rows"] == 1273
    assert m["accuracy_ci95"][0] <= m["score"] <= m["accuracy_ci95"][1]
    assert set(json.loads(g) for g in preds["gold"]) <= set("ABCD")


def test_cross_validated_classification_bioasq_style(tiny, tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("dev", 6), ("test", 10)):
        rows = [{"id": f"{split}{i}", "sentence1": f"does {w} help?", "sentence2": f"{w} helps a lot", "label": lab}
                for i, (w, lab) in enumerate(zip(rng.choice(["aspirin", "rest"], n), rng.choice(["yes", "no"], n)))]
        (tmp_path / f"{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = {**PARAMS["classification"], **TINY_RUN, "folds": 3, "seeds": [1, 2]}
    m, preds = classification.run(Context(tiny, PARAMS), tmp_path,
                                  {"name": "bioasq", "kind": "classification", "metric": "accuracy"}, p)
    assert [r["fold"] for r in m["runs"]] == [0, 0, 1, 1, 2, 2] and len(m["test"]["accuracy"]["runs"]) == 6
    assert "3-fold cross-validation over train+dev (KFold, shuffled, seed 42)" in m["protocol"]
    assert preds.height == 60 and preds.group_by("fold", "seed").len()["len"].to_list() == [10] * 6


def test_best_epoch_on_dev_is_the_one_kept(tiny):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=2)
    tok = AutoTokenizer.from_pretrained(tiny)
    ex = [{"input_ids": tok(f"word {i}")["input_ids"], "label": i % 2} for i in range(16)]

    def collate(batch):
        ids, mask = finetune.padded([b["input_ids"] for b in batch])
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([b["label"] for b in batch])}

    seen, fake = [], iter([0.2, 0.9, 0.5])

    def dev_score(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(fake)

    p = {"lr": 1e-2, "epochs": 3, "batch_size": 8, "weight_decay": 0.0, "warmup_fraction": 0.0}
    assert finetune.train(model, ex, collate, p, 0, "cpu", dev_score=dev_score) == [0.2, 0.9, 0.5]
    kept = model.state_dict()
    assert all(torch.equal(kept[k], seen[1][k]) for k in kept) and not all(torch.equal(kept[k], seen[2][k]) for k in kept)


def test_hoc_f1_as_linkbert_and_macro_f1_by_hand():
    # sentence rows of 2 abstracts: hallmarks united per abstract (A: gold {1,2} pred {1,3}; B: gold {} pred {4})
    gold, pred, ids = [{1}, {2}, set()], [{1}, {3}, {4}], ["A_1", "A_2", "B_1"]
    assert metrics.hoc_f1(gold, pred, ids) == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # tp 1, pred 3, gold 2
    g, y = ["yes", "no", "maybe", "yes"], ["yes", "no", "no", "no"]
    # yes: p 1 r 1/2 -> 2/3; no: p 1/3 r 1 -> 1/2; maybe: 0
    assert metrics.macro_f1(g, y, ["yes", "no", "maybe"]) == pytest.approx((2 / 3 + 1 / 2) / 3)
    from sklearn.metrics import f1_score
    assert metrics.macro_f1(g, y, ["yes", "no", "maybe"]) == pytest.approx(f1_score(g, y, average="macro"))


def test_medmcqa_answer_key_and_bad_questions(tmp_path):
    def q(i, cop, **kw):
        return json.dumps({"id": f"q{i}", "question": f"question {i}?", "opa": "a", "opb": "b", "opc": "c",
                           "opd": "d", "cop": cop, **kw})
    f = tmp_path / "test.json"
    f.write_bytes(("\n".join([q(0, 0), q(1, 3), q(2, 2), "{not json", q(4, 7), q(5, 1, opc="")]) + "\n").encode()
                  + b'{"question": "\xff"}\n')
    problems = inputs.Problems(1.0)
    got, note = multiple_choice.read_questions(f, {"cop_base": "auto"}, problems, None)
    assert [x["answer"] for x in got] == [0, 3, 2] and "cop 0-3 (detected" in note
    assert problems.lines() == ["test.json:4: not JSON (Expecting property name enclosed in double quotes)",
                                "test.json:5: cop 7 is outside 0-3", "test.json:6: missing option",
                                "test.json:7: invalid UTF-8"]
    f.write_text("\n".join([q(0, 4), q(1, 1)]) + "\n")
    got, note = multiple_choice.read_questions(f, {"cop_base": "auto"}, inputs.Problems(0.0), None)
    assert [x["answer"] for x in got] == [3, 0] and "1-4 (detected" in note
    medqa = tmp_path / "medqa.jsonl"
    medqa.write_text(json.dumps({"question": "q?", "options": {"A": "x", "B": "y"}, "answer_idx": "C"}) + "\n")
    problems = inputs.Problems(0.0)
    assert multiple_choice.read_questions(medqa, {"cop_base": "auto"}, problems, None)[0] == []
    with pytest.raises(inputs.BadInput, match=r"(?s)1 of 1 rows are malformed.*medqa.jsonl:1: answer_idx 'C' is not one"):
        problems.check()


def test_stage_reports_bad_rows_with_file_and_line_and_writes_nothing(tiny, tmp_path):
    task = tmp_path / "gad"
    task.mkdir()
    good = [f"{i}\tgene @GENE$ and @DISEASE$ {i}\t{i % 2}" for i in range(20)]
    (task / "train.tsv").write_text("index\tsentence\tlabel\n" + "\n".join(good) + "\n")
    (task / "dev.tsv").write_text("\n".join(good[:4]) + "\n")
    (task / "test.tsv").write_text("\n".join(good[:4] + ["7\tone\ttwo\tthree", "8\tsome text\t2"]) + "\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"]["tasks"] = [{"name": "gad", "kind": "classification", "dir": str(task), "metric": "micro_f1",
                                    "negative": "0", "epochs": 1}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = run_stage("evaluate", tiny, task, tmp_path / "out", "--task", "gad", "--params", tmp_path / "params.yaml",
                  check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr and not (tmp_path / "out").exists()
    assert "2 of 30 rows are malformed" in r.stderr and "test.tsv:5: expected `index sentence label`" in r.stderr
    assert "test.tsv:6: label '2' is not in the label set" in r.stderr
    r = run_stage("evaluate", tiny, task, tmp_path / "out", "--task", "gad", "--params", tmp_path / "params.yaml",
                  "-S", "evaluate.classification.max_malformed_fraction=0.1", "-S", "evaluate.classification.seeds=[1]",
                  "-S", "evaluate.classification.max_length=32")
    m = json.loads((tmp_path / "out" / "results.json").read_text())
    assert m["input"]["malformed"] == 2 and m["examples"]["test"] == 4 and m["finetune"]["epochs"] == 1


def test_report_pairs_fine_tuned_predictions_question_by_question(tmp_path):
    # 2 seeds; per question the fraction right: base [1, .5, 0, 0], bali [1, 1, 1, .5]
    right = {"base": {1: [1, 1, 0, 0], 2: [1, 0, 0, 0]}, "bali": {1: [1, 1, 1, 1], 2: [1, 1, 1, 0]}}
    for model, by_seed in right.items():
        d = tmp_path / "eval" / model / "medqa"
        d.mkdir(parents=True)
        acc = [sum(v) / 4 for v in by_seed.values()]
        (d / "results.json").write_text(json.dumps({
            "kind": "multiple_choice", "protocol": "p", "metric": "accuracy", "examples": {"train": 8, "dev": 2, "test": 4},
            "test": {"accuracy": {"mean": sum(acc) / 2, "std": 0.1, "runs": acc}}}))
        pl.DataFrame([{"seed": s, "id": f"q{i}", "gold": '"A"', "pred": '"A"', "correct": bool(c)}
                      for s, cs in by_seed.items() for i, c in enumerate(cs)]).write_parquet(d / "predictions.parquet")
    run_stage("report", tmp_path / "eval", tmp_path / "no-live", tmp_path / "rep", "-S", "report.ablations=")
    got = json.loads((tmp_path / "rep" / "compare.json").read_text())["medqa/bali"]["paired"]
    assert got["delta"] == pytest.approx(0.5) and got["questions"] == 4
    # right in most runs (> half): base q0 only; bali q0, q1, q2 -> 2 questions only for bali, none only for base
    assert (got["only_base"], got["only_aligned"]) == (0, 2) and got["mcnemar_p"] == pytest.approx(0.5)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| medqa | accuracy | 0.375 [" in text and "] | 0.875 [" in text and "| +50.0 [" in text
    assert "| medqa | aligned | accuracy | 0.875 ± 0.100 | 2 | 8 / 2 / 4 |" in text


def test_paper_profile_tasks_are_valid_for_their_kinds():
    from bali import profiles

    ev = profiles.resolved("paper")["evaluate"]
    kinds = {t["kind"] for t in ev["tasks"]}
    assert {"pubmedqa", "multiple_choice", "classification"} <= kinds
    for t in ev["tasks"]:
        p = inputs.task_params(ev[t["kind"]], t)  # no unknown key
        assert t.get("metric", "accuracy") in classification.METRICS and p["max_length"] <= 512
    hoc = next(t for t in ev["tasks"] if t["name"] == "hoc")
    assert (hoc["metric"], hoc["lr"], hoc["epochs"]) == ("hoc_f1", 4e-5, 40)  # LinkBERT's HoC setting
    assert (ev["pubmedqa"]["lr"], ev["pubmedqa"]["epochs"], ev["pubmedqa"]["batch_size"]) == (1e-5, 50, 16)
