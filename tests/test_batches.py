"""Batches for pre-training: neighbour sampling, node de-duplication, MLM masking rates,
determinism across data-loader workers, disjoint DDP slices, held-out names, the linear-graph format."""
import numpy as np
import polars as pl
import pytest
import torch

from bali.data.batches import AlignmentBatches, BucketBatchSampler, loader
from bali.data.training_data import TrainingData
from conftest import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return TrainingData(make_dataset(tmp_path_factory.mktemp("ds")))


def batches(data, workers=0, rank=0, world=1, epoch=0, **kw):
    dl, sampler = loader(data, 16, seed=7, workers=workers, rank=rank, world_size=world, **kw)
    sampler.set_epoch(epoch)
    return list(dl)


def test_neighbours_star_and_dedup(data):
    for b in batches(data):
        nodes = b["graph_nodes"].numpy()
        assert len(np.unique(nodes)) == len(nodes)  # every distinct node encoded once
        targets = set(b["target_nodes"].tolist())
        star = nodes[b["star_nodes"].numpy()]
        src, dst = star[b["edge_index"][0].numpy()], star[b["edge_index"][1].numpy()]
        assert len(set(b["edge_index"][0].tolist())) == b["edge_index"].shape[1]  # each star has its own copies
        assert set(dst) <= targets  # edges point neighbour -> target
        for t in targets:
            got = src[dst == t]
            assert len(got) == len(set(got)) <= 3  # at most 3, no repeats
            expected = {0: set(range(1, 6)), 6: {7}, 7: {6}}.get(t, {0} if 1 <= t <= 5 else set())
            assert set(got) <= expected and len(got) == min(3, len(expected))  # isolated nodes: none
        assert (nodes[b["target_node_index"].numpy()] == b["target_nodes"].numpy()).all()
        assert (star[b["target_star_index"].numpy()] == b["target_nodes"].numpy()).all()


def test_mentions_of_one_concept_pool_together(data):
    b = batches(data)[0]
    for row in range(b["input_ids"].shape[0]):
        owners = b["mention_owner"][b["mention_rows"] == row]
        nodes = b["target_nodes"][owners]
        assert len(set(zip(owners.tolist(), nodes.tolist()))) == len(set(nodes.tolist()))  # one target per concept


def test_masking_rates(data):
    special = torch.tensor(data.special_ids)
    chosen = maskable = masked = swapped = 0
    for epoch in range(20):
        for b in batches(data, epoch=epoch):
            labels, ids, att = b["mlm_labels"], b["input_ids"], b["attention_mask"]
            sel = labels != -100
            assert not (sel & ~att).any() and not torch.isin(labels[sel], special).any()  # never pad / special
            orig = torch.where(sel, labels, ids)
            maskable += int((att & ~torch.isin(orig, special)).sum())
            chosen += int(sel.sum())
            masked += int((ids[sel] == data.tokenizer.mask_token_id).sum())
            swapped += int(((ids[sel] != labels[sel]) & (ids[sel] != data.tokenizer.mask_token_id)).sum())
    assert abs(chosen / maskable - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02 and abs(swapped / chosen - 0.1) < 0.02


def test_deterministic_across_workers_and_fresh_each_epoch(data):
    a, b = batches(data, workers=0), batches(data, workers=2)
    assert len(a) == len(b) > 1
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["edge_index"], y["edge_index"])
        assert x["node_names"] == y["node_names"]
    other = batches(data, epoch=1)
    assert any(not torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, other, strict=True))


def test_ddp_ranks_split_the_single_process_batches():
    lengths = np.arange(103) % 17
    single = list(BucketBatchSampler(lengths, 8, 3))
    ranks = [list(BucketBatchSampler(lengths, 8, 3, rank, 2)) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)  # the same number of steps on every rank
    for (_, n, whole), (_, n0, r0), (_, n1, r1) in zip(single, *ranks, strict=True):
        assert n == n0 == n1 and not set(r0) & set(r1) and set(r0) | set(r1) == set(whole)


def test_sampler_starts_at_a_batch_without_building_the_earlier_ones():
    sampler = BucketBatchSampler(np.arange(103) % 17, 8, 3)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start=5)
    rest = list(sampler)
    assert len(rest) == len(whole) - 5 and len(sampler) == len(whole)
    for (e0, n0, b0), (e1, n1, b1) in zip(whole[5:], rest, strict=True):
        assert (e0, n0) == (e1, n1) and np.array_equal(b0, b1)


