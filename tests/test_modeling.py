"""Alignment losses against hand computation; the model's gradients reach every part; it learns."""
import math

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from bali.modeling.graph_encoders import GraphEncoder
from bali.modeling.losses import link_nt_xent, multi_similarity, nt_xent
from bali.modeling.model import BaliModel

X = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8], [0.6, -0.8]])
Y = torch.tensor([0, 0, 1, 1, 2])


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def test_nt_xent_by_hand():
    t, terms = 0.07, []
    for a in range(5):
        for p in range(5):
            if a != p and Y[a] == Y[p]:
                neg = sum(math.exp(cos(X[a], X[n]) / t) for n in range(5) if Y[n] != Y[a])
                terms.append(-math.log(math.exp(cos(X[a], X[p]) / t) / (math.exp(cos(X[a], X[p]) / t) + neg)))
    assert nt_xent(X, Y, t).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert nt_xent(X, torch.arange(5)).item() == 0.0  # no positive pair


def test_multi_similarity_by_hand():
    alpha, beta, base, margin, per = 2.0, 50.0, 0.5, 0.1, []
    for a in range(5):
        pos = [cos(X[a], X[p]) for p in range(5) if p != a and Y[p] == Y[a]]
        neg = [cos(X[a], X[n]) for n in range(5) if Y[n] != Y[a]]
        if not pos:
            continue
        kp = [s for s in pos if s - margin < max(neg)]
        kn = [s for s in neg if s + margin > min(pos)]
        per.append(math.log(1 + sum(math.exp(-alpha * (s - base)) for s in kp)) / alpha
                   + math.log(1 + sum(math.exp(beta * (s - base)) for s in kn)) / beta)
    assert multi_similarity(X, Y).item() == pytest.approx(sum(per) / len(per), rel=1e-5)


def test_zero_init_residual_starts_at_the_identity():
    enc = GraphEncoder("gatv2", 8, layers=2, residual=True, zero_init=True).eval()
    x = torch.randn(4, 8)
    out = enc(x, torch.tensor([[1, 2, 3], [0, 0, 0]]), torch.tensor([0, 3]))
    assert torch.allclose(out, x[[0, 3]])


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp_path / "lm")
    return str(tmp_path / "lm")


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (4, 10), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    chunk = {"input_ids": torch.randint(5, 50, (6, 4), generator=g), "attention_mask": torch.ones(6, 4, dtype=torch.bool),
             "nodes": torch.arange(6)}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool), "mlm_labels": labels,
            "mention_rows": torch.tensor([0, 0, 1, 2, 3, 3]), "mention_positions": torch.tensor([1, 2, 1, 4, 1, 5]),
            "mention_owner": torch.tensor([0, 0, 1, 2, 3, 4]), "target_nodes": torch.tensor([10, 11, 10, 12, 11]),
            "graph_nodes": torch.tensor([10, 11, 12, 13, 14, 15]), "name_chunks": [chunk],
            "star_nodes": torch.tensor([0, 3, 1, 4, 2, 5]), "edge_index": torch.tensor([[1, 3, 5], [0, 2, 4]]),
            "target_node_index": torch.tensor([0, 1, 0, 2, 1]), "target_star_index": torch.tensor([0, 2, 0, 4, 2])}


@pytest.mark.parametrize("kind", ["gatv2", "sage"])
def test_gradients_reach_lm_graph_and_head(tiny, kind):
    model = BaliModel(tiny, graph_encoder=kind, layers=2, fresh_mlm_head=True)
    out = model(batch())
    out["loss"].backward()
    assert out["mlm"] > 0 and out["contrastive"] > 0
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["mlm_model.bert.encoder.layer.0.attention.self.query.weight"].abs().sum() > 0
    assert grads["mlm_model.cls.predictions.transform.dense.weight"].abs().sum() > 0
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("graph.convs.0"))


