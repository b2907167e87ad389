"""The dictionary linker: longest-match, case-insensitive search for every node name at token boundaries.

Normalisation, the same for names and text: Unicode NFKC (character by character, so every
normalised character maps back to an offset in the original), case folding, and every dash or
hyphen read as a space ("non-small-cell" = "non small cell"); then tokens are runs of word
characters or single punctuation marks, so a match always starts and ends at a token boundary.

The index holds, per distinct token sequence of a name, a 64-bit polynomial hash of its token ids;
text is matched by hashing every window of up to `max_tokens` tokens of a sentence at once
(numpy) and looking the hashes up in the sorted array, then checking the token ids of each hit.
Memory is a few bytes per name token (no character trie), so millions of names fit in a few GB.
Of overlapping hits the leftmost, then the longest, wins.
"""
from __future__ import annotations

import re
import unicodedata
from array import array
from dataclasses import dataclass

import numpy as np
import polars as pl

_DASHES = dict.fromkeys(map(ord, "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"), " ")
TOKEN = re.compile(r"\w+|[^\w\s]")
P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial hash (mod 2**64)
MASK = (1 << 64) - 1


def normalise(text: str) -> tuple[str, list[int] | None]:
    """(normalised text, original offset of each normalised character; None when they coincide)."""
    if text.isascii():
        return text.lower().translate(_DASHES), None
    out, offsets = [], []
    for i, ch in enumerate(text):
        n = unicodedata.normalize("NFKC", ch).casefold().translate(_DASHES)
        out.append(n)
        offsets.extend([i] * len(n))
    return "".join(out), offsets


