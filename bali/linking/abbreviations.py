"""Abbreviations defined in a document ("cystic fibrosis (CF)") are linked where their long form links.

scispaCy's AbbreviationDetector (Schwartz & Hearst) finds each definition and every later use of
the short form; a short form takes the concepts of the longest linked mention that ends where its
long form ends, and replaces whatever the dictionary matched at that spot.
"""
from __future__ import annotations

import re
import warnings

_CANDIDATE = re.compile(r"\(\s*[^\s()]{2,12}\s*\)")
_NLP = None


def _detector():
    global _NLP
    if _NLP is None:
        import spacy
        from scispacy.abbreviation import AbbreviationDetector  # noqa: F401  (registers the factory)

        _NLP = spacy.blank("en")
        _NLP.add_pipe("abbreviation_detector")
    return _NLP


def find(text: str) -> list[tuple[int, int, int, int]]:
    """(short start, short end, long start, long end) for every use of every defined short form."""
    if not _CANDIDATE.search(text):
        return []
    with warnings.catch_warnings():  # scispaCy runs a Matcher it never fills; spaCy warns on every doc
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        doc = _detector()(text)
    return [(a.start_char, a.end_char, a._.long_form.start_char, a._.long_form.end_char) for a in doc._.abbreviations]


def propagate(text: str, mentions: dict[tuple[int, int], object]) -> dict[tuple[int, int], object]:
    """Given the document's linked spans {(start, end): concepts} (document offsets), the spans to add
    or replace: {(short start, short end): concepts of its long form}."""
    out = {}
    for s, e, ls, le in find(text):
        inside = [(a, b) for a, b in mentions if ls <= a and b == le]
        if inside:
            out[(s, e)] = mentions[min(inside)]  # the longest: it starts first
    return out