def test_a_few_steps_lower_the_loss(tiny):
    torch.manual_seed(0)
    model = BaliModel(tiny, layers=2, dropout=0.0, attention_dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = batch()
    first = None
    for _ in range(15):
        opt.zero_grad()
        loss = model(b)["loss"]
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert model(b)["loss"].item() < 0.7 * first


def test_name_term_with_subgraph_negatives_by_hand(tiny):
    """name_negatives=subgraph: NT-Xent over [mention vectors; every star node's name vector], each
    labelled by its concept, so a sampled neighbour's name is a negative for every mention."""
    model = BaliModel(tiny, layers=2, name_weight=1.0, name_negatives="subgraph").eval()
    b = batch()
    with torch.no_grad():
        out = model(b)
        hidden = model.lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        tokens = hidden[b["mention_rows"], b["mention_positions"]]
        mentions = torch.zeros(5, 16).index_add(0, b["mention_owner"], tokens) / \
            torch.bincount(b["mention_owner"], minlength=5).clamp(min=1).unsqueeze(1)
        nodes = model.node_vectors(b)
    x = torch.nn.functional.normalize(torch.cat([mentions, nodes]), dim=-1)
    y = torch.cat([b["target_nodes"], b["graph_nodes"]])
    e = (x @ x.T / 0.07).exp().tolist()
    terms = []
    for a in range(len(y)):  # neighbour names (13, 14, 15) have no positive: they are negatives only
        negatives = sum(e[a][n] for n in range(len(y)) if y[n] != y[a])
        terms += [-math.log(e[a][q] / (e[a][q] + negatives)) for q in range(len(y)) if q != a and y[q] == y[a]]
    assert out["name"].item() == pytest.approx(sum(terms) / len(terms), rel=1e-4)


def test_synonym_term_trains_lm_and_graph(tiny):
    model = BaliModel(tiny, layers=2, mlm_weight=0.0, contrastive_weight=0.0, synonym_weight=1.0)
    b = batch()
    b["name_chunks"].append({"input_ids": torch.randint(5, 50, (3, 4)), "attention_mask": torch.ones(3, 4, dtype=torch.bool),
                             "nodes": torch.tensor([6, 7, 8])})
    b["name_rows"], b["target_synonym_index"] = 9, torch.tensor([6, 7, 6, 8, 7])
    out = model(b)
    out["loss"].backward()
    assert out["loss"] == out["synonym"] > 0
    grads = dict(model.named_parameters())
    assert grads["mlm_model.bert.encoder.layer.0.attention.self.query.weight"].grad.abs().sum() > 0
    assert grads["graph.out.0.weight"].grad.abs().sum() > 0


def test_all_terms_together(tiny):
    model = BaliModel(tiny, layers=2, name_weight=1.0, name_negatives="subgraph", synonym_weight=1.0)
    b = batch()
    b["name_chunks"].append({"input_ids": torch.randint(5, 50, (3, 4)), "attention_mask": torch.ones(3, 4, dtype=torch.bool),
                             "nodes": torch.tensor([6, 7, 8])})
    b["name_rows"], b["target_synonym_index"] = 9, torch.tensor([6, 7, 6, 8, 7])
    out = model(b)
    assert out["loss"].item() == pytest.approx(sum(out[k].item() for k in ("mlm", "contrastive", "name", "synonym")))
    assert min(out[k].item() for k in ("contrastive", "name", "synonym")) > 0


def test_losses_run_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(64, 32), dim=-1)
    y = torch.randint(0, 16, (64,))
    exact = nt_xent(x.double(), y).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(x.bfloat16(), y)
        ms = multi_similarity(x.bfloat16(), y)
    assert got.dtype == ms.dtype == torch.float32
    # the inputs' own bf16 rounding stays; the similarities, / 0.07 and log-sum-exp do not add to it
    assert got.item() == pytest.approx(nt_xent(x.bfloat16().double(), y).item(), rel=1e-5)
    assert got.item() == pytest.approx(exact, rel=2e-2)


def test_model_losses_are_float32_under_autocast(tiny):
    model = BaliModel(tiny, layers=2, fresh_mlm_head=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch())
    assert all(out[k].dtype == torch.float32 for k in ("loss", "mlm", "contrastive"))


def test_no_masked_token_gives_a_zero_mlm_loss_not_nan(tiny):
    model = BaliModel(tiny, layers=2, fresh_mlm_head=True)
    b = batch()
    b["mlm_labels"] = torch.full_like(b["mlm_labels"], -100)
    out = model(b)
    out["loss"].backward()
    assert out["mlm"].item() == 0.0 and torch.isfinite(out["loss"])
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)


def test_mlm_loss_is_the_mean_over_masked_tokens(tiny):
    model = BaliModel(tiny, layers=2, fresh_mlm_head=True).eval()
    b = batch()
    b["mlm_labels"][0, 5] = b["input_ids"][0, 5]  # 5 masked tokens
    with torch.no_grad():
        logits = model.mlm_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        expected = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), b["mlm_labels"].view(-1))
        assert model(b)["mlm"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_missing_head_is_explained_once_in_our_words(tmp_path, capfd):
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32), add_pooling_layer=False).save_pretrained(tmp_path / "encoder")
    model = BaliModel(str(tmp_path / "encoder"), layers=1, mlm_weight=0.0, verbose=True)
    err = capfd.readouterr().err
    assert "unused and frozen" in err and "has none" in err
    assert "corrupted" not in err and "MISSING" not in err
    head = [q for n, q in model.named_parameters() if n.startswith("mlm_model.cls.") and "decoder.weight" not in n]
    assert head and not any(q.requires_grad for q in head)
    BaliModel(str(tmp_path / "encoder"), layers=1, mlm_weight=1.0, verbose=True)
    assert "a fresh one is initialised" in capfd.readouterr().err


