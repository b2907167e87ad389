"""Concept names as the linker and the training data compare them.

Normalisation, the same for names and text: Unicode NFKC (character by character, so every
normalised character maps back to an offset in the original), case folding, and every dash or
hyphen read as a space ("non-small-cell" = "non small cell"); then tokens are runs of word
characters or single punctuation marks. `name_keys` is the string two names are equal by: the
dictionary linker matches it, and the dataset stage keeps held-out names out of training by it.
"""
from __future__ import annotations

import re
import unicodedata

import polars as pl

_DASHES = dict.fromkeys(map(ord, "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"), " ")
TOKEN = re.compile(r"\w+|[^\w\s]")


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


def tokenise_all(texts: pl.Series) -> pl.Series:
    """`tokens` for many strings at once: polars for ASCII strings (the same rules), Python for the rest."""
    fast = texts.str.to_lowercase().str.replace_all("-", " ", literal=True).str.extract_all(TOKEN.pattern)
    other = ~texts.str.contains(r"^[\x00-\x7F]*$")
    if not other.any():
        return fast
    slow = pl.DataFrame({"i": other.arg_true(), "slow": pl.Series([[t for t, _, _ in tokens(x)]
                                                                  for x in texts.filter(other)], dtype=pl.List(pl.String))})
    return (pl.DataFrame({"fast": fast}).with_row_index("i").join(slow, on="i", how="left", maintain_order="left")
            .select(pl.coalesce("slow", "fast"))).to_series()


def name_keys(texts) -> pl.Series:
    """The string a name is matched by: its tokens (`tokenise_all`) joined by single spaces, so two
    strings with the same key are the same name to the linker (case, NFKC, dashes, spacing)."""
    return tokenise_all(pl.Series(texts, dtype=pl.String)).list.join(" ")

