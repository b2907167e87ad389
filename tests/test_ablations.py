"""The ablation table: only experiments of the current pipeline count (a docs-only commit keeps
them, a params change does not), each row names its commit, a search's log keeps what it recorded,
seed rows give mean ± std, real tasks travel as absolute paths."""
import csv
import json
import subprocess

import pytest
import yaml

from bali.reporting import ablations


def commit(repo, files: dict, message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def compare(acc, delta):
    return {"demo_el_dev/bali": {"value": acc, "paired": {"delta": delta, "ci95_low": delta - 0.01,
                                                         "ci95_high": delta + 0.01, "mcnemar_p": 0.01}},
            "hierarchy_dev/bali": {"value": 0.5}}


def live(acc):
    """An experiment's dvclive metrics as `dvc exp show` gives them: the encoder's share at the last step."""
    return {"metrics": {"dvclive/pretrain/metrics.json": {"data": {"train": {
        "loss": 1.0, "encoder_share": acc / 2, "graph_name_cosine": 1 - acc / 10}}}}}


def lock(code="c1", data="d1", model="m1", lr=1, x=0):
    """A dvc.lock of the measured stages: pre-training (its code, its data, its params) and one cell."""
    return yaml.safe_dump({"stages": {
        "pretrain": {"cmd": "python stages/pretrain.py", "deps": [{"path": "bali/m.py", "md5": code},
                                                                  {"path": "data/d", "md5": data}],
                     "params": {"params.yaml": {"pretrain": {"lr": lr, "x": x}}}, "outs": [{"path": "models/bali", "md5": model}]},
        "evaluate@bali-task0": {"cmd": "python stages/evaluate.py", "deps": [{"path": "models/bali", "md5": model}]},
        "report": {"cmd": "python stages/report.py", "deps": [{"path": "bali/reporting", "md5": code + "r"}]}}})


def test_rows_of_the_current_pipeline_only(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    old = commit(tmp_path, {"params.yaml": "pretrain: {lr: 1, x: 0}\n", "dvc.lock": lock()}, "pipeline")
    # each experiment is a commit whose dvc.lock records what its stages ran with
    e1 = commit(tmp_path, {"dvc.lock": lock(model="m2", x=1)}, "kept: x set by -S, its own model")
    e2 = commit(tmp_path, {"dvc.lock": lock(code="c0")}, "stale: other code")
    e3 = commit(tmp_path, {"dvc.lock": lock(model="m3")}, "kept too, on the older baseline")
    e4 = commit(tmp_path, {"dvc.lock": lock(data="d0", x=1)}, "stale: other data")
    current = commit(tmp_path, {"params.yaml": "pretrain: {lr: 1, x: 0}\nreport: {y: 2}\n",
                                "dvc.lock": lock().replace("c1r", "c2r")}, "the report changed: rows stay")
    commit(tmp_path, {"README.md": "figures\n", "ablations/x.csv": ""}, "docs only")
    shown = [{"rev": "workspace"},
             {"rev": current, "experiments": [{"revs": [{"name": "kept", "data": live(0.51), "rev": e1}],
                                               "executor": {"state": "success"}},  # finished in DVC's queue
                                              {"revs": [{"name": "busy", "data": live(0.2), "rev": e1}],
                                               "executor": {"state": "running"}},
                                              {"revs": [{"name": "data", "data": live(0.3), "rev": e4}]}]},
             {"rev": old, "experiments": [{"revs": [{"name": "stale", "data": live(0.4), "rev": e2}]},
                                          {"revs": [{"name": "kept", "data": live(0.1), "rev": e3}]},
                                          {"revs": [{"name": "older", "data": live(0.1), "rev": e3}]}]}]
    monkeypatch.setattr(ablations.staleness, "check_lock", lambda: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ablations, "exp_show", lambda: shown)
    compares = {e1: compare(0.51, 0.021), e2: compare(0.4, 0.0), e3: compare(0.1, 0.0)}
    monkeypatch.setattr(ablations, "compare_of", lambda rev: compares[rev])  # each experiment's compare.json
    found = ablations.experiments()
    assert set(found) == {"kept", "older"} and found["kept"]["commit"] == current[:7]
    logged = ablations.experiments(current_only=False)  # a search's log: every commit, the newest of a name
    assert {k: v["commit"] for k, v in logged.items()} == \
        {"kept": current[:7], "stale": old[:7], "data": current[:7], "older": old[:7]}
    spec = tmp_path / "ablations" / "s.yaml"
    spec.write_text(yaml.safe_dump({"columns": "dev", "rows": [{"name": "kept", "what": "w", "set": ["pretrain.x=1"]}]}))
    ablations.table(spec, spec.with_suffix(".csv"))
    row, = csv.DictReader(spec.with_suffix(".csv").open())
    assert row["commit"] == current[:7] and row["dev acc@1"] == "0.510" and row["dev Δ vs base (pts)"] == "+2.1"
    assert row["dev parent hit@10"] == "0.500" and "test acc@1" not in row  # a search's table has no test column
    assert row["encoder share"] == "0.255" and row["graph·name cosine"] == "0.949"  # the pre-training's last step
    # a row may read another spec's experiments (`experiment:`): the same figures under its own name
    spec.write_text(yaml.safe_dump({"columns": "dev", "rows": [{"name": "alias", "experiment": "kept", "what": "w",
                                                               "set": ["pretrain.x=1"]}]}))
    ablations.table(spec, spec.with_suffix(".csv"))
    row, = csv.DictReader(spec.with_suffix(".csv").open())
    assert row["row"] == "alias" and row["dev acc@1"] == "0.510"
    spec.write_text(yaml.safe_dump({"rows": [{"name": "stale", "what": "w", "set": []}]}))
    with pytest.raises(SystemExit, match="current pipeline named stale"):
        ablations.table(spec, spec.with_suffix(".csv"))
    # a log keeps the lines it recorded of rows whose experiments are gone (a fresh clone has none)
    out = spec.with_suffix(".csv")
    out.write_text("row,commit,dev acc@1\ngone,abc1234,0.333\n")
    log = {"columns": "dev", "current_only": False, "rows": [{"name": "kept", "what": "w", "set": []},
                                                            {"name": "gone", "what": "w", "set": []}]}
    spec.write_text(yaml.safe_dump(log))
    ablations.table(spec, out)
    assert [(r["row"], r["commit"], r["dev acc@1"]) for r in csv.DictReader(out.open())] == \
        [("kept", current[:7], "0.510"), ("gone", "abc1234", "0.333")]
    spec.write_text(yaml.safe_dump({**log, "rows": log["rows"] + [{"name": "never", "what": "w", "set": []}]}))
    with pytest.raises(SystemExit, match="named never"):
        ablations.table(spec, out)
    # HEAD's default for lr moves: a row that did not set it is stale, so is one that set another param
    commit(tmp_path, {"params.yaml": "pretrain: {lr: 2, x: 0}\n", "dvc.lock": lock(lr=2)}, "lr default")
    assert ablations.experiments() == {}
    # a partial table keeps the recorded line of a row that no longer has a current run, leaves out one never run
    out.write_text("row,commit,dev acc@1\nkept,abc1234,0.510\n")
    spec.write_text(yaml.safe_dump({"columns": "dev", "rows": [{"name": "kept", "what": "w", "set": []},
                                                               {"name": "never", "what": "w", "set": []}]}))
    ablations.table(spec, out, partial=True)
    assert [(r["row"], r["commit"]) for r in csv.DictReader(out.open())] == [("kept", "abc1234")]


def test_real_tasks_absolute_or_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"tasks": [{"name": "d", "kind": "hierarchy", "dir": "x"}]}}))
    (tmp_path / "shared" / "g").mkdir(parents=True)
    spec = {"real_tasks": [{"name": "g", "kind": "entity_linking", "dir": "shared/g", "dictionary": "graph"}]}
    items = ablations.task_items(spec)
    assert items[0]["dir"] == "x" and items[1] == {"name": "g", "kind": "entity_linking",
                                                   "dir": str(tmp_path / "shared" / "g"), "dictionary": "graph"}
    assert ablations.flow(items[:1]) == "[{dir: x, kind: hierarchy, name: d}]"
    assert ablations.task_items({"real_tasks": [{"name": "m", "kind": "similarity", "dir": "missing"}]}) is None