def tokens(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) with offsets into the original text."""
    norm, offsets = normalise(text)
    if offsets is None:
        return [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(norm)]
    return [(m.group(), offsets[m.start()], offsets[m.end() - 1] + 1) for m in TOKEN.finditer(norm)]


def seq_hash(ids) -> int:
    h = 0
    for t in ids:
        h = (h * int(P) + t + 1) & MASK
    return h


@dataclass
class Match:
    sentence: int  # index into the batch
    start: int  # character offsets into the sentence
    end: int
    key: int  # index of the matched name key


class DictionaryIndex:
    """Distinct normalised names -> the nodes that have them."""

    def __init__(self, nodes: pl.DataFrame, min_length: int = 3, max_tokens: int = 12, stopwords=(),
                 exclude=()):
        from spacy.lang.en.stop_words import STOP_WORDS

        stop = {w.lower() for w in STOP_WORDS} | {w.lower() for w in stopwords}
        excluded = {" ".join(t for t, _, _ in tokens(x)) for x in exclude}
        self.vocab: dict[str, int] = {}
        keys: dict[int, int] = {}  # hash -> key index
        seq_ids, seq_ptr = array("I"), [0]
        pairs_key, pairs_node, pairs_pref = array("I"), array("I"), array("b")
        self.stats = {"names": 0, "too_short": 0, "stopword": 0, "excluded": 0, "too_long": 0}
        for node_id, name, names in nodes.select("node_id", "name", "names").iter_rows():
            for text in names:
                self.stats["names"] += 1
                toks = [t for t, _, _ in tokens(text)]
                joined = " ".join(toks)
                if len(joined) < min_length:
                    self.stats["too_short"] += 1
                    continue
                if all(t in stop or not t.isalnum() for t in toks):
                    self.stats["stopword"] += 1
                    continue
                if joined in excluded:
                    self.stats["excluded"] += 1
                    continue
                if len(toks) > max_tokens:
                    self.stats["too_long"] += 1
                    continue
                ids = [self.vocab.setdefault(t, len(self.vocab)) for t in toks]
                h = seq_hash(ids)
                key = keys.get(h)
                if key is None:
                    key = keys[h] = len(keys)
                    seq_ids.extend(ids)
                    seq_ptr.append(len(seq_ids))
                pairs_key.append(key)
                pairs_node.append(node_id)
                pairs_pref.append(text == name)
        hashes = np.fromiter(keys.keys(), dtype=np.uint64, count=len(keys))
        self.order = np.argsort(hashes)
        self.hashes = hashes[self.order]
        self.seq_ids, self.seq_ptr = np.frombuffer(seq_ids, dtype=np.uint32), np.asarray(seq_ptr, dtype=np.int64)
        pairs = (pl.DataFrame({"key": np.frombuffer(pairs_key, dtype=np.uint32),
                               "node_id": np.frombuffer(pairs_node, dtype=np.uint32),
                               "pref": np.frombuffer(pairs_pref, dtype=np.int8).astype(bool)})
                 .group_by("key", "node_id").agg(pl.col("pref").any()).sort("key", "node_id"))
        self.node_key = pairs["key"].to_numpy()
        self.node_ids = pairs["node_id"].to_numpy()
        self.node_pref = pairs["pref"].to_numpy()
        self.node_ptr = np.searchsorted(self.node_key, np.arange(len(keys) + 1))
        self.max_tokens = max_tokens
        self.stats.update(keys=len(keys), ambiguous_keys=int((np.diff(self.node_ptr) > 1).sum()),
                          vocabulary=len(self.vocab))

    def concepts(self, key: int, rule: str = "all") -> tuple[np.ndarray, bool]:
        """Node ids for a key, and whether it is ambiguous. rule 'preferred': when some of the nodes
        have this string as their preferred name, only those."""
        lo, hi = self.node_ptr[key], self.node_ptr[key + 1]
        ids = self.node_ids[lo:hi]
        if rule == "preferred" and hi - lo > 1 and self.node_pref[lo:hi].any():
            ids = ids[self.node_pref[lo:hi]]
        return ids, hi - lo > 1

    def match(self, sentences: list[str]) -> list[Match]:
        """Leftmost-longest, non-overlapping name matches in each sentence."""
        toks = [tokens(s) for s in sentences]
        n = sum(len(t) for t in toks)
        if n == 0:
            return []
        tid = np.fromiter((self.vocab.get(t, -1) for ts in toks for t, _, _ in ts), dtype=np.int64, count=n)
        sent = np.repeat(np.arange(len(toks)), [len(t) for t in toks])
        stop = np.repeat(np.cumsum([len(t) for t in toks]), [len(t) for t in toks])  # end of own sentence
        known = tid >= 0
        h = np.where(known, tid + 1, 0).astype(np.uint64)
        valid = known.copy()
        hits = []
        with np.errstate(over="ignore"):
            for length in range(1, self.max_tokens + 1):
                if length > 1:
                    nxt = np.arange(n) + length - 1
                    ok = nxt < stop
                    nxt = np.minimum(nxt, n - 1)
                    valid &= ok & known[nxt]
                    h = h * P + np.where(valid, tid[nxt] + 1, 0).astype(np.uint64)
                idx = np.flatnonzero(valid)
                if idx.size == 0:
                    break
                pos = np.searchsorted(self.hashes, h[idx])
                found = (pos < len(self.hashes)) & (self.hashes[np.minimum(pos, len(self.hashes) - 1)] == h[idx])
                for i, key in zip(idx[found].tolist(), self.order[pos[found]].tolist()):
                    lo, hi = self.seq_ptr[key], self.seq_ptr[key + 1]
                    if hi - lo == length and np.array_equal(self.seq_ids[lo:hi], tid[i:i + length]):
                        hits.append((i, length, key))
        hits.sort(key=lambda x: (x[0], -x[1]))
        out, free = [], -1
        flat = [(s, tok) for s, ts in enumerate(toks) for tok in ts]
        for i, length, key in hits:
            if i < free:
                continue
            free = i + length
            s = flat[i][0]
            out.append(Match(s, flat[i][1][1], flat[i + length - 1][1][2], key))
        return out
