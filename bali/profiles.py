"""Profiles: a YAML overlay of params.yaml values (profiles/NAME.yaml), applied as DVC overrides.

  python -m bali.profiles paper           # prints: -S 'pretrain.layers=5' -S ...
  dvc exp run -n paper $(python -m bali.profiles paper)
  python -m bali.profiles paper --write   # or make them the working params (params.yaml rewritten,
                                          # its comments and key order kept)

Every key of a profile must exist in params.yaml: a profile changes values, never code paths. A
param that dvc.yaml uses as a dependency path (`${section.key}` under `deps:`) must stay a non-empty
path under the profile: DVC cannot collect a stage with an empty dependency.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(name: str, root: Path = ROOT) -> dict:
    path = root / "profiles" / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"no profile {name!r} ({', '.join(p.stem for p in (root / 'profiles').glob('*.yaml'))})")
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


def get(params: dict, dotted: str):
    for k in dotted.split("."):
        params = params[k]
    return params


def dependency_params(dvc_yaml: Path = ROOT / "dvc.yaml") -> list[str]:
    """The params dvc.yaml interpolates into dependency paths (`${a.b}` in a `deps:` list; `item.`
    keys of foreach/matrix stages excluded)."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    keys = {m for s in stages.values() for dep in s.get("deps", [])
            for m in re.findall(r"\$\{([^}]+)\}", str(dep))}
    return sorted(k for k in keys if not k.startswith("item."))


def check_dependencies(params: dict, dvc_yaml: Path = ROOT / "dvc.yaml") -> None:
    empty = [k for k in dependency_params(dvc_yaml) if not isinstance(get(params, k), str) or not get(params, k).strip()]
    if empty:
        raise ValueError(f"{', '.join(empty)}: dvc.yaml depends on this path, so it cannot be empty "
                         f"(profiles/no_held_out.txt is the empty held-out list)")


def resolved(name: str, params_path: Path = ROOT / "params.yaml") -> dict:
    """params.yaml with the profile's values applied (what `dvc exp run` with its overrides runs)."""
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    for dotted, value in flatten(load(name, params_path.parent), params).items():
        *path, leaf = dotted.split(".")
        node = params
        for k in path:
            node = node[k]
        node[leaf] = value
    return params


def overrides(name: str, params_path: Path = ROOT / "params.yaml") -> list[str]:
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    check_dependencies(resolved(name, params_path), params_path.parent / "dvc.yaml")
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}"
            for k, v in flatten(load(name, params_path.parent), params).items()]


def write(name: str, params_path: Path = ROOT / "params.yaml") -> int:
    """Apply the profile to params.yaml in place (a round trip through ruamel.yaml, as `dvc exp run -S`
    does: comments and key order stay). Returns the number of values changed."""
    from ruamel.yaml import YAML

    check_dependencies(resolved(name, params_path), params_path.parent / "dvc.yaml")
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 10**6
    # Floats the way PyYAML (and so DVC's -S) writes them: ruamel's `2e-05` reads back as a string in YAML 1.1.
    rt.representer.add_representer(float, lambda r, v: r.represent_scalar(
        "tag:yaml.org,2002:float", yaml.safe_dump(v).strip().removesuffix("...").strip()))
    # Strings PyYAML would read as something else (`no`, `yes`, `on`, `1e-5`) are quoted.
    rt.representer.add_representer(str, lambda r, v: r.represent_scalar(
        "tag:yaml.org,2002:str", v, style="'" if yaml.safe_load(v or "''") != v else None))
    doc = rt.load(params_path.read_text(encoding="utf-8"))
    changed = 0
    plain = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    for dotted, value in flatten(load(name, params_path.parent), plain).items():
        *path, leaf = dotted.split(".")
        node = doc
        for k in path:
            node = node[k]
        if node[leaf] != value:
            node[leaf] = value
            changed += 1
    tmp = params_path.with_suffix(".yaml.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        rt.dump(doc, f)
    tmp.replace(params_path)
    return changed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--write", action="store_true", help="rewrite params.yaml with the profile's values")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="the params file (default: this repository's)")
    args = ap.parse_args(argv)
    if args.write:
        print(f"{args.params}: {write(args.profile, args.params)} values set from profiles/{args.profile}.yaml")
    else:
        print(" ".join(f"-S {shlex.quote(o)}" for o in overrides(args.profile, args.params)))


if __name__ == "__main__":
    main()
