import json
from pathlib import Path

import pytest
import yaml

from bali import params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("base:\n  seed: 29\nstage:\n  lr: 2.0e-5\n  langs: [ENG]\n  nested:\n    k: 1\nother:\n  x: 1\n")
    return f


def test_overrides_parse_like_dvc(params_file):
    p = params.load("stage", ["stage.lr=1e-4", "stage.langs=[ENG,FRE]", "stage.nested.k=3", "base.seed=7"],
                    params_file)
    assert p == {"base": {"seed": 7}, "lr": 1e-4, "langs": ["ENG", "FRE"], "nested": {"k": 3}}
    assert "x" not in p  # a stage sees base and its own section only
    params_file.write_text(params_file.read_text().replace("lr: 2.0e-5", "lr: 2e-05"))  # as `dvc exp run -S` writes it
    assert params.load("stage", [], params_file)["lr"] == 2e-5


@pytest.mark.parametrize("bad", ["stage.typo=1", "other.x=2", "stage.lr"])
def test_bad_overrides_fail(params_file, bad):
    with pytest.raises((KeyError, ValueError)):
        params.load("stage", [bad], params_file)


def test_resolved_params_written(tmp_path, params_file):
    p = params.load("stage", ["stage.lr=0.5"], params_file)
    params.save_resolved(p, tmp_path, meta_dir="x/META")
    saved = json.loads((tmp_path / "params.json").read_text())
    assert saved == {"params": p, "inputs": {"meta_dir": "x/META"}}


def test_a_task_entry_reads_back_as_dvc_unpacks_it(tmp_path):
    """dvc.yaml writes each evaluate task's entry into its cell's command (`${item.task}`, under the
    repository's `.dvc/config` parsing settings); the stage compares it with params.yaml's entry through
    `params.unpack`, so the two must spell every kind of value alike, and differ when a value does."""
    import shlex
    import subprocess

    from dvc.repo import Repo

    entry = {"name": "gad", "kind": "classification", "dir": "a dir/gad", "negative": "0", "epochs": 1,
             "lr": 2.0e-5, "labels": ["x", "y"], "seeds": [42], "select_best_on_dev": False, "train_from_test": True,
             "dictionary": ""}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text((ROOT / ".dvc" / "config").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"tasks": [entry]}}, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text("stages:\n  e:\n    matrix:\n      task: ${evaluate.tasks}\n"
                                       "    cmd: python x.py --task ${item.task.name} ${item.task}\n")
    cmd = shlex.split(next(iter(Repo(str(tmp_path)).index.stages)).cmd)
    assert cmd[4:] == params.unpack(entry)
    assert params.unpacked(cmd[4:]) != params.unpacked(params.unpack({**entry, "epochs": 2}))
    assert params.unpacked(cmd[4:]) != params.unpacked(params.unpack({**entry, "select_best_on_dev": True}))
