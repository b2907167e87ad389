"""What every corpus reader yields: documents, deletions and errors that name file and position."""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


@dataclass
class Mention:
    start: int
    end: int
    text: str
    type: str
    ids: list[str]


@dataclass
class Doc:
    """A document: title and abstract sections (label, text); gold mentions when the input has them."""

    doc_id: str
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)


@dataclass
class Deletion:
    doc_ids: list[str]


class RecordError(ValueError):
    """A record that could not be read; `where` names the file and position."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where, self.why = where, why


def open_maybe_gzip(path: Path):
    """A binary stream of the file, gunzipped when it is gzip (detected from its first bytes)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def lines(path: Path) -> Iterator[tuple[int, bytes] | RecordError]:
    """(line number, raw line) of a plain or gzip text file; a RecordError if the stream breaks."""
    n = 0
    try:
        with open_maybe_gzip(path) as f:
            for n, raw in enumerate(f, 1):
                yield n, raw
    except GZIP_ERRORS as e:
        yield RecordError(f"{path}: line {n + 1}", f"truncated or corrupt gzip stream ({e})")
