"""PubTator: `PMID|t|title`, `PMID|a|abstract`, one tab-separated line per mention
(`PMID start end text type ids`), a blank line between documents (NCBI Disease, BC5CDR,
MedMentions, PubTator3 exports). Offsets count characters of title + " " + abstract.

Mention ids are split on `|`, `+` and `,` (composite mentions; BERN2 joins several ids with `,`)
and normalised to one spelling per source, `PREFIX:LOCAL` with LOCAL the source's own accession:
PubTator's and BERN2's spellings both (BERN2 v1.0 wrote `MESH:D009369`, `OMIM:608627`, `CL_0000021`,
`CVCL_J260`, `NCBI:txid10095`, `EntrezGene:10533`; v1.1 writes Bioregistry prefixes `mesh:`, `mim:`,
`CL:`, `cellosaurus:`, `NCBITaxon:`, `NCBIGene:`) become `MESH:D009369`, `OMIM:608627`,
`CL:0000021`, `Cellosaurus:CVCL_J260`, `NCBITaxon:10095`, `NCBIGene:10533`; a bare MeSH id
(`D003550`) becomes `MESH:D003550`; `CHEBI:`, `HP:`, `HGNC:`, `UMLS:` take one case. A tmVar
mutation id (`tmVar:p|SUB|V|600|E;HGVS:…`) stays whole under `tmVar:`. `-1` and `CUI-less` (no id)
are dropped. Relation lines (`PMID CID id1 id2`) are skipped.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from bali.corpus.records import Doc, Mention, RecordError, lines

_BARE_MESH = re.compile(r"[CD]\d{6,9}")
_BARE = re.compile(r"(CVCL|CL)_([A-Za-z0-9]+)")  # BERN2 v1.0's Cellosaurus and Cell Ontology ids
_TAXID = re.compile(r"(?:NCBI:)?txid(\d+)", re.I)  # BERN2 v1.0's species ids
# Every spelling of a source's prefix (lower-cased) -> the one this project writes.
_CANONICAL = {"mesh": "MESH", "msh": "MESH", "omim": "OMIM", "mim": "OMIM", "umls": "UMLS", "chebi": "CHEBI",
              "hp": "HP", "hgnc": "HGNC", "ncbigene": "NCBIGene", "entrezgene": "NCBIGene", "ncbitaxon": "NCBITaxon",
              "taxonomy": "NCBITaxon", "cellosaurus": "Cellosaurus", "cvcl": "Cellosaurus", "cl": "CL",
              "tmvar": "tmVar"}
_NO_ID = {"", "-1", "cui-less"}


def normalise_id(raw: str) -> str | None:
    """One spelling per source (see the module doc); an unknown prefix is kept as written, so it is
    counted under its own name downstream."""
    raw = raw.strip()
    if raw.lower() in _NO_ID:
        return None
    if _BARE_MESH.fullmatch(raw):
        return "MESH:" + raw
    if m := _TAXID.fullmatch(raw):
        return "NCBITaxon:" + m.group(1)
    if m := _BARE.fullmatch(raw):
        return f"Cellosaurus:CVCL_{m.group(2)}" if m.group(1) == "CVCL" else f"CL:{m.group(2)}"
    prefix, sep, rest = raw.partition(":")
    canonical = _CANONICAL.get(prefix.lower()) if sep else None
    if canonical is None:
        return raw
    if canonical == "Cellosaurus" and not rest.upper().startswith("CVCL_"):
        rest = "CVCL_" + rest  # Bioregistry's `cellosaurus:J260` is the accession CVCL_J260
    return f"{canonical}:{rest}"


def split_ids(field_: str) -> list[str]:
    if field_.strip().lower().startswith("tmvar:"):  # a mutation id holds `|` and `;` itself
        return [normalise_id(field_)]
    return [i for i in (normalise_id(x) for x in re.split(r"[|+,]", field_)) if i]


def read(path: Path) -> Iterator[Doc | RecordError]:
    """Yield documents in file order; a bad line is reported and, if it is a title or abstract
    line, costs its document; a bad mention line costs only that mention."""
    doc, text, bad = None, "", False
    for item in lines(path):
        if isinstance(item, RecordError):
            yield item
            break
        n, raw = item
        where = f"{path}: line {n}"
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            yield RecordError(where, f"invalid UTF-8 ({e.reason} at byte {e.start})")
            bad = bad or re.match(rb"[^\t|]*\|[ta]\|", raw) is not None
            continue
        head = line.split("|", 2)
        if not line.strip() or (len(head) == 3 and head[1] == "t" and "\t" not in head[0]):
            if doc is not None and not bad:
                yield doc
            doc, bad = (Doc(head[0], head[2], [("", "")]), False) if line.strip() else (None, False)
            text = doc.title + " " if doc else ""
        elif len(head) == 3 and head[1] == "a" and "\t" not in head[0]:
            if doc is None or doc.doc_id != head[0]:
                yield RecordError(where, "abstract line without its title line")
            else:
                doc.sections, text = [("", head[2])], doc.title + " " + head[2]
        elif doc is not None and (cols := line.split("\t"))[0] == doc.doc_id and len(cols) >= 5 and cols[1].isdigit():
            start, end = int(cols[1]), int(cols[2]) if cols[2].isdigit() else -1
            if not (0 <= start < end <= len(text)) or text[start:end] != cols[3]:
                yield RecordError(where, f"mention {cols[3]!r} does not match the text at {cols[1]}-{cols[2]}")
                continue
            doc.mentions.append(Mention(start, end, cols[3], cols[4], split_ids(cols[5]) if len(cols) > 5 else []))
        elif doc is not None and len(cols := line.split("\t")) == 4 and cols[0] == doc.doc_id:
            continue  # a relation line (BC5CDR CID)
        else:
            yield RecordError(where, "not a PubTator title, abstract or mention line")
    if doc is not None and not bad:
        yield doc
