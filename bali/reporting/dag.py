"""The stage graph the README and the documentation's home page draw, written from `dvc dag --mermaid`.

DVC draws every cell of a matrix stage (`evaluate@bali-task0`, ...) as its own node; the pages draw a
matrix as one node, so the graph stays readable however many tasks and models there are. Edges are
DVC's own, merged across cells, in a stable order.

  python -m bali.reporting.dag [--write README.md docs/index.md]

prints the graph, or replaces the block after the marker line in each file.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

MARKER = "<!-- stage graph: written by python -m bali.reporting.dag from dvc dag --mermaid -->"
NODE = re.compile(r'^\s*(\w+)\["([^"]+)"\]\s*$')
EDGE = re.compile(r"^\s*(\w+)-->(\w+)\s*$")


def collapse(dvc_mermaid: str) -> str:
    """`dvc dag --mermaid`'s graph with matrix cells merged into their stage, left to right."""
    names, edges = {}, set()
    for line in dvc_mermaid.splitlines():
        if m := NODE.match(line):
            names[m.group(1)] = m.group(2).split("@")[0]
        elif m := EDGE.match(line):
            edges.add((m.group(1), m.group(2)))
    merged = {(names[a], names[b]) for a, b in edges if names[a] != names[b]}
    # stages in the order DVC would run them (a topological order; ties by name), then edges by that order
    order, left = [], set(names.values())
    while left:
        ready = sorted(s for s in left if not any(b == s and a in left for a, b in merged))
        if not ready:
            raise ValueError("the stage graph has a cycle")
        order += ready
        left -= set(ready)
    rank = {s: i for i, s in enumerate(order)}
    lines = ["flowchart LR"] + [f"    {a} --> {b}" for a, b in sorted(merged, key=lambda e: (rank[e[0]], rank[e[1]]))]
    return "\n".join(lines) + "\n"


def dvc_dag(root: Path = Path(".")) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", "dag", "--mermaid"], cwd=root, capture_output=True, text=True, check=True).stdout


def block(graph: str) -> str:
    return f"{MARKER}\n```mermaid\n{graph}```\n"


def replace_block(page: str, graph: str) -> str:
    """The page with the fenced block after the marker replaced (the marker must be there)."""
    pattern = re.compile(re.escape(MARKER) + r"\n```mermaid\n.*?```\n", re.S)
    if not pattern.search(page):
        raise ValueError(f"no stage-graph block after {MARKER!r}")
    return pattern.sub(lambda _: block(graph), page, count=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", nargs="*", default=None, metavar="FILE", help="pages whose stage-graph block to replace")
    args = ap.parse_args(argv)
    graph = collapse(dvc_dag())
    if args.write is None:
        sys.stdout.write(graph)
    for f in args.write or []:
        path = Path(f)
        path.write_text(replace_block(path.read_text(encoding="utf-8"), graph), encoding="utf-8")
        print(f"stage graph -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
