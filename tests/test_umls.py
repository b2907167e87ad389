"""The UMLS -> concept graph stage: RRF parsing edge cases, filters, de-duplication, determinism,
failure modes, parity with a straightforward reference on synthetic UMLS, and real UMLS rows."""
import json
import shutil
import subprocess
import sys

import polars as pl
import pytest

from bali.kg import graph, umls
from conftest import SHARED, SHARED_DATA, conso, needs_shared, rel, run_stage, write_meta


def build(meta, tmp_path, **params):
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    stats = graph.build(meta, params, out)
    nodes = pl.read_parquet(out / "nodes.parquet")
    edges = pl.read_parquet(out / "edges.parquet")
    return nodes, edges, stats


def names_of(nodes):
    return {r["cui"]: r["names"] for r in nodes.iter_rows(named=True)}


def edge_set(nodes, edges):
    cui = dict(zip(nodes["node_id"], nodes["cui"]))
    return {(cui[s], cui[d], r, a, sab) for s, d, r, a, sab in edges.iter_rows()}


def test_rrf_edge_cases_and_malformed_lines(tmp_path):
    meta = write_meta(tmp_path / "META", [
        conso("C0000001", 'a "quoted" name'),                      # line 1: '"' is an ordinary character
        conso("C0000001", "Ménière’s disease — α"),                 # line 2: non-ASCII
        conso("C0000002", "too few").rsplit("|", 3)[0] + "|",       # line 3: a field missing
        conso("C0000003", "bad").encode() .replace(b"bad", b"b\xc3d"),  # line 4: invalid UTF-8
        conso("", "no cui"),                                        # line 5: empty CUI
        conso("C0000004", "ok") + "extra|",                         # line 6: a field too many
        "",                                                         # line 7: blank line
        conso("C0000005", "fine"),                                  # line 8
    ], [rel("C0000001", "RO", "C0000005")])
    nodes, edges, stats = build(meta, tmp_path, max_malformed_fraction=1.0)
    assert names_of(nodes) == {"C0000001": ['a "quoted" name', "Ménière’s disease — α"], "C0000005": ["fine"]}
    f = stats["files"]["MRCONSO.RRF"]
    assert (f["lines"], f["malformed"], stats["malformed_lines"]) == (8, 5, 5)
    assert f["malformed_by_reason"] == {"empty_cui": 1, "invalid_utf8": 1, "wrong_field_count": 3}
    assert [e["line"] for e in f["malformed_examples"]] == [3, 4, 5, 6, 7]
    assert edges.height == 1


def test_malformed_threshold_fails_cleanly_and_writes_nothing(tmp_path):
    meta = write_meta(tmp_path / "META", [conso("C0000001", "x"), conso("C0000002", "y").replace("|", "", 1)],
                      [rel("C0000001", "RO", "C0000002")])
    out = tmp_path / "graph"
    res = run_stage("umls_graph", meta, out, check=False)
    assert res.returncode != 0
    assert "MRCONSO.RRF: 1 of 2 lines are malformed" in res.stderr and "line 2 (wrong_field_count)" in res.stderr
    assert not out.exists() or not any(out.iterdir())
    ok = run_stage("umls_graph", meta, out, "-S", "umls_graph.max_malformed_fraction=0.5")
    assert "1 malformed lines" in ok.stdout and (out / "nodes.parquet").exists()
    run = json.loads((out / "stats.json").read_text())["run"]  # every stage records its time and memory
    assert 0 < run["wall_s"] < 600 and 0.02 < run["peak_rss_gib"] < 8


def test_missing_required_file_is_a_clear_error(tmp_path):
    meta = write_meta(tmp_path / "META", [conso("C0000001", "x")], None)
    res = run_stage("umls_graph", meta, tmp_path / "graph", check=False)
    assert res.returncode != 0 and "MRREL.RRF: required UMLS file is missing" in res.stderr


def test_names_preferred_name_and_dedup(tmp_path):
    meta = write_meta(tmp_path / "META", [
        conso("C0000002", "later", ts="S", ispref="N"),
        conso("C0000001", "synonym", ts="S", stt="VO", ispref="N"),
        conso("C0000001", "Preferred", ts="P", stt="PF", ispref="Y"),
        conso("C0000001", "synonym", sab="NCI"),               # (CUI, STR) duplicate from another source
        conso("C0000001", "Synonym", ts="P", stt="PF", ispref="N"),  # case differs: another name
        conso("C0000001", ""),                                 # an empty STR is not a name
        conso("C0000003", "french only", lat="FRE"),          # no English name: not a node
    ], [])
    nodes, _, stats = build(meta, tmp_path)
    assert nodes["cui"].to_list() == ["C0000001", "C0000002"] and nodes["node_id"].to_list() == [0, 1]
    assert nodes.row(0, named=True)["name"] == "Preferred"
    assert nodes.row(0, named=True)["names"] == ["synonym", "Preferred", "Synonym"]
    assert nodes.row(1, named=True)["name"] == "later"
    assert stats["files"]["MRCONSO.RRF"]["dropped"] == {"language": 1, "empty_str": 1}
    assert stats["nodes_without_semantic_type"] == 2


