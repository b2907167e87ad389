"""Batches for alignment pre-training, built from the dataset stage's output.

Each batch is made from its own random generator, seeded by (seed, epoch, batch number), so the
batches are the same whatever the number of data-loader workers; under DDP every rank takes its
own, disjoint slice of each epoch's permutation. Per batch:
- sentences padded to the longest in the batch (the sampler groups similar lengths), MLM masking
  (15 % of real tokens; 80 % [MASK], 10 % a random token, 10 % kept; special tokens and padding never);
- its unique target concepts per sentence (all mentions of one concept in a sentence pooled);
- per distinct target, up to `neighbors` one-hop neighbours drawn uniformly without replacement,
  fresh every step, with edges neighbour -> target: one star per target (`star_nodes` maps its
  slots to the batch's nodes), as a PyG `edge_index`;
- every distinct graph node of the batch once, its text one of its names drawn at random, in
  chunks of similar length (little padding);
- with `links` (the link-prediction term), per sampled neighbour n of a target t one more star:
  t with its other sampled neighbours, n left out (it is what the star's vector must find among
  the batch's node names); t itself and every graph neighbour of t in the batch are left out of its
  negatives (`link_negative`);
- or, for the "linear graph" encoder, each target's subgraph written as text:
  `target [SEP] neighbour relation target [SEP] …` with REL/RELA made readable.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

REL_NAMES = {"PAR": "parent of", "CHD": "child of", "RB": "broader than", "RN": "narrower than", "SY": "synonym of",
             "RO": "related to", "SIB": "sibling of", "RQ": "possibly synonymous with", "AQ": "allowed qualifier of",
             "QB": "qualified by", "RL": "alike", "RU": "related to", "XR": "not related to"}


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


class BucketBatchSampler:
    """Batches of example indices: each epoch a seeded permutation, sorted by length within windows
    of `bucket` batches, cut into global batches of `batch_size`, shuffled; under DDP each rank takes
    every world_size-th row of each global batch. Yields (epoch, batch number, indices)."""

    def __init__(self, lengths, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, bucket: int = 50):
        self.lengths, self.batch_size, self.seed = np.asarray(lengths), batch_size, seed
        self.rank, self.world, self.bucket, self.epoch, self.start = rank, world_size, bucket, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start`: the first batch number to yield (a resumed run skips the batches it trained on
        here, without building them)."""
        self.epoch, self.start = epoch, start

    def batches(self) -> list[np.ndarray]:
        """This rank's rows of each global batch (the batches a single process would make)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        window = self.batch_size * self.bucket
        chunks = [c[np.argsort(self.lengths[c], kind="stable")] for c in np.split(order, range(window, len(order), window))]
        batches = [b for c in chunks for b in np.split(c, range(self.batch_size, len(c), self.batch_size))
                   if len(b) >= self.world]  # every rank gets rows of every batch
        return [batches[i][self.rank::self.world] for i in rng.permutation(len(batches))]

    def __iter__(self):
        batches = self.batches()
        return ((self.epoch, number, batches[number]) for number in range(self.start, len(batches)))

    def __len__(self) -> int:
        return len(self.batches())


class NodeRandomness:
    """A node's draws in a batch (its neighbours, its name) come from (seed, epoch, batch, node):
    the same whichever rank's rows hold the node."""

    def __init__(self, seed: int, epoch: int, number: int):
        self.key = [seed, epoch, number]

    def of(self, node: int, what: int) -> np.random.Generator:
        return np.random.default_rng(self.key + [node, what])


