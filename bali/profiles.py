"""Profiles: a YAML overlay of params.yaml values (profiles/NAME.yaml), applied as DVC overrides.

  python -m bali.profiles paper        # prints: -S 'pretrain.layers=5' -S ...
  dvc exp run -n paper $(python -m bali.profiles paper)

Every key of a profile must exist in params.yaml: a profile changes values, never code paths.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    path = ROOT / "profiles" / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"no profile {name!r} ({', '.join(p.stem for p in (ROOT / 'profiles').glob('*.yaml'))})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def flatten(overlay: dict, params: dict, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of the overlay, down to params.yaml's leaves (`dvc exp run -S` can change
    a value, not add a key, so neither can a profile)."""
    out = {}
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if key not in params:
            raise KeyError(f"profile key {dotted} is not in params.yaml")
        if isinstance(value, dict) and isinstance(params[key], dict):
            out.update(flatten(value, params[key], dotted + "."))
        else:
            out[dotted] = value
    return out


def overrides(name: str, params_path: Path = ROOT / "params.yaml") -> list[str]:
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}"
            for k, v in flatten(load(name), params).items()]


def resolved(name: str, params_path: Path = ROOT / "params.yaml") -> dict:
    """params.yaml with the profile's values applied (what `dvc exp run` with its overrides runs)."""
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    for dotted, value in flatten(load(name), params).items():
        *path, leaf = dotted.split(".")
        node = params
        for k in path:
            node = node[k]
        node[leaf] = value
    return params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    args = ap.parse_args(argv)
    print(" ".join(f"-S {shlex.quote(o)}" for o in overrides(args.profile)))


if __name__ == "__main__":
    main()

