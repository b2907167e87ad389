"""Checkpoints that survive the machine dying, and a training record that stays true across resumes.

A checkpoint is `checkpoint-<step>.pt` with `checkpoint-<step>.pt.json` beside it (its size and
SHA-256). Both are written to a temporary name, fsynced and renamed, so a crash leaves either the
whole file or none; the newest `keep` are kept. On load each is verified (size, checksum, torch's own
reader, the run key); a damaged or foreign one is reported in one line and removed, and the previous
one is tried, or the run starts afresh when none is good.

Under DDP only global rank 0 writes checkpoints, so other nodes' `checkpoint_dir` may be empty or
stale: rank 0 alone decides what is resumed and broadcasts the decision; a rank whose own copy of
that file is not byte-identical receives rank 0's state.

The checkpoint also carries every point rank 0 logged up to its step (`Record`): a resumed run
writes the dvclive series afresh from it, so each step appears once, with the value the final
weights saw, even when the killed run logged past the checkpoint or DVC removed the record
before rerunning the stage.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

PATTERN = re.compile(r"checkpoint-(\d+)\.pt")


def name_for(step: int) -> str:
    return f"checkpoint-{step:08d}.pt"


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A file that hashes what torch.save streams through it (no second read of a multi-GB file)."""

    def __init__(self, f):
        self.f, self.sha, self.bytes, self.error = f, hashlib.sha256(), 0, None

    def write(self, b) -> int:
        self.sha.update(b)
        self.bytes += len(b)
        try:
            return self.f.write(b)
        except OSError as e:  # torch reports it as its own RuntimeError; keep the OS's reason for the message
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _write_synced(path: Path, write) -> None:
    """`write(file)` into a temporary sibling, fsync, rename over `path`; nothing left on failure."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint files in run_dir, newest first."""
    found = [(int(m.group(1)), f) for f in Path(run_dir).glob("checkpoint-*.pt") if (m := PATTERN.fullmatch(f.name))]
    return sorted(found, reverse=True)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".json").unlink(missing_ok=True)


def remove_all(run_dir: Path) -> None:
    """A finished run's checkpoints (the next run starts afresh)."""
    for _, path in checkpoints(run_dir):
        remove(path)


def save(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write `state` as the checkpoint of `step` atomically with its checksum file; keep the newest
    `keep`. A write that fails (disk full, a file-size limit) leaves no file of this step and raises
    an OSError that names the checkpoint."""
    run_dir = Path(run_dir)
    path = run_dir / name_for(step)
    hashed, writer = {}, []

    def write_state(f):
        writer.append(_HashingWriter(f))
        torch.save(state, writer[0])
        hashed.update(bytes=writer[0].bytes, sha256=writer[0].sha.hexdigest())

    try:
        _write_synced(path, write_state)
        sidecar = json.dumps({"file": path.name, "step": step, **hashed}).encode()
        _write_synced(path.with_name(path.name + ".json"), lambda f: f.write(sidecar))
        _fsync_dir(run_dir)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as a RuntimeError
        remove(path)
        cause = (writer[0].error if writer else None) or e
        raise OSError(f"cannot write checkpoint {path}: {cause} (is the disk full?)") from e
    for _, old in checkpoints(run_dir)[max(keep, 1):]:
        remove(old)
    return path


def _verify(path: Path, key: str) -> tuple[dict | None, str]:
    """(state, its SHA-256) for a good checkpoint of this run, else (None, why not)."""
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.exists():
        return None, "has no checksum file (its write was cut off)"
    try:
        expected = json.loads(sidecar.read_text())
        size, digest = int(expected["bytes"]), expected["sha256"]
    except (ValueError, KeyError, TypeError):
        return None, f"has an unreadable checksum file {sidecar.name}"
    if path.stat().st_size != size:
        return None, f"is damaged ({path.stat().st_size:,} of {size:,} bytes)"
    with open(path, "rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != digest:
            return None, "is damaged (its SHA-256 does not match)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read it means: do not resume from it
        return None, f"cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if state.get("key") != key:
        return None, "is from other params or data"
    return state, digest


@dataclass
class Resume:
    step: int
    name: str
    state: dict


def _choose(run_dir: Path, key: str) -> tuple[Resume | None, str | None]:
    """Rank 0: the newest good checkpoint of this run and its digest; every unusable one on the way
    (and stray temporary files of a killed write) reported in one line each and removed."""
    for tmp in Path(run_dir).glob(".checkpoint-*.tmp-*"):
        tmp.unlink(missing_ok=True)
    for step, path in checkpoints(run_dir):
        state, digest_or_why = _verify(path, key)
        if state is not None:
            return Resume(step, path.name, state), digest_or_why
        print(f"pretrain: checkpoint {path} {digest_or_why}; removed", file=sys.stderr)
        remove(path)
        if not checkpoints(run_dir):
            print(f"pretrain: no good checkpoint left in {run_dir}; starting afresh", file=sys.stderr)
    return None, None


def resume_point(run_dir: Path, key: str, rank: int = 0, world_size: int = 1) -> Resume | None:
    """What this run resumes from (None: a fresh start), the same on every rank. Collective under
    DDP: rank 0 chooses from its own checkpoint_dir; every rank checks it holds the same params and
    data (the run key), and a rank without a byte-identical copy of the chosen file gets rank 0's."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    chosen, digest = _choose(run_dir, key) if rank == 0 else (None, None)
    if world_size == 1:
        return chosen
    import torch.distributed as dist

    keys = [None] * world_size
    dist.all_gather_object(keys, hashlib.sha256(key.encode()).hexdigest())
    if len(set(keys)) > 1:
        differ = [r for r, k in enumerate(keys) if k != keys[0]]
        raise RuntimeError(f"pretrain: ranks {differ} run with other params or data than rank 0 "
                           "(the same params.yaml, -S overrides, dataset and base model are needed on every node)")
    head = [None if chosen is None else (chosen.step, chosen.name, digest)]
    dist.broadcast_object_list(head, src=0)
    if head[0] is None:
        return None
    step, name, digest = head[0]
    if rank != 0:
        local = run_dir / name
        if local.exists():
            with open(local, "rb") as f:
                same = hashlib.file_digest(f, "sha256").hexdigest() == digest
            if same:
                chosen = Resume(step, name, torch.load(local, map_location="cpu", weights_only=True))
    has = [None] * world_size
    dist.all_gather_object(has, chosen is not None)
    if not all(has):  # node-local checkpoint folders: rank 0's state travels to every rank
        obj = [chosen.state if rank == 0 else None]
        dist.broadcast_object_list(obj, src=0)
        chosen = Resume(step, name, obj[0])
    return chosen


class Record:
    """Every point rank 0 logs, by series, passed on to dvclive (`live`, or None) at its step.
    `state()` goes into the checkpoint; `Record(live, state)` replays a checkpoint's points into a
    fresh dvclive record, so a resumed run's record holds each step once."""

    def __init__(self, live=None, saved: dict | None = None, step: int = 0):
        self.live, self.series = live, {}
        for name, rows in (saved or {}).items():
            for s, v in rows.tolist():
                self.log(int(s), name, v)
        if live is not None and saved:
            live.step = step

    def log(self, step: int, name: str, value: float) -> None:
        value = float(value)
        self.series.setdefault(name, []).append((step, value))
        if self.live is not None:
            self.live.step = step
            self.live.log_metric(name, value, plot=True)

    def state(self) -> dict:
        return {name: torch.tensor(rows, dtype=torch.float64) for name, rows in self.series.items()}
