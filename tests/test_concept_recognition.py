"""Concept recognition: the semantic-type filter of the link stage, scoring against gold (hand-computed
figures), and GSC+ read through the corpus stage as PubTator gold (offsets and ids kept)."""
import polars as pl
import pytest

from bali.kg import graph
from bali.corpus.build import build as build_corpus
from bali.evaluation.el_data import read_gsc
from bali.evaluation.concept_recognition import gold_mentions, gsc_to_pubtator, recognise, score
from conftest import SHARED_DATA, conso, needs_shared, run_stage, save_tiny_bert, write_meta
from test_link import CORPUS, LINK, corpus, run_link

TYPES = {"C0000001": "T023", "C0000002": "T047", "C0000003": "T033", "C0000004": "T045"}


def sty(cui, tui):
    return f"{cui}|{tui}|A1.2|Type {tui}|AT{cui[1:]}||"


@pytest.fixture(scope="module")
def typed_graph(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("typed")
    names = [("C0000001", "Heart", "HP:0000001"), ("C0000002", "Heart failure", "HP:0000002"),
             ("C0000003", "Seizure", "HP:0000003"), ("C0000004", "Autosomal dominant", "HP:0000004")]
    meta = write_meta(tmp / "META", [conso(c, n, sab="HPO", code=code) for c, n, code in names], [],
                      [sty(c, t) for c, t in TYPES.items()])
    out = tmp / "graph"
    out.mkdir()
    graph.build(meta, {}, out)
    return out


def test_semantic_type_filter(typed_graph, tmp_path):
    text = ("1|t|Heart failure and seizure.\n1|a|Autosomal dominant.\n"
            "1\t0\t13\tHeart failure\tDisease\tHP:0000002\n1\t18\t25\tseizure\tDisease\tHP:0000003\n"
            "1\t27\t45\tAutosomal dominant\tDisease\tHP:0000004\n")
    c = corpus(tmp_path, text)
    every, _ = run_link(typed_graph, c, tmp_path)
    assert every["text"].to_list() == ["Heart failure", "seizure", "Autosomal dominant"]
    # "Heart" is inside "Heart failure": with T047 dropped it is found, not hidden by the longer name
    kept, stats = run_link(typed_graph, c, tmp_path, semantic_types=["T023", "T033"])
    assert kept.select("text", "cui").rows() == [("Heart", "C0000001"), ("seizure", "C0000003")]
    assert stats["concepts_of_kept_types"] == 2
    tagged, stats = run_link(typed_graph, c, tmp_path, method="pretagged", semantic_types=["T033"])
    assert tagged["text"].to_list() == ["seizure"] and stats["dropped_by_semantic_type"] == 2


def frame(rows):
    return pl.DataFrame(rows, schema={"doc_id": pl.String, "start": pl.Int64, "end": pl.Int64, "cui": pl.String,
                                      "text": pl.String}, orient="row")


def test_scores_by_hand():
    gold = frame([("a", 0, 5, "C1", "heart"), ("a", 10, 20, "C2", "renal fail"), ("a", 30, 35, "C3", "cough"),
                  ("b", 0, 4, "C1", "card")])
    pred = frame([("a", 0, 5, "C1", "heart"),        # exact
                  ("a", 12, 20, "C2", "nal fail"),   # overlaps gold C2
                  ("a", 30, 35, "C4", "cough"),      # right span, wrong concept
                  ("b", 6, 9, "C1", "xyz"),          # no overlap, but C1 is in b's gold set
                  ("b", 10, 12, "C9", "zz")])
    s = score(gold, pred)
    assert s["mention_exact"] == pytest.approx({"precision": 1 / 5, "recall": 1 / 4, "f1": 2 / 9,
                                                "predicted": 5, "gold": 4})
    assert s["mention_overlap"]["precision"] == pytest.approx(2 / 5) and s["mention_overlap"]["recall"] == 0.5
    # documents: predicted {a:C1,C2,C4; b:C1,C9}, gold {a:C1,C2,C3; b:C1} -> 3 of 5, 3 of 4
    assert s["document"]["precision"] == pytest.approx(3 / 5) and s["document"]["recall"] == pytest.approx(3 / 4)
    assert s["top_misses"] == [("renal fail", 1), ("cough", 1), ("card", 1)]


OBO = """format-version: 1.2

[Term]
id: HP:0000003
name: Seizure
alt_id: HP:0000099

[Term]
id: HP:0000098
name: Old seizure
is_obsolete: true
replaced_by: HP:0000099
"""


def test_gsc_read_as_pubtator_gold(typed_graph, tmp_path):
    gsc = tmp_path / "gsc"
    (gsc / "corpus").mkdir(parents=True)
    (gsc / "ann").mkdir()
    (gsc / "corpus" / "11").write_text("Heart failure with\nseizure.  Fits again.")
    (gsc / "ann" / "11").write_text("[0::13]\tHP_0000002 | Heart failure\n"
                                    "[19::26]\tHP_0000098 | seizure\n"       # obsolete -> alt id -> HP:0000003
                                    "[2::7]\tHP_0000001 | heart\n"           # misaligned, once in the text
                                    "not a line\n")
    obo = tmp_path / "hp.obo"
    obo.write_text(OBO)
    issues = gsc_to_pubtator(gsc, obo, tmp_path / "gold.txt")
    assert issues.counts == {"id_mapped_through_obo": 1, "malformed_line": 1, "offsets_misaligned_realigned": 1}
    c = tmp_path / "c"
    c.mkdir()
    build_corpus([tmp_path / "gold.txt"], c, CORPUS)
    gold, missing = gold_mentions(c, pl.read_parquet(typed_graph / "codes.parquet"), LINK)
    text = pl.read_parquet(c / "documents.parquet")["text"][0]
    assert gold.select("start", "end", "cui").rows() == [(1, 6, "C0000001"), (1, 14, "C0000002"), (20, 27, "C0000003")]
    assert [text[a:b] for a, b in gold.select("start", "end").rows()] == gold["text"].to_list()
    assert missing == {}
    assert gold.height == read_gsc(gsc, typed_graph, obo).frame.height


@needs_shared
def test_gsc_plus_dictionary_figures(tmp_path):
    """GSC+ through the PubTator route gives exactly GSC+'s (document, span, concept) set, read directly;
    the dictionary method on the demo graph finds a real share of it (not nothing, not everything)."""
    from bali.evaluation.el_data import Issues, gsc_mentions
    from bali.kg.ontology import hp_obo_path, live_ids, parse_obo

    run_stage("demo_data", tmp_path / "demo")
    run_stage("umls_graph", tmp_path / "demo" / "META", tmp_path / "graph")
    gsc = SHARED_DATA / "gsc-plus"
    gsc_to_pubtator(gsc, hp_obo_path(), tmp_path / "gold.txt")
    r = recognise(tmp_path / "gold.txt", tmp_path / "graph", tmp_path / "work", CORPUS, LINK)
    codes = pl.read_parquet(tmp_path / "graph" / "codes.parquet").filter(pl.col("sab") == "HPO")
    to_cui, alias = dict(zip(codes["code"], codes["cui"])), live_ids(parse_obo(hp_obo_path()))
    direct = {(pmid, a + 1, b + 1, to_cui[alias.get(hp, hp)]) for pmid, _, a, b, hp, _, _ in gsc_mentions(gsc, Issues())
              if alias.get(hp, hp) in to_cui}
    gold, _ = gold_mentions(tmp_path / "work" / "corpus", codes, LINK)
    assert set(gold.select("doc_id", "start", "end", "cui").rows()) == direct and len(direct) > 2000
    assert r["mention_exact"]["gold"] == len(direct)
    assert 0.3 < r["mention_exact"]["recall"] < 0.6 and 0.4 < r["mention_exact"]["precision"] < 0.7


def rigged_tagger(d, label: str):
    """A tiny BIO token classifier that tags every token `label` (all weights 0, the bias decides)."""
    import torch
    from transformers import AutoModelForTokenClassification

    from bali.linking.ner_training import LABELS

    save_tiny_bert(d)
    model = AutoModelForTokenClassification.from_pretrained(
        d, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={t: i for i, t in enumerate(LABELS)})
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0 if t == label else 0.0 for t in LABELS]))
    model.save_pretrained(d)
    return d