def test_rows_paired_with_the_reference_row(tmp_path, monkeypatch):
    import polars as pl

    files = {}
    for row, hits in (("ref", [True, False, False, False]), ("new", [True, True, True, False])):
        files[row] = tmp_path / f"{row}.parquet"
        pl.DataFrame({"child": ["a", "b", "c", "d"], "parent": ["p"] * 4, "hit@10": hits}).write_parquet(files[row])
    monkeypatch.setattr(ablations, "predictions", lambda rev: {"hierarchy_dev": files[rev]})
    spec = {"columns": "dev", "reference": "ref", "rows": [{"name": "ref"}, {"name": "new"}]}
    cols = ablations.versus_columns(spec)
    assert list(cols) == ["dev acc@1 Δ vs ref (pts) [95 % CI], p", "dev hit@10 Δ vs ref (pts) [95 % CI], p"]
    got = ablations.versus(spec, {"ref": {"rev": "ref"}, "new": {"rev": "new"}}, cols, seed=0)
    # two links only the new row places in the top 10, none the other way: +50 points, exact McNemar p = 0.5
    assert got["ref"] == {} and got["new"]["dev hit@10 Δ vs ref (pts) [95 % CI], p"].startswith("+50.0 [")
    assert got["new"]["dev hit@10 Δ vs ref (pts) [95 % CI], p"].endswith("p 0.5")
    assert "dev acc@1 Δ vs ref (pts) [95 % CI], p" not in got["new"]  # no entity-linking predictions: no figure


