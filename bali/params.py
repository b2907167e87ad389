"""params.yaml sections, `-S section.key=value` overrides, and the resolved params saved beside outputs.

Every stage reads `base` (seed, device) plus its own section and nothing else, so DVC's per-stage
`params:` lists stay honest. Overrides use `dvc exp run -S` syntax; values are parsed as YAML so
`-S umls_graph.languages=[ENG,FRE]` gives a list and `-S pretrain.lr=1e-4` a float.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from bali.io import write_json

DEFAULT_PARAMS = Path("params.yaml")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    key, _, raw = text.partition("=")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _FLOAT.fullmatch(value):  # YAML 1.1 reads 1e-4 as a string; DVC does not
        value = float(value)
    return key.strip().split("."), value


def _floats(value):
    """YAML 1.1 (PyYAML) reads `2e-05`, as `dvc exp run -S` writes it, as a string: make it a float."""
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return float(value) if isinstance(value, str) and _FLOAT.fullmatch(value) else value


def load(section: str, overrides: list[str] | tuple[str, ...] = (), path: str | Path = DEFAULT_PARAMS,
         borrow: dict[str, tuple[str, ...]] | None = None) -> dict:
    """Return {'base': {...}, **section} with overrides applied; unknown keys are an error (typos).

    `borrow` names the few keys of other sections a stage also reads ({"link": ("method",)} gives
    p["link"]["method"]): a stage declares them once, beside the `section.key` lines of its dvc.yaml
    params (a test holds the two together), and -S overrides reach them like the section's own."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file {path} not found (run from the repository root or pass --params)")
    doc = _floats(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    if section not in doc:
        raise KeyError(f"{path}: no '{section}' section")
    params = {"base": dict(doc.get("base") or {}), **dict(doc[section] or {})}
    for other, keys in (borrow or {}).items():
        missing = [k for k in keys if k not in (doc.get(other) or {})]
        if missing:
            raise KeyError(f"{path}: no {', '.join(f'{other}.{k}' for k in missing)}")
        params[other] = {k: doc[other][k] for k in keys}
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "base":
            target, keys = params["base"], keys[1:]
        elif keys[0] == section:
            target, keys = params, keys[1:]
        elif keys[0] in (borrow or {}) and len(keys) > 1 and keys[1] in borrow[keys[0]]:
            target, keys = params[keys[0]], keys[1:]
        else:
            raise KeyError(f"override {text!r} is not for section '{section}', 'base' or a key it borrows")
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        if not keys or keys[-1] not in target:
            raise KeyError(f"override {text!r}: no such param in section '{section}' of {path}")
        target[keys[-1]] = value
    return params


def stage_parser(doc: str, *positionals: tuple[str, str]) -> argparse.ArgumentParser:
    """An argparse parser for a stage: its positionals, then -S overrides and --params."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help_text in positionals:
        ap.add_argument(name, help=help_text)
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a param, as `dvc exp run -S` does (repeatable)")
    ap.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: %(default)s)")
    return ap


def save_resolved(params: dict, out_dir: str | Path, **inputs: str) -> Path:
    """Write the params a stage ran with (after overrides) and its inputs beside its outputs."""
    return write_json(Path(out_dir) / "params.json", {"params": params, "inputs": inputs})


def unpack(entry: dict) -> list[str]:
    """A dict as DVC unpacks it into a command (`${item.task}`, with this repository's `.dvc/config`
    `parsing` settings): `--key value`, a true flag as `--key`, a false one as `--no-key`, a list as the
    key repeated."""
    out = []
    for k, v in entry.items():
        if isinstance(v, bool):
            out.append(f"--{k}" if v else f"--no-{k}")
        elif isinstance(v, list):
            for x in v:
                out += [f"--{k}", str(x)]
        else:
            out += [f"--{k}", str(v)]
    return out


def unpacked(args: list[str]) -> dict[str, list[str]]:
    """Command-line words as `unpack` writes them, read back as {key: [values as text]}: the form in
    which two entries compare equal exactly when DVC would write the same command for them."""
    out: dict[str, list[str]] = {}
    key = None
    for w in args:
        if w.startswith("--"):
            key = w[2:]
            out.setdefault(key, [])
        elif key is None:
            raise ValueError(f"expected --key before {w!r} in a task entry")
        else:
            out[key].append(w)
    return out
