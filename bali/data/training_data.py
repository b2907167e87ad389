"""The dataset stage's output as the training loop reads it: flat NumPy arrays with offsets.

Token ids per sentence, (start, end, node) per mention, token ids and text per name, and the graph
in CSR form, held as one flat array each (`Ragged`) rather than millions of Python lists: loading
the published scale's examples costs their bytes, and data-loader workers share them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


class Ragged:
    """Rows of different lengths as one flat NumPy array and int64 offsets: `ragged[i]` is a view.
    DataLoader workers fork with these pages shared; reading a row touches no per-row Python object
    (whose reference count would be written, copying its page into the worker), so a worker's private
    memory does not grow with the data or with the batches it has made."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    @classmethod
    def from_lists(cls, column: pl.Series, dtype) -> "Ragged":
        """From a polars list column (no Python list per row is made)."""
        lengths = column.list.len().fill_null(0).to_numpy().astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(column.explode().drop_nulls().to_numpy().astype(dtype, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class Texts(Ragged):
    """Strings as one UTF-8 byte array and offsets; `texts[i]` decodes one."""

    @classmethod
    def from_strings(cls, column: pl.Series) -> "Texts":
        """From a polars string column, through Arrow's own offsets and bytes (no Python str per row)."""
        import pyarrow as pa

        arr = column.fill_null("").to_arrow().cast(pa.large_string())
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        _, offsets, data = arr.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
        values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        return cls(values[offsets[0]:offsets[-1]].copy(), offsets - offsets[0])

    def __getitem__(self, i: int) -> str:
        return self.values[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")


class TrainingData:
    """The dataset stage's output in memory: examples of one split, names, graph, tokenizer, all as
    flat arrays with offsets (`Ragged`): token ids per sentence, (start, end, node) per mention of each
    sentence, token ids and text per name."""

    SHARED = ("name_ids", "name_texts", "indptr", "indices", "rel", "rela", "rel_labels", "rela_labels", "num_nodes",
              "name_ptr", "tokenizer", "special_ids")

    def __init__(self, dataset_dir: str | Path, split: str = "train", share: "TrainingData | None" = None):
        """`share`: a TrainingData of another split of the same dataset, whose names, graph and
        tokenizer this one uses instead of loading its own (the validation split's costs only its
        examples)."""
        from transformers import AutoTokenizer

        d = Path(dataset_dir)
        ex = pl.scan_parquet(d / "examples.parquet").filter(pl.col("split") == split)
        ex = ex.select("input_ids", "mention_start", "mention_end", "mention_node").collect(engine="streaming")
        self.input_ids = Ragged.from_lists(ex["input_ids"], np.int64)
        starts, ends, nodes = (Ragged.from_lists(ex[c], np.int64) for c in ("mention_start", "mention_end", "mention_node"))
        # One (start, end, node) row per mention: `for t0, t1, node in data.mentions[i]` reads a sentence's.
        self.mentions = Ragged(np.stack([starts.values, ends.values, nodes.values], axis=1), starts.offsets)
        del ex
        if share is not None:
            for attr in self.SHARED:
                setattr(self, attr, getattr(share, attr))
            return
        names = pl.read_parquet(d / "names.parquet")
        self.name_ids = Ragged.from_lists(names["input_ids"], np.int64)
        self.name_texts = Texts.from_strings(names["name"])
        g = np.load(d / "graph.npz", allow_pickle=False)
        self.indptr, self.indices = g["indptr"], g["indices"].astype(np.int64)
        self.rel, self.rela = g["rel"], g["rela"]
        self.rel_labels, self.rela_labels = g["rel_labels"].tolist(), g["rela_labels"].tolist()  # a few hundred
        self.num_nodes = len(self.indptr) - 1
        node_of_name = names["node"].to_numpy().astype(np.int64)
        self.name_ptr = np.searchsorted(node_of_name, np.arange(self.num_nodes + 1))
        self.tokenizer = AutoTokenizer.from_pretrained(d / "tokenizer")
        self.special_ids = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        """Tokens per sentence (what the sampler buckets by)."""
        return self.input_ids.lengths()
