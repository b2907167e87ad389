"""The reference code's recipe where a test can see it: concatenated GATv2 heads, GAT self loops,
the untied fresh MLM head, mention and concept-name masking, per-occurrence sampling, and the
encoder's share of the graph vector."""
import numpy as np
import pytest
import torch
from torch_geometric.nn import GATv2Conv
from transformers import BertConfig, BertForMaskedLM

from bali.data.batches import AlignmentBatches
from bali.data.training_data import TrainingData
from bali.modeling.graph_encoders import GraphEncoder
from bali.modeling.model import BaliModel
from bali.training.loop import optimizer
from conftest import make_dataset, save_tiny_bert

STAR = torch.tensor([[1, 2, 3], [0, 0, 0]])  # three neighbours -> node 0


def conv_params(enc: GraphEncoder) -> int:
    return sum(q.numel() for q in enc.convs.parameters())


def test_concatenated_heads_have_the_reference_parameter_count():
    h, heads = 16, 2
    enc = GraphEncoder("gatv2", h, layers=5, heads=heads, concat_heads=True)
    # the reference's layer (textkb/modeling/graph_encoders.py); its edge projection (edge_dim set, no
    # edge attributes ever passed) is never used and is not built here
    ref = GATv2Conv(h, h // heads, heads=heads, share_weights=True, edge_dim=h, add_self_loops=True)
    used = sum(q.numel() for n, q in ref.named_parameters() if not n.startswith("lin_edge"))
    assert conv_params(enc) == 5 * used == 5 * (h * h + h + h + h)  # shared linear + its bias, attention, bias
    averaged = GraphEncoder("gatv2", h, layers=5, heads=heads, concat_heads=False)
    assert conv_params(averaged) == 5 * (heads * (h * h + 2 * h) + h)  # full-size heads: about twice as many
    assert enc(torch.randn(4, h), STAR, torch.tensor([0])).shape == (1, h)
    with pytest.raises(ValueError, match="multiple of 3 heads"):
        GraphEncoder("gatv2", h, heads=3, concat_heads=True)


@pytest.mark.parametrize("layers", [1, 2])
def test_without_self_loops_two_gat_layers_forget_their_input(layers):
    torch.manual_seed(0)
    x1, x2 = torch.randn(4, 8), torch.randn(4, 8)
    bare = GraphEncoder("gatv2", 8, layers=layers, self_loops=False).eval()
    looped = GraphEncoder("gatv2", 8, layers=layers, self_loops=True).eval()
    same = torch.allclose(bare(x1, STAR, torch.tensor([0])), bare(x2, STAR, torch.tensor([0])), atol=1e-6)
    assert same == (layers >= 2)  # neighbours have no incoming edge: after one layer they hold only its bias
    assert not torch.allclose(looped(x1, STAR, torch.tensor([0])), looped(x2, STAR, torch.tensor([0])))


@pytest.fixture
def tiny_mlm(tmp_path):
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(tmp_path / "lm")
    return str(tmp_path / "lm")


def test_fresh_head_is_untied_and_trained_at_other_lr(tiny_mlm):
    tied = BaliModel(tiny_mlm, layers=1, fresh_mlm_head=False)
    assert tied.mlm_model.get_output_embeddings().weight is tied.mlm_model.get_input_embeddings().weight
    fresh = BaliModel(tiny_mlm, layers=1, fresh_mlm_head=True)
    decoder, embeddings = fresh.mlm_model.get_output_embeddings().weight, fresh.mlm_model.get_input_embeddings().weight
    assert decoder is not embeddings and decoder.data_ptr() != embeddings.data_ptr()
    assert not torch.allclose(decoder, embeddings[:, :decoder.shape[1]])
    p = {"lm_lr": 2e-5, "other_lr": 1e-4, "weight_decay": 0.01}
    lr_of = {id(q): g["lr"] for g in optimizer(fresh, p).param_groups for q in g["params"]}
    assert lr_of[id(decoder)] == 1e-4 and lr_of[id(embeddings)] == 2e-5
    transform = fresh.mlm_model.cls.predictions.transform.dense.weight
    assert lr_of[id(transform)] == 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return TrainingData(make_dataset(tmp_path_factory.mktemp("ds")))


def batch_of(data, key=(0, 0, np.arange(16)), **kw):
    return AlignmentBatches(data, seed=7, **kw)[key]


def test_mention_masking_masks_every_token_of_every_mention(data):
    plain, masked = batch_of(data), batch_of(data, mention_masking_prob=1.0)
    mask_id = data.tokenizer.mask_token_id
    rows, positions = masked["mention_rows"], masked["mention_positions"]
    assert (masked["input_ids"][rows, positions] == mask_id).all()
    assert (masked["mlm_labels"][rows, positions] == -100).all()  # not MLM targets
    outside = torch.ones_like(masked["input_ids"], dtype=torch.bool)
    outside[rows, positions] = False
    assert torch.equal(masked["input_ids"][outside], plain["input_ids"][outside])  # the rest as without it
    assert torch.equal(batch_of(data, mention_masking_prob=0.0)["input_ids"], plain["input_ids"])


def test_mention_masking_is_drawn_per_sentence(data):
    sentences = masked = 0
    for epoch in range(10):
        b = batch_of(data, (epoch, 0, np.arange(100)), mention_masking_prob=0.15)
        rows, positions = b["mention_rows"], b["mention_positions"]
        # [MASK] without an MLM label: only mention masking makes it
        hit = ((b["input_ids"][rows, positions] == data.tokenizer.mask_token_id) & (b["mlm_labels"][rows, positions] == -100))
        per_sentence = torch.zeros(100).index_add(0, rows, hit.float()) / torch.bincount(rows, minlength=100)
        assert set(per_sentence.tolist()) <= {0.0, 1.0}  # all of a sentence's mention tokens, or none
        masked += int(per_sentence.sum())
        sentences += 100
    assert 0.11 < masked / sentences < 0.19


def test_per_occurrence_sampling_gives_one_star_per_occurrence(data):
    per_concept = batch_of(data, per_occurrence=False)
    b = batch_of(data, per_occurrence=True)
    targets = b["target_nodes"]
    assert len(torch.unique(per_concept["target_star_index"])) == len(torch.unique(targets)) < len(targets)
    assert len(torch.unique(b["target_star_index"])) == len(targets)  # one star per (sentence, concept)
    star = b["graph_nodes"][b["star_nodes"]]
    assert torch.equal(star[b["target_star_index"]], targets)
    assert torch.equal(b["graph_nodes"][b["target_node_index"]], targets)
    assert len(b["graph_nodes"]) == len(b["star_nodes"])  # every slot its own name row
    zeros = targets == 0  # node 0 has 5 neighbours, 3 drawn per occurrence, so its occurrences differ
    draws = {tuple(sorted(star[b["edge_index"][0][b["edge_index"][1] == c]].tolist()))
             for c in b["target_star_index"][zeros].tolist()}
    assert int(zeros.sum()) > 3 and len(draws) > 1


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return str(save_tiny_bert(tmp_path_factory.mktemp("lm"), layers=1))


def graph_and_names(model, b):
    with torch.no_grad():
        vectors = model.node_vectors(b)
        names = vectors[b["target_node_index"]]
        return model.graph(vectors[b["star_nodes"]], b["edge_index"], b["target_star_index"]), names


def with_row_replaced(b, row: int, token: int) -> dict:
    """The batch with name row `row`'s real tokens (not [CLS]/[SEP]/padding) set to `token`."""
    chunks = []
    for c in b["name_chunks"]:
        ids = c["input_ids"].clone()
        for i in (c["nodes"] == row).nonzero().flatten().tolist():
            real = c["attention_mask"][i].clone()
            real[0] = False
            real[int(c["attention_mask"][i].sum()) - 1] = False
            ids[i, real] = token
        chunks.append({**c, "input_ids": ids})
    return {**b, "name_chunks": chunks}


@pytest.mark.parametrize("per_occurrence", [False, True])
def test_with_name_masking_a_targets_graph_vector_ignores_its_own_name(data, tiny_lm, per_occurrence):
    torch.manual_seed(0)
    model = BaliModel(tiny_lm, layers=2, concat_heads=True).eval()
    masked = batch_of(data, name_masking_prob=1.0, per_occurrence=per_occurrence)
    plain = batch_of(data, per_occurrence=per_occurrence)
    k = int((masked["target_nodes"] == 0).nonzero()[0])  # node 0: enough neighbours to be masked
    assert masked["target_name_masked"][k] and not plain["target_name_masked"].any()
    assert not masked["target_name_masked"][masked["target_nodes"] >= 8].any()  # isolated: never masked
    token = data.tokenizer.convert_tokens_to_ids("kidney")
    for b, moves in ((masked, False), (plain, True)):
        graph, names = graph_and_names(model, b)
        graph2, names2 = graph_and_names(model, with_row_replaced(b, int(b["target_node_index"][k]), token))
        assert not torch.allclose(names[k], names2[k])  # its own name did change
        assert torch.allclose(graph[k], graph2[k], atol=1e-6) != moves


def test_encoder_share_by_hand_and_zero_for_identity(data, tiny_lm):
    torch.manual_seed(0)
    b = batch_of(data)
    model = BaliModel(tiny_lm, layers=2, mlm_weight=0.0).eval()
    with torch.no_grad():
        out = model(b)
    graph, names = graph_and_names(model, b)
    share = float(((graph - names).norm(dim=1) / names.norm(dim=1)).mean())
    cosine = float(torch.nn.functional.cosine_similarity(graph, names, dim=1).mean())
    assert out["encoder_share"].item() == pytest.approx(share, rel=1e-5)
    assert out["graph_name_cosine"].item() == pytest.approx(cosine, rel=1e-5)
    identity = BaliModel(tiny_lm, graph_encoder="identity", mlm_weight=0.0).eval()
    assert identity.graph is None
    with torch.no_grad():
        out = identity(b)
    assert out["encoder_share"].item() == 0.0 and out["graph_name_cosine"].item() == pytest.approx(1.0)
    assert out["contrastive"].item() > 0
