"""`precision: auto | bf16 | float32` (bali.precision): `auto` picks bf16 only where the hardware runs it
natively (the CPU's flags, CUDA's bf16 support; the flag reader is replaced here, so the tests do not
depend on this machine), a forced bf16 really runs the forward in bf16 while losses, gradients and the
optimiser's state stay float32, and the resolved precision keys the embedding cache. Also the
throughput cuts that must not change outputs: embedding a text once however often it recurs, padding
from one tokenisation, and one word-embedding lookup for all of a batch's name chunks."""
import subprocess

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForMaskedLM

from bali import precision
from bali.lm import encoder
from conftest import make_dataset, pretrain_params, save_tiny_bert


@pytest.fixture
def cpu_with(monkeypatch):
    """Make the CPU's flags the given ones (and CUDA absent)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def set_flags(*flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    return set_flags


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny"), layers=1, positions=64)


@pytest.mark.parametrize("flags, auto", [(("avx2", "fma", "avx512f", "avx512_vnni"), "float32"), ((), "float32"),
                                         (("avx2", "amx_tile", "amx_bf16"), "bf16"), (("avx512f", "avx512_bf16"), "bf16")])
def test_auto_is_bf16_only_with_native_cpu_support(cpu_with, flags, auto):
    cpu_with(*flags)
    assert precision.resolve("auto", "cpu") == auto
    assert precision.resolve("bf16", "cpu") == "bf16" and precision.resolve("float32", "cpu") == "float32"


def test_auto_on_cuda_follows_its_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, auto in ((True, "bf16"), (False, "float32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, s=supported, **k: s)
        assert precision.resolve("auto", "cuda:0") == precision.resolve("auto", torch.device("cuda")) == auto


def test_flags_are_read_not_assumed(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "sse2", "avx2", "amx_bf16"}
    lscpu = subprocess.CompletedProcess([], 0, stdout="Model name: Y\nFlags: fpu avx512_bf16\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: lscpu)
    assert precision.cpu_flags(str(tmp_path / "none")) == {"fpu", "avx512_bf16"}
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess([], 0, stdout=""))
    assert precision.cpu_flags(str(tmp_path / "nothing")) == frozenset()


def test_bad_values_fail(tmp_path):
    with pytest.raises(ValueError):
        precision.resolve("fp16", "cpu")
    with pytest.raises(ValueError):
        precision.autocast("cpu", "auto")  # a caller resolves first, and records what it got
    with pytest.raises(ValueError):
        encoder.model_key(tmp_path, {"pooling": "mean", "lowercase": True, "max_length": 8}, "auto")


def test_forced_bf16_runs_the_cpu_forward_in_bf16():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with precision.autocast("cpu", precision.resolve("bf16", "cpu")):
        y = lin(x)
    assert y.dtype == torch.bfloat16 and lin.weight.dtype == torch.float32
    with precision.autocast("cpu", "float32"):
        assert lin(x).dtype == torch.float32


def linear_output_dtypes(model) -> list:
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    return seen


def test_embed_runs_in_the_resolved_precision(tiny, cpu_with):
    model, tok = AutoModel.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)
    seen = linear_output_dtypes(model)
    texts = ["heart attack", "fever", "a much longer name of a concept"]
    cpu_with("avx2")  # no bf16 flag: auto is float32
    auto = encoder.embed(model, tok, texts, precision="auto")
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = encoder.embed(model, tok, texts, precision="bf16")
    assert set(seen) == {torch.bfloat16} and bf16.dtype == torch.float32
    assert not torch.equal(auto, bf16) and torch.allclose(auto, bf16, atol=0.05)


def test_the_cache_key_is_the_resolved_precision(tiny, tmp_path, cpu_with):
    p = {"pooling": "mean", "lowercase": True, "max_length": 16, "batch_size": 4}
    cpu_with("avx512_bf16")
    assert encoder.Encoder(tiny, p, precision="auto").precision == "bf16"
    cached = {x: encoder.Encoder(tiny, p, cache_dir=tmp_path, precision=x).cache for x in ("auto", "bf16", "float32")}
    assert cached["auto"] == cached["bf16"] != cached["float32"]


def test_embedding_a_text_once_keeps_every_vector(tiny):
    """Recurring texts (and case variants, lower-cased) are embedded once and mapped back; padding
    from the one tokenisation gives what the tokenizer's own padding gives."""
    model, tok = AutoModel.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)
    texts = ["heart attack", "fever", "a much longer name of a concept", "renal failure", "x"]
    again = texts + ["Fever", "heart attack", "X", "fever"]
    once = encoder.embed(model, tok, texts, batch_size=2)
    many = encoder.embed(model, tok, again, batch_size=2)
    assert torch.allclose(many[:5], once, atol=1e-6)
    assert torch.allclose(many[5:], once[[1, 0, 4, 1]], atol=1e-6)
    assert encoder.embed(model, tok, []).shape == (0, model.config.hidden_size)
    rows = tok(texts)["input_ids"]
    for side in ("right", "left"):
        tok.padding_side = side
        ids, mask = encoder.padded(rows, tok)
        ref = tok(texts, padding=True, return_tensors="pt")
        assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])


@pytest.fixture(scope="module")
def bali_setup(tmp_path_factory):
    from bali.data.training_data import TrainingData
    from bali.training.loop import build_model, make_loader

    tmp = tmp_path_factory.mktemp("precision")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(tmp / "lm")
    p = pretrain_params(workers=0, batch_size=8, mlm_weight=1.0, dropout=0.0, attention_dropout=0.0)
    dl, _ = make_loader(TrainingData(make_dataset(tmp / "ds"), "train"), p, torch.device("cpu"))
    return build_model(p, str(tmp / "lm")), next(iter(dl)), p


def test_a_bf16_step_keeps_losses_gradients_and_optimiser_state_float32(bali_setup):
    from bali.training.loop import forward_backward, optimizer

    model, batch, p = bali_setup
    seen = linear_output_dtypes(model.lm)
    opt = optimizer(model, p)
    out = forward_backward(model, batch, torch.device("cpu"), 1, "bf16")
    assert torch.bfloat16 in seen
    assert all(out[k].dtype == torch.float32 for k in ("loss", "mlm", "contrastive", "name", "synonym", "link"))
    assert all(q.grad.dtype == torch.float32 for q in model.parameters() if q.grad is not None)
    opt.step()
    assert {v.dtype for s in opt.state.values() for v in s.values() if v.dim()} == {torch.float32}
    opt.zero_grad(set_to_none=True)
    seen.clear()
    forward_backward(model, batch, torch.device("cpu"), 1, "float32")
    assert set(seen) == {torch.float32}
    opt.zero_grad(set_to_none=True)


def test_name_chunks_share_one_word_embedding_lookup(bali_setup):
    """The node vectors (and the embedding table's gradient) are those of one LM call per chunk on its ids."""
    from bali.modeling.model import mean_pool

    model, batch, _ = bali_setup
    chunks = batch["name_chunks"]
    assert len(chunks) >= 2
    model.eval()
    table = model.lm.get_input_embeddings().weight
    got = model.node_vectors(batch)
    grad, = torch.autograd.grad(got.square().sum(), table)
    want = torch.zeros_like(got)
    for c in chunks:
        h = model.lm(input_ids=c["input_ids"], attention_mask=c["attention_mask"]).last_hidden_state
        want = want.index_copy(0, c["nodes"], mean_pool(h, c["attention_mask"]))
    ref, = torch.autograd.grad(want.square().sum(), table)
    model.train()
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(grad, ref, atol=1e-6)
