"""The DVC workflow as users live in it, on a copy of this repository with tiny inputs (200 demo
documents, a tiny random BERT as the base model, a few training steps): the whole DAG runs, a
second repro runs nothing, a pre-training param re-runs only what follows it, two runs from scratch
give the same data hashes, the cache travels through a local and an S3 remote (moto's server) into
a fresh clone that is then up to date, and `dvc exp run` experiments show up in `dvc exp show`."""
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stage_deps import ROOT, code_of, entry_scripts
from tiny_project import copy_repo, free_port, holds_timings, sh, tiny_lm, tiny_project

pytestmark = pytest.mark.slow


def lock_outs(project: Path) -> dict[str, str]:
    """{path: md5} of every output in dvc.lock that is data (metrics, plots, stats and full results hold
    timings)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])
            if not holds_timings(o["path"])}


def repro(project: Path, *args: str) -> list[str]:
    """The stages `dvc repro` ran (not those it restored from the run cache)."""
    out = sh(project, "dvc", "repro", *args)
    return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the working tree with tiny inputs, reproduced once."""
    d = tiny_project(tmp_path_factory.mktemp("wf") / "repo", max_steps=4, checkpoint_every=2)
    sh(d, "dvc", "repro")
    sh(d, "git", "add", "-A")
    sh(d, "git", "commit", "-qm", "reproduced")
    return d


def test_dag_runs_once_and_a_param_reruns_only_what_follows(project):
    assert (project / "reports" / "report.md").exists()
    m = json.loads((project / "data" / "eval" / "bali" / "demo_el_test" / "results.json").read_text())
    assert m["queries"] == 500 and m["dictionary_names"] > 30000
    h = json.loads((project / "data" / "eval" / "bali" / "hierarchy_held_out" / "results.json").read_text())
    assert h["links"] == 1000
    assert repro(project) == []
    p = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(p.replace("temperature: 0.07", "temperature: 0.05"))
    try:
        tasks = len(yaml.safe_load(p)["evaluate"]["tasks"])
        assert repro(project) == [f"evaluate@bali-task{i}" for i in range(tasks)] + ["pretrain", "report"]
    finally:
        (project / "params.yaml").write_text(p)
    repro(project)  # back to the committed params: restored from the run cache
    assert sh(project, "git", "status", "--porcelain") == ""


def changed(project: Path) -> set[str]:
    """Stages whose own command, deps or params changed (`dvc status`; the stages after them change only
    once these have run)."""
    return set(json.loads(sh(project, "dvc", "status", "--json")))


