"""Batches for alignment pre-training, built from the dataset stage's output.

Each batch is made from its own random generator, seeded by (seed, epoch, batch number), so the
batches are the same whatever the number of data-loader workers; under DDP every rank takes its
own, disjoint slice of each epoch's permutation. Per batch:
- sentences padded to the longest in the batch (the sampler groups similar lengths), MLM masking
  (15 % of real tokens; 80 % [MASK], 10 % a random token, 10 % kept; special tokens and padding never);
- `mention_masking_prob`: with that probability per sentence, every token of every mention in it
  becomes [MASK] (as the reference); those tokens are no MLM targets (nor are they in the
  reference, whose MLM masking counts [MASK] among the special tokens it never picks);
- its unique target concepts per sentence (all mentions of one concept in a sentence pooled);
- per distinct target (`per_occurrence`: per target of each sentence, as the reference), up to
  `neighbors` one-hop neighbours drawn uniformly without replacement, fresh every step, with edges
  neighbour -> target: one star per target (`star_nodes` maps its slots to the batch's name rows),
  as a PyG `edge_index`;
- every distinct graph node of the batch once, its text one of its names drawn at random
  (`per_occurrence`: every star slot its own row and its own draw), in chunks of similar length
  (little padding);
- `name_masking_prob`: with that probability (per sentence under `per_occurrence`, as the
  reference; per distinct target otherwise) a star whose target has at least two sampled
  neighbours gets, as its centre, the target's drawn name with every token [MASK]ed: its graph
  vector must come from the neighbours. The unmasked name stays the target's name row
  (`target_node_index`), for the name terms;
- with `links` (the link-prediction term), per sampled neighbour n of a target t one more star:
  t with its other sampled neighbours, n left out (it is what the star's vector must find among
  the batch's node names); t itself and every graph neighbour of t in the batch are left out of its
  negatives (`link_negative`);
- or, for the "linear graph" encoder, each target's subgraph written as text:
  `target [SEP] neighbour relation target [SEP] …` with REL/RELA made readable.
"""
from __future__ import annotations


import numpy as np
import torch

from bali.data.training_data import TrainingData

