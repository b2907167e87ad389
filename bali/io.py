"""Atomic outputs: nothing a stage writes is visible under its final name until it is complete; the
run figures (wall time, peak RSS) every stage records in its stats.json."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import time
from pathlib import Path


_IMPORTED = time.time()


def run_figures() -> dict:
    """Wall seconds since this process started (interpreter and imports included: what a user waits
    for) and the peak RSS of the process and of its largest child (a stage's worker processes)."""
    try:  # /proc/self/stat field 22: start time in clock ticks after boot
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        wall = float(Path("/proc/uptime").read_text().split()[0]) - start
    except (OSError, ValueError, IndexError):  # not Linux: from the import of this module
        wall = time.time() - _IMPORTED
    kib = 1 if os.uname().sysname == "Linux" else 1 / 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    return {"wall_s": round(wall, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 2**20, 3),
            "children_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 2**20, 3)}


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f".{path.name}.tmp-*"):
        if _abandoned(old):
            old.unlink(missing_ok=True)
    tmp = _tmp_sibling(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _abandoned(scratch: Path) -> bool:
    """A `.tmp-<pid>` scratch whose process no longer runs (killed before it could clean up; a
    killed process not yet reaped by its parent is a zombie and counts as gone)."""
    import psutil

    pid = scratch.name.rsplit("-", 1)[-1]
    if not pid.isdigit():
        return False
    try:
        return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


@contextlib.contextmanager
def atomic_outputs(out_dir: str | Path):
    """Yield a scratch directory beside OUT_DIR; on success move each entry into OUT_DIR.

    A crash leaves OUT_DIR as it was (DVC has already removed stale outputs) and deletes the scratch,
    so a half-written parquet never sits under its final name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(".tmp-*"):  # a killed run's scratch (SIGKILL skips the cleanup below)
        if _abandoned(old):
            shutil.rmtree(old, ignore_errors=True)
    tmp = out_dir / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for entry in sorted(tmp.iterdir()):
            final = out_dir / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif entry.is_dir() and final.exists():
                final.unlink()
            os.replace(entry, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
