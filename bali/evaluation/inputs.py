"""Reading a fine-tuning task's files: malformed rows counted with file and line, a threshold above
which the task fails with that report, and the slices the budgets and the test-file carving take.

Every downstream kind (classification, pubmedqa, multiple_choice) reads through here, so a bad row is
reported the same way everywhere: `test.tsv:17: label '2' is not in the label set, skipped`.
"""
from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

REPORTED = 20  # malformed rows listed by file and line in the report (all are counted)


class BadInput(ValueError):
    """A task's files cannot be used: too many malformed rows, a missing file, an unreadable document."""


class Problems:
    """Malformed rows of one task: counted by reason; above `max_fraction` of the rows read, `check` fails."""

    def __init__(self, max_fraction: float):
        self.max_fraction = max_fraction
        self.rows = 0
        self.bad: list[tuple[str, int, str]] = []

    def good(self) -> None:
        self.rows += 1

    def skip(self, path: str | Path, line: int, reason: str) -> None:
        """A row read and not usable."""
        self.rows += 1
        self.reject(path, line, reason)

    def reject(self, path: str | Path, line: int, reason: str) -> None:
        """A row already counted as read, found unusable later (a label outside the training labels)."""
        self.bad.append((Path(path).name, line, reason))
        if len(self.bad) <= REPORTED:
            print(f"{Path(path).name}:{line}: {reason}, skipped", file=sys.stderr)

    def lines(self) -> list[str]:
        return [f"{f}:{n}: {r}" for f, n, r in sorted(self.bad, key=lambda b: b[:2])[:REPORTED]]

    def summary(self) -> dict:
        return {"rows": self.rows, "malformed": len(self.bad),
                "by_reason": dict(Counter(r.split(" (")[0] for _, _, r in self.bad)), "first": self.lines()}

    def check(self) -> None:
        if self.bad and len(self.bad) > self.max_fraction * max(self.rows, 1):
            raise BadInput(f"{len(self.bad)} of {self.rows} rows are malformed (more than max_malformed_fraction "
                           f"{self.max_fraction}):\n  " + "\n  ".join(self.lines())
                           + (f"\n  ... and {len(self.bad) - REPORTED} more" if len(self.bad) > REPORTED else ""))


def text_lines(path: Path, problems: Problems):
    """(line number, text without its line break) of every UTF-8 line; a line of invalid UTF-8 is
    counted and costs that line only (the file is read as bytes)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}") from None
    with f:
        for no, raw in enumerate(f, 1):
            try:
                yield no, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                problems.skip(path, no, "invalid UTF-8")


def json_lines(path: Path, problems: Problems):
    """(line number, object) of every JSON-object line; blank lines pass, anything else is counted."""
    for no, line in text_lines(path, problems):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.skip(path, no, f"not JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            problems.skip(path, no, "not a JSON object")
            continue
        yield no, row


def json_document(path: Path) -> tuple[object, str]:
    """A whole JSON file (PubMedQA's release files) and its text; a parse error names the line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return json.loads(text), text
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: invalid UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}:{e.lineno}:{e.colno}: not JSON ({e.msg})") from None


def sample(rows: list, n: int, seed: int) -> list:
    """At most `n` rows (0 = all), drawn with `seed`, kept in file order: a budget that does not take
    only the first rows of a file sorted by label (GAD's test file is)."""
    if not n or n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def carve(rows: list, n_train: int, n_dev: int, seed: int) -> tuple[list, list, list]:
    """(train, dev, test) from one file's rows: a seeded permutation, its first `n_train` rows, the next
    `n_dev`, the rest (test order kept). For tests and benchmarks that only have a test split: what is
    trained on is part of a test file, and the protocol line says so."""
    if n_train + n_dev >= len(rows):
        raise BadInput(f"train_from_test {n_train} + dev_from_test {n_dev} leave no test rows of {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    train, dev = order[:n_train], order[n_train:n_train + n_dev]
    rest = sorted(order[n_train + n_dev:])
    return [rows[i] for i in train], [rows[i] for i in dev], [rows[i] for i in rest]


TASK_KEYS = {"name", "kind", "dir", "metric", "negative", "labels", "train_from_test", "dev_from_test"}


def task_params(p: dict, task: dict) -> dict:
    """The kind's params with the task's own values (a task entry may set any of them: LinkBERT's
    per-task learning rates and epochs); a key that is neither is a typo."""
    unknown = set(task) - TASK_KEYS - set(p)
    if unknown:
        raise BadInput(f"task {task.get('name')!r}: unknown keys {sorted(unknown)} (not a task key nor a param "
                       f"of evaluate.{task.get('kind')})")
    return {**p, **{k: v for k, v in task.items() if k in p and k not in TASK_KEYS}}
