"""UMLS Metathesaurus RRF files: schemas, and streaming reads that account for malformed lines.

RRF is pipe-separated with a trailing pipe, no header and no quoting: a `"` inside STR is an
ordinary character. Each file is read by polars' streaming engine (bounded memory, both cores):
1. `validate` reads each line as one string and lists the malformed ones (wrong number of fields,
   invalid UTF-8, empty CUI) with their line numbers in that one pass (the line count comes from
   polars' newline count, which parses nothing);
2. `scan` reads the wanted columns with a 1-based line number `ln`, minus those lines.
Invalid UTF-8 is decoded lossily to U+FFFD and a line containing U+FFFD is malformed (UMLS text is
valid UTF-8; a correctly encoded U+FFFD would be flagged too: counted, never silently kept).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

COLUMNS = {
    "MRCONSO.RRF": "CUI LAT TS LUI STT SUI ISPREF AUI SAUI SCUI SDUI SAB TTY CODE STR SRL SUPPRESS CVF".split(),
    "MRREL.RRF": "CUI1 AUI1 STYPE1 REL CUI2 AUI2 STYPE2 RELA RUI SRUI SAB SL RG DIR SUPPRESS CVF".split(),
    "MRSTY.RRF": "CUI TUI STN STY ATUI CVF".split(),
}
EXAMPLES_KEPT = 10
# A separator byte that RRF text never contains, so the validation parse sees each line whole.
_WHOLE_LINE = dict(separator="\x00", has_header=False, quote_char=None, schema={"text": pl.String},
                   encoding="utf8-lossy", extra_columns="ignore", missing_columns="insert", empty_string_is_null=False,
                   raise_if_empty=False)


class MalformedInputError(ValueError):
    """Too many malformed lines, or a required file is missing."""


@dataclass
class FileReport:
    """Lines read and malformed lines found in one RRF file."""

    file: str
    lines: int = 0
    malformed: int = 0
    by_reason: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)  # the first few: [{"line": n, "reason": r}]
    bad_lines: pl.Series | None = field(default=None, repr=False)

    def as_stats(self) -> dict:
        return {"lines": self.lines, "malformed": self.malformed,
                "malformed_by_reason": dict(sorted(self.by_reason.items())), "malformed_examples": self.examples}

    def check(self, max_fraction: float) -> None:
        if self.lines and self.malformed / self.lines > max_fraction:
            first = ", ".join(f"line {e['line']} ({e['reason']})" for e in self.examples)
            raise MalformedInputError(
                f"{self.file}: {self.malformed} of {self.lines} lines are malformed ({self.malformed / self.lines:.3%}"
                f" > max_malformed_fraction {max_fraction:.3%}); first: {first}")


def rrf_path(meta_dir: str | Path, name: str, required: bool = True) -> Path | None:
    path = Path(meta_dir) / name
    if path.is_file():
        return path
    if required:
        raise MalformedInputError(f"{path}: required UMLS file is missing (point the stage at a release's META folder)")
    return None


def _reason(n_sep: int) -> pl.Expr:
    text = pl.col("text")
    return (pl.when(text.is_null() | (text.str.count_matches("|", literal=True) != n_sep))
            .then(pl.lit("wrong_field_count"))
            .when(text.str.contains("\ufffd", literal=True)).then(pl.lit("invalid_utf8"))
            .when(text.str.starts_with("|")).then(pl.lit("empty_cui")))


def validate(path: Path, max_fraction: float) -> FileReport:
    """Count lines and list malformed lines of an RRF file; print the first few; fail above max_fraction."""
    lines = pl.scan_csv(path, **_WHOLE_LINE)
    reason = _reason(len(COLUMNS[path.name])).alias("reason")
    bad = lines.with_row_index("line", offset=1).select("line", reason).filter(pl.col("reason").is_not_null())
    bad, count = pl.collect_all([bad, lines.select(pl.len())], engine="streaming")
    report = FileReport(file=str(path), lines=int(count.item()), malformed=bad.height)
    if report.malformed:
        report.by_reason = dict(bad.group_by("reason").len().iter_rows())
        report.bad_lines = bad["line"]
        report.examples = bad.head(EXAMPLES_KEPT).to_dicts()
        for row in report.examples:
            print(f"{path}:{row['line']}: malformed line ({row['reason']}), skipped", file=sys.stderr)
        if report.malformed > EXAMPLES_KEPT:
            print(f"{path}: {report.malformed} malformed lines in all", file=sys.stderr)
    report.check(max_fraction)
    return report


def scan(path: Path, report: FileReport, columns: list[str]) -> pl.LazyFrame:
    """Lazy frame of `ln` (1-based line number) and the wanted columns (empty fields null), minus
    the malformed lines that `validate` found."""
    schema = {c: pl.String for c in COLUMNS[path.name]} | {"_trailing": pl.String}
    lf = (pl.scan_csv(path, separator="|", has_header=False, quote_char=None, schema=schema, encoding="utf8-lossy",
                      extra_columns="ignore", missing_columns="insert", raise_if_empty=False)
          .with_row_index("ln", offset=1).select("ln", *columns))
    if report.malformed:
        lf = lf.filter(~pl.col("ln").is_in(report.bad_lines.implode()))
    return lf