def test_tagger_spans_decode_bio(tmp_path):
    from bali.linking.ner import Tagger

    text = "Heart failure, seizure."
    b = Tagger(rigged_tagger(tmp_path / "b", "B-Concept"), 8, 64, "cpu").spans([text, ""])
    assert b == [[(0, 5), (6, 13), (13, 14), (15, 22), (22, 23)], []]  # every word its own span
    i = Tagger(rigged_tagger(tmp_path / "i", "I-Concept"), 8, 64, "cpu").spans([text])
    assert i == [[(0, 23)]]  # an I- run after O starts a span and runs to the last I- word


def test_ner_method_links_by_name_then_by_vector(typed_graph, tmp_path):
    tagger, encoder = rigged_tagger(tmp_path / "tagger", "B-Concept"), save_tiny_bert(tmp_path / "enc")
    c = corpus(tmp_path, "1|t|Seizure and heart.\n1|a|Nothing else.\n")
    ner = {"model": str(tagger), "encoder": str(encoder), "threshold": 1.01, "embedding_cache": "",
           "batch_size": 8, "max_length": 64}
    by_name, stats = run_link(typed_graph, c, tmp_path, method="ner", ner=ner)
    assert by_name.select("text", "cui", "method", "score").rows() == [
        ("Seizure", "C0000003", "ner", 1.0), ("heart", "C0000001", "ner", 1.0)]
    assert stats["ner_spans"] == 7 and stats["ner_linked_by_name"] == 2 and stats["ner_spans_unlinked"] == 5
    every, stats = run_link(typed_graph, c, tmp_path, method="ner", ner={**ner, "threshold": -1.0},
                       semantic_types=["T033", "T023"])
    assert every.height == 7 and stats["ner_linked_by_embedding"] == 5
    assert set(every["cui"]) <= {"C0000001", "C0000003"}  # only concepts of the kept types
    assert (every.filter(pl.col("text") == "and")["score"] < 1.0).all()


def test_ner_model_stage(typed_graph, tmp_path):
    """Not built unless link.method is ner; with it, a tagger trained from silver labels that loads."""
    from transformers import AutoModelForTokenClassification

    base = save_tiny_bert(tmp_path / "base")
    c = corpus(tmp_path, "".join(f"{i}|t|Seizure in heart failure case {i}.\n{i}|a|No finding here.\n\n"
                                 for i in range(40)))
    run_stage("ner_model", typed_graph, c, base, tmp_path / "off")
    assert sorted(f.name for f in (tmp_path / "off").iterdir()) == ["README.md", "params.json"]
    run_stage("ner_model", typed_graph, c, base, tmp_path / "ner", "-S", "link.method=ner",
              "-S", "ner_model.epochs=2", "-S", "ner_model.names=10", "-S", "ner_model.dev_fraction=0.25")
    stats = __import__("json").loads((tmp_path / "ner" / "stats.json").read_text())
    assert stats["sentences_with_match"] == 40 and stats["sentences_without"] == 8 and stats["names"] == 4
    assert stats["dev_sentences"] == 12 and set(stats["dev"]) >= {"precision", "recall", "f1"}
    assert AutoModelForTokenClassification.from_pretrained(tmp_path / "ner").config.num_labels == 3
