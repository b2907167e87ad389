"""The link stage's methods by name, and the one place a `link.method` is looked up.

`LINKERS` maps a `link.method` to the module that implements it; each has `build(ctx) -> Linker`
(`bali.linking.base`). Modules are imported only when picked, so a method's heavy dependencies
(torch, scispaCy's index) cost the others nothing. The registry lives apart from the package's
`__init__`, so a stage that imports one linking module (link_kb: scispaCy's index) neither loads nor
depends on every method.
"""
from __future__ import annotations

import importlib

LINKERS = {
    "dictionary": "bali.linking.dictionary",      # every name of every node, leftmost-longest (default)
    "pretagged": "bali.linking.pretagged",        # the corpus's own annotations, ids mapped to CUIs
    "scispacy": "bali.linking.scispacy_linker",   # a spaCy NER's spans, scispaCy's candidate generator
    "ner": "bali.linking.ner",                    # a BIO tagger's spans, linked by name then by vector
    "recognizer": "bali.linking.recognizer",      # dictionary + an n-gram concept classifier (PhenoTagger's recipe)
}


def linker_module(method: str):
    """The module of a `link.method`, or a ValueError naming the methods there are."""
    if method not in LINKERS:
        raise ValueError(f"link.method must be one of {', '.join(LINKERS)}, not {method!r}")
    return importlib.import_module(LINKERS[method])
