"""Evaluation: ranking against brute force, metrics against hand-computed values, PubTator -> BIO,
tiny fine-tuning runs, and the evaluate stage end to end."""
import json

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from bali import metrics
from bali.evaluation import Context, classification, entity_linking, ner
from bali.lm import encoder, tagging
from conftest import ROOT, SHARED_DATA, needs_shared, run_stage, save_tiny_bert


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"))


def test_top_k_matches_brute_force_in_any_chunking():
    g = torch.Generator().manual_seed(0)
    q, n = torch.randn(37, 8, generator=g), torch.randn(101, 8, generator=g)
    full = q @ n.T
    want_s, want_i = full.topk(5, dim=1)
    for qc, nc in [(1000, 1000), (7, 10), (37, 3)]:
        s, i = encoder.top_k(q, n, 5, query_chunk=qc, name_chunk=nc)
        assert torch.equal(i, want_i) and torch.allclose(s, want_s)
    s, i = encoder.top_k(q[:0], n, 5)  # an empty split ranks nothing instead of failing
    assert s.shape == i.shape == (0, 5) and i.dtype == torch.long


def test_hits_and_accuracy_by_hand():
    names = ["C1", "C2", "C1", "C3"]
    idx = torch.tensor([[0, 1], [1, 3], [3, 2]])
    hit = entity_linking.hits(["C1", "C3", "C2|C1"], names, idx)
    assert hit.tolist() == [[True, False], [False, True], [False, True]]
    # MEDIC names carry several ids: any shared id is a hit
    assert entity_linking.hits(["D1", "D2|D3"], ["C9|D1", "D3"], torch.tensor([[0], [0]])).tolist() == [[True], [False]]
    # a composite mention (two parts, qid 0) is a hit at k only when both parts are
    qids, by = entity_linking.by_mention(np.array([[True, False], [False, True], [False, False]]), np.array([0, 0, 1]))
    assert qids.tolist() == [0, 1] and by.tolist() == [[False, True], [False, False]]
    assert entity_linking.accuracy_at(hit, (1, 2)) == {"acc@1": pytest.approx(1 / 3), "acc@2": 1.0}


def test_read_pairs_names_the_bad_line(tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("C1||fever\nC2 pyrexia\n")
    with pytest.raises(ValueError, match=r"q.txt:2"):
        entity_linking.read_pairs(f)


def test_metrics_by_hand():
    assert metrics.bio_spans(["B-D", "I-D", "O", "I-D", "B-C", "B-C", "I-D"]) == \
        {(0, 2, "D"), (3, 4, "D"), (4, 5, "C"), (5, 6, "C"), (6, 7, "D")}
    gold = [["B-D", "I-D", "O", "B-D"], ["O", "B-D"]]
    pred = [["B-D", "I-D", "O", "O"], ["B-D", "I-D"]]  # 1 of 2 predicted right; 1 of 3 gold found
    assert metrics.entity_prf(gold, pred) == {"precision": 0.5, "recall": pytest.approx(1 / 3), "f1": pytest.approx(0.4)}
    # ChemProt style: 'false' neither predicted nor gold; tp 1, predicted 3, gold 2
    assert metrics.micro_f1(["A", "B", "false", "false"], ["A", "A", "B", "false"], "false") == pytest.approx(0.4)
    assert metrics.micro_f1(["A", "B"], ["A", "A"]) == 0.5  # = accuracy without a negative class
    assert metrics.multilabel_micro_f1([{"a", "b"}, set()], [{"a"}, {"c"}]) == pytest.approx(0.5)
    assert metrics.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)
    a, b = np.array([1, 0, 0, 0, 1, 1]), np.array([1, 1, 1, 1, 1, 0])  # 3 discordant for b, 1 for a
    assert metrics.mcnemar_exact(a, b) == pytest.approx(0.625)
    lo, hi = metrics.paired_bootstrap(a, b, n=2000)
    assert lo < 1 / 3 < hi


