"""File I/O shared by every writer: atomic file and folder writes, sha256 of files, the output-folder preflight.

A reader never sees half a file or half a folder. Each writer fills a hidden temporary sibling of its
target (``.NAME.XXXXXXXX.tmp``, in the same folder so the final rename is atomic), gives it the usual
permissions (``mkstemp`` / ``mkdtemp`` make private ones; the umask applies as for any new file) and
renames it over the target; on any error the temporary is removed and the target is left as it was.
A folder being replaced waits as ``.NAME.old`` until the new one is in place: a process killed between
the two renames leaves ``.NAME.old`` and no ``NAME``, which :func:`recover_folder` puts back. Nothing is
fsynced: a crash of the process never leaves a half-written target; a crash of the machine may lose the
last write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary file name beside ``path``; it replaces ``path`` on success, is removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically, as UTF-8 with ``\\n`` line endings on every platform."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Write ``json.dumps(obj, indent=indent)`` and a final newline to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` ``array`` to ``path`` atomically (plain arrays only: ``allow_pickle=False``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _remove(path: Path, ignore_errors: bool = True) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        path.unlink(missing_ok=True)


def recover_folder(path: str | os.PathLike) -> bool:
    """Put back ``.NAME.old`` when a replacement killed between its two renames left it and no ``NAME``."""
    path = Path(path)
    old = _old(path)
    if not path.exists() and old.is_dir():
        os.replace(old, path)
        return True
    return False


def replace_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` onto ``out``; a previous ``out`` waits as ``.NAME.old`` until that succeeded."""
    tmp, out = Path(tmp), Path(out)
    recover_folder(out)  # a replacement killed half-way: the folder it replaced is the one to keep until the end
    old = _old(out)
    if old.exists() or old.is_symlink():  # a replacement killed after its renames: a stale copy
        _remove(old, ignore_errors=False)
    moved = out.exists() or out.is_symlink()
    if moved:
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if moved:
            os.replace(old, out)
        raise
    if moved:
        _remove(old)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path`` to fill; it replaces ``path`` on success, is removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_folder(out: str | os.PathLike, overwrite: bool, *, flag: str = "overwrite=True",
                        marker: str | None = None, what: str = "dataset", inputs: Iterable[str | os.PathLike] = (),
                        error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``out`` may be written: new or empty, or replaced (``overwrite``) and holding ``marker``."""
    out = Path(out)
    target = Path(os.path.abspath(out))
    for p in inputs:
        p = Path(os.path.abspath(p))
        if p == target or target in p.parents:
            raise error(f"output folder {out} would contain the input {p}; choose another output folder")
    recover_folder(out)  # a replacement killed half-way: what it replaced counts as there
    if not out.exists():
        return
    if not out.is_dir():
        raise error(f"output path {out} exists and is not a folder; choose another output path")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise error(f"output folder {out} exists and is not empty; pass {flag} to replace it, or choose another "
                    "folder")
    if marker is not None and not (out / marker).is_file():
        raise error(f"output folder {out} is not empty and holds no {marker}, so it does not look like a {what} "
                    f"folder: {flag} only replaces one; choose an empty or new folder")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20, h=None) -> str:
    """Hex sha256 of a file read in ``chunk`` blocks; with ``h`` (a hashlib object) it feeds ``h`` and returns its digest."""
    h = hashlib.sha256() if h is None else h
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
