"""The real benchmark files: one folder ($BALI_REAL_DATA), one manifest, a verify command that
names what is wrong with each file of a user's copy."""
import json

import pytest

from bali import real_data
from conftest import SHARED_DATA, needs_shared

META = {"what": "w", "source": "s", "licence": "l", "layout": "x", "used_by": "u"}


def copy_with_manifest(tmp_path):
    """Two data sets under tmp_path/copy and a manifest describing them, written by the command's own code."""
    copy = tmp_path / "copy"
    (copy / "good").mkdir(parents=True)
    (copy / "good" / "a.txt").write_text("one\ntwo\n")
    (copy / "bad" / "sub").mkdir(parents=True)
    (copy / "bad" / "sub" / "b.tsv").write_text("x\ty\n1\t2\n")
    (copy / "bad" / "c.txt").write_text("kept\n")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"datasets": {"good": {**META, "files": {}}, "bad": {**META, "files": {}}}}))
    real_data.write_manifest(copy, manifest)
    return copy, real_data.load_manifest(manifest)


def test_verify_names_each_missing_or_malformed_file(tmp_path):
    copy, manifest = copy_with_manifest(tmp_path)
    assert manifest["datasets"]["good"]["files"]["a.txt"][:2] == [8, 2]
    assert real_data.verify(copy, manifest=manifest) == {"good": [], "bad": []}

    (copy / "bad" / "sub" / "b.tsv").write_text("x\ty\n1\t3\n")  # same size and lines, other content
    (copy / "bad" / "c.txt").unlink()
    found = real_data.verify(copy, manifest=manifest)
    assert found["good"] == []
    assert any(p.startswith("bad/sub/b.tsv: sha256 ") for p in found["bad"])
    assert "bad/c.txt: missing (expected 5 bytes, 1 lines)" in found["bad"]

    (copy / "bad" / "sub" / "b.tsv").write_text("x\ty\n1\t")  # cut short
    assert any(p.startswith("bad/sub/b.tsv: 6 bytes, expected 8") for p in real_data.verify(copy, manifest=manifest)["bad"])
    (copy / "bad" / "sub" / "b.tsv").write_text("x\ty\r\n1\t2")  # the same bytes count, a line ending changed
    assert any("1 lines, expected 2" in p for p in real_data.verify(copy, manifest=manifest)["bad"])


def test_a_missing_folder_and_an_unknown_name_are_reported(tmp_path):
    copy, manifest = copy_with_manifest(tmp_path)
    found = real_data.verify(tmp_path / "elsewhere", ["good"], manifest=manifest)
    assert list(found) == ["good"] and found["good"][0].startswith("good/: folder missing (1 files expected)")
    with pytest.raises(SystemExit, match="no data set named nope"):
        real_data.verify(copy, ["nope"], manifest=manifest)


def test_the_command_exits_non_zero_on_a_broken_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(real_data.ENV, str(tmp_path / "absent"))
    assert real_data.root() == tmp_path / "absent"
    with pytest.raises(SystemExit, match="gsc-plus, bc5cdr-disease-el, umnsrs not as the manifest describes"):
        real_data.main(["verify", "--only", "eval"])
    assert "gsc-plus/: folder missing" in capsys.readouterr().out
    assert real_data.resolve("data/real/umnsrs") == tmp_path / "absent" / "umnsrs"
    assert real_data.resolve("elsewhere/umnsrs") == real_data.Path("elsewhere/umnsrs")
    monkeypatch.delenv(real_data.ENV)
    assert real_data.root() == real_data.DEFAULT
    assert real_data.resolve("data/real/umnsrs") == real_data.Path("data/real/umnsrs")


def test_every_data_set_has_a_source_licence_and_layout():
    sets = real_data.load_manifest()["datasets"]
    assert set(real_data.EVAL) <= set(sets)
    for name, s in sets.items():
        assert all(s[k] for k in META), name
        assert s["files"] and all(len(d) == 3 and len(d[2]) == 64 for d in s["files"].values()), name


@needs_shared
def test_the_manifest_describes_the_shared_copy():
    assert real_data.verify(SHARED_DATA) == {name: [] for name in real_data.load_manifest()["datasets"]}
