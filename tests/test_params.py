import json

import pytest

from bali import params


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
