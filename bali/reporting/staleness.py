"""Whether an experiment's figures still describe the current pipeline, decided as DVC decides what
to rerun: a row's figures come from its pre-training and its evaluation cells (the MEASURED stages),
and they are current while DVC would not rerun those stages at HEAD. So a change anywhere else
(the report, a linker whose output stays byte-identical, the docs) keeps the rows, and a change to
a file those stages run, to the data they read or to a default they used does not.

An experiment is compared with HEAD's dvc.lock, which must be current: `check_lock` stops with the
stages to rerun otherwise."""
from __future__ import annotations

import json
import subprocess

import yaml

try:  # dvc.lock files are a few hundred kB of YAML; libyaml reads them ~10x faster
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as Loader


def is_measured(stage: str) -> bool:
    return stage == "pretrain" or stage.startswith("evaluate@")


def git_yaml(rev: str, path: str) -> dict:
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return (yaml.load(shown.stdout, Loader=Loader) or {}) if shown.returncode == 0 else {}


def flat(tree: dict, prefix: str = "") -> dict:
    """{"pretrain.lr": 1e-4, ...}: nested params as dotted keys (a list stays one value)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def same_measurement(exp_lock: dict, baseline_params: dict, head_lock: dict) -> bool:
    """Whether DVC would not rerun the experiment's measured stages at HEAD: each of HEAD's measured
    stages is in the experiment with the same command and the same hash of every dependency (code
    and upstream data; the measured stages' own outputs, i.e. the trained model, aside), and every
    param has HEAD's value unless the experiment set it (`-S`: its value is not its baseline's default)."""
    exp = {k: v for k, v in exp_lock.get("stages", {}).items() if is_measured(k)}
    head = {k: v for k, v in head_lock.get("stages", {}).items() if is_measured(k)}
    made = {o["path"] for s in head.values() for o in s.get("outs", [])}
    default = flat(baseline_params)
    for name, stage in head.items():
        mine = exp.get(name)
        if mine is None or mine.get("cmd") != stage.get("cmd"):
            return False
        hashes = {d["path"]: d.get("md5") for d in mine.get("deps", [])}
        if any(hashes.get(d["path"]) != d.get("md5") for d in stage.get("deps", []) if d["path"] not in made):
            return False
        used = flat(mine.get("params", {}).get("params.yaml", {}))
        now = flat(stage.get("params", {}).get("params.yaml", {}))
        if any(used.get(k) != now.get(k) and used.get(k) == default.get(k) for k in used.keys() | now.keys()):
            return False
    return bool(head)


def check_lock() -> None:
    """Stop when the workspace's dvc.lock is behind its code or params for a measured stage: rows are
    judged against it."""
    shown = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True, check=True).stdout
    behind = sorted(s for s in json.loads(shown or "{}") if is_measured(s))
    if behind:
        raise SystemExit(f"ablations: dvc.lock is behind the workspace for {', '.join(behind)}; "
                         "run `dvc repro` first (rows are judged against it)")


def head_lock() -> dict:
    with open("dvc.lock", encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader) or {}
