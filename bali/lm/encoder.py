"""Text vectors of one model, embedded once and shared by every task that ranks names.

DVC runs the evaluate stage once per (model, task), and several tasks rank the same names (the demo's
dev and test queries share a dictionary; the hierarchy probe ranks preferred names that are in it).
`Encoder` keeps, per model and embedding protocol, a cache of text -> vector in `cache_dir/<key>/`
and embeds only the texts it has not seen. The key hashes the model's weights and config, the
tokenizer files and the protocol (pooling, case, max length), so a retrained model or a changed
protocol never reads stale vectors. The cache is not a DVC output: it only saves time.

Vectors are stored once, as float16 rows appended to `vectors.f16` (`texts.parquet` gives each
text's row, `dim.txt` the width): 12 GB for 8 M names of 768 dims, read back in chunks by
`ranking` (`Encoder.store`), never loaded whole. Every vector is rounded to float16, with or
without the cache (a cosine moves by < 1e-3), so both rank alike. A text's vector does not depend
on which other texts were embedded beside it beyond float rounding in padded batches (~1e-7).
The forward passes run in the resolved `precision` (`bali.precision`: bf16 only where the hardware
has it, under `auto`); bf16 and float32 vectors differ, so the cache key holds the resolved one.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from bali import precision as numerics
from bali.lm.ranking import VectorRows

PROTOCOL_KEYS = ("pooling", "lowercase", "max_length")
EMBED_CHUNK = 65536  # texts embedded and appended to the cache at a time: memory does not follow the dictionary


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], pooling: str = "mean", batch_size: int = 256, max_length: int = 32,
          lowercase: bool = True, device: str = "cpu", progress: str | None = None,
          precision: str = "auto") -> torch.Tensor:
    """L2-normalised float32 vectors, one per text, in input order. A text that recurs (a name of
    several concepts, case variants once lower-cased) is embedded once. Texts are tokenised once and
    batched by length so padding stays small; `mean` averages over the attention mask in float32
    (as the pre-training's node vectors are pooled), `cls` takes the first token. Forward passes in
    `precision` (auto | bf16 | float32, `bali.precision`)."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be mean or cls, not {pooling!r}")
    texts = [t.lower() for t in texts] if lowercase else list(texts)
    row: dict[str, int] = {}
    inverse = torch.tensor([row.setdefault(t, len(row)) for t in texts], dtype=torch.long)
    distinct = list(row)
    if not distinct:
        return torch.empty(0, model.config.hidden_size)
    ids = tokenizer(distinct, truncation=True, max_length=max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    out = torch.empty(len(distinct), model.config.hidden_size)
    model.eval()
    resolved = numerics.resolve(precision, device)
    for i in tqdm(range(0, len(distinct), batch_size), desc=progress, disable=progress is None, mininterval=5):
        idx = order[i:i + batch_size]
        input_ids, attention = padded([ids[j] for j in idx], tokenizer)
        input_ids, attention = input_ids.to(device), attention.to(device)
        with numerics.autocast(device, resolved):
            hidden = model(input_ids=input_ids, attention_mask=attention).last_hidden_state
        if pooling == "cls":
            vec = hidden[:, 0].float()
        else:
            mask = attention.unsqueeze(-1).float()
            vec = (hidden.float() * mask).sum(1) / mask.sum(1)
        out[torch.from_numpy(idx)] = torch.nn.functional.normalize(vec, dim=-1).cpu()
    return out[inverse]


def padded(rows: list[list[int]], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of token id lists padded to the longest, on the tokenizer's side
    with its pad id: what the tokenizer's own `padding=True` gives, without tokenising again."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    left = tokenizer.padding_side == "left"
    for k, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[k, cols], mask[k, cols] = r, 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


@torch.no_grad()
def top_k(queries: torch.Tensor, names: torch.Tensor, k: int, query_chunk: int = 1024, name_chunk: int = 65536,
          device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) of the k highest dot products of each query row with the name rows, best
    first (the order of exact ties is unspecified). Memory: query_chunk x (name_chunk + k) scores."""
    k = min(k, len(names))
    if not len(queries):  # an empty split ranks nothing (its figures are counted as 0 queries)
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    all_scores, all_idx = [], []
    for q0 in range(0, len(queries), query_chunk):
        q = queries[q0:q0 + query_chunk].to(device)
        best_s = q.new_full((len(q), 0), float("-inf"))
        best_i = torch.zeros(len(q), 0, dtype=torch.long, device=device)
        for n0 in range(0, len(names), name_chunk):
            s = q @ names[n0:n0 + name_chunk].to(device).T
            s_top, i_top = s.topk(min(k, s.shape[1]), dim=1)
            cand_s, cand_i = torch.cat([best_s, s_top], 1), torch.cat([best_i, i_top + n0], 1)
            best_s, sel = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
            best_i = cand_i.gather(1, sel)
        all_scores.append(best_s.cpu())
        all_idx.append(best_i.cpu())
    return torch.cat(all_scores), torch.cat(all_idx)


def model_key(model_dir: str | Path, p: dict, resolved: str = "float32") -> str:
    """Hash of every file of the model folder (weights, config, tokenizer), the protocol and the
    resolved precision (bf16 | float32: not the same vectors, whatever the device)."""
    if resolved not in ("bf16", "float32"):
        raise ValueError(f"model_key takes a resolved precision (bf16 or float32), not {resolved!r}")
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(Path(model_dir).rglob("*")):
        if f.is_file():
            h.update(f.relative_to(model_dir).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    h.update(repr([(k, p[k]) for k in PROTOCOL_KEYS] + [resolved]).encode())
    return h.hexdigest()


class Encoder:
    """A model folder's encoder with the evaluation protocol `p` (evaluate.entity_linking's pooling,
    lowercase, max_length, batch_size), an optional on-disk cache of vectors ('' = none) and the
    forward passes' `precision` (auto | bf16 | float32; `self.precision` is the resolved one)."""

    def __init__(self, model_dir: str | Path, p: dict, device: str = "cpu", cache_dir: str | Path | None = None,
                 precision: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        from bali.hf import load_pretrained

        self.model_dir, self.p, self.device = Path(model_dir), p, device
        self.precision = numerics.resolve(precision, device)
        self.model = load_pretrained(AutoModel, model_dir, "unused: vectors pool the last hidden states")[0].to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.cache = Path(cache_dir) / model_key(model_dir, p, self.precision) if cache_dir else None
        self.stats = {"texts_embedded": 0, "texts_from_cache": 0}

    def embed(self, texts: list[str], progress: str | None = None) -> torch.Tensor:
        from bali.lm.encoder import embed

        return embed(self.model, self.tokenizer, texts, pooling=self.p["pooling"], batch_size=self.p["batch_size"],
                     max_length=self.p["max_length"], lowercase=self.p["lowercase"], device=self.device,
                     progress=progress, precision=self.precision)

    def vectors(self, texts: list[str], progress: str | None = None) -> torch.Tensor:
        """L2-normalised float32 vectors (float16 precision) of `texts` in order: for query sets and
        other lists that fit in memory; a dictionary goes through `store`."""
        s = self.store(texts, progress)
        if not len(texts):
            return torch.empty(0, s.dim)
        return torch.from_numpy(s.gather(s.rows).astype(np.float32))

    def store(self, texts: list[str], progress: str | None = None) -> VectorRows:
        """The rows of `texts`' vectors: in the cache file (texts not seen yet are embedded and
        appended, chunk by chunk), or in memory without a cache."""
        if self.cache is None:
            self.stats["texts_embedded"] += len(texts)
            vecs = self.embed(texts, progress).numpy().astype(np.float16)
            return VectorRows(vecs, vecs.shape[1], np.arange(len(texts)))
        table = self._table()
        want = pl.DataFrame({"text": texts}, schema={"text": pl.String})
        rows = want.join(table, on="text", how="left", maintain_order="left")["row"]
        missing = want.filter(rows.is_null())["text"].unique(maintain_order=True)
        self.stats["texts_embedded"] += len(missing)
        self.stats["texts_from_cache"] += want["text"].n_unique() - len(missing)
        if len(missing):
            table = self._append(table, missing.to_list(), progress)
            rows = want.join(table, on="text", how="left", maintain_order="left")["row"]
        return VectorRows(self.cache / "vectors.f16", self._dim(), rows.to_numpy().astype(np.int64))

    def _dim(self) -> int:
        path = self.cache / "dim.txt"
        return int(path.read_text()) if path.exists() else self.model.config.hidden_size

    def _table(self) -> pl.DataFrame:
        """text -> row of the cache. Rows past the texts (a crash between the two writes) are ignored;
        a vectors file shorter than its texts is never trusted."""
        empty = pl.DataFrame(schema={"text": pl.String, "row": pl.Int64})
        path, vectors = self.cache / "texts.parquet", self.cache / "vectors.f16"
        if not path.exists() or not vectors.exists():
            return empty
        table = pl.read_parquet(path).with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
        if vectors.stat().st_size < table.height * self._dim() * 2:
            return empty
        return table.select("text", "row")

    def _append(self, table: pl.DataFrame, missing: list[str], progress: str | None) -> pl.DataFrame:
        """Embed `missing` in chunks and append their float16 rows, then replace texts.parquet
        atomically: the texts file never names a row that is not written."""
        self.cache.mkdir(parents=True, exist_ok=True)
        dim = self.model.config.hidden_size
        (self.cache / "dim.txt").write_text(str(dim))
        with open(self.cache / "vectors.f16", "r+b" if table.height else "wb") as f:
            f.truncate(table.height * dim * 2)  # rows a crash left past the texts
            f.seek(table.height * dim * 2)
            for i in range(0, len(missing), EMBED_CHUNK):
                f.write(self.embed(missing[i:i + EMBED_CHUNK], progress).numpy().astype(np.float16).tobytes())
        texts = pl.concat([table.select("text"), pl.DataFrame({"text": missing}, schema={"text": pl.String})])
        tmp = self.cache / f".texts.{os.getpid()}.parquet"
        texts.write_parquet(tmp)
        os.replace(tmp, self.cache / "texts.parquet")
        return texts.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64)).select("text", "row")
