"""Every file of ours that a stage runs is one of its `deps:`, so `dvc repro` reruns it when that code changes."""
import copy
from pathlib import Path

from stage_deps import ROOT, code_of, entry_scripts, load_dvc_yaml, missing_deps


def test_every_stage_depends_on_the_code_it_runs():
    missing = missing_deps(load_dvc_yaml())
    assert missing == {}, "files a stage runs that its deps do not cover:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in missing.items())


def test_a_removed_dep_line_is_named():
    """The check can fail: drop the training package from pretrain's deps and it names the loop's files."""
    spec = copy.deepcopy(load_dvc_yaml())
    deps = spec["stages"]["pretrain"]["deps"]
    deps.remove("bali/training")
    assert "bali/training/checkpoints.py" in missing_deps(spec)["pretrain"]


def test_the_walk_follows_lazy_imports_and_registries():
    """A function-level import (pretrain's dev curves) and a registry's module strings (evaluation kinds)."""
    pretrain = {f.relative_to(ROOT).as_posix() for f in code_of(ROOT / "stages" / "pretrain.py")}
    assert "bali/lm/encoder.py" in pretrain and "bali/evaluation/hierarchy.py" in pretrain
    evaluate = {f.relative_to(ROOT).as_posix() for f in code_of(ROOT / "stages" / "evaluate.py")}
    assert {"bali/evaluation/pubmedqa.py", "bali/evaluation/multiple_choice.py", "bali/__init__.py"} <= evaluate


def test_matrix_cells_draw_as_one_stage():
    from bali.reporting.dag import collapse

    dvc = ('flowchart TD\n\tnode1["data"]\n\tnode2["eval@a-t0"]\n\tnode3["eval@b-t0"]\n\tnode4["report"]\n'
           "\tnode1-->node2\n\tnode1-->node3\n\tnode2-->node4\n\tnode3-->node4\n\tnode1-->node4\n")
    assert collapse(dvc) == "flowchart LR\n    data --> eval\n    data --> report\n    eval --> report\n"


def test_the_pages_draw_the_pipelines_own_graph():
    """README's (and the site's home page's) stage graph is `dvc dag --mermaid` of this dvc.yaml."""
    from bali.reporting.dag import MARKER, block, collapse, dvc_dag

    want = block(collapse(dvc_dag(ROOT)))
    pages = [p for p in (ROOT / "README.md", ROOT / "docs" / "index.md") if MARKER in p.read_text()]
    assert ROOT / "README.md" in pages
    for page in pages:
        assert want in page.read_text(), f"{page.name}: run `python -m bali.reporting.dag --write {page.name}`"


def library_modules() -> list[Path]:
    return sorted((ROOT / "bali").rglob("*.py"))


def test_linking_and_training_data_do_not_run_evaluation_code():
    """The layers follow the data flow: what linking and the training data share with evaluation lives
    below all three (bali.lm, bali.names), so a change in an evaluation task reruns no data stage."""
    for package in ("linking", "data"):
        for f in sorted((ROOT / "bali" / package).glob("*.py")):
            reached = {g.relative_to(ROOT).as_posix() for g in code_of(f)}
            assert not [g for g in reached if g.startswith("bali/evaluation/")], f"{f.relative_to(ROOT)} runs evaluation code"


def test_every_library_module_is_run_by_the_pipeline_or_a_command():
    """No module of the installed package exists for the tests alone: each is reached from a stage, a
    bench script or a module run as a command (`python -m bali...`)."""
    entries = [*ROOT.glob("stages/*.py"), *ROOT.glob("bench/*.py"),
               *(f for f in library_modules() if 'if __name__ == "__main__"' in f.read_text())]
    reached = set().union(*(code_of(f) for f in entries))
    assert [f.relative_to(ROOT).as_posix() for f in library_modules() if f not in reached] == []


def test_files_stay_readable():
    long = {f.relative_to(ROOT).as_posix(): n for f in [*library_modules(), *ROOT.glob("stages/*.py"), *ROOT.glob("bench/*.py")]
            if (n := len(f.read_text().splitlines())) > 400}
    assert long == {}


def test_keys_a_stage_borrows_from_another_section_are_its_params():
    """A stage that reads a few keys of another section (`BORROWED`, passed to params.load) lists exactly
    those keys in its dvc.yaml params, so DVC reruns it when they change and for nothing else there."""
    import ast

    checked = 0
    for name, stage in load_dvc_yaml()["stages"].items():
        for script in entry_scripts(stage.get("cmd", "")):
            tree = ast.parse((ROOT / script).read_text())
            borrowed = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                             and any(getattr(t, "id", None) == "BORROWED" for t in n.targets)), None)
            if borrowed is None:
                continue
            foreign = {p for p in stage["params"] if isinstance(p, str) and p.split(".")[0] in borrowed}
            assert foreign == {f"{s}.{k}" for s, keys in borrowed.items() for k in keys}, name
            checked += 1
    assert checked >= 2  # the tagger's and the recogniser's stages
