"""Abbreviations defined in a document ("cystic fibrosis (CF)") are linked where their long form links.

scispaCy's AbbreviationDetector (Schwartz & Hearst) finds each definition and every later use of
the short form; a short form takes the concepts of the longest linked mention that ends where its
long form ends, and replaces whatever the dictionary matched at that spot.

The detector tokenises the whole document to find a few parentheses, which took two thirds of the
dictionary linker's time. Its decisions only look at the tokens around each "(": at most 8 inside
the parentheses and, before them, one word (a long form inside) or up to 32 (a short form of at
most 3 tokens under 10 characters: min(L + 5, 2L) words for L characters). spaCy tokenises each
whitespace-separated chunk on its own, so text cut at whitespace 40 chunks before and 12 after
each "(" gives the same tokens there. `find` runs scispaCy's own candidate filter and Schwartz &
Hearst step on those windows, keeps its first-definition-wins rule over the whole document, and
finds the uses of each short form, as its global matcher does, as the same token sequence
anywhere in the document (a regular expression over the text at token boundaries).
"""
from __future__ import annotations

import bisect
import re
import warnings

_CANDIDATE = re.compile(r"\(\s*[^\s()]{2,12}\s*\)")
_CHUNKS_BEFORE, _CHUNKS_AFTER = 40, 12
_NLP = None


def _detector():
    global _NLP
    if _NLP is None:
        import spacy
        from scispacy.abbreviation import AbbreviationDetector  # noqa: F401  (registers the factory)

        _NLP = spacy.blank("en")
        _NLP.add_pipe("abbreviation_detector")
    return _NLP


def windows(text: str) -> list[tuple[int, int]]:
    """(start, end) of the merged stretches of text around each "(", cut at whitespace: every "(" in a
    stretch has its 40 chunks before it (or the document's start) and 12 after it inside."""
    spaces = [m.start() for m in re.finditer(r"\s+", text)]
    out: list[tuple[int, int]] = []
    for m in re.finditer(r"\(", text):
        i = bisect.bisect_left(spaces, m.start())  # chunks before the "(" = spaces before it
        start = 0 if i < _CHUNKS_BEFORE else spaces[i - _CHUNKS_BEFORE]
        end = len(text) if i + _CHUNKS_AFTER >= len(spaces) else spaces[i + _CHUNKS_AFTER]
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _edge(text: str, i: int) -> bool:
    return i < 0 or i >= len(text) or text[i].isspace()


def uses(nlp, text: str, short_tokens: list[str]) -> list[tuple[int, int]]:
    """Every place the short form's tokens stand in the text as whole spaCy tokens, as the global
    matcher finds them: a regular expression proposes each place, and spaCy's tokenizer on the
    whitespace-separated chunks around it confirms that tokens start and end there ("TnI." is one
    token, so "TnI" is no use of TnI there)."""
    pattern = r"(?<!\w)" + r"\s*".join(re.escape(t) for t in short_tokens) + r"(?!\w)"
    out = []
    for m in re.finditer(pattern, text):
        if _edge(text, m.start() - 1) and _edge(text, m.end()):  # whitespace on both sides: token boundaries
            out.append((m.start(), m.end()))
            continue
        left = max(text.rfind(c, 0, m.start()) for c in " \t\n\r") + 1
        right = min((i for i in (text.find(c, m.end()) for c in " \t\n\r") if i >= 0), default=len(text))
        toks = [(t.idx + left, t.idx + left + len(t)) for t in nlp.make_doc(text[left:right])]
        if any(a == m.start() for a, _ in toks) and any(b == m.end() for _, b in toks):
            out.append((m.start(), m.end()))
    return out


def find(text: str) -> list[tuple[int, int, int, int]]:
    """(short start, short end, long start, long end) for every use of every defined short form."""
    if not _CANDIDATE.search(text):
        return []
    from scispacy.abbreviation import filter_matches, find_abbreviation

    nlp = _detector()
    matcher = nlp.get_pipe("abbreviation_detector").matcher
    seen_long, seen_short, found = set(), set(), []
    for w0, w1 in windows(text):
        doc = nlp.make_doc(text[w0:w1])
        for long_c, short_c in filter_matches([(m, s + 1, e - 1) for m, s, e in matcher(doc)], doc):
            short, long = find_abbreviation(long_c, short_c)
            if long is None or long.text in seen_long or short.text in seen_short:
                continue  # as scispaCy: a document's first definition of a short or a long form is kept
            seen_long.add(long.text)
            seen_short.add(short.text)
            found.append((w0 + long.start_char, w0 + long.end_char, [t.text for t in short]))
    return [(s, e, ls, le) for ls, le, short in found for s, e in uses(nlp, text, short)]


def find_whole(text: str) -> list[tuple[int, int, int, int]]:
    """`find` by scispaCy's detector over the whole document (what `find` must equal; bench and tests)."""
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
