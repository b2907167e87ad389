"""The repository's own files each DVC stage runs, found by walking imports, against its `deps:`.

A stage's code is its entry script plus every module of this repository that the script imports,
directly or through other modules: module-level and function-level imports alike (a lazy import runs
as soon as its branch does), the `__init__` of every package on the way, and the modules a registry
names by string (`"bali.evaluation.ner"` in `bali.evaluation.kinds.KINDS`), which `importlib` loads at
run time. The walk is static, so it is an over-approximation: a stage may depend on code that one
setting never reaches, which is what `dvc repro` needs to be safe under every setting.
"""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "bali"
MODULE_STRING = re.compile(rf"^{PACKAGE}(\.\w+)+$")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of a dotted module name of this repository (a module or a package's `__init__`)."""
    base = root.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def with_packages(name: str, root: Path = ROOT) -> list[Path]:
    """The module's file and the `__init__.py` of every package above it (importing a.b.c runs a and a.b)."""
    parts = name.split(".")
    files = [module_file(".".join(parts[:i]), root) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def imported_modules(path: Path) -> set[str]:
    """Every `bali` module a file imports anywhere in it, plus module names it holds as strings."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == PACKAGE:
            out.add(node.module)
            # `from bali.lm import encoder` imports the submodule bali.lm.encoder
            out.update(f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            out.add(node.value)
    return {m for m in out if module_file(m)}


def code_of(entry: Path, root: Path = ROOT) -> set[Path]:
    """The entry script and every repository file it runs, by the transitive import walk."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for m in imported_modules(f):
            todo.extend(with_packages(m, root))
    return seen


def entry_scripts(cmd: str | list) -> list[str]:
    """The repository scripts a stage's command runs (`python stages/x.py ...`, `python -m bali.x`)."""
    out = []
    for line in [cmd] if isinstance(cmd, str) else cmd:
        words = shlex.split(line)
        for i, w in enumerate(words):
            if w.endswith(".py") and (ROOT / w).is_file():
                out.append(w)
            elif w == "-m" and i + 1 < len(words) and module_file(words[i + 1]):
                out.append(module_file(words[i + 1]).relative_to(ROOT).as_posix())
    return out


def covered(file: str, deps: list[str]) -> bool:
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


def missing_deps(dvc_yaml: dict) -> dict[str, list[str]]:
    """{stage: [repository files its command runs that none of its deps covers]} (empty when complete)."""
    out = {}
    for name, stage in dvc_yaml["stages"].items():
        stage = stage.get("do", stage)  # foreach stages keep their body under `do`
        deps = [d for d in stage.get("deps", []) if isinstance(d, str)]
        files = sorted({f.relative_to(ROOT).as_posix() for s in entry_scripts(stage["cmd"]) for f in code_of(ROOT / s)})
        lost = [f for f in files if not covered(f, deps)]
        if lost:
            out[name] = lost
    return out


def load_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> dict:
    return yaml.safe_load(path.read_text())
