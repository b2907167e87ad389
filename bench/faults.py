"""Fault injection: every stage of the DAG killed and run again, pretrain killed at its writes, a full
disk, an interrupted push and pull, two queue workers on one cache, a DDP rank killed.

  python bench/faults.py [--work DIR] [--kills 2] [--seed 0]

On a tiny copy of this repository (the workflow tests' tiny inputs and tiny random BERT; pretrain
40 steps, a checkpoint every 10), after one uninterrupted `dvc repro` whose outputs are the
reference:
- each stage but pretrain (one of the evaluate matrix): `dvc repro -s -f --no-run-cache STAGE`
  killed with SIGKILL (its process group) at seeded random points, `--kills` times, then run to
  completion. After every kill each output file that exists must equal the reference (a file that
  differs is a partial one); after the rerun all must (timings aside: tests/tiny_project.py);
- pretrain killed during a checkpoint write, between checkpoints and during its last save, each
  followed by a rerun that resumes; under a 4 MB file-size limit: a one-line error, no checkpoint
  or output file, and the next run completes with the reference outputs;
- `dvc push` to an S3-compatible remote (moto's server) and `dvc pull` into a fresh clone, each
  killed and rerun after DVC's data index cache is removed (the documented recovery): the remote is in
  sync and the clone ends up to date with byte-identical outputs;
- two `dvc exp run --queue` experiments run by two queue workers at once: every cache file's
  MD5 matches its name afterwards;
- `torchrun --nproc_per_node 2` (gloo) with rank 1 killed after a checkpoint: the job stops (no
  hang), and the rerun ends with an uninterrupted 2-process run's weights.
Prints one table row per case (faults injected, runs survived, outputs that differed, data lost,
stray temporary files) and a final JSON line.
"""
import argparse
import hashlib
import json
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny project lives beside the tests
from tiny_project import ENV, comparable, free_port, sh, tiny_project  # noqa: E402


def build(work: Path) -> Path:
    return tiny_project(work / "repo", max_steps=40, checkpoint_every=10)


def out_paths(project: Path, stage: str) -> list[str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]
    return [o["path"] for o in lock.get("outs", [])]