def pad(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids to the longest sequence, and the mask of real tokens."""
    lengths = np.array([len(x) for x in seqs])
    ids = np.full((len(seqs), lengths.max()), pad_id, dtype=np.int64)
    for r, x in enumerate(seqs):
        ids[r, :len(x)] = x
    return ids, np.arange(ids.shape[1])[None, :] < lengths[:, None]


class AlignmentBatches(torch.utils.data.Dataset):
    """Map-style over the sampler's (epoch, batch number, example indices) keys: returns the whole
    collated batch, so a DataLoader uses `batch_size=None` and `sampler=BucketBatchSampler(...)`."""

    def __init__(self, data: TrainingData, seed: int, neighbors: int = 3, mlm_probability: float = 0.15,
                 name_chunk: int = 64, linear_graph: bool = False, synonyms: bool = False, links: bool = False):
        self.data, self.seed, self.k, self.synonyms, self.links = data, seed, neighbors, synonyms, links
        self.p, self.chunk, self.linear = mlm_probability, name_chunk, linear_graph
        tok = data.tokenizer
        self.pad_id, self.mask_id = tok.pad_token_id, tok.mask_token_id
        self.random_tokens = np.setdiff1d(np.arange(len(tok)), data.special_ids)
        # A node whose every name is held out has no text: it is never sampled as a neighbour, and
        # its mentions are not alignment targets (their tokens still count for MLM).
        self.named = np.diff(data.name_ptr) > 0
        self.nameless_nodes = int((~self.named).sum())
        self.nameless_mentions = int((~self.named[data.mentions.values[:, 2]]).sum()) if len(data.mentions.values) else 0

    def __len__(self) -> int:  # not used by the sampler-driven loader
        return len(self.data)

    def __getitem__(self, key) -> dict:
        epoch, number, indices = key
        batch = self.sentences(indices, epoch)
        targets = batch["target_nodes"].numpy()
        node_rng = NodeRandomness(self.seed, epoch, number)
        batch.update(self.linear_graphs(targets, node_rng) if self.linear else self.subgraphs(targets, node_rng))
        return batch

    def sentences(self, indices, epoch: int) -> dict:
        ids, attention = pad([self.data.input_ids[i] for i in indices], self.pad_id)
        maskable = attention & ~np.isin(ids, self.data.special_ids)
        # Each sentence's masking comes from (seed, epoch, example): the same in any batch split.
        draws = np.ones((3, *ids.shape))
        for r, i in enumerate(indices):
            n = len(self.data.input_ids[i])  # drawn for the sentence's own length, not the batch's
            draws[:, r, :n] = np.random.default_rng([self.seed, epoch, int(i)]).random((3, n))
        chosen = maskable & (draws[0] < self.p)
        labels = np.where(chosen, ids, -100)
        masked = ids.copy()
        masked[chosen & (draws[1] < 0.8)] = self.mask_id
        swap = chosen & (draws[1] >= 0.8) & (draws[1] < 0.9)
        masked[swap] = self.random_tokens[(draws[2][swap] * len(self.random_tokens)).astype(np.int64)]
        # Targets: one per (sentence, concept); every token of every mention of it is pooled.
        rows, positions, owner, target_nodes, target_rows = [], [], [], [], []
        for r, i in enumerate(indices):
            slot = {}
            for t0, t1, node in self.data.mentions[i]:
                if not self.named[node]:
                    continue
                if node not in slot:
                    slot[node] = len(target_nodes)
                    target_nodes.append(node)
                    target_rows.append(r)
                for t in range(t0, t1):
                    rows.append(r)
                    positions.append(t)
                    owner.append(slot[node])
        return {"input_ids": torch.from_numpy(masked), "attention_mask": torch.from_numpy(attention),
                "mlm_labels": torch.from_numpy(labels), "mention_rows": torch.tensor(rows),
                "mention_positions": torch.tensor(positions), "mention_owner": torch.tensor(owner),
                "target_nodes": torch.tensor(target_nodes), "target_rows": torch.tensor(target_rows),
                "real_tokens": int(attention.sum()), "padded_tokens": int(attention.size)}

    def sample_neighbors(self, node: int, rng: "NodeRandomness") -> np.ndarray:
        lo, hi = self.data.indptr[node], self.data.indptr[node + 1]
        candidates = self.data.indices[lo:hi]
        if self.nameless_nodes:
            candidates = candidates[self.named[candidates]]
        if len(candidates) <= self.k:
            return candidates
        return candidates[rng.of(node, 0).choice(len(candidates), self.k, replace=False)]

    def name_range(self, node: int) -> tuple[int, int]:
        lo, hi = int(self.data.name_ptr[node]), int(self.data.name_ptr[node + 1])
        if hi == lo:
            raise ValueError(f"node {node} has no name (every name held out); it cannot be encoded")
        return lo, hi

    def name_of(self, node: int, rng: "NodeRandomness") -> int:
        lo, hi = self.name_range(node)
        return int(lo + rng.of(node, 1).integers(hi - lo))

    def other_name_of(self, node: int, first: int, rng: "NodeRandomness") -> int:
        """A second name of the node, other than `first` when it has one (never another node's)."""
        lo, hi = self.name_range(node)
        if hi - lo < 2:
            return lo
        j = int(lo + rng.of(node, 2).integers(hi - lo - 1))
        return j + 1 if j >= first else j

    def subgraphs(self, targets: np.ndarray, rng) -> dict:
        """One star per distinct target (its own copies of its neighbours, so message passing never
        leaves a star and a target's vector does not depend on the rest of the batch); the text of
        every distinct node is encoded once and placed into the star slots."""
        unique = np.unique(targets)
        neigh = [self.sample_neighbors(int(t), rng) for t in unique]
        nodes = np.unique(np.concatenate([unique, *neigh]))
        local = {int(n): i for i, n in enumerate(nodes)}
        slots, src, dst, center = [], [], [], {}
        for t, ns in zip(unique, neigh):
            center[int(t)] = len(slots)
            slots.append(local[int(t)])
            for n in ns:
                src.append(len(slots))
                dst.append(center[int(t)])
                slots.append(local[int(n)])
        names = [self.name_of(int(n), rng) for n in nodes]
        extra = {}
        if self.synonyms:  # one more name per distinct target, encoded after the nodes' names
            names += [self.other_name_of(int(t), names[local[int(t)]], rng) for t in unique]
            row = {int(t): len(nodes) + i for i, t in enumerate(unique)}
            extra["target_synonym_index"] = torch.tensor([row[int(t)] for t in targets])
        if self.links:
            extra.update(self.link_stars(unique, neigh, nodes, local))
        chunks = []
        for part in self.length_groups([len(self.data.name_ids[j]) for j in names]):
            ids, mask = pad([self.data.name_ids[names[i]] for i in part], self.pad_id)
            chunks.append({"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                           "nodes": torch.from_numpy(part)})
        return {"graph_nodes": torch.from_numpy(nodes), "star_nodes": torch.tensor(slots, dtype=torch.long),
                "edge_index": torch.tensor([src, dst], dtype=torch.long), "name_chunks": chunks,
                "node_names": [self.data.name_texts[j] for j in names], "name_rows": len(names), **extra,
                "target_node_index": torch.tensor([local[int(t)] for t in targets]),
                "target_star_index": torch.tensor([center[int(t)] for t in targets]),
                "name_real_tokens": sum(int(c["attention_mask"].sum()) for c in chunks),
                "name_padded_tokens": sum(c["attention_mask"].numel() for c in chunks)}

    def link_stars(self, unique: np.ndarray, neigh: list, nodes: np.ndarray, local: dict) -> dict:
        """Per (target, sampled neighbour): the target's star without that neighbour, the neighbour
        as the positive, and which batch nodes are no negatives (the target and its graph neighbours)."""
        slots, src, dst, centers, anchors, positives, rows = [], [], [], [], [], [], []
        for t, ns in zip(unique, neigh):
            lo, hi = self.data.indptr[t], self.data.indptr[t + 1]
            linked = np.isin(nodes, self.data.indices[lo:hi]) | (nodes == t)
            for j, n in enumerate(ns):
                centers.append(len(slots))
                slots.append(local[int(t)])
                for m in np.delete(ns, j):
                    src.append(len(slots))
                    dst.append(centers[-1])
                    slots.append(local[int(m)])
                anchors.append(local[int(t)])
                positives.append(local[int(n)])
                rows.append(~linked)
        return {"link_star_nodes": torch.tensor(slots, dtype=torch.long),
                "link_edge_index": torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                "link_centers": torch.tensor(centers, dtype=torch.long),
                "link_anchor": torch.tensor(anchors, dtype=torch.long),
                "link_positive": torch.tensor(positives, dtype=torch.long),
                "link_negative": torch.from_numpy(np.array(rows, dtype=bool).reshape(len(rows), len(nodes)))}

    def length_groups(self, lengths: list[int], min_efficiency: float = 0.85) -> list[np.ndarray]:
        """Indices grouped by length, shortest first: a group closes at `name_chunk` members or when
        the next (longer) one would pad it below `min_efficiency` real tokens."""
        order = np.argsort(lengths, kind="stable")
        groups, current, total = [], [], 0
        for i in order:
            n = lengths[i]
            if current and (len(current) >= self.chunk or total + n < min_efficiency * n * (len(current) + 1)):
                groups.append(np.array(current))
                current, total = [], 0
            current.append(i)
            total += n
        return groups + ([np.array(current)] if current else [])

    def relation(self, a: int, b: int) -> str:
        """Readable label of the edge a -> b (RELA when it has one, else REL)."""
        lo, hi = self.data.indptr[a], self.data.indptr[a + 1]
        j = lo + np.searchsorted(self.data.indices[lo:hi], b)
        rela = self.data.rela_labels[self.data.rela[j]]
        return rela.replace("_", " ") if rela else REL_NAMES.get(self.data.rel_labels[self.data.rel[j]], "related to")

    def linear_graphs(self, targets: np.ndarray, rng) -> dict:
        unique = np.unique(targets)
        texts = []
        for t in unique:
            name = self.data.name_texts[self.name_of(int(t), rng)]
            parts = [name] + [f"{self.data.name_texts[self.name_of(int(n), rng)]} {self.relation(int(n), int(t))} {name}"
                              for n in self.sample_neighbors(int(t), rng)]
            texts.append(f" {self.data.tokenizer.sep_token} ".join(parts))
        enc = self.data.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        index = {int(t): i for i, t in enumerate(unique)}
        return {"graph_input_ids": enc["input_ids"], "graph_attention_mask": enc["attention_mask"].bool(),
                "graph_texts": texts, "target_node_index": torch.tensor([index[int(t)] for t in targets])}


def loader(data: TrainingData, batch_size: int, seed: int, workers: int = 0, rank: int = 0, world_size: int = 1,
           pin_memory: bool = False, **kwargs) -> tuple[torch.utils.data.DataLoader, BucketBatchSampler]:
    """`pin_memory`: page-locked batches (every tensor, nested ones included), so the copies to a
    GPU can be non-blocking."""
    sampler = BucketBatchSampler(data.lengths(), batch_size, seed, rank, world_size)
    dataset = AlignmentBatches(data, seed, **kwargs)
    # Its own generator: creating an iterator must not draw from the global RNG (dropout's), or a
    # resumed run would not replay the interrupted one.
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers,
                                       pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(seed)), sampler
