"""The dictionary linker: longest-match, case-insensitive search for every node name at token boundaries.

Normalisation, the same for names and text: Unicode NFKC (character by character, so every
normalised character maps back to an offset in the original), case folding, and every dash or
hyphen read as a space ("non-small-cell" = "non small cell"); then tokens are runs of word
characters or single punctuation marks, so a match always starts and ends at a token boundary.

The index holds, per distinct token sequence of a name, a 64-bit polynomial hash of its token ids
(two different sequences sharing a hash, odds ~1e-6 for 10 M names, would leave one unmatched);
text is matched by hashing every window of up to `max_tokens` tokens of a sentence at once
(numpy) and looking the hashes up in the sorted array, then checking the token ids of each hit.
Memory is a few bytes per name token (no character trie), so millions of names fit in a few GB.
Of overlapping hits the leftmost, then the longest, wins.

Variants (all off by default, the same on names and text, `link` params): `token_form` (singular or
lemma, `bali.linking.variants`), `skip_words` (words left out of both, so "abnormality of the kidney"
is the key "abnormality kidney" and matches across them), `any_word_order` (a name's tokens as a
multiset: the hash is the sum of a random 64-bit value per token id, checked against the sorted ids).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from bali.linking import variants
from bali.names import tokenise_all, tokens

P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial hash (mod 2**64)


@dataclass
class Match:
    sentence: int  # index into the batch
    start: int  # character offsets into the sentence
    end: int
    key: int  # index of the matched name key


class DictionaryIndex:
    """Distinct normalised names -> the nodes that have them (built with polars and numpy, no
    per-name Python objects, so 10 M names fit in a few GB)."""

    def __init__(self, nodes: pl.DataFrame, min_length: int = 3, max_tokens: int = 12, stopwords=(),
                 exclude=(), token_form: str = "exact", skip_words=(), any_word_order: bool = False):
        from spacy.lang.en.stop_words import STOP_WORDS

        stop = sorted({w.lower() for w in STOP_WORDS} | {w.lower() for w in stopwords})
        excluded = sorted({" ".join(t for t, _, _ in tokens(x)) for x in exclude})
        names = (nodes.select("node_id", "name", text="names").explode("text").drop_nulls("text")
                 .select("node_id", "text", pref=pl.col("text") == pl.col("name")))
        names = names.with_columns(toks=tokenise_all(names["text"])).drop("text")
        joined = pl.col("toks").list.join(" ")
        reason = (pl.when(joined.str.len_chars() < min_length).then(pl.lit("too_short"))
                  .when(pl.col("toks").list.eval(pl.element().is_in(stop) | ~pl.element().str.contains(r"^[^\W_]+$"))
                        .list.all()).then(pl.lit("stopword"))
                  .when(joined.is_in(excluded)).then(pl.lit("excluded"))
                  .when(pl.col("toks").list.len() > max_tokens).then(pl.lit("too_long")))
        names = names.with_columns(reason.alias("reason"))
        self.stats = {"names": names.height, "too_short": 0, "stopword": 0, "excluded": 0, "too_long": 0}
        self.stats.update(names.group_by("reason").len().drop_nulls().iter_rows())
        names = names.filter(pl.col("reason").is_null()).drop("reason")
        self.form, self.skip, self.any_order = variants.form(token_form), {w.lower() for w in skip_words}, any_word_order
        if self.form is not None or self.skip:
            names = names.with_columns(toks=self._variant_tokens(names["toks"])).filter(pl.col("toks").list.len() > 0)
        self._ids: dict[str, int] = {}  # text token -> its id in the index (-1 unknown, -2 skipped)

        n = names["toks"].list.len().to_numpy().astype(np.int64)
        flat = names["toks"].explode()
        names = names.select("node_id", "pref")
        vocab = flat.unique(maintain_order=True)
        self.vocab = dict(zip(vocab.to_list(), range(len(vocab))))
        ids = flat.replace_strict(vocab, pl.int_range(len(vocab), eager=True), return_dtype=pl.UInt32).to_numpy()
        del flat
        ptr = np.concatenate([[0], np.cumsum(n)])
        if any_word_order and len(ids):  # sorted within each name, so a multiset compares as a sequence
            owner = np.repeat(np.arange(len(n)), n)
            ids = ids[np.lexsort((ids, owner))]
        # a random 64-bit value per token id, for the order-free hash (a fixed seed: the same index every run)
        self.token_value = np.random.default_rng(0).integers(0, 2**63, len(vocab) + 1, dtype=np.uint64) \
            if any_word_order else None
        pos_from_end = np.repeat(ptr[1:], n) - 1 - np.arange(ptr[-1])
        powers = np.ones(max_tokens + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i in range(1, max_tokens + 1):
                powers[i] = powers[i - 1] * P
            if not len(ids):
                h = np.zeros(0, np.uint64)
            elif any_word_order:
                h = np.add.reduceat(self.token_value[ids], ptr[:-1])
            else:  # sum of (id+1) * P**(tokens after it), mod 2**64
                h = np.add.reduceat((ids.astype(np.uint64) + np.uint64(1)) * powers[pos_from_end], ptr[:-1])
        self.hashes, first, key = np.unique(h, return_index=True, return_inverse=True)
        lengths = n[first]
        self.seq_ptr = np.concatenate([[0], np.cumsum(lengths)])
        self.seq_ids = ids[np.repeat(ptr[first] - self.seq_ptr[:-1], lengths) + np.arange(self.seq_ptr[-1])]
        pairs = (pl.DataFrame({"key": key.astype(np.uint32), "node_id": names["node_id"], "pref": names["pref"]})
                 .group_by("key", "node_id").agg(pl.col("pref").any()).sort("key", "node_id"))
        self.node_ids, self.node_pref = pairs["node_id"].to_numpy(), pairs["pref"].to_numpy()
        self.node_ptr = np.searchsorted(pairs["key"].to_numpy(), np.arange(len(self.hashes) + 1))
        self.max_tokens = max_tokens
        self.stats.update(keys=len(self.hashes), ambiguous_keys=int((np.diff(self.node_ptr) > 1).sum()),
                          vocabulary=len(self.vocab))

    def _variant_tokens(self, toks: pl.Series) -> pl.Series:
        """Names' token lists under the token form, without skipped words (maps each distinct token once)."""
        distinct = toks.explode().drop_nulls().unique()
        mapped = [self._variant(t) for t in distinct.to_list()]
        out = toks.list.eval(pl.element().replace_strict(distinct, pl.Series(mapped, dtype=pl.String)))
        return out.list.eval(pl.element().drop_nulls())

    def _variant(self, t: str) -> str | None:
        if t in self.skip:
            return None
        return self.form(t) if self.form is not None else t

    def _token_id(self, t: str) -> int:
        i = self._ids.get(t)
        if i is None:
            v = self._variant(t)
            i = self._ids[t] = -2 if v is None else self.vocab.get(v, -1)
        return i

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
        if self.form is not None or self.skip:  # skipped words leave the stream: a match spans them
            with_ids = [[(self._token_id(t), a, b) for t, a, b in ts] for ts in toks]
            toks = [[x for x in ts if x[0] != -2] for ts in with_ids]
            ids = (i for ts in toks for i, _, _ in ts)
        else:
            vocab = self.vocab
            ids = (vocab.get(t, -1) for ts in toks for t, _, _ in ts)
        counts = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
        n = int(counts.sum())
        if n == 0:
            return []
        tid = np.fromiter(ids, dtype=np.int64, count=n)
        stop = np.repeat(np.cumsum(counts), counts)  # end of own sentence
        known = tid >= 0
        value = (lambda t: self.token_value[np.maximum(t, 0)]) if self.any_order else \
            (lambda t: (t + 1).astype(np.uint64))
        h = np.where(known, value(tid), 0).astype(np.uint64)
        valid = known.copy()
        hits = []  # (first token, length, key) arrays, one triple per length
        with np.errstate(over="ignore"):
            for length in range(1, self.max_tokens + 1):
                if length > 1:
                    nxt = np.arange(n) + length - 1
                    ok = nxt < stop
                    nxt = np.minimum(nxt, n - 1)
                    valid &= ok & known[nxt]
                    step = np.where(valid, value(tid[nxt]), 0).astype(np.uint64)
                    h = h + step if self.any_order else h * P + step
                idx = np.flatnonzero(valid)
                if idx.size == 0:
                    break
                pos = np.searchsorted(self.hashes, h[idx])
                found = (pos < len(self.hashes)) & (self.hashes[np.minimum(pos, len(self.hashes) - 1)] == h[idx])
                first, key = idx[found], pos[found]
                lo = self.seq_ptr[key]
                same_length = self.seq_ptr[key + 1] - lo == length
                first, key, lo = first[same_length], key[same_length], lo[same_length]
                window = tid[first[:, None] + np.arange(length)]  # all inside the sentence: `valid`
                if self.any_order:
                    window = np.sort(window, axis=1)
                same = (self.seq_ids[lo[:, None] + np.arange(length)] == window).all(axis=1)
                hits.append((first[same], np.full(int(same.sum()), length), key[same]))
        if not hits:  # no token of the batch is a name's token
            return []
        first, length, key = (np.concatenate(x) for x in zip(*hits))
        order = np.lexsort((-length, first))  # leftmost, then longest
        sentence = np.repeat(np.arange(len(toks)), counts)
        start = np.fromiter((a for ts in toks for _, a, _ in ts), dtype=np.int64, count=n)
        end = np.fromiter((b for ts in toks for _, _, b in ts), dtype=np.int64, count=n)
        out, free = [], -1
        for i, ln, k in zip(first[order].tolist(), length[order].tolist(), key[order].tolist()):
            if i < free:
                continue
            free = i + ln
            out.append(Match(int(sentence[i]), int(start[i]), int(end[i + ln - 1]), k))
        return out


