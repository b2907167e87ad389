"""`bench/gpu_smoke.py` (`make gpu-smoke`): without CUDA it says so and exits 0 within seconds;
`--device cpu --dry` runs the parts' logic on a tiny LM: the training process SIGKILLed after step
3 resumes at its step-2 checkpoint and redoes step 3 with the same loss, validation and the dev
curve are logged, and 2 DDP processes end with identical weights."""
import json
import subprocess
import sys
import time

import polars as pl
import pytest

from conftest import ROOT, make_dataset

SMOKE = [sys.executable, str(ROOT / "bench" / "gpu_smoke.py")]


def test_without_cuda_it_exits_0_at_once(tmp_path):
    t0 = time.perf_counter()
    res = subprocess.run([*SMOKE, "--out", str(tmp_path / "smoke.json")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no CUDA device" in res.stdout and not (tmp_path / "smoke.json").exists()
    assert time.perf_counter() - t0 < 60


def test_without_a_usable_torch_it_says_so_in_one_line(tmp_path):
    (tmp_path / "torch.py").write_text("raise ImportError('libcudart.so.12: cannot open shared object file')\n")
    res = subprocess.run([*SMOKE, "--out", str(tmp_path / "smoke.json")], cwd=ROOT, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.stdout.strip().splitlines() == [
        f"gpu-smoke: no usable torch in {sys.executable} (ImportError: libcudart.so.12: cannot open shared object file); "
        "nothing run"]


@pytest.mark.slow
def test_dry_run_on_cpu(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    ex = pl.read_parquet(ds / "examples.parquet")
    ex.with_columns(split=pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.lit("val")).otherwise("split")
                    ).write_parquet(ds / "examples.parquet")
    el = tmp_path / "el"
    el.mkdir()
    (el / "dictionary.txt").write_text("".join(f"C{i}||concept {i}\n" for i in range(10)))
    (el / "dev.txt").write_text("".join(f"C{i}||synonym number {i} of it\n" for i in range(10)))
    out = tmp_path / "smoke.json"
    res = subprocess.run([*SMOKE, "--device", "cpu", "--dry", "--dataset", str(ds), "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, env={**__import__("os").environ, "BALI_SMOKE_EL": str(el),
                                                              "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert [line.split()[1] for line in res.stdout.splitlines()[:4]] == ["train:", "bench:", "tests:", "ddp:"]
    train, ddp = figures["train"], figures["ddp"]
    assert (train["killed_rc"], train["killed_after"], train["resumed_from"], train["redone_steps"]) == (-9, 3, 2, 1)
    assert train["redone_loss_max_rel_diff"] <= 1e-5 and train["evaluate"] is True
    assert train["validation_points"] == 3 and train["dev_curve_points"] == 3  # steps 0 and 2 (killed run), 4
    assert ddp["replica_max_abs_diff"] == 0.0 and ddp["validation_points"] == 3 and figures["ok"]