def test_pubtator_to_bio_composite_and_cut_words():
    stats = {k: 0 for k in ("mentions_overlapping_dropped", "sentences_joined_at_mentions", "words_cut_at_mentions")}
    text = "Breast and ovarian cancer. BRCA1-associated tumours recur. Rare."
    mentions = [(0, 25, "CompositeMention"), (11, 25, "SpecificDisease"), (27, 32, "Modifier"),
                (33, 51, "DiseaseClass")]
    # the splitter (wrongly) cut inside the last mention's sentence at "associated": joined back
    sents = tagging.doc_to_bio(text, mentions, [(0, 26), (27, 38), (38, 58), (59, 64)], "Disease", stats)
    assert sents[0] == (["Breast", "and", "ovarian", "cancer", "."], ["B-Disease", "I-Disease", "I-Disease", "I-Disease", "O"])
    assert sents[1] == (["BRCA1", "-", "associated", "tumours", "recur", "."],
                        ["B-Disease", "O", "B-Disease", "I-Disease", "O", "O"])
    assert sents[2] == (["Rare", "."], ["O", "O"])
    assert stats == {"mentions_overlapping_dropped": 1, "sentences_joined_at_mentions": 1, "words_cut_at_mentions": 0}
    stats = dict.fromkeys(stats, 0)
    assert tagging.doc_to_bio("xBRCA1y", [(1, 6, "Gene")], [(0, 7)], "", stats) == [(["x", "BRCA1", "y"], ["O", "B-Gene", "O"])]
    assert stats["words_cut_at_mentions"] == 1


def _ner_data(d):
    rng = np.random.default_rng(0)
    d.mkdir()
    for split, n in (("train", 60), ("dev", 10), ("test", 10)):
        lines = []
        for _ in range(n):
            for w in rng.choice(["the", "patient", "had", "fever", "and", "cough", "today"], 6):
                lines.append(f"{w}\t{'B-Disease' if w in ('fever', 'cough') else 'O'}")
            lines.append("")
        (d / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return d


def test_tiny_ner_and_classification_learn(tiny, tmp_path):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    ft = {"epochs": 8, "lr": 3e-3, "batch_size": 8, "seeds": [1, 2], "eval_batch_size": 16, "warmup_fraction": 0.1,
          "weight_decay": 0.0}
    ctx = Context(tiny, p)
    m, preds = ner.run(ctx, _ner_data(tmp_path / "ner"), {"name": "toy_ner", "kind": "ner"}, {**p["ner"], **ft})
    assert m["labels"] == ["O", "B-Disease"] and m["test"]["f1"]["mean"] > 0.9 and len(m["test"]["f1"]["runs"]) == 2
    assert preds.height == 20
    d = tmp_path / "cls"
    d.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 80), ("dev", 10), ("test", 20)):
        rows = [{"id": f"{split}{i}", "sentence": f"aspirin {w} headache", "label": "treats" if w == "relieves" else "false"}
                for i, w in enumerate(rng.choice(["relieves", "causes", "with"], n))]
        (d / f"{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"name": "toy", "metric": "micro_f1", "negative": "false"}
    m, preds = classification.run(ctx, d, task, {**p["classification"], **ft})
    assert m["labels"] == ["false", "treats"] and m["test"]["micro_f1"]["mean"] > 0.9
    assert set(preds["seed"]) == {1, 2} and preds.height == 40


def test_evaluate_stage_entity_linking_shares_the_dictionary_vectors(tiny, tmp_path):
    task = tmp_path / "el"
    task.mkdir()
    (task / "dev.txt").write_text("C1||heart attack\nC2||high temperature\n")
    (task / "test.txt").write_text("C2||pyrexia\n")
    (task / "dictionary.txt").write_text("C1||myocardial infarction\nC1||heart attack (disorder)\nC2||fever\nC3||cough\n")
    args = ["-S", "evaluate.entity_linking.seen_from=", "-S", f"evaluate.embedding_cache={tmp_path / 'cache'}",
            "-S", f"evaluate.graph_dir={tmp_path / 'no-graph'}"]
    run_stage("evaluate", tiny, task, tmp_path / "dev", "--task", "demo_el_dev", *args)
    run_stage("evaluate", tiny, task, tmp_path / "test", "--task", "demo_el_test", *args)
    m, t = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("dev", "test"))
    assert m["dictionary_names"] == 4 and m["queries"] == 2 and m["kind"] == "entity_linking" and "seen" not in m
    assert t["queries"] == 1 and t["embedding"] == {"texts_embedded": 1, "texts_from_cache": 4}  # dictionary once
    preds = pl.read_parquet(tmp_path / "dev" / "predictions.parquet")
    assert preds["candidate_cuis"].list.len().to_list() == [4, 4]  # k = 5, capped at the dictionary
    assert m["acc@1"] == preds["hit@1"].mean() and m["acc@5"] == 1.0
    # the same stage without the cache gives the same candidates
    run_stage("evaluate", tiny, task, tmp_path / "dev2", "--task", "demo_el_dev", *args[:2], "-S",
              "evaluate.embedding_cache=", *args[4:])
    again = pl.read_parquet(tmp_path / "dev2" / "predictions.parquet")
    assert again["candidate_cuis"].to_list() == preds["candidate_cuis"].to_list()