def snapshot(project: Path, paths: list[str]) -> dict[str, str]:
    """{file: sha256} of every file under the paths (compared files only)."""
    files = {}
    for p in paths:
        root = project / p
        for f in ([root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []):
            data = comparable(f) if f.is_file() and ".tmp" not in str(f.relative_to(project)) else None  # scratch: stray()
            if data is not None:
                files[str(f.relative_to(project))] = hashlib.sha256(data).hexdigest()
    return files


def stray(project: Path, paths: list[str]) -> list[str]:
    """Temporary files of an interrupted atomic write left beside or inside the outputs."""
    found = set()
    for p in map(project.joinpath, paths):
        found |= {f for f in (p.rglob("*") if p.is_dir() else p.parent.glob(f".{p.name}.tmp*")) if ".tmp" in f.name}
        found |= {f for f in p.parent.glob(".tmp-*")}  # atomic_outputs' scratch beside file outputs
    return sorted(str(f.relative_to(project)) for f in found)


def start(project: Path, *cmd, env=None, **kw):
    return subprocess.Popen(cmd, cwd=project, env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def kill_when(proc, ready, timeout=600.0) -> bool:
    """SIGKILL the process group once `ready()` holds; False when it ended first (no fault injected)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.communicate()
    return False


def repro(project: Path, stage: str) -> list[str]:
    return ["dvc", "repro", "-s", "-f", "--no-run-cache", stage]


class Row:
    def __init__(self, name):
        self.name, self.faults, self.survived, self.differed, self.lost, self.stray, self.notes = name, 0, 0, 0, 0, 0, []

    def check(self, project, paths, reference, after_kill: bool) -> None:
        now = snapshot(project, paths)
        # dvclive's series are a log that grows as training goes (a killed run's is a prefix): whole after the rerun
        bad = [f for f, h in now.items() if reference.get(f) != h and not (after_kill and f.startswith("dvclive/"))]
        left = [] if after_kill else stray(project, paths)  # a killed run's scratch must be gone after the rerun
        self.stray += len(left)
        self.differed += len(bad)
        if not after_kill:  # after a kill, present files must be whole; missing ones are rebuilt by the rerun
            self.lost += len([f for f in reference if f not in now])
        if bad:
            self.notes.append(f"differ: {bad[:3]}")
        if left:
            self.notes.append(f"stray: {left[:3]}")

    def line(self) -> str:
        return (f"{self.name:<24} {self.faults:>6} {self.survived:>8} {self.differed:>8} {self.lost:>5} {self.stray:>5}  "
                + "; ".join(self.notes))

    def figures(self) -> dict:
        return {"faults": self.faults, "survived": self.survived, "differed": self.differed, "lost": self.lost,
                "stray": self.stray}


def rerun(row: Row, project: Path, stage: str, paths, reference) -> None:
    r = subprocess.run(repro(project, stage), cwd=project, env=ENV, capture_output=True, text=True)
    if r.returncode == 0:
        row.survived += 1
    else:
        row.notes.append(f"rerun failed: {r.stderr.strip().splitlines()[-1:]}")
    row.check(project, paths, reference, after_kill=False)


def stage_kills(project: Path, stage: str, seconds: float, kills: int, rng: random.Random) -> Row:
    row, paths = Row(stage), out_paths(project, stage)
    reference = snapshot(project, paths)
    for _ in range(kills + 2):  # a run that ends before its kill sets the time scale for the next one
        if row.faults == kills:
            break
        t0 = time.monotonic()
        at = t0 + rng.uniform(0.1, 0.95) * seconds
        if kill_when(start(project, *repro(project, stage)), lambda: time.monotonic() >= at):
            row.faults += 1
            lock_intact(project, row)
            row.check(project, paths, reference, after_kill=True)
        else:
            seconds = time.monotonic() - t0
    rerun(row, project, stage, paths, reference)
    return row


def lock_intact(project: Path, row: Row) -> None:
    """DVC rewrites dvc.lock in place: a kill during that write leaves it cut short — unreadable, or
    readable but without the stages after the cut, whose outputs DVC then no longer knows. Either is
    counted as lost (the pipeline's record of its outputs), then restored from git, as a user would,
    so the suite goes on."""
    committed = yaml.safe_load(sh(project, "git", "show", "HEAD:dvc.lock"))["stages"]
    try:
        lock = yaml.safe_load((project / "dvc.lock").read_text())
        if isinstance(lock, dict) and set(committed) <= set(lock.get("stages") or {}):
            return
        how = "without some stages"
    except yaml.YAMLError:
        how = "unreadable"
    row.lost += 1
    row.notes.append(f"dvc.lock cut short by the kill ({how}); restored from git")
    sh(project, "git", "checkout", "--", "dvc.lock")


def seen_for(path: Path, seconds: float, first: dict = {}) -> bool:  # noqa: B006 - remembers first sightings
    if not path.exists():
        return False
    return time.monotonic() - first.setdefault(path, time.monotonic()) >= seconds


def pretrain_kills(project: Path) -> Row:
    """Killed while a checkpoint is being written, between checkpoints, and during the last save."""
    row, paths = Row("pretrain (targeted)"), out_paths(project, "pretrain")
    reference = snapshot(project, paths)
    ckpt, model = project / "models" / ".checkpoints" / "bali", project / "models" / "bali"
    targets = {"a checkpoint write": lambda: any(ckpt.glob(".checkpoint-*.tmp-*")),
               "between checkpoints": lambda: seen_for(ckpt / "checkpoint-00000010.pt.json", 0.5),
               "the last save": lambda: any(model.glob(".tmp-*"))}
    for name, ready in targets.items():
        if kill_when(start(project, *repro(project, "pretrain")), ready):
            row.faults += 1
            lock_intact(project, row)
            row.check(project, paths, reference, after_kill=True)
        else:
            row.notes.append(f"{name}: missed (the run ended first)")
        rerun(row, project, "pretrain", paths, reference)
    return row


def full_disk(project: Path, work: Path) -> Row:
    row = Row("pretrain (file limit)")
    out = work / "fulldisk"
    ckpt = work / "fulldisk-ckpt"  # its own folders: the workspace's DVC outputs stay as they are
    cmd = [sys.executable, "stages/pretrain.py", "data/dataset", str(out), "-S", f"pretrain.checkpoint_dir={ckpt}",
           "-S", f"pretrain.dvclive_dir={work / 'fulldisk-live'}"]
    limit = 4 << 20

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(cmd, cwd=project, env=ENV, capture_output=True, text=True, preexec_fn=small_files)
    row.faults += 1
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    clear = r.returncode != 0 and last.startswith("pretrain: error: cannot write checkpoint") and "Traceback" not in r.stderr
    row.notes.append(f"error: {last[:110]!r}" if clear else f"unclear: rc {r.returncode}, {r.stderr[-300:]!r}")
    left = [f.name for f in ckpt.iterdir()] + ([f.name for f in out.iterdir()] if out.exists() else [])
    row.stray += len(left)
    r = subprocess.run(cmd, cwd=project, env=ENV, capture_output=True, text=True)
    row.survived += r.returncode == 0 and clear
    # the model card and params.json list the params, these folders among them
    mine = ("README.md", "params.json")
    reference = {Path(f).name: h for f, h in snapshot(project, ["models/bali"]).items() if not f.endswith(mine)}
    now = {Path(f).name: h for f, h in snapshot(out.parent, [out.name]).items() if not f.endswith(mine)}
    row.differed += sum(reference[f] != h for f, h in now.items() if f in reference)
    row.lost += len(reference.keys() - now.keys())
    return row


def drop_collected_index(project: Path) -> None:
    """Remove DVC's data index cache (`index` in the `Repo.site_cache_dir` that `dvc doctor` names): push and
    pull commit their list of objects to transfer there output by output, and a rerun reuses a list cut
    short by a kill as if whole (the pull's checkout then fails, the push leaves the remote short)."""
    doctor = sh(project, "dvc", "doctor")
    line = next(ln for ln in doctor.splitlines() if ln.startswith("Repo.site_cache_dir:"))
    shutil.rmtree(Path(line.split(":", 1)[1].strip()) / "index", ignore_errors=True)


def push_pull(project: Path, work: Path, rng: random.Random) -> Row:
    import boto3
    from moto.server import ThreadedMotoServer

    row = Row("dvc push / pull")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket="bali-cache")
        sh(project, "dvc", "remote", "add", "-f", "-d", "shared", "s3://bali-cache/faults")
        sh(project, "dvc", "remote", "modify", "shared", "endpointurl", f"http://127.0.0.1:{port}")
        sh(project, "git", "add", "-A")
        sh(project, "git", "commit", "-qm", "remote", "--allow-empty")
        clone = Path(tempfile.mkdtemp(dir=work, prefix="clone-"))
        for cmd, cwd in ((["dvc", "push"], project), (["dvc", "pull"], clone)):
            if cmd[1] == "pull":
                sh(work, "git", "clone", "-q", str(project), str(clone))
            at = time.monotonic() + rng.uniform(0.5, 3.0)
            if kill_when(start(cwd, *cmd, env=env), lambda: time.monotonic() >= at):
                row.faults += 1
                drop_collected_index(cwd)  # the recovery step documented for an interrupted push or pull
            else:
                row.notes.append(f"{cmd[1]} ended before its kill")
            r = subprocess.run(cmd, cwd=cwd, env={**ENV, **env}, capture_output=True, text=True)
            row.survived += r.returncode == 0
            if r.returncode:
                row.notes.append(f"{cmd[1]} rerun failed: {r.stderr.strip().splitlines()[-1:]}")
            if cmd[1] == "push" and "in sync" not in sh(project, "dvc", "status", "-c", env=env):  # DVC's own check
                row.lost += 1
                row.notes.append("remote not in sync after the rerun push")
        # the stage-by-stage reruns above leave downstream stages stale in the project itself: same status, not "up to date"
        status, expected = sh(clone, "dvc", "status", env=env), sh(project, "dvc", "status", env=env)
        lock = yaml.safe_load((project / "dvc.lock").read_text())
        paths = sorted({o["path"] for s in lock["stages"].values() for o in s.get("outs", [])})
        ours, theirs = snapshot(project, paths), snapshot(clone, paths)
        row.differed += sum(theirs.get(f) not in (None, h) for f, h in ours.items())
        row.lost += sum(f not in theirs for f in ours) + (status != expected)
        if status != expected:
            row.notes.append(f"clone's dvc status: {' '.join(status.split())[:150]}")
    finally:
        server.stop()
    return row


def cache_corruption(project: Path) -> int:
    bad = 0
    for f in (project / ".dvc" / "cache" / "files" / "md5").rglob("*"):
        if f.is_file():
            bad += hashlib.md5(f.read_bytes()).hexdigest() != f.parent.name + f.name.removesuffix(".dir")
    return bad


def queue_workers(project: Path) -> Row:
    row = Row("exp queue, 2 workers")
    sh(project, "dvc", "exp", "run", "--queue", "-n", "q-noablations", "-S", "report.ablations=ablations/none.csv")
    sh(project, "dvc", "exp", "run", "--queue", "-n", "q-self", "-S", "report.base_model=bali")
    row.faults += 2
    sh(project, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = sh(project, "dvc", "queue", "status")
        if not any(w in status for w in ("Running", "Queued")):
            break
        time.sleep(5)
    status = sh(project, "dvc", "queue", "status")
    row.survived += status.count("Success")
    row.lost += cache_corruption(project)
    if "Success" not in status or "Failed" in status:
        row.notes.append(" ".join(status.split())[:200])
    return row


def ddp_rank_killed(project: Path, work: Path) -> Row:
    import psutil

    row = Row("DDP, rank 1 killed")
    env = {"OMP_NUM_THREADS": "1"}

    def launch(name, port):
        return start(project, sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                     str(port), "stages/pretrain.py", "data/dataset", str(work / name), "-S",
                     f"pretrain.checkpoint_dir={work / 'ddp-ckpt' / name}", "-S", f"pretrain.dvclive_dir={work / 'ddp-live'}",
                     env=env)

    whole = launch("ddp-whole", free_port())
    whole.communicate()
    port = free_port()
    job = launch("ddp", port)
    mark = work / "ddp-ckpt" / "ddp" / "checkpoint-00000010.pt.json"
    deadline = time.monotonic() + 600
    while not mark.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    ranks = [c for c in psutil.Process(job.pid).children(recursive=True) if c.environ().get("RANK") == "1"]
    if ranks and job.poll() is None:
        ranks[0].kill()
        row.faults += 1
        try:
            t0 = time.monotonic()
            job.communicate(timeout=120)
            row.notes.append(f"job stopped {time.monotonic() - t0:.1f} s after the kill")
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            row.notes.append("job hung")
    again = launch("ddp", free_port())
    err = again.communicate()[1]
    row.survived += again.returncode == 0 and "resumed from step" in err
    reference, now = (snapshot(work, [name]) for name in ("ddp-whole", "ddp"))
    ref = {Path(f).name: h for f, h in reference.items() if f.endswith(".safetensors")}
    got = {Path(f).name: h for f, h in now.items() if f.endswith(".safetensors")}
    row.differed += sum(got.get(f) not in (None, h) for f, h in ref.items())
    row.lost += len(ref.keys() - got.keys())
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--kills", type=int, default=2, help="random kills per stage before its rerun")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", default="", help="comma-separated cases to run (default: all); with an existing "
                    "--work project, its reference run is reused")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = Path(a.work or tempfile.mkdtemp(prefix="bali-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    reuse = a.cases and (work / "repo" / "dvc.lock").exists()
    project = work / "repo" if reuse else build(work)
    ENV["PYTHONPATH"] = str(project)  # the stages import the copy's package (not an editable install elsewhere)
    stages = sh(project, "dvc", "stage", "list", "--name-only").split()
    seconds = {stage: 10.0 for stage in stages}  # a reused project: kills retried until they land
    for stage in [] if reuse else stages:  # the reference, stage by stage in DAG order (as dvc.yaml lists them)
        t0 = time.perf_counter()
        sh(project, "dvc", "repro", "-s", stage)
        seconds[stage] = time.perf_counter() - t0
    if not reuse:
        sh(project, "git", "add", "-A")
        sh(project, "git", "commit", "-qm", "reproduced")
    print(f"reference run: {sum(seconds.values()):.0f} s over {len(stages)} stages", flush=True)
    # pretrain's kills are the targeted ones (at a checkpoint write, between checkpoints, in its last save)
    killed = [s for s in stages if s != "pretrain" and (not s.startswith("evaluate@") or s == "evaluate@bali-task1")]
    rows = []
    print(f"{'case':<24} {'faults':>6} {'survived':>8} {'differed':>8} {'lost':>5} {'stray':>5}  notes", flush=True)
    targeted = {"pretrain-targeted": lambda: pretrain_kills(project), "full-disk": lambda: full_disk(project, work),
                "push-pull": lambda: push_pull(project, work, rng), "queue": lambda: queue_workers(project),
                "ddp": lambda: ddp_rank_killed(project, work)}
    for case in [*killed, *targeted]:
        if a.cases and case not in a.cases.split(","):
            continue
        t0 = time.perf_counter()
        row = targeted[case]() if case in targeted else stage_kills(project, case, seconds[case], a.kills, rng)
        rows.append(row)
        print(row.line() + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    total = {k: sum(r.figures()[k] for r in rows) for k in ("faults", "survived", "differed", "lost", "stray")}
    wall = time.perf_counter() - t_start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"total: {total}; {wall / 60:.1f} min; peak child RSS {peak:.0f} MiB")
    print(json.dumps({"seconds": wall, "peak_child_rss_mib": peak, "reference_seconds": sum(seconds.values()),
                      "total": total, "cases": {r.name: r.figures() for r in rows}}))


if __name__ == "__main__":
    main()
