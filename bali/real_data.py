"""The real benchmark files: where they live, what they are, and whether a copy is whole.

    python -m bali.real_data verify [DIR] [--only NAME ...]   # presence, sizes, line counts, sha256
    python -m bali.real_data manifest DIR                      # rewrite the manifest's files from a copy

The files are public data sets nobody on this project wrote; the repository never holds them. A
user puts them under one folder, `$BALI_REAL_DATA` (default `data/real/`, relative to the working
directory), one sub-folder per data set as bali/real_data_manifest.json lays out. That manifest is
the one description of them: each data set's public source, licence, layout and every file's size,
line count and sha256. `verify` checks a copy against it file by file and says what is wrong with
each file, so a half-copied or different release is caught before it turns into a figure.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

ENV = "BALI_REAL_DATA"
DEFAULT = Path("data/real")
MANIFEST = Path(__file__).with_name("real_data_manifest.json")
# The data sets the real-data evaluation reads (ablations/demo.yaml's real_tasks, bench/real_eval.py):
# `--only eval` checks just these.
EVAL = ("gsc-plus", "bc5cdr-disease-el", "umnsrs")


def root() -> Path:
    """The folder that holds the data sets: $BALI_REAL_DATA, else data/real."""
    return Path(os.environ.get(ENV) or DEFAULT)


def path(*parts: str) -> Path:
    """A data set's folder or file under root(), e.g. path("gsc-plus")."""
    return root().joinpath(*parts)


def resolve(spec_path: str | Path) -> Path:
    """A path as a spec writes it: one under data/real/ (e.g. ablations/demo.yaml's real tasks) is
    read from root(), so the same spec finds the data wherever $BALI_REAL_DATA points; any other
    path is left as it is."""
    p = Path(spec_path)
    try:
        return root() / p.relative_to(DEFAULT)
    except ValueError:
        return p


def load_manifest(manifest: Path = MANIFEST) -> dict:
    return json.loads(manifest.read_text(encoding="utf-8"))


def describe(f: Path) -> tuple[int, int, str]:
    """(bytes, lines, sha256) of a file; lines are newline characters, as `wc -l` counts them."""
    digest, size, lines = hashlib.sha256(), 0, 0
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            lines += block.count(b"\n")
    return size, lines, digest.hexdigest()


def check_file(f: Path, name: str, expected: list) -> str | None:
    """What is wrong with one file against its manifest entry [bytes, lines, sha256], or None."""
    size, lines, sha = expected
    if not f.is_file():
        return f"{name}: missing (expected {size:,} bytes, {lines:,} lines)"
    got_size, got_lines, got_sha = describe(f)
    if got_size != size:
        return f"{name}: {got_size:,} bytes, expected {size:,} (cut short, or another version of the file)"
    if got_lines != lines:
        return f"{name}: {got_lines:,} lines, expected {lines:,} (line endings converted?)"
    if got_sha != sha:
        return f"{name}: sha256 {got_sha[:12]}… differs from the manifest's {sha[:12]}… (same size, other content)"
    return None


def verify(directory: Path, names: list[str] | None = None, manifest: dict | None = None) -> dict[str, list[str]]:
    """{data set: its problems (empty when whole)} of a copy under `directory`."""
    sets = (manifest or load_manifest())["datasets"]
    wanted = [n for n in sets if not names or n in names]
    unknown = sorted(set(names or []) - set(sets))
    if unknown:
        raise SystemExit(f"real_data: no data set named {', '.join(unknown)} (known: {', '.join(sets)})")
    out = {}
    for name in wanted:
        spec, folder = sets[name], directory / name
        if not folder.is_dir():
            out[name] = [f"{name}/: folder missing ({len(spec['files'])} files expected); source: {spec['source']}"]
            continue
        out[name] = [p for rel, exp in spec["files"].items() if (p := check_file(folder / rel, f"{name}/{rel}", exp))]
    return out


def write_manifest(directory: Path, manifest_path: Path = MANIFEST) -> dict:
    """Re-describe every file of each data set the manifest lists, from a copy under `directory`
    (the descriptions, sources and licences are kept)."""
    manifest = load_manifest(manifest_path)
    for name, spec in manifest["datasets"].items():
        folder = directory / name
        spec["files"] = {f.relative_to(folder).as_posix(): list(describe(f))
                         for f in sorted(folder.rglob("*")) if f.is_file()}
    # one file per line: a changed file is one changed line in a diff
    lines = ["{", '  "datasets": {']
    for i, (name, spec) in enumerate(manifest["datasets"].items()):
        meta = {k: v for k, v in spec.items() if k != "files"}
        lines.append(f"    {json.dumps(name)}: {{")
        lines += [f"      {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in meta.items()]
        lines.append('      "files": {')
        files = list(spec["files"].items())
        lines += [f"        {json.dumps(rel)}: {json.dumps(d)}{',' if j < len(files) - 1 else ''}"
                  for j, (rel, d) in enumerate(files)]
        lines.append("      }")
        lines.append("    }" + ("," if i < len(manifest["datasets"]) - 1 else ""))
    manifest_path.write_text("\n".join(lines + ["  }", "}"]) + "\n", encoding="utf-8")
    return manifest


def summary_table(manifest: dict | None = None) -> str:
    """The data sets as a Markdown table for the documentation (bali.reporting.pages writes it)."""
    sets = (manifest or load_manifest())["datasets"]
    rows = ["| folder | what | files | bytes | licence | used by |", "|---|---|---|---|---|---|"]
    for name, s in sets.items():
        total = sum(d[0] for d in s["files"].values())
        rows.append(f"| `{name}/` | {s['what']} | {len(s['files']):,} | {total:,} | {s['licence']} | {s['used_by']} |")
    return "\n".join(rows)


def sources(manifest: dict | None = None) -> str:
    """Each data set's public source and the layout a copy must have, as Markdown."""
    out = []
    for name, s in (manifest or load_manifest())["datasets"].items():
        out += [f"### `{name}/`", "", f"Source: {s['source']}.", "", f"Layout: {s['layout']}", ""]
    return "\n".join(out).rstrip()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["verify", "manifest"])
    ap.add_argument("dir", nargs="?", type=Path, help=f"the copy (default ${ENV}, else {DEFAULT})")
    ap.add_argument("--only", nargs="+", help=f"data sets to check; `eval`: {', '.join(EVAL)}")
    args = ap.parse_args(argv)
    directory = args.dir or root()
    if args.action == "manifest":
        m = write_manifest(directory)
        print(f"real_data: {sum(len(s['files']) for s in m['datasets'].values())} files -> {MANIFEST}")
        return
    names = [n for o in args.only or [] for n in (EVAL if o == "eval" else (o,))]
    found = verify(directory, names)
    for name, problems in found.items():
        print(f"{name}: ok" if not problems else f"{name}: {len(problems)} problem(s)")
        for p in problems[:20]:
            print(f"  {p}")
        if len(problems) > 20:
            print(f"  … and {len(problems) - 20} more")
    bad = [n for n, p in found.items() if p]
    if bad:
        sys.exit(f"real_data: {directory}: {', '.join(bad)} not as the manifest describes "
                 f"(bali/real_data_manifest.json; see docs/datasets.md)")
    print(f"real_data: {directory}: {len(found)} data set(s) whole")


if __name__ == "__main__":
    main()
