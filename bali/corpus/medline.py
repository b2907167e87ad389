"""PubMed / MEDLINE XML (`PubmedArticleSet`: the yearly baseline and the daily update files).

Read as a stream of records: the byte stream (plain or gzip) is cut at the record elements
(PubmedArticle, PubmedBookArticle, DeleteCitation, which never nest) and each record is parsed on
its own by lxml, so memory stays flat, a broken record costs only itself, and the records after
it are still read. The parser never loads a DTD, never touches the network and never expands an
entity declared in the document (XXE, "billion laughs"): a record that uses one is reported as
malformed. Character references (`&#946;`) and the five XML entities are ordinary text.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from lxml import etree

from bali.corpus.records import GZIP_ERRORS, Deletion, Doc, RecordError, open_maybe_gzip

_SPACE = re.compile(r"\s+")


def flat_text(el) -> str:
    """The text of an element with inline markup (<i>, <sup>, <sub>, <b>, MathML, …) flattened."""
    return _SPACE.sub(" ", "".join(el.itertext())).strip()


_RECORD = re.compile(rb"<(PubmedArticle|PubmedBookArticle|DeleteCitation)[\s>]")
_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)
CHUNK = 4 << 20


def _records(stream, path: Path) -> Iterator[tuple[int, bytes] | RecordError]:
    """(line number, bytes) of each record element; a RecordError where the stream breaks."""
    buf, line, seen_root, eof = b"", 1, False, False
    while not eof:
        try:
            chunk = stream.read1(CHUNK)  # what is there: a truncated gzip loses only its tail
        except GZIP_ERRORS as e:
            yield RecordError(f"{path}: line {line}", f"truncated or corrupt gzip stream ({e})")
            return
        eof, buf = not chunk, buf + chunk
        seen_root = seen_root or b"<PubmedArticleSet" in buf
        pos = 0
        while (m := _RECORD.search(buf, pos)) and (close := buf.find(b"</" + m.group(1) + b">", m.end())) >= 0:
            end = close + len(m.group(1)) + 3
            line += buf.count(b"\n", pos, m.start())
            yield line, buf[m.start():end]
            line += buf.count(b"\n", m.start(), end)
            pos = end
        # Keep an unfinished record, or else a tail long enough to hold a start tag cut in two.
        m = _RECORD.search(buf, pos)
        keep = m.start() if m else max(pos, len(buf) - 32)
        line += buf.count(b"\n", pos, keep)
        buf = buf[keep:]
    if not seen_root:
        yield RecordError(f"{path}: line 1", "not a PubMed XML file (no PubmedArticleSet element)")
    elif _RECORD.search(buf):
        yield RecordError(f"{path}: line {line}", "file ends inside a record (truncated file)")


def _citation(el) -> Doc:
    """A PubmedArticle (MedlineCitation/Article) or a PubmedBookArticle (BookDocument)."""
    book = el.tag == "PubmedBookArticle"
    pmid = el.findtext("BookDocument/PMID" if book else "MedlineCitation/PMID")
    if not pmid or not pmid.strip():
        raise ValueError("citation without PMID")
    article = el.find("BookDocument" if book else "MedlineCitation/Article")
    if article is None:
        return Doc(doc_id=pmid.strip(), title="")
    titles = ["ArticleTitle", "VernacularTitle"] + (["Book/BookTitle"] if book else [])
    title = next((t for t in (flat_text(x) for x in map(article.find, titles) if x is not None) if t), "")
    sections = [(part.get("Label") or "", text) for part in article.iterfind("Abstract/AbstractText")
                if (text := flat_text(part))]
    return Doc(doc_id=pmid.strip(), title=title, sections=sections)


def read(path: Path) -> Iterator[Doc | Deletion | RecordError]:
    """Yield the records of one file in order; problems come as RecordError items."""
    with open_maybe_gzip(path) as stream:
        for item in _records(stream, path):
            if isinstance(item, RecordError):
                yield item
                continue
            line, data = item
            try:
                el = etree.fromstring(data, _PARSER)
                if el.tag == "DeleteCitation":
                    yield Deletion([p.text.strip() for p in el.iterfind("PMID") if p.text and p.text.strip()])
                else:
                    yield _citation(el)
            except (etree.XMLSyntaxError, ValueError) as e:
                yield RecordError(f"{path}: line {line}", f"malformed record ({e})")
