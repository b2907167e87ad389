"""The `recognizer` link method: fitted from the graph's names by its stage (or not, when another
method is picked), dictionary matches kept, classified n-grams beside them, bad input counted."""
import json

import polars as pl
import pytest

from conftest import run_stage, save_tiny_bert
from test_link import corpus, graph_dir, run_link  # noqa: F401  (graph_dir: the module fixture)

FIT = ["-S", "link.method=recognizer", "-S", "recognizer_model.negatives_per_name=2",
       "-S", "recognizer_model.dev_fraction=0.2"]


@pytest.fixture(scope="module")
def fitted(graph_dir, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("rec")
    base = save_tiny_bert(tmp / "base")
    c = corpus(tmp, "".join(f"{i}|t|Patients with renal failure and a cold day {i}.\n{i}|a|Nothing here.\n\n"
                            for i in range(5)))
    run_stage("recognizer_model", graph_dir, c, base, tmp / "model", *FIT)
    return tmp / "model", base


def test_stage_fits_only_for_its_method(graph_dir, fitted, tmp_path):  # noqa: F811
    model, base = fitted
    stats = json.loads((model / "stats.json").read_text())
    assert stats["names"] == 12 and stats["negatives"] > 0 and stats["dev_examples"] > 0
    assert {"model.npz", "meta.json", "params.json"} <= {f.name for f in model.iterdir()}
    c = tmp_path / "none"
    c.mkdir()
    run_stage("recognizer_model", graph_dir, c, base, tmp_path / "off")
    assert sorted(f.name for f in (tmp_path / "off").iterdir()) == ["README.md", "params.json"]


def rec(model, **q):
    return {"model": str(model), "encoder": "", "max_ngram": 0, "min_probability": 0.8, "min_cosine": 0.85,
            "max_sentence_chars": 2000, **q}


def test_dictionary_kept_and_ngrams_added(graph_dir, fitted, tmp_path):  # noqa: F811
    model, _ = fitted
    text = "Heart failure in the Ménière clinic. Renal insufficiency and cold hands."
    c = corpus(tmp_path, f"1|t|{text}\n1|a|\n")
    strict, _ = run_link(graph_dir, c, tmp_path, method="recognizer", recognizer=rec(model, min_probability=1.1))
    dictionary, _ = run_link(graph_dir, c, tmp_path)
    assert strict.drop("method").equals(dictionary.drop("method"))  # nothing passes: the dictionary's own output
    loose, stats = run_link(graph_dir, c, tmp_path, method="recognizer",
                            recognizer=rec(model, min_probability=0.0, min_cosine=-1.0))
    added = loose.filter(pl.col("method") == "recognizer")
    assert stats["recognizer_mentions"] == added.height > 0 and stats["recognizer_candidates"] >= added.height
    kept = dictionary.select("sent_id", "start", "end", "cui")
    assert kept.join(loose, on=["sent_id", "start", "end", "cui"], how="anti").height == 0
    spans = sorted(loose.select("sent_id", "start", "end").unique().rows())
    assert all(a[0] != b[0] or a[2] <= b[1] for a, b in zip(spans, spans[1:]))  # no two overlap


def test_bad_input(graph_dir, fitted, tmp_path):  # noqa: F811
    model, _ = fitted
    long = " ".join(["renal"] * 10_000)
    c = corpus(tmp_path, f"1|t|{long}\n1|a|\n\n2|t|Ménière’s ﬁbrosis — 心臓.\n2|a|\n")
    found, stats = run_link(graph_dir, c, tmp_path, method="recognizer",
                            recognizer=rec(model, min_probability=0.0, min_cosine=-1.0))
    assert stats["recognizer_sentences_skipped"] == 1 and stats["sentences"] == 2
    sents = pl.read_parquet(c / "sentences.parquet")
    joined = found.join(sents.select("doc_id", "sent_id", sentence="text"), on=["doc_id", "sent_id"])
    assert all(s[a:b] == t for s, a, b, t in joined.select("sentence", "start", "end", "text").iter_rows())
    with pytest.raises(FileNotFoundError, match="no recognizer model"):
        run_link(graph_dir, c, tmp_path, method="recognizer", recognizer=rec(tmp_path / "nowhere"))