def test_held_out_names_never_drawn_and_nameless_nodes_counted(tmp_path):
    """names.parquet without the held-out strings, as the dataset stage writes it: node 4 has lost
    both its names. Every drawn name is one of its own node's kept names; node 4 is never a
    neighbour nor a target, and the mentions of it are counted."""
    d = make_dataset(tmp_path)
    held_out = {"synonym number 3 of it", "concept 4", "synonym number 4 of it"}
    names = pl.read_parquet(d / "names.parquet")
    names.filter(~pl.col("name").is_in(list(held_out))).write_parquet(d / "names.parquet")
    own = {}
    for node, name in names.select("node", "name").iter_rows():
        own.setdefault(node, set()).add(name)
    data = TrainingData(d)
    mentions_of_4 = sum(m == 4 for ms in pl.read_parquet(d / "examples.parquet")["mention_node"].to_list() for m in ms)
    ds = AlignmentBatches(data, seed=7, synonyms=True)
    assert ds.nameless_nodes == 1 and ds.nameless_mentions == mentions_of_4 > 0
    drawn = set()
    for b in batches(data, synonyms=True):
        nodes = b["graph_nodes"].tolist()
        assert 4 not in nodes and 4 not in b["target_nodes"].tolist()
        for k, node in enumerate(nodes):
            assert b["node_names"][k] in own[node] - held_out  # its own node's name, never a held-out string
        for t, syn in zip(b["target_nodes"].tolist(), b["target_synonym_index"].tolist(), strict=True):
            assert b["node_names"][syn] in own[t] - held_out
        drawn |= set(b["node_names"])
    assert not drawn & held_out and "concept 3" in drawn


def test_names_and_linear_graph(data):
    for b in batches(data):
        real, padded = b["name_real_tokens"], b["name_padded_tokens"]
        assert real / padded >= 0.8
    lin = batches(data, linear_graph=True)[0]
    assert lin["graph_input_ids"].shape[0] == len(set(lin["target_nodes"].tolist()))
    star = [t for t in lin["graph_texts"] if t.startswith("concept 0") or t.startswith("synonym number 0 ")]
    assert star and all("[SEP]" in t and "parent of" in t for t in star)  # PAR with no RELA, made readable


def test_batch_key_fixes_the_batch(data):
    ds = AlignmentBatches(data, seed=1)
    key = (0, 5, np.arange(8))
    assert ds[key]["node_names"] == ds[key]["node_names"]


def test_masks_do_not_depend_on_the_batch(data):
    ds = AlignmentBatches(data, seed=1)
    short = min(range(len(data)), key=lambda i: len(data.input_ids[i]))
    long = max(range(len(data)), key=lambda i: len(data.input_ids[i]))
    alone, beside = ds[(0, 0, np.array([short]))], ds[(0, 0, np.array([short, long]))]
    n = len(data.input_ids[short])
    assert torch.equal(alone["input_ids"][0, :n], beside["input_ids"][0, :n])


def test_synonyms_are_a_second_name_of_each_target(data):
    for b in batches(data, synonyms=True):
        names = b["node_names"]
        assert b["name_rows"] == len(names) == len(b["graph_nodes"]) + len(set(b["target_nodes"].tolist()))
        for t, own, syn in zip(b["target_nodes"].tolist(), b["target_node_index"].tolist(),
                               b["target_synonym_index"].tolist()):
            assert syn >= len(b["graph_nodes"]) and names[syn] != names[own]  # every demo node has two names
            assert {names[own], names[syn]} == {f"concept {t}", f"synonym number {t} of it"}


def test_link_stars_leave_the_predicted_neighbour_out(data):
    seen = 0
    for b in batches(data, links=True):
        nodes = b["graph_nodes"].numpy()
        star = nodes[b["star_nodes"].numpy()]
        sampled = {int(t): set(star[b["edge_index"][0].numpy()][star[b["edge_index"][1].numpy()] == t])
                   for t in b["target_nodes"].tolist()}
        link = nodes[b["link_star_nodes"].numpy()]
        src, dst = b["link_edge_index"].numpy()
        for row, center in enumerate(b["link_centers"].tolist()):
            t, n = int(nodes[b["link_anchor"][row]]), int(nodes[b["link_positive"][row]])
            assert link[center] == t and n in sampled[t]
            assert set(link[src[dst == center]]) == sampled[t] - {n}  # its other sampled neighbours, never n
            negatives = set(nodes[b["link_negative"][row].numpy()])
            graph_neighbours = {0: set(range(1, 6)), 6: {7}, 7: {6}}.get(t, {0} if 1 <= t <= 5 else set())
            assert not negatives & (graph_neighbours | {t}) and negatives == set(nodes) - graph_neighbours - {t}
            seen += 1
    assert seen > 0
