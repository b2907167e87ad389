"""Atomic outputs: a failing stage leaves its output folder as it was, and the scratch a killed run
(SIGKILL skips cleanup) left behind is removed by the next run, while a running one's is kept."""
import os
import subprocess
import sys

import pytest

from bali.io import atomic_outputs, write_json


def test_a_killed_runs_scratch_is_removed_and_a_failure_writes_nothing(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    (tmp_path / f".tmp-{pid}").mkdir()
    (tmp_path / f".tmp-{pid}" / "half.parquet").write_bytes(b"PAR1")
    (tmp_path / f".stats.json.tmp-{pid}").write_text("{")
    alive = tmp_path / f".tmp-{os.getppid()}"  # this test's parent: running
    alive.mkdir()
    (tmp_path / "kept.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_outputs(tmp_path) as tmp:
            (tmp / "kept.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "kept.txt").read_text() == "old"
    write_json(tmp_path / "stats.json", {"rows": 1})
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([alive.name, "kept.txt", "stats.json"])