def index_from_params(nodes: pl.DataFrame, p: dict) -> DictionaryIndex:
    """The dictionary index of the `link` params (variants off where a params file predates them)."""
    return DictionaryIndex(nodes, p["min_name_length"], p["max_name_tokens"], p["stopwords"], p["exclude_names"],
                           p.get("token_form", "exact"), p.get("skip_words", []), p.get("any_word_order", False))


def dictionary_mentions(index: DictionaryIndex, sentences: pl.DataFrame, documents: pl.DataFrame, nodes_cui,
                        p: dict, stats: dict) -> pl.DataFrame:
    from bali.linking.base import add_abbreviations, spans_frame

    texts = sentences["text"].to_list()
    spans: dict[tuple[int, int, int], tuple] = {}  # (row, start, end) -> (node ids, method, score)
    for m in index.match(texts):
        ids, ambiguous = index.concepts(m.key, p["ambiguity"])
        stats["ambiguous_mentions"] += int(ambiguous)
        spans[(m.sentence, m.start, m.end)] = (ids, "dictionary", 1.0)
    if p["abbreviations"]:
        add_abbreviations(spans, sentences, documents, stats)
    return spans_frame(spans, sentences, nodes_cui)


class Linker:
    """The `dictionary` method: matches only the kept types' names (`link.semantic_types`) itself."""

    typed = True

    def __init__(self, ctx):
        self.index = index_from_params(ctx.nodes, ctx.p)
        self.p, self.cuis = ctx.p, ctx.all_nodes["cui"]
        ctx.stats["dictionary"] = self.index.stats

    def mentions(self, shard, stats: dict) -> pl.DataFrame:
        documents = shard.documents if self.p["abbreviations"] else None
        return dictionary_mentions(self.index, shard.sentences, documents, self.cuis, self.p, stats)


def build(ctx) -> Linker:
    return Linker(ctx)
