"""profashion.io: atomic writes leave the old file or folder whole on failure and no temporary behind."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from profashion import io as pio


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writers_write_the_same_bytes_as_plain_writes(tmp_path):
    pio.atomic_write_text(tmp_path / "sub" / "a.txt", "é\nb\r\n")  # parents are made; no newline translation
    assert (tmp_path / "sub" / "a.txt").read_bytes() == "é\nb\r\n".encode()
    pio.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    pio.atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert (tmp_path / "c.json").read_text() == json.dumps({"x": [1, 2]}, indent=2) + "\n"
    pio.atomic_write_json(tmp_path / "d.json", {"x": 1}, indent=None)
    assert (tmp_path / "d.json").read_text() == '{"x": 1}\n'
    pio.atomic_save_npy(tmp_path / "e.npy", np.arange(5))
    assert np.array_equal(np.load(tmp_path / "e.npy", allow_pickle=False), np.arange(5))
    mode = 0o666 & ~pio._umask()
    assert all((p.stat().st_mode & 0o777) == mode for p in tmp_path.iterdir() if p.is_file())
    assert _names(tmp_path) == ["b.bin", "c.json", "d.json", "e.npy", "sub"]


def test_a_copy_a_private_file_and_a_first_writer_wins(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    os.chmod(src, 0o600)
    pio.atomic_copy(src, tmp_path / "copy" / "c.bin")  # the bytes, with the usual permissions, not the source's
    assert (tmp_path / "copy" / "c.bin").read_bytes() == b"abc"
    assert (tmp_path / "copy" / "c.bin").stat().st_mode & 0o777 == 0o666 & ~pio._umask()
    pio.atomic_write_bytes(tmp_path / "secret", b"k1", mode=0o600)
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600 & ~pio._umask()
    assert pio.atomic_create_bytes(tmp_path / "new" / "key", b"first", mode=0o600) is True
    assert pio.atomic_create_bytes(tmp_path / "new" / "key", b"second", mode=0o600) is False  # left as it is
    assert (tmp_path / "new" / "key").read_bytes() == b"first"
    assert (tmp_path / "new" / "key").stat().st_mode & 0o777 == 0o600 & ~pio._umask()
    assert _names(tmp_path / "new") == ["key"] and _names(tmp_path / "copy") == ["c.bin"]  # no temporary left


@pytest.mark.parametrize("write", [
    lambda p: pio.atomic_save_npy(p, np.array([object()])),  # np.save fails after writing the header
    lambda p: pio.atomic_write_text(p, "half \ud800"),  # not encodable
])
def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path, write):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        write(target)
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["f"]


def test_a_write_failing_midway_or_at_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), pio.atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and _names(tmp_path) == ["f.txt"]

    def no_rename(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(pio.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename refused"):
        pio.atomic_write_text(target, "new")
    assert target.read_text() == "old" and _names(tmp_path) == ["f.txt"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "ds"
    with pio.atomic_folder(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".ds.") and tmp.name.endswith(".tmp")
        (tmp / "a").write_text("1")
    assert _names(out) == ["a"] and (out.stat().st_mode & 0o777) == 0o777 & ~pio._umask()
    with pytest.raises(RuntimeError), pio.atomic_folder(out) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("killed by a bug")
    assert _names(out) == ["a"] and _names(tmp_path) == ["ds"]
    with pio.atomic_folder(out) as tmp:
        (tmp / "c").write_text("3")
    assert _names(out) == ["c"] and _names(tmp_path) == ["ds"]


def test_a_failed_rename_puts_the_previous_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "a").write_text("1")
    real = os.replace

    def refuse_the_new_one(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("rename refused")
        real(src, dst)

    monkeypatch.setattr(pio.os, "replace", refuse_the_new_one)
    with pytest.raises(OSError, match="rename refused"), pio.atomic_folder(out) as tmp:
        (tmp / "b").write_text("2")
    assert _names(out) == ["a"] and _names(tmp_path) == ["ds"]


def _killed_between_renames(tmp_path, monkeypatch):
    """The state a replacement of ``ds`` killed between its two renames leaves: ``.ds.old`` and no ``ds``."""
    out = tmp_path / "ds"
    out.mkdir()
    (out / "a").write_text("old")
    real, calls = os.replace, []

    def die_after_the_first(src, dst):  # the first rename happens, then nothing (no handler runs in a kill)
        calls.append(src)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(pio.os, "replace", die_after_the_first)
    with pytest.raises(KeyboardInterrupt), pio.atomic_folder(out) as tmp:
        (tmp / "b").write_text("new")
    monkeypatch.undo()
    assert _names(tmp_path) == [".ds.old"]
    return out


def test_a_folder_left_as_old_by_a_kill_is_recovered(tmp_path, monkeypatch):
    out = _killed_between_renames(tmp_path, monkeypatch)
    assert pio.recover_folder(out) is True
    assert _names(tmp_path) == ["ds"] and (out / "a").read_text() == "old"
    assert pio.recover_folder(out) is False


def test_the_next_write_or_preflight_recovers_it_too(tmp_path, monkeypatch):
    out = _killed_between_renames(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="not empty"):  # the recovered folder counts as there
        pio.check_output_folder(out, overwrite=False)
    assert _names(tmp_path) == ["ds"]

    (tmp_path / "again").mkdir()
    out = _killed_between_renames(tmp_path / "again", monkeypatch)
    with pio.atomic_folder(out) as tmp:
        (tmp / "c").write_text("newer")
    assert _names(tmp_path / "again") == ["ds"] and _names(out) == ["c"]


def test_a_checkpoint_killed_between_renames_is_read_back(tmp_path, monkeypatch):
    from profashion.models.base import read_checkpoint_config

    out = _killed_between_renames(tmp_path, monkeypatch)
    (tmp_path / ".ds.old" / "config.json").write_text('{"model": "asen", "config": {}}')
    assert read_checkpoint_config(out) == {"model": "asen", "config": {}}
    assert _names(tmp_path) == ["ds"]


def test_a_stale_old_folder_is_replaced(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (tmp_path / ".ds.old").mkdir()  # left by a kill after both renames
    with pio.atomic_folder(out) as tmp:
        (tmp / "a").write_text("1")
    assert _names(tmp_path) == ["ds"] and _names(out) == ["a"]


def test_check_output_folder(tmp_path):
    out = tmp_path / "out"
    pio.check_output_folder(out, overwrite=False)  # new
    out.mkdir()
    pio.check_output_folder(out, overwrite=False)  # empty
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty; pass --overwrite"):
        pio.check_output_folder(out, overwrite=False, flag="--overwrite")
    pio.check_output_folder(out, overwrite=True)  # no marker asked for
    with pytest.raises(ValueError, match="holds no meta.json, so it does not look like a dataset"):
        pio.check_output_folder(out, overwrite=True, marker="meta.json")
    (out / "meta.json").write_text("{}")
    pio.check_output_folder(out, overwrite=True, marker="meta.json")
    with pytest.raises(KeyError, match="would contain the input"):
        pio.check_output_folder(out, overwrite=True, inputs=[out / "images"], error=KeyError)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        pio.check_output_folder(tmp_path / "file", overwrite=True)
    assert _names(out) == ["meta.json", "notes.txt"]


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert pio.sha256_file(p) == pio.sha256_file(p, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
    h = hashlib.sha256(b"prefix")
    assert pio.sha256_file(p, h=h) == hashlib.sha256(b"prefix" + b"abc" * 1000).hexdigest()