def test_demo_el_task_dev_test_and_normalised_held_out(tmp_path):
    from bali.kg import demo, ontology
    from bali.names import name_keys

    terms = ontology.parse_obo(ontology.hp_obo_path())
    stats = demo.write_el_task(terms, tmp_path, 1000, 29)
    q = entity_linking.read_pairs(tmp_path / "queries.txt")
    d = entity_linking.read_pairs(tmp_path / "dictionary.txt")
    dev, test = (set(zip(*entity_linking.read_pairs(tmp_path / f))) for f in ("dev.txt", "test.txt"))
    assert stats["el_queries"] == 1000 and len(set(q[0])) == 1000 and stats["el_dictionary_names"] == len(d[0])
    assert len(dev) == len(test) == 500 and not dev & test and dev | test == set(zip(*q))
    assert not set(name_keys(q[1]).to_list()) & set(name_keys(d[1]).to_list())  # not even up to case / dashes
    assert set(q[0]) <= set(d[0])  # every query concept keeps other names to be found by
    # a synonym that differs from its concept's name only by case and a dash is never a query
    terms = [demo.Term(id=f"HP:{i:07d}", name=f"Name {i}", synonyms=[f"name-{i}" if i % 2 else f"other {i}"])
             for i in range(1, 11)]
    stats = demo.write_el_task(terms, tmp_path / "small", 5, 0)
    queries = entity_linking.read_pairs(tmp_path / "small" / "queries.txt")[1]
    assert 0 < stats["el_queries_dropped_same_key_as_other_name"] <= 5 and all(t.startswith("other") for t in queries)
    with pytest.raises(ValueError, match="only 5 concepts"):
        demo.write_el_task(terms, tmp_path / "small", 6, 0)


@needs_shared
def test_ncbi_disease_converts_to_bio():
    from bali.corpus.sentences import SentenceSplitter

    stats = {k: 0 for k in ("mentions", "mentions_overlapping_dropped", "sentences_joined_at_mentions",
                            "words_cut_at_mentions", "unreadable_lines")}
    with SentenceSplitter() as splitter:
        sents = tagging.read_pubtator_bio(SHARED_DATA / "ncbi-disease" / "NCBItestset_corpus.txt", splitter, "Disease", stats)
    entities = sum(t.startswith("B-") for _, tags in sents for t in tags)
    assert entities == stats["mentions"] - stats["mentions_overlapping_dropped"] and entities > 900
    assert 900 < len(sents) < 1100


def test_report_pairs_the_two_models_query_by_query(tmp_path):
    hits = {"base": [True, False, False, False, True, True], "bali": [True, True, True, True, True, False]}
    for model, h in hits.items():
        d = tmp_path / "eval" / model / "el"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"kind": "entity_linking", "protocol": "p", "acc@1": sum(h) / 6,
                                                    "acc@5": 1.0, "queries": 6, "dictionary_names": 9}))
        order = [5, 3, 1, 0, 2, 4] if model == "bali" else range(6)  # rows in another order: paired by query
        pl.DataFrame({"cui": [f"C{i}" for i in order], "query": [f"q{i}" for i in order],
                      "hit@1": [h[i] for i in order]}).write_parquet(d / "predictions.parquet")
    run_stage("report", tmp_path / "eval", tmp_path / "no-live", tmp_path / "rep", "-S", "report.ablations=")
    got = json.loads((tmp_path / "rep" / "compare.json").read_text())["el/bali"]["paired"]
    assert got["delta"] == pytest.approx(1 / 3) and (got["only_base"], got["only_aligned"]) == (1, 3)
    assert got["mcnemar_p"] == pytest.approx(0.625)
    text = (tmp_path / "rep" / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| el | acc@1 |"))  # the headline, first
    assert text.index(row) < text.index("## Details") and row.split(" | ")[2:4] == ["0.500 [0.167, 0.833]", "0.833 [0.500, 1.000]"]
    assert "| +33.3 [" in row and row.endswith("| 0.62 |")
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["el"]["delta"] == pytest.approx(1 / 3)