def test_seed_rows_run_and_aggregate(tmp_path, monkeypatch):
    row = {"name": "demo", "what": "w", "set": ["pretrain.x=1"], "seeds": [30, 31]}
    assert ablations.runs(row) == [("demo", ["pretrain.x=1"]), ("demo-seed30", ["pretrain.x=1", "pretrain.seed=30"]),
                                   ("demo-seed31", ["pretrain.x=1", "pretrain.seed=31"])]
    found = {name: {"commit": "c", "data": live(0.5), "rev": name} for name in ("demo", "demo-seed30", "demo-seed31")}
    compares = {"demo": compare(0.50, 0.0), "demo-seed30": compare(0.54, 0.0), "demo-seed31": compare(0.52, 0.0)}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ablations, "experiments", lambda current_only=True: found)
    monkeypatch.setattr(ablations, "compare_of", lambda rev: compares[rev])
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"columns": "dev", "rows": [row]}))
    ablations.table(spec, spec.with_suffix(".csv"))
    got, = csv.DictReader(spec.with_suffix(".csv").open())
    # mean 0.52, sample std sqrt(((-.02)^2 + .02^2 + 0) / 2) = 0.02; every seed's value beside them
    assert got["dev acc@1"] == "0.500" and got["dev acc@1 over seeds"] == "0.520 ± 0.020 (0.500, 0.540, 0.520)"
    assert got["dev parent hit@10 over seeds"] == "0.500 ± 0.000 (0.500, 0.500, 0.500)"
    del found["demo-seed31"]  # a seed that has not run: no table
    with pytest.raises(SystemExit, match="demo-seed31"):
        ablations.table(spec, spec.with_suffix(".csv"))
    # partial: the base-seed run alone gave the recorded line's figures again -> the line, seeds and all, stays
    ablations.table(spec, spec.with_suffix(".csv"), partial=True)
    kept, = csv.DictReader(spec.with_suffix(".csv").open())
    assert kept["dev acc@1 over seeds"] == "0.520 ± 0.020 (0.500, 0.540, 0.520)"
    compares["demo"] = compare(0.49, 0.0)  # other figures now: the row is this run's alone, seed columns empty
    ablations.table(spec, spec.with_suffix(".csv"), partial=True)
    moved, = csv.DictReader(spec.with_suffix(".csv").open())
    assert moved["dev acc@1"] == "0.490" and moved["dev acc@1 over seeds"] == ""


def test_learning_curves_from_a_cached_dvclive_folder(tmp_path):
    """A run's dvclive plots folder as DVC caches it (a `.dir` listing, files by md5) gives its curves."""
    from bali.reporting import curves

    md5 = tmp_path / "files" / "md5"
    files = {"el/acc@1.tsv": "step\tacc@1\n0\t0.41\n300\t0.46\n", "hierarchy/hit@10.tsv": "step\thit@10\n0\t0.45\n300\t0.5\n",
             "train/loss.tsv": "step\tloss\n1\t9.0\n"}
    listing = []
    for i, (rel, text) in enumerate(files.items()):
        h = f"{i:02d}" + "ab" * 15
        (md5 / h[:2]).mkdir(parents=True, exist_ok=True)
        (md5 / h[:2] / h[2:]).write_text(text)
        listing.append({"md5": h, "relpath": rel})
    (md5 / "ff").mkdir()
    (md5 / "ff" / "0123.dir").write_text(json.dumps(listing))
    assert curves.read_curves(md5 / "ff" / "0123.dir") == {"dev acc@1": [(0, 0.41), (300, 0.46)],
                                                          "dev parent hit@10": [(0, 0.45), (300, 0.5)]}