def link_fields(b):
    """Targets 10, 11, 12 (rows 0, 1, 2 of graph_nodes) with neighbours 13, 14, 15: one link row each,
    the star the target alone; 11 is also linked to 12 in the graph (no negative of 11's row)."""
    negative = torch.ones(3, 6, dtype=torch.bool)
    negative[[0, 1, 2], [0, 1, 2]] = False
    negative[[0, 1, 2], [3, 4, 5]] = False
    negative[1, 2] = False
    return {**b, "link_star_nodes": torch.tensor([0, 1, 2]), "link_edge_index": torch.zeros(2, 0, dtype=torch.long),
            "link_centers": torch.tensor([0, 1, 2]), "link_anchor": torch.tensor([0, 1, 2]),
            "link_positive": torch.tensor([3, 4, 5]), "link_negative": negative}


def test_link_nt_xent_by_hand():
    positive, negative = torch.tensor([1, 4]), torch.tensor([[False, False, True, True, False],
                                                             [True, True, False, False, False]])
    t, terms = 0.07, []
    for a, (p, negs) in enumerate(zip(positive.tolist(), negative.tolist())):
        e = {n: math.exp(cos(X[a], X[n]) / t) for n in range(5)}
        terms.append(-math.log(e[p] / (e[p] + sum(e[n] for n in range(5) if negs[n]))))
    assert link_nt_xent(X[:2], X, positive, negative, t).item() == pytest.approx(sum(terms) / 2, rel=1e-5)


def test_link_term_name_anchor_by_hand_and_graph_anchor_trains_the_encoder(tiny):
    model = BaliModel(tiny, layers=2, mlm_weight=0.0, contrastive_weight=0.0, link_weight=1.0, link_anchor="name")
    model.eval()
    b = link_fields(batch())
    out = model(b)
    with torch.no_grad():
        nodes = model.node_vectors(b)
    expected = link_nt_xent(nodes[:3], nodes, b["link_positive"], b["link_negative"]).item()
    e = [[math.exp(cos(nodes[a], nodes[n]) / 0.07) for n in range(6)] for a in range(3)]
    by_hand = [-math.log(e[a][p] / (e[a][p] + sum(e[a][n] for n in range(6) if b["link_negative"][a, n])))
               for a, p in enumerate([3, 4, 5])]
    assert out["loss"].item() == out["link"].item() == pytest.approx(sum(by_hand) / 3, rel=1e-4) == pytest.approx(expected)
    graph = BaliModel(tiny, layers=2, mlm_weight=0.0, contrastive_weight=0.0, link_weight=1.0, link_anchor="graph")
    graph(b)["loss"].backward()
    grads = dict(graph.named_parameters())
    assert grads["graph.out.0.weight"].grad.abs().sum() > 0  # the star's vector passes through the encoder
    assert grads["mlm_model.bert.encoder.layer.0.attention.self.query.weight"].grad.abs().sum() > 0
    none = {**b, "link_star_nodes": torch.zeros(0, dtype=torch.long), "link_edge_index": torch.zeros(2, 0, dtype=torch.long),
            "link_centers": torch.zeros(0, dtype=torch.long), "link_positive": torch.zeros(0, dtype=torch.long),
            "link_negative": torch.zeros(0, 6, dtype=torch.bool)}
    assert graph(none)["link"].item() == 0.0  # no target with a sampled neighbour: nothing to predict


def test_mlm_alone_skips_the_graph_branch_and_keeps_the_lm_gradient(tiny, monkeypatch):
    """Every graph term at weight 0 (the MLM-alone control): the node names are never encoded and the
    graph encoder gets no gradient, while the LM's gradient is the one the full forward gives with
    those terms multiplied by 0."""
    def grads(skip: bool) -> dict:
        torch.manual_seed(0)
        model = BaliModel(tiny, layers=2, dropout=0.0, attention_dropout=0.0, fresh_mlm_head=True,
                          mlm_weight=0.1, contrastive_weight=0.0)
        if not skip:
            model.uses_graph = True  # the forward as before: graph terms computed, then weighted by 0
        calls = []
        monkeypatch.setattr(model, "node_vectors", lambda b, f=model.node_vectors: calls.append(1) or f(b))
        out = model(batch())
        out["loss"].backward()
        assert bool(calls) != skip
        if skip:
            assert out["contrastive"] == 0 and math.isnan(out["encoder_share"]) and out["vectors"][1] is None
            assert all(not p.requires_grad for p in model.graph.parameters())
        return {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("mlm_model") and p.grad is not None}

    skipped, full = grads(skip=True), grads(skip=False)
    assert skipped.keys() == full.keys() and len(skipped) > 10
    assert all(torch.allclose(skipped[n], full[n], atol=1e-7) for n in skipped)
