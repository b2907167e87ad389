"""Entity-linking task readers: queries (mentions with gold ids) and a dictionary (names with ids).

Formats (`format` of a task entry):
- `pairs`: `queries.txt` (or `<split>.txt`) and `dictionary.txt`, `CUI||text` lines (SapBERT's).
- `gsc`: GSC+ (PhenoBERT's layout): `corpus/<PMID>` texts and `ann/<PMID>` lines
  `[START::END]<TAB>HP_NNNNNNN | mention`; HPO ids become graph CUIs through `codes.parquet`
  (obsolete and alternative ids through hp.obo's `replaced_by` / `alt_id` first).
- `biosyn`: BioSyn's `*.concept` files (`PMID||start|end||type||mention||ID`) under the task folder
  and its dictionary (`dictionary` of the task: `ID[|ID…]||name[|synonym…]` lines). As BioSyn
  evaluates: `-1` mentions are left out (counted); a composite mention (`a|b` or `a+b` in the mention)
  is one query per part and a hit only when every part is; several gold ids (`D1|D2`) accept any.
The dictionary is `dictionary.txt` of the task folder, a file, or `graph` (every English name of
every node of the graph's `nodes.parquet`).

Bad input never crashes a run: malformed lines, unknown ids, empty files and misaligned offsets are
counted in `issues` and the first few are reported with file and line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from bali.kg import ontology

GSC_LINE = re.compile(r"^\[(\d+)::(\d+)\]\t(\S+) \| (.*)$")
MAX_REPORTED = 20


@dataclass
class Issues:
    """Counts by reason, with the first MAX_REPORTED `file:line: reason` lines."""
    counts: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)

    def add(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < MAX_REPORTED:
            self.examples.append(f"{where}: {reason}{' ' + detail if detail else ''}")

    def as_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "first": self.examples}


@dataclass
class Queries:
    """One row per query part: `qid` (the mention; parts of a composite mention share it), `cui`
    (gold ids joined by `|`), `query` (text), `source` (file:line)."""
    frame: pl.DataFrame
    issues: Issues


def read_pairs_file(path: Path, issues: Issues) -> tuple[list[str], list[str], list[str]]:
    """(ids, texts, sources) of a `ID||text` file; malformed lines counted and skipped."""
    ids, texts, sources = [], [], []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            cui, sep, text = line.partition("||")
            if not sep or not cui or not text:
                issues.add("malformed_line", f"{path.name}:{no}", repr(line[:80]))
                continue
            ids.append(cui.replace("+", "|"))
            texts.append(text)
            sources.append(f"{path.name}:{no}")
    if not ids:
        issues.add("empty_file", str(path.name))
    return ids, texts, sources


def _frame(qids, cuis, texts, sources) -> pl.DataFrame:
    return pl.DataFrame({"qid": qids, "cui": cuis, "query": texts, "source": sources},
                        schema={"qid": pl.Int64, "cui": pl.String, "query": pl.String, "source": pl.String})


def read_pairs_queries(task_dir: Path, split: str | None) -> Queries:
    issues = Issues()
    cuis, texts, sources = read_pairs_file(task_dir / f"{split or 'queries'}.txt", issues)
    return Queries(_frame(range(len(cuis)), cuis, texts, sources), issues)


def gsc_mentions(task_dir: Path, issues: Issues):
    """GSC+ gold mentions as (pmid, document text, start, end, HP id, text, file:line), in file order.
    A mention whose offsets do not slice its text is realigned when the text occurs exactly once in
    the document (case-insensitive), else dropped; both are counted and reported with file and line."""
    ann_files = sorted((task_dir / "ann").iterdir()) if (task_dir / "ann").is_dir() else []
    if not ann_files:
        raise FileNotFoundError(f"{task_dir}/ann: no annotation files (expected GSC+'s corpus/ and ann/)")
    for ann in ann_files:
        doc_path = task_dir / "corpus" / ann.name
        if not doc_path.exists():
            issues.add("document_missing", f"ann/{ann.name}")
            continue
        doc = doc_path.read_text(encoding="utf-8", errors="replace")
        lines = ann.read_text(encoding="utf-8", errors="replace").splitlines()
        if not any(ln.strip() for ln in lines):
            issues.add("empty_file", f"ann/{ann.name}")
        for no, line in enumerate(lines, 1):
            where = f"ann/{ann.name}:{no}"
            if not line.strip():
                continue
            m = GSC_LINE.match(line.rstrip("\r"))
            if not m:
                issues.add("malformed_line", where, repr(line[:80]))
                continue
            start, end, hp, text = int(m.group(1)), int(m.group(2)), m.group(3).replace("_", ":"), m.group(4).strip()
            if doc[start:end] != text:
                hits = [i.start() for i in re.finditer(re.escape(text), doc, re.IGNORECASE)]
                if len(hits) != 1:
                    issues.add("offsets_misaligned_dropped", where, f"{text!r} at [{start}:{end}] ({len(hits)} matches)")
                    continue
                issues.add("offsets_misaligned_realigned", where, f"{text!r} [{start}:{end}] -> [{hits[0]}:{hits[0] + len(text)}]")
                start, end = hits[0], hits[0] + len(text)
                text = doc[start:end]
            yield ann.name, doc, start, end, hp, text, where


def gsc_live_id(hp: str, alias: dict, where: str, issues: Issues) -> str:
    """The live HP id of a gold id (through hp.obo's alt_id / replaced_by), counted when it differs."""
    live = alias.get(hp, hp)
    if live != hp:
        issues.add("id_mapped_through_obo", where, f"{hp} -> {live}")
    return live


def read_gsc(task_dir: Path, graph_dir: Path, obo: Path, sab: str = "HPO") -> Queries:
    """GSC+ mentions (`gsc_mentions`) with HPO ids mapped to graph CUIs."""
    issues = Issues()
    codes = pl.read_parquet(graph_dir / "codes.parquet").filter(pl.col("sab") == sab)
    to_cui = dict(zip(codes["code"], codes["cui"]))
    alias = ontology.live_ids(ontology.parse_obo(obo))
    qids, cuis, texts, sources = [], [], [], []
    for _, _, _, _, hp, text, where in gsc_mentions(task_dir, issues):
        cui = to_cui.get(alias.get(hp, hp))
        if cui is None:
            issues.add("id_not_in_graph", where, hp)
            continue
        gsc_live_id(hp, alias, where, issues)
        qids.append(len(qids))
        cuis.append(cui)
        texts.append(text)
        sources.append(where)
    return Queries(_frame(qids, cuis, texts, sources), issues)


def read_biosyn(task_dir: Path) -> Queries:
    """BioSyn `.concept` files (every one under the task folder, recursively, in name order)."""
    issues = Issues()
    qids, cuis, texts, sources = [], [], [], []
    files = sorted(task_dir.rglob("*.concept"))
    if not files:
        raise FileNotFoundError(f"{task_dir}: no *.concept files (BioSyn's mention format)")
    mention_no = 0
    for path in files:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if not any(ln.strip() for ln in lines):
            issues.add("empty_file", path.name)
        for no, line in enumerate(lines, 1):
            where = f"{path.name}:{no}"
            if not line.strip():
                continue
            fields = line.split("||")
            if len(fields) != 5 or not fields[3].strip() or not fields[4].strip():
                issues.add("malformed_line", where, repr(line[:80]))
                continue
            mention, ids = fields[3].strip(), fields[4].strip().replace("+", "|")
            if ids == "-1":
                issues.add("cuiless_mention_skipped", where)
                continue
            for part in mention.replace("+", "|").split("|"):
                qids.append(mention_no)
                cuis.append(ids)
                texts.append(part.strip())
                sources.append(where)
            mention_no += 1
    return Queries(_frame(qids, cuis, texts, sources), issues)


def read_dictionary(spec: str, task_dir: Path, graph_dir: Path, issues: Issues) -> tuple[list[str], list[str]]:
    """(ids, names): `graph` = every English name of every graph node; a file or `` (the task
    folder's dictionary.txt) of `ID[|ID…]||name[|synonym…]` lines, one entry per name."""
    if spec == "graph":
        names = pl.read_parquet(graph_dir / "nodes.parquet", columns=["cui", "names"]).explode("names").drop_nulls()
        return names["cui"].to_list(), names["names"].to_list()
    path = Path(spec) if spec else task_dir / "dictionary.txt"
    ids, texts, _ = read_pairs_file(path, issues)
    out_ids, out_texts = [], []
    for i, t in zip(ids, texts):
        for name in dict.fromkeys(n.strip() for n in t.split("|")):
            if name:
                out_ids.append(i)
                out_texts.append(name)
    return out_ids, out_texts
