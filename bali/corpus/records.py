"""What every corpus reader yields: documents, deletions and errors that name file and position."""
from __future__ import annotations

import gzip
import io
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


class Gunzip(io.RawIOBase):
    """A gzip stream (several members allowed) that hands out every byte it can decompress before
    it raises EOFError on a truncated file, so a cut file loses only its unfinished tail."""

    def __init__(self, path: Path):
        self._f, self._out = open(path, "rb"), b""
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._out:
            if self._d.eof:
                rest = self._d.unused_data or self._f.read(1 << 16)
                if not rest:
                    return 0
                self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)
            else:
                rest = self._f.read(1 << 16)
                if not rest:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
            self._out = self._d.decompress(rest)
        n = min(len(b), len(self._out))
        b[:n], self._out = self._out[:n], self._out[n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def open_maybe_gzip(path: Path):
    """A binary stream of the file, gunzipped when it is gzip (detected from its first bytes)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return io.BufferedReader(Gunzip(path), 1 << 20) if gz else open(path, "rb")


def lines(path: Path) -> Iterator[tuple[int, bytes] | RecordError]:
    """(line number, raw line) of a plain or gzip text file; a RecordError if the stream breaks."""
    n = 0
    try:
        with open_maybe_gzip(path) as f:
            for n, raw in enumerate(f, 1):
                yield n, raw
    except GZIP_ERRORS as e:
        yield RecordError(f"{path}: line {n + 1}", f"truncated or corrupt gzip stream ({e})")