REL_NAMES = {"PAR": "parent of", "CHD": "child of", "RB": "broader than", "RN": "narrower than", "SY": "synonym of",
             "RO": "related to", "SIB": "sibling of", "RQ": "possibly synonymous with", "AQ": "allowed qualifier of",
             "QB": "qualified by", "RL": "alike", "RU": "related to", "XR": "not related to"}


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

    def of(self, node: int, what: int, occurrence: int | None = None) -> np.random.Generator:
        """`occurrence`: the example index of a per-occurrence star (each occurrence its own draws)."""
        return np.random.default_rng(self.key + [node, what] + ([occurrence] if occurrence is not None else []))


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
                 name_chunk: int = 64, linear_graph: bool = False, synonyms: bool = False, links: bool = False,
                 mention_masking_prob: float = 0.0, name_masking_prob: float = 0.0, per_occurrence: bool = False):
        self.data, self.seed, self.k, self.synonyms, self.links = data, seed, neighbors, synonyms, links
        self.p, self.chunk, self.linear = mlm_probability, name_chunk, linear_graph
        self.mention_p, self.name_p, self.per_occurrence = mention_masking_prob, name_masking_prob, per_occurrence
        if linear_graph and (per_occurrence or name_masking_prob):
            raise ValueError("per_occurrence and name_masking_prob need a graph encoder, not the linear graph")
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
        masked_names = batch.pop("target_sentence_masks_names")
        targets = batch["target_nodes"].numpy()
        node_rng = NodeRandomness(self.seed, epoch, number)
        if self.linear:
            batch.update(self.linear_graphs(targets, node_rng))
        elif self.per_occurrence:
            examples = np.asarray(indices, dtype=np.int64)[batch["target_rows"].numpy()]
            batch.update(self.subgraphs(targets, node_rng, examples, masked_names))
        else:
            batch.update(self.subgraphs(targets, node_rng))
        return batch

    def sentences(self, indices, epoch: int) -> dict:
        ids, attention = pad([self.data.input_ids[i] for i in indices], self.pad_id)
        maskable = attention & ~np.isin(ids, self.data.special_ids)
        # Each sentence's masking comes from (seed, epoch, example): the same in any batch split.
        draws, flags = np.ones((3, *ids.shape)), np.ones((len(indices), 2))
        for r, i in enumerate(indices):
            n = len(self.data.input_ids[i])  # drawn for the sentence's own length, not the batch's
            g = np.random.default_rng([self.seed, epoch, int(i)])
            draws[:, r, :n] = g.random((3, n))
            flags[r] = g.random(2)  # after the token draws, which stay what they were without it
        chosen = maskable & (draws[0] < self.p)
        labels = np.where(chosen, ids, -100)
        masked = ids.copy()
        masked[chosen & (draws[1] < 0.8)] = self.mask_id
        swap = chosen & (draws[1] >= 0.8) & (draws[1] < 0.9)
        masked[swap] = self.random_tokens[(draws[2][swap] * len(self.random_tokens)).astype(np.int64)]
        for r in np.flatnonzero(flags[:, 0] < self.mention_p):
            for t0, t1, _ in self.data.mentions[indices[r]]:
                masked[r, t0:t1] = self.mask_id
                labels[r, t0:t1] = -100
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
                "target_sentence_masks_names": flags[np.asarray(target_rows, dtype=np.int64), 1] < self.name_p,
                "real_tokens": int(attention.sum()), "padded_tokens": int(attention.size)}

    def sample_neighbors(self, node: int, rng: "NodeRandomness", occurrence: int | None = None) -> np.ndarray:
        lo, hi = self.data.indptr[node], self.data.indptr[node + 1]
        candidates = self.data.indices[lo:hi]
        if self.nameless_nodes:
            candidates = candidates[self.named[candidates]]
        if len(candidates) <= self.k:
            return candidates
        return candidates[rng.of(node, 0, occurrence).choice(len(candidates), self.k, replace=False)]

    def name_range(self, node: int) -> tuple[int, int]:
        lo, hi = int(self.data.name_ptr[node]), int(self.data.name_ptr[node + 1])
        if hi == lo:
            raise ValueError(f"node {node} has no name (every name held out); it cannot be encoded")
        return lo, hi

    def name_of(self, node: int, rng: "NodeRandomness", occurrence: int | None = None) -> int:
        lo, hi = self.name_range(node)
        return int(lo + rng.of(node, 1, occurrence).integers(hi - lo))

    def other_name_of(self, node: int, first: int, rng: "NodeRandomness", occurrence: int | None = None) -> int:
        """A second name of the node, other than `first` when it has one (never another node's)."""
        lo, hi = self.name_range(node)
        if hi - lo < 2:
            return lo
        j = int(lo + rng.of(node, 2, occurrence).integers(hi - lo - 1))
        return j + 1 if j >= first else j

    def subgraphs(self, targets: np.ndarray, rng, examples: np.ndarray | None = None,
                  sentence_masks_names: np.ndarray | None = None) -> dict:
        """One star per distinct target, or with `examples` (each target's example index) one per
        target occurrence. A star has its own copies of its neighbours, so message passing never
        leaves it and a target's vector does not depend on the rest of the batch. Per distinct
        target, the text of every distinct node is encoded once and placed into the star slots; per
        occurrence, every slot is a name row of its own, drawn for that occurrence."""
        if examples is not None:
            centers, star_of, keys = targets, np.arange(len(targets)), [int(e) for e in examples]
            masked = np.asarray(sentence_masks_names, dtype=bool)
        else:
            centers, star_of = np.unique(targets, return_inverse=True)
            keys = [None] * len(centers)
            masked = np.array([bool(self.name_p) and rng.of(int(t), 3).random() < self.name_p for t in centers], dtype=bool)
        neigh = [self.sample_neighbors(int(t), rng, key) for t, key in zip(centers, keys)]
        # as the reference: a name is masked only where at least two neighbours can stand in for it
        masked &= np.array([len(ns) >= 2 for ns in neigh], dtype=bool)
        if examples is not None:
            sizes = np.array([1 + len(ns) for ns in neigh], dtype=np.int64)
            center_row = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            neigh_rows = [list(range(c + 1, c + s)) for c, s in zip(center_row, sizes)]
            nodes = np.concatenate([[t, *ns] for t, ns in zip(centers, neigh)]).astype(np.int64) if len(centers) \
                else np.zeros(0, np.int64)
            row_keys = np.repeat(np.array(keys, dtype=np.int64), sizes).tolist()
        else:
            nodes = np.unique(np.concatenate([centers, *neigh]))
            local = {int(n): i for i, n in enumerate(nodes)}
            center_row = [local[int(t)] for t in centers]
            neigh_rows = [[local[int(n)] for n in ns] for ns in neigh]
            row_keys = [None] * len(nodes)
        names = [self.name_of(int(n), rng, key) for n, key in zip(nodes, row_keys)]
        ids = [self.data.name_ids[j] for j in names]
        texts = [self.data.name_texts[j] for j in names]
        star_center = list(center_row)
        for s in np.flatnonzero(masked):  # the drawn name's special tokens kept, every other one [MASK]
            star_center[s] = len(ids)
            m = ids[center_row[s]].copy()
            special = np.isin(m, self.data.special_ids)
            m[~special] = self.mask_id
            ids.append(m)
            texts.append(" ".join([self.data.tokenizer.mask_token] * int((~special).sum())))
        slots, src, dst, star_index = [], [], [], []
        for c, rows in zip(star_center, neigh_rows):
            star_index.append(len(slots))
            slots.append(c)
            for r in rows:
                src.append(len(slots))
                dst.append(star_index[-1])
                slots.append(r)
        extra = {}
        if self.synonyms:  # one more name per star's target, encoded after the others
            first = len(ids)
            for t, c, key in zip(centers, center_row, keys):
                j = self.other_name_of(int(t), names[c], rng, key)
                ids.append(self.data.name_ids[j])
                texts.append(self.data.name_texts[j])
            extra["target_synonym_index"] = torch.from_numpy(first + star_of.astype(np.int64))
        if self.links:
            extra.update(self.link_stars(centers, neigh_rows, center_row, nodes))
        chunks = []
        for part in self.length_groups([len(x) for x in ids]):
            padded, mask = pad([ids[i] for i in part], self.pad_id)
            chunks.append({"input_ids": torch.from_numpy(padded), "attention_mask": torch.from_numpy(mask),
                           "nodes": torch.from_numpy(part)})
        return {"graph_nodes": torch.from_numpy(nodes), "star_nodes": torch.tensor(slots, dtype=torch.long),
                "edge_index": torch.tensor([src, dst], dtype=torch.long).reshape(2, -1), "name_chunks": chunks,
                "node_names": texts, "name_rows": len(ids), **extra,
                "target_node_index": torch.tensor(np.asarray(center_row, dtype=np.int64)[star_of]),
                "target_star_index": torch.tensor(np.asarray(star_index, dtype=np.int64)[star_of]),
                "target_name_masked": torch.from_numpy(masked[star_of]),
                "name_real_tokens": sum(int(c["attention_mask"].sum()) for c in chunks),
                "name_padded_tokens": sum(c["attention_mask"].numel() for c in chunks)}

    def link_stars(self, centers: np.ndarray, neigh_rows: list, center_row: list, nodes: np.ndarray) -> dict:
        """Per (star, sampled neighbour): the target's star without that neighbour, the neighbour's
        name row as the positive, and which name rows are no negatives (the target's and its graph
        neighbours')."""
        slots, src, dst, link_centers, anchors, positives, rows = [], [], [], [], [], [], []
        for t, ns, c in zip(centers, neigh_rows, center_row):
            lo, hi = self.data.indptr[t], self.data.indptr[t + 1]
            linked = np.isin(nodes, self.data.indices[lo:hi]) | (nodes == t)
            for j, n in enumerate(ns):
                link_centers.append(len(slots))
                slots.append(c)
                for m in ns[:j] + ns[j + 1:]:
                    src.append(len(slots))
                    dst.append(link_centers[-1])
                    slots.append(m)
                anchors.append(c)
                positives.append(n)
                rows.append(~linked)
        return {"link_star_nodes": torch.tensor(slots, dtype=torch.long),
                "link_edge_index": torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                "link_centers": torch.tensor(link_centers, dtype=torch.long),
                "link_anchor": torch.tensor(anchors, dtype=torch.long),
                "link_positive": torch.tensor(positives, dtype=torch.long),
                "link_negative": torch.from_numpy(np.array(rows, dtype=bool).reshape(len(rows), len(nodes)))}

    def length_groups(self, lengths: list[int], min_efficiency: float = 0.85) -> list[np.ndarray]:
        """Indices grouped by length, shortest first: a group closes at `name_chunk` members or when
        the next (longer) one would pad it below `min_efficiency` real tokens. A group of one joins
        its shorter neighbour (the first, its longer one): torch.compile specialises a batch
        dimension of 1, so one-row chunks would each need a graph of their own."""
        order = np.argsort(lengths, kind="stable")
        groups, current, total = [], [], 0
        for i in order:
            n = lengths[i]
            if current and (len(current) >= self.chunk or total + n < min_efficiency * n * (len(current) + 1)):
                groups.append(current)
                current, total = [], 0
            current.append(i)
            total += n
        groups += [current] if current else []
        merged = []
        for g in groups:
            if merged and (len(g) == 1 or len(merged[-1]) == 1):
                merged[-1] = merged[-1] + g
            else:
                merged.append(g)
        return [np.array(g) for g in merged]

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
    GPU can be non-blocking. Workers persist across epochs: not forked again, each epoch, from a
    parent that by then holds CUDA and compiled state."""
    sampler = BucketBatchSampler(data.lengths(), batch_size, seed, rank, world_size)
    dataset = AlignmentBatches(data, seed, **kwargs)
    # Its own generator: creating an iterator must not draw from the global RNG (dropout's), or a
    # resumed run would not replay the interrupted one.
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers,
                                       pin_memory=pin_memory, persistent_workers=workers > 0,
                                       generator=torch.Generator().manual_seed(seed)), sampler