def test_edges_direction_dedup_and_drops(tmp_path):
    meta = write_meta(tmp_path / "META", [conso(f"C000000{i}", f"n{i}") for i in range(1, 4)], [
        rel("C0000001", "CHD", "C0000002", "isa", sab="MSH"),    # C2 isa C1
        rel("C0000001", "CHD", "C0000002", "isa", sab="NCI"),    # same relation again: MSH (first) wins
        rel("C0000002", "PAR", "C0000001", "inverse_isa"),
        rel("C0000001", "RO", "C0000002"),                       # another REL between the same pair
        rel("C0000003", "RO", "C0000003"),                       # self loop: kept by default
        rel("C0000001", "RO", "C0000009"),                       # C9 is not a node
    ])
    nodes, edges, stats = build(meta, tmp_path)
    assert edge_set(nodes, edges) == {
        ("C0000002", "C0000001", "CHD", "isa", "MSH"), ("C0000001", "C0000002", "PAR", "inverse_isa", "MSH"),
        ("C0000002", "C0000001", "RO", "", "MSH"), ("C0000003", "C0000003", "RO", "", "MSH")}
    assert stats["files"]["MRREL.RRF"]["dropped"] == {"endpoint_not_node": 1, "duplicate": 1}
    assert (stats["self_loops"], stats["isolated_nodes"]) == (1, 0)
    assert edges.sort("dst", "src").equals(edges)  # sorted by (dst, src)


def test_filters(tmp_path):
    meta = write_meta(tmp_path / "META", [
        conso("C0000001", "one"), conso("C0000001", "uno", lat="SPA"),
        conso("C0000002", "two", sab="NCI"), conso("C0000003", "three", suppress="O"),
    ], [
        rel("C0000001", "CHD", "C0000002", "isa"), rel("C0000002", "RO", "C0000001", "", sab="NCI"),
        rel("C0000001", "RO", "C0000001"), rel("C0000001", "RB", "C0000003", suppress="O"),
    ])
    nodes, edges, _ = build(meta, tmp_path, languages=["ENG", "SPA"])
    assert names_of(nodes)["C0000001"] == ["one", "uno"]
    nodes, edges, stats = build(meta, tmp_path, languages=[])
    assert nodes.height == 3 and edges.height == 4
    nodes, edges, stats = build(meta, tmp_path, sources_drop=["NCI"])
    assert "C0000002" not in names_of(nodes) and stats["files"]["MRCONSO.RRF"]["dropped"]["source"] == 1
    assert stats["files"]["MRREL.RRF"]["dropped"]["source"] == 1
    nodes, edges, stats = build(meta, tmp_path, sources_keep=["NCI"])
    assert list(names_of(nodes)) == ["C0000002"]
    nodes, edges, stats = build(meta, tmp_path, suppress_drop=["O", "E"])
    assert "C0000003" not in names_of(nodes) and stats["files"]["MRREL.RRF"]["dropped"]["suppress"] == 1
    _, edges, stats = build(meta, tmp_path, rel_keep=["CHD"])
    assert edges["rel"].to_list() == ["CHD"] and stats["files"]["MRREL.RRF"]["dropped"]["rel"] == 3
    _, edges, _ = build(meta, tmp_path, rel_drop=["RO"])
    assert sorted(edges["rel"]) == ["CHD", "RB"]
    _, edges, _ = build(meta, tmp_path, rela_keep=["isa"])
    assert edges["rela"].to_list() == ["isa"]
    _, edges, _ = build(meta, tmp_path, rela_drop=[""])
    assert edges["rela"].to_list() == ["isa"]
    _, edges, stats = build(meta, tmp_path, self_loops=False)
    assert (edges["src"] != edges["dst"]).all() and stats["files"]["MRREL.RRF"]["dropped"]["self_loop"] == 1


def test_semantic_types(tmp_path):
    meta = write_meta(tmp_path / "META", [conso("C0000001", "a"), conso("CX1", "b")], [],
                      ["C0000001|T121|A|Pharm|AT1||", "C0000001|T109|A|Org|AT2||", "CX1|T047|B|Dis|AT3||",
                       "C0000009|T047|B|Dis|AT4||"])
    nodes, _, _ = build(meta, tmp_path)
    assert nodes["semantic_types"].to_list() == [["T109", "T121"], ["T047"]]