def test_touching_library_code_reruns_exactly_the_stages_that_run_it(project):
    """Each touched file marks the stages whose import walk reaches it, and only those."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    names = [line.split()[0] for line in sh(project, "dvc", "stage", "list").splitlines() if line.strip()]
    evaluate = {n for n in names if n.startswith("evaluate@")}
    for touched, least in (("bali/training/checkpoints.py", {"pretrain"}),
                           ("bali/lm/encoder.py", {"link", "pretrain"} | evaluate)):
        runs = {name for name, stage in spec["stages"].items()
                if touched in {f.relative_to(ROOT).as_posix() for s in entry_scripts(stage["cmd"]) for f in code_of(ROOT / s)}}
        want = {n for n in names if n.split("@")[0] in runs}  # the stages the import walk says run the file
        assert least <= want and not want & {"demo_data", "umls_graph", "corpus", "dataset", "report"}
        f = project / touched
        text = f.read_text()
        f.write_text(text + "\n# touched\n")
        try:
            assert changed(project) == want, touched
        finally:
            f.write_text(text)
    assert changed(project) == set()


def test_adding_a_task_runs_its_cells_and_the_report_only(project):
    p = (project / "params.yaml").read_text()
    doc = yaml.safe_load(p)
    tasks = doc["evaluate"]["tasks"]
    doc["evaluate"]["tasks"] = tasks + [{**tasks[0], "name": "demo_el_test_again"}]
    (project / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        new = len(tasks)
        assert repro(project) == [f"evaluate@bali-task{new}", f"evaluate@base-task{new}", "report"]
    finally:
        (project / "params.yaml").write_text(p)
        for model in ("base", "bali"):  # the removed task's outputs: no longer any stage's, but in report's input
            shutil.rmtree(project / "data" / "eval" / model / "demo_el_test_again", ignore_errors=True)
    repro(project)
    sh(project, "git", "checkout", "dvc.lock")
    assert sh(project, "git", "status", "--porcelain") == ""


def test_two_runs_from_scratch_give_the_same_hashes(project):
    before = lock_outs(project)
    model = {f.name: f.read_bytes() for f in (project / "models" / "bali").iterdir()}
    sh(project, "dvc", "repro", "--force")
    assert [f for f, data in model.items() if (project / "models" / "bali" / f).read_bytes() != data] == []
    assert lock_outs(project) == before  # every data stage and the trained weights, byte for byte
    sh(project, "git", "checkout", "dvc.lock")


def push_and_pull(project: Path, tmp: Path, remote_args: list[list[str]], env=None) -> None:
    sh(project, "dvc", "remote", "add", "-f", "-d", "shared", *remote_args[0])
    for extra in remote_args[1:]:
        sh(project, "dvc", "remote", "modify", "shared", *extra)
    sh(project, "git", "commit", "-qam", "remote")
    sh(project, "dvc", "push", env=env)
    clone = tmp / "clone"
    sh(tmp, "git", "clone", "-q", str(project), str(clone))
    sh(clone, "dvc", "pull", env=env)
    assert "up to date" in sh(clone, "dvc", "status").lower()
    assert repro(clone) == []
    assert (clone / "models" / "bali" / "model.safetensors").read_bytes() == \
        (project / "models" / "bali" / "model.safetensors").read_bytes()


def test_local_remote_round_trip(project, tmp_path):
    push_and_pull(project, tmp_path, [[str(tmp_path / "store")]])
    files = [f for f in (tmp_path / "store").rglob("*") if f.is_file()]
    assert len(files) < 300  # a few large files per output, not one per row or per shard row group


def test_s3_remote_round_trip(project, tmp_path):
    pytest.importorskip("dvc_s3")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        import boto3
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="bali-cache")
        push_and_pull(project, tmp_path, [["s3://bali-cache/demo"], ["endpointurl", f"http://127.0.0.1:{port}"]], env)
    finally:
        server.stop()


def test_experiments_show_params_and_metrics(project):
    sh(project, "dvc", "exp", "run", "-n", "sage", "-S", "pretrain.graph_encoder=sage", "-S", "pretrain.neighbors=2")
    sh(project, "dvc", "exp", "run", "-n", "linear", "-S", "pretrain.graph_encoder=linear", "-S", "pretrain.synonym_weight=0",
       "-S", "pretrain.link_weight=0")
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) for e in e.get("revs", [])}
    assert {"sage", "linear"} <= exps.keys()
    for name, encoder in (("sage", "sage"), ("linear", "linear")):
        data = exps[name]["data"]
        assert data["params"]["params.yaml"]["data"]["pretrain"]["graph_encoder"] == encoder
        metrics = data["metrics"]
        assert "acc@1" in metrics["data/eval/bali/demo_el_test/metrics.json"]["data"]
        assert "train" in metrics["dvclive/pretrain/metrics.json"]["data"]
    assert exps["sage"]["data"]["params"]["params.yaml"]["data"]["pretrain"]["neighbors"] == 2


NAMES = ("aortic stenosis", "mitral valve prolapse", "house mouse", "brown rat", "hela line", "jurkat line",
         "renal colic", "biliary atresia", "cleft palate", "night blindness", "gastric ulcer", "scurvy")
# (SAB, CODE, the id BERN2 writes for it: v1.0 and v1.1 spellings mixed)
CODES = [("MSH", "D000001", "mesh:D000001"), ("MSH", "D000002", "MESH:D000002"), ("OMIM", "600001", "mim:600001"),
         ("NCBI", "10090", "NCBITaxon:10090"), ("NCBI", "10116", "NCBI:txid10116"), ("CVCL", "CVCL_0030", "CVCL_0030"),
         ("CVCL", "CVCL_0065", "cellosaurus:CVCL_0065"), ("MSH", "D000008", "D000008"), ("OMIM", "600009", "OMIM:600009"),
         ("MSH", "D000010", "mesh:D000010"), ("MSH", "D000011", "mesh:D000011"), ("MSH", "D000012", "mesh:D000012")]
UNLINKED = ["NCBIGene:7157", "CL_0000236", "cellosaurus:CVCL_9999", "tmVar:p|SUB|V|600|E;HGVS:p.V600E", "CUI-less"]


def bern2_inputs(inputs: Path, documents: int = 60) -> None:
    """A UMLS META of 12 concepts whose codes BERN2's ids name (with a self loop), a BERN2-style PubTator
    corpus naming them (and ids that cannot link), and a tiny entity-linking task."""
    from conftest import conso, rel, write_meta

    cuis = [f"C{i:07d}" for i in range(1, len(NAMES) + 1)]
    write_meta(inputs / "META", [conso(c, n, sab=sab, code=code) for c, n, (sab, code, _) in zip(cuis, NAMES, CODES)],
               [rel(a, r, b) for a, b in zip(cuis, cuis[1:]) for r in ("PAR",)] +
               [rel(b, "CHD", a) for a, b in zip(cuis, cuis[1:])] + [rel(cuis[0], "RO", cuis[0])])
    docs = []
    for d in range(documents):
        picks = [(d + k) % len(NAMES) for k in range(4)]
        title = f"{NAMES[picks[0]].capitalize()} and {NAMES[picks[1]]} in a cohort."
        abstract = f"We saw {NAMES[picks[2]]} with {NAMES[picks[3]]}. The p53 gene and T cells were studied."
        text = title + " " + abstract
        lines = [f"{d + 1000}|t|{title}", f"{d + 1000}|a|{abstract}"]
        for i in picks:
            start = text.lower().index(NAMES[i])
            lines.append(f"{d + 1000}\t{start}\t{start + len(NAMES[i])}\t{text[start:start + len(NAMES[i])]}\tDisease\t{CODES[i][2]}")
        for word, ident in (("p53", UNLINKED[d % 5]), ("T cells", UNLINKED[(d + 1) % 5])):
            start = text.index(word)
            lines.append(f"{d + 1000}\t{start}\t{start + len(word)}\t{word}\tGene\t{ident}")
        docs.append("\n".join(lines) + "\n")
    (inputs / "bern2.pubtator").write_text("\n".join(docs))
    (inputs / "el").mkdir()
    (inputs / "el" / "queries.txt").write_text("".join(f"{c}||{n}\n" for c, n in zip(cuis, NAMES)))
    (inputs / "el" / "dictionary.txt").write_text("".join(f"{c}||{n} (disorder)\n" for c, n in zip(cuis, NAMES)))


TINY = {"umls_graph.meta_dir": "inputs/META", "corpus.input": "inputs/bern2.pubtator", "corpus.processes": 1,
        "base_model.model": "inputs/tiny-lm", "dataset.tokenizer": "inputs/tiny-lm", "link_kb.m": 8,
        "link_kb.ef_construction": 20, "pretrain.batch_size": 8, "pretrain.max_steps": 3, "pretrain.workers": 0,
        "pretrain.checkpoint_every": 2, "evaluate.entity_linking.batch_size": 1024,
        "evaluate.tasks": [{"name": "tiny_el", "kind": "entity_linking", "dir": "inputs/el"}]}


def test_paper_profile_runs_through_dvc(tmp_path):
    """The README's `dvc exp run -n paper $(python -m bali.profiles paper)` on tiny inputs: the DAG
    resolves under the paper profile (dvc dag, dvc status, a dry run), then runs end to end."""
    d = copy_repo(tmp_path / "repo")
    (d / "inputs").mkdir()
    bern2_inputs(d / "inputs")
    tiny_lm(d / "inputs" / "tiny-lm")
    sh(d, "git", "init", "-q")
    sh(d, "dvc", "init", "-q", "--force")
    sh(d, "git", "add", "-A")
    sh(d, "git", "commit", "-qm", "tiny project")
    sh(d, sys.executable, "-m", "bali.profiles", "paper", "--write", "--params", "params.yaml")
    p = yaml.safe_load((d / "params.yaml").read_text())
    for key, value in TINY.items():
        *path, leaf = key.split(".")
        node = p
        for k in path:
            node = node[k]
        node[leaf] = value
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert p["dataset"]["held_out"] == "profiles/no_held_out.txt" and p["report"]["ablations"] == ""
    assert "dataset" in sh(d, "dvc", "dag") and "dataset" in sh(d, "dvc", "status")  # every stage collected
    sh(d, "git", "commit", "-qam", "the paper profile on tiny inputs")
    sh(d, "dvc", "exp", "run", "-n", "paper")
    assert "Running stage" not in sh(d, "dvc", "repro", "--dry")  # the DAG resolves and is up to date
    # The README's command line (the profile's overrides, then the tiny inputs'): the same params, so every
    # stage comes back from the run cache. (`dvc exp run --dry` cannot stand in: DVC 3.67 runs it in a temp
    # workspace without checking outputs out, so it stops at the first stage that reads another's output,
    # under the demo params as well.)
    profile = sh(d, sys.executable, "-m", "bali.profiles", "paper", "--params", "params.yaml").strip()
    tiny = [a for k, v in TINY.items()
            for a in ("-S", f"{k}={yaml.safe_dump(v, default_flow_style=True, sort_keys=False).strip().removesuffix('...').strip()}")]
    again = sh(d, "sh", "-c", f"dvc exp run -n paper-readme {profile} {shlex.join(tiny)}")
    assert "Running stage" not in again and "Stage 'pretrain' didn't change" in again, again
    link = json.loads((d / "data" / "link" / "stats.json").read_text())
    assert {"NCBIGene", "CL", "Cellosaurus", "tmVar"} <= link["ids_not_linked"].keys()  # counted by prefix
    assert link["mentions"] >= 4 * 60 - 5  # every BERN2 spelling of a UMLS source linked
    ds = json.loads((d / "data" / "dataset" / "stats.json").read_text())
    graph = np.load(d / "data" / "dataset" / "graph.npz", allow_pickle=False)
    loops = [u for u in range(len(graph["indptr"]) - 1) if u in graph["indices"][graph["indptr"][u]:graph["indptr"][u + 1]]]
    assert ds["graph_nodes"] == 12 and len(loops) == 1  # the published graph keeps its self loop
    assert (d / "models" / "bali" / "model.safetensors").exists() and (d / "reports" / "report.md").exists()
    shown = json.loads(sh(d, "dvc", "exp", "show", "--json"))
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) for e in e.get("revs", [])}
    for name in ("paper", "paper-readme"):
        assert exps[name]["data"]["params"]["params.yaml"]["data"]["pretrain"]["layers"] == 5
