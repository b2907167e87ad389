"""JSON Lines: one object per line with `id` and `title` plus `abstract` (or `text`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from bali.corpus.records import Doc, RecordError, lines


def read(path: Path) -> Iterator[Doc | RecordError]:
    for item in lines(path):
        if isinstance(item, RecordError):
            yield item
            return
        n, raw = item
        if not raw.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(raw.decode("utf-8"))
            doc_id, title = obj["id"], obj.get("title") or ""
            abstract = obj.get("abstract", obj.get("text")) or ""
            if not isinstance(title, str) or not isinstance(abstract, str) or doc_id in (None, ""):
                raise ValueError("id must be set and title/abstract must be strings")
        except UnicodeDecodeError as e:
            yield RecordError(where, f"invalid UTF-8 ({e.reason} at byte {e.start})")
        except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as e:
            yield RecordError(where, f"not a document object ({e})")
        else:
            yield Doc(str(doc_id), title, [("", abstract)] if abstract else [])
