import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(ROOT))

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")


def conso(cui, text, lat="ENG", ts="P", stt="PF", ispref="Y", sab="MSH", code="D1", suppress="N"):
    """One MRCONSO line, 18 fields and the trailing pipe."""
    return "|".join([cui, lat, ts, "L1", stt, "S1", ispref, "A1", "", "", "", sab, "PT", code, text, "0",
                     suppress, ""]) + "|"


def rel(cui1, rel_, cui2, rela="", sab="MSH", suppress="N"):
    """One MRREL line, 16 fields and the trailing pipe."""
    return "|".join([cui1, "A1", "CUI", rel_, cui2, "A2", "CUI", rela, "R1", "", sab, sab, "", "", suppress, ""]) + "|"


def write_meta(path: Path, conso_lines, rel_lines, sty_lines=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, lines in (("MRCONSO.RRF", conso_lines), ("MRREL.RRF", rel_lines), ("MRSTY.RRF", sty_lines)):
        if lines is None:
            continue
        data = b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\n" for ln in lines)
        (path / name).write_bytes(data)
    return path


def run_stage(name, *args, check=True):
    """Run a stage script the way dvc.yaml does, from the repository root."""
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, check=check)