@needs_shared
def test_gen_rrf_reference_parity_partitions_and_bytes(tmp_path):
    """Synthetic UMLS with corrupted lines: malformed lines found exactly where gen_rrf put them; the
    graph equals a line-by-line Python reference; partitioned de-duplication and re-runs agree."""
    meta = tmp_path / "syn"
    subprocess.run([sys.executable, str(SHARED / "bench" / "gen_rrf.py"), str(meta), "--concepts", "3000",
                    "--malformed", "8"], check=True, capture_output=True)
    expected = pl.read_csv(meta / "MALFORMED.tsv", separator="\t")
    reason = {"missing_field": "wrong_field_count", "bad_utf8": "invalid_utf8", "empty_cui": "empty_cui"}
    nodes, edges, stats = build(meta, tmp_path, max_malformed_fraction=0.01)
    found = sorted((name, e["line"], e["reason"]) for name, f in stats["files"].items() for e in f["malformed_examples"])
    assert found == sorted((f, ln, reason[k]) for f, ln, k in expected.iter_rows())

    ref_nodes, ref_edges = reference_graph(meta, {ln for f, ln, _ in found if f == "MRCONSO.RRF"},
                                           {ln for f, ln, _ in found if f == "MRREL.RRF"})
    assert [(r["cui"], r["name"], r["names"]) for r in nodes.iter_rows(named=True)] == ref_nodes
    assert edge_set(nodes, edges) == ref_edges and edges.height == len(ref_edges)

    small = tmp_path / "small"
    small.mkdir()
    graph.build(meta, {"max_malformed_fraction": 0.01, "edge_partition_rows": 5000}, small)
    assert len(list((small / "edges.parquet").iterdir())) > 1
    assert pl.read_parquet(small / "edges.parquet").equals(edges)
    again = tmp_path / "again"
    again.mkdir()
    graph.build(meta, {"max_malformed_fraction": 0.01}, again)
    for f in ("nodes.parquet", "codes.parquet", "edges.parquet/part-00000.parquet"):
        assert (again / f).read_bytes() == (tmp_path / "out" / f).read_bytes(), f


def reference_graph(meta, bad_conso, bad_rel):
    """The published rules, one line at a time in plain Python."""
    names, best = {}, {}
    with open(meta / "MRCONSO.RRF", encoding="utf-8", errors="replace") as f:
        for ln, line in enumerate(f, 1):
            x = line.rstrip("\n").split("|")
            if ln in bad_conso or x[1] != "ENG" or not x[14]:
                continue
            cui, text = x[0], x[14]
            rank = (x[2] == "P") * 4 + (x[4] == "PF") * 2 + (x[6] == "Y")
            if text not in names.setdefault(cui, []):
                names[cui].append(text)
            if cui not in best or rank > best[cui][0]:
                best[cui] = (rank, text)
    edges, seen = set(), set()
    with open(meta / "MRREL.RRF", encoding="utf-8", errors="replace") as f:
        for ln, line in enumerate(f, 1):
            x = line.rstrip("\n").split("|")
            if ln in bad_rel or x[0] not in names or x[4] not in names or (x[0], x[4], x[3], x[7]) in seen:
                continue
            seen.add((x[0], x[4], x[3], x[7]))
            edges.add((x[4], x[0], x[3], x[7], x[10]))
    return [(c, best[c][1], names[c]) for c in sorted(names)], edges


@needs_shared
def test_real_umls_rows(tmp_path):
    meta = tmp_path / "META"
    meta.mkdir()
    for name in ("MRCONSO.RRF", "MRSTY.RRF"):
        shutil.copy(SHARED_DATA / "umls-fixture" / name, meta / name)
    (meta / "MRREL.RRF").write_bytes(b"")  # the fixture has no MRREL; an empty one is valid
    out = tmp_path / "graph"
    run_stage("umls_graph", meta, out)
    nodes = pl.read_parquet(out / "nodes.parquet")
    assert nodes.to_dicts() == [
        {"node_id": 0, "cui": "C0000005", "name": "(131)I-Macroaggregated Albumin",
         "names": ["(131)I-Macroaggregated Albumin", "(131)I-MAA"], "semantic_types": ["T116"]},
        {"node_id": 1, "cui": "C0000039", "name": "1,2-Dipalmitoylphosphatidylcholine",
         "names": ["1,2-Dipalmitoylphosphatidylcholine"], "semantic_types": ["T109", "T121"]}]
    codes = pl.read_parquet(out / "codes.parquet")
    assert codes.rows() == [("MSH", "D012711", "C0000005"), ("MSH", "D015060", "C0000039")]
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["nodes"], stats["edges"], stats["isolated_nodes"]) == (2, 0, 2)
    saved = json.loads((out / "params.json").read_text())
    assert saved["params"]["languages"] == ["ENG"] and saved["inputs"]["meta_dir"] == str(meta)


def test_stage_help():
    res = run_stage("umls_graph", "--help")
    assert "META_DIR" in res.stdout and "-S" in res.stdout


def test_validate_reports_by_line(tmp_path):
    path = tmp_path / "MRSTY.RRF"
    path.write_bytes(b"C1|T1|A|x|AT1||\nC2|T2|A|x||\n")
    report = umls.validate(path, max_fraction=1.0)
    assert (report.lines, report.malformed, report.examples) == (2, 1, [{"line": 2, "reason": "wrong_field_count"}])
    with pytest.raises(umls.MalformedInputError, match="1 of 2 lines"):
        umls.validate(path, max_fraction=0.1)
