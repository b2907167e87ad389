"""Ranking over float16 vectors on disk: exact chunked top-k and FAISS IVF-PQ against brute force."""
import numpy as np
import torch

from bali.lm import ranking


def on_disk(tmp_path, vecs: np.ndarray, rows: np.ndarray) -> ranking.VectorRows:
    path = tmp_path / "vectors.f16"
    vecs.astype(np.float16).tofile(path)
    return ranking.VectorRows(path, vecs.shape[1], rows)


def brute(q: torch.Tensor, vecs: np.ndarray, rows: np.ndarray, k: int):
    full = q @ torch.from_numpy(vecs.astype(np.float16).astype(np.float32)[rows]).T
    return full.topk(k, dim=1)


def test_exact_top_k_reads_only_the_dictionary_rows_in_any_chunking(tmp_path):
    g = np.random.default_rng(0)
    vecs = g.standard_normal((300, 16)).astype(np.float32)
    # a dictionary of some of the file's rows, out of order, one text (row 7) shared by three names
    rows = np.concatenate([g.permutation(np.arange(10, 300, 2))[:120], [7, 7, 7]])
    q = torch.from_numpy(g.standard_normal((23, 16)).astype(np.float32))
    want_s, want_i = brute(q, vecs, rows, 5)
    store = on_disk(tmp_path, vecs, rows)
    for chunk in (1000, 37, 1):
        s, i = ranking.exact_top_k(q, store, 5, chunk_rows=chunk)
        # names of one text tie exactly (their order is checked below): compare the rows ranked
        assert torch.allclose(s, want_s, atol=1e-5) and np.array_equal(rows[i.numpy()], rows[want_i.numpy()])
    # the shared row expands to its three names, best first, in dictionary order
    q7 = torch.from_numpy(vecs[7:8].astype(np.float16).astype(np.float32)) * 10
    assert ranking.exact_top_k(q7, store, 4)[1][0, :3].tolist() == [120, 121, 122]
    short = ranking.VectorRows(tmp_path / "vectors.f16", 16, np.array([400]))  # a row past the file's end
    try:
        ranking.exact_top_k(q, short, 1)
        raise AssertionError("a truncated vectors file must be an error")
    except ValueError as e:
        assert "file too short" in str(e)


def test_ivfpq_reranked_finds_the_exact_neighbours(tmp_path):
    g = np.random.default_rng(1)
    n = ranking.MIN_IVFPQ_ROWS
    centres = g.standard_normal((200, 32))
    vecs = (centres[g.integers(0, 200, n)] + 0.3 * g.standard_normal((n, 32))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = on_disk(tmp_path, vecs, np.arange(n))
    q = torch.from_numpy(vecs[g.integers(0, n, 40)] + 0.05 * g.standard_normal((40, 32)).astype(np.float32))
    exact_s, exact_i = ranking.exact_top_k(q, store, 5)
    p = {"nlist": 64, "m": 8, "nprobe": 64, "rerank": 200, "train_size": n}
    s, i = ranking.ivfpq_top_k(q, store, 5, p)
    assert ranking.recall_at(i, exact_i) == 1.0 and torch.allclose(s, exact_s, atol=1e-5)  # re-ranked: true cosines
    coarse = ranking.ivfpq_top_k(q, store, 5, {**p, "nprobe": 1, "rerank": 5})
    assert ranking.recall_at(coarse[1], exact_i) < 1.0  # one list and no re-ranking room: it can miss
    # the stage's entry point reports the recall; a dictionary too small to train PQ is ranked exactly
    _, i, figures = ranking.rank(q, store, 5, {"ann": {"method": "ivfpq", **p, "recall_queries": 10}})
    assert figures["ann_recall@5"] == 1.0 and figures["ann_recall_queries"] == 10 and torch.equal(i, exact_i)
    small = ranking.VectorRows(store.source, 32, np.arange(300))
    _, i, figures = ranking.rank(q, small, 5, {"ann": {"method": "ivfpq", **p, "recall_queries": 10}})
    assert figures["ranking"].startswith("exact") and torch.equal(i, ranking.exact_top_k(q, small, 5)[1])
