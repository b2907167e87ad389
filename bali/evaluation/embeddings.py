"""Text vectors of one model, embedded once and shared by every task that ranks names.

DVC runs the evaluate stage once per (model, task), and several tasks rank the same names (the demo's
dev and test queries share a dictionary; the hierarchy probe ranks preferred names that are in it).
`Encoder.vectors(texts)` keeps, per model and embedding protocol, a cache of text -> vector in
`cache_dir/<key>/` and embeds only the texts it has not seen. The key hashes the model's weights and
config, the tokenizer files and the protocol (pooling, case, max length), so a retrained model or a
changed protocol never reads stale vectors. The cache is not a DVC output: it only saves time; a
text's vector does not depend on which other texts were embedded beside it beyond float rounding
in padded batches (~1e-7).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import polars as pl
import torch

PROTOCOL_KEYS = ("pooling", "lowercase", "max_length")


def model_key(model_dir: str | Path, p: dict, device: str = "cpu") -> str:
    """Hash of every file of the model folder (weights, config, tokenizer), the protocol and the
    device type (a GPU embeds in bf16, the CPU in float32: not the same vectors)."""
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(Path(model_dir).rglob("*")):
        if f.is_file():
            h.update(f.relative_to(model_dir).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    h.update(repr([(k, p[k]) for k in PROTOCOL_KEYS] + [torch.device(device).type]).encode())
    return h.hexdigest()


class Encoder:
    """A model folder's encoder with the evaluation protocol `p` (evaluate.entity_linking's pooling,
    lowercase, max_length, batch_size) and an optional on-disk cache of vectors ('' = none)."""

    def __init__(self, model_dir: str | Path, p: dict, device: str = "cpu", cache_dir: str | Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        from bali.hf import load_pretrained

        self.model_dir, self.p, self.device = Path(model_dir), p, device
        self.model = load_pretrained(AutoModel, model_dir, "unused: vectors pool the last hidden states")[0].to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.cache = Path(cache_dir) / model_key(model_dir, p, device) if cache_dir else None
        self.stats = {"texts_embedded": 0, "texts_from_cache": 0}

    def embed(self, texts: list[str], progress: str | None = None) -> torch.Tensor:
        from bali.evaluation.entity_linking import embed

        return embed(self.model, self.tokenizer, texts, pooling=self.p["pooling"], batch_size=self.p["batch_size"],
                     max_length=self.p["max_length"], lowercase=self.p["lowercase"], device=self.device,
                     progress=progress)

    def vectors(self, texts: list[str], progress: str | None = None) -> torch.Tensor:
        """L2-normalised vectors of `texts` in order; texts already in the cache are not embedded again."""
        if self.cache is None:
            self.stats["texts_embedded"] += len(texts)
            return self.embed(texts, progress)
        known, vecs = self._load()
        distinct = list(dict.fromkeys(texts))
        missing = [t for t in distinct if t not in known]
        if missing:
            new = self.embed(missing, progress).numpy()
            for t, v in zip(missing, new):
                known[t] = len(known)
            vecs = new if vecs is None else np.concatenate([vecs, new])
            self._save(known, vecs)
        self.stats["texts_embedded"] += len(missing)
        self.stats["texts_from_cache"] += len(distinct) - len(missing)
        return torch.from_numpy(vecs[[known[t] for t in texts]]) if texts else torch.empty(0, vecs.shape[1])

    def _load(self) -> tuple[dict[str, int], np.ndarray | None]:
        if self.cache is None or not (self.cache / "vectors.npy").exists():
            return {}, None
        texts = pl.read_parquet(self.cache / "texts.parquet")["text"].to_list()
        vecs = np.load(self.cache / "vectors.npy")
        if len(texts) != len(vecs):  # a torn cache is ignored, never trusted
            return {}, None
        return dict(zip(texts, range(len(texts)))), vecs

    def _save(self, known: dict[str, int], vecs: np.ndarray) -> None:
        """Both files replaced atomically; vectors first, so a crash in between leaves a length
        mismatch that `_load` rejects."""
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".vectors.{os.getpid()}.npy"
        np.save(tmp, vecs)
        os.replace(tmp, self.cache / "vectors.npy")
        tmp = self.cache / f".texts.{os.getpid()}.parquet"
        pl.DataFrame({"text": list(known)}).write_parquet(tmp)
        os.replace(tmp, self.cache / "texts.parquet")
