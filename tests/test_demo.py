"""The HPO demo knowledge graph: OBO parsing, the RRF it writes, and the graph the real code path builds."""
import json
import re

import polars as pl
import pytest

from bali.kg import demo, ontology
from conftest import run_stage

OBO = '''format-version: 1.2

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000002
name: Child "one"
def: "A \\"quoted\\" definition." [PMID:1]
synonym: "Kid \\"1\\"" EXACT layperson []
synonym: "Broad kid" BROAD []
synonym: "Loose \\"kid\\"" RELATED layperson []
xref: UMLS:0189573
xref: UMLS:C0000002
is_a: HP:0000001 ! All
is_a: HP:0000009 ! Gone

[Term]
id: HP:0000003
name: Twin of two
xref: UMLS:C0000002
is_a: HP:0000001

[Term]
id: HP:0000009
name: Gone
is_obsolete: true

[Typedef]
id: part_of
name: part of
'''


def test_obo_to_rrf(tmp_path):
    obo = tmp_path / "t.obo"
    obo.write_text(OBO)
    terms = ontology.parse_obo(obo)
    assert [t.id for t in terms] == ["HP:0000001", "HP:0000002", "HP:0000003", "HP:0000009"]
    two = terms[1]
    assert (two.definition, two.synonyms, two.parents) == ('A "quoted" definition.', ['Kid "1"'],
                                                            ["HP:0000001", "HP:0000009"])
    stats = demo.write_rrf(terms, tmp_path / "META")
    assert (stats["concepts"], stats["obsolete_terms"], stats["malformed_umls_xrefs"]) == (2, 1, 1)
    conso = [ln.split("|") for ln in (tmp_path / "META" / "MRCONSO.RRF").read_text().splitlines()]
    assert all(len(f) == 19 and f[-1] == "" for f in conso)
    assert [(f[0], f[12], f[13], f[14]) for f in conso] == [
        ("C0000002", "PT", "HP:0000002", 'Child "one"'), ("C0000002", "SY", "HP:0000002", 'Kid "1"'),
        ("C0000002", "PT", "HP:0000003", "Twin of two"), ("CHP0000001", "PT", "HP:0000001", "All")]
    # RELATED synonyms only on request (demo_data.related_synonyms), as entry terms after the exact ones
    related = demo.related_synonyms(obo)
    assert related == {"HP:0000002": ['Loose "kid"']}
    demo.write_rrf(terms, tmp_path / "META2", related=related)
    conso2 = [ln.split("|") for ln in (tmp_path / "META2" / "MRCONSO.RRF").read_text().splitlines()]
    assert [(f[12], f[14]) for f in conso2][:3] == [("PT", 'Child "one"'), ("SY", 'Kid "1"'), ("ET", 'Loose "kid"')]
    rels = [ln.split("|") for ln in (tmp_path / "META" / "MRREL.RRF").read_text().splitlines()]
    assert sorted((f[0], f[3], f[4], f[7]) for f in rels) == [  # the link to the obsolete term is gone
        ("C0000002", "PAR", "CHP0000001", "inverse_isa"), ("C0000002", "PAR", "CHP0000001", "inverse_isa"),
        ("CHP0000001", "CHD", "C0000002", "isa"), ("CHP0000001", "CHD", "C0000002", "isa")]


def test_demo_graph_from_hpo(tmp_path):
    run_stage("demo_data", tmp_path / "demo")
    run_stage("umls_graph", tmp_path / "demo" / "META", tmp_path / "graph")
    stats = json.loads((tmp_path / "graph" / "stats.json").read_text())
    assert 18_000 < stats["nodes"] < 20_000 and 42_000 < stats["edges"] < 46_000  # 2,000 is_a links held out, both directions
    assert stats["malformed_lines"] == 0 and stats["nodes_without_semantic_type"] == 0
    nodes = pl.read_parquet(tmp_path / "graph" / "nodes.parquet")
    edges = pl.read_parquet(tmp_path / "graph" / "edges.parquet")
    assert all(re.fullmatch(r"C\d{7}|CHP\d{7}", c) for c in nodes["cui"])
    assert nodes.filter(pl.col("cui").str.starts_with("CHP")).height > 5_000
    root = nodes.filter(pl.col("cui") == "C4021819").row(0, named=True)  # HP:0000118
    assert root["name"] == "Phenotypic abnormality" and "Organ abnormality" in root["names"]
    assert set(edges["rel"]) == {"CHD", "PAR"} and set(edges["rela"]) == {"isa", "inverse_isa"}
    # MRREL stores both directions, so every child -> parent isa edge has its inverse.
    isa = edges.filter(pl.col("rela") == "isa").select("src", "dst")
    inverse = edges.filter(pl.col("rela") == "inverse_isa").select(src="dst", dst="src")
    assert isa.sort("src", "dst").equals(inverse.sort("src", "dst"))
    # A second run from scratch gives the same bytes, inputs and outputs alike (stats.json: the same
    # counts; its "run" holds the run's wall time and memory)
    run_stage("demo_data", tmp_path / "demo2")
    run_stage("umls_graph", tmp_path / "demo2" / "META", tmp_path / "graph2")
    for f in ["META/MRCONSO.RRF", "META/MRREL.RRF", "META/MRSTY.RRF", "corpus.jsonl"]:
        assert (tmp_path / "demo" / f).read_bytes() == (tmp_path / "demo2" / f).read_bytes(), f
    for f in ["nodes.parquet", "codes.parquet", "edges.parquet/part-00000.parquet"]:
        assert (tmp_path / "graph" / f).read_bytes() == (tmp_path / "graph2" / f).read_bytes(), f
    for a, b in ((tmp_path / "demo", tmp_path / "demo2"), (tmp_path / "graph", tmp_path / "graph2")):
        counts = [{k: v for k, v in json.loads((d / "stats.json").read_text()).items() if k != "run"} for d in (a, b)]
        assert counts[0] == counts[1] and "wall_s" in json.loads((a / "stats.json").read_text())["run"]


def test_isa_links_held_out_of_the_graph(tmp_path):
    def term(i, *parents):
        return demo.Term(id=f"HP:000000{i}", name=f"T{i}", umls=[f"C000000{i}"], parents=[f"HP:000000{p}" for p in parents])

    terms = [term(1), term(2, 1), term(3, 1), term(4, 2, 3), term(5, 2, 3), term(6, 2)]
    held, seen = demo.hold_out_isa(terms, 2, seed=0)
    assert len(held) == len(seen) == 2 and not set(held) & set(seen)
    assert {c for c, _ in held} == {"C0000004", "C0000005"}  # each of the two-parent children gives one link
    assert {c for c, _ in seen} <= {"C0000004", "C0000005"}  # the same population, links left in
    demo.write_rrf(terms, tmp_path / "META", set(held))
    isa = {(f[4], f[0]) for f in (ln.split("|") for ln in (tmp_path / "META" / "MRREL.RRF").read_text().splitlines())
           if f[7] == "isa"}  # (child, parent)
    assert not isa & set(held) and set(seen) <= isa
    assert all(any(c == child for c, _ in isa) for child, _ in held)  # every child keeps a parent
    with pytest.raises(ValueError, match="only 2 is_a links"):
        demo.hold_out_isa(terms, 3, seed=0)
    demo.write_hierarchy_task(terms, tmp_path / "h", held, seen)
    assert (tmp_path / "h" / "names.txt").read_text().splitlines()[0] == "C0000001||T1"
