"""File I/O shared by every writer: atomic file and folder writes, sha256 of files, the output-folder preflight.

A reader never sees half a file or half a folder. Each writer fills a hidden temporary sibling of its
target (``.NAME.XXXXXXXX.tmp``, in the same folder so the final rename is atomic), gives it the usual
permissions (``mkstemp`` / ``mkdtemp`` make private ones; the umask applies as for any new file) and
renames it over the target; on any error the temporary is removed and the target is left as it was.
:func:`atomic_create_bytes` writes a file only where none is yet (the first of several writers wins).
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


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new hidden file ``.NAME.XXXXXXXX.tmp`` beside ``path`` (created exclusively, mode 0600): (fd, its path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o666) -> Iterator[Path]:
    """Yield a hidden temporary file name beside ``path``; it replaces ``path`` on success (with ``mode``, less the
    umask), is removed on error."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` atomically (``mode`` less the umask: 0o600 for a file only its owner reads)."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy the file ``src`` (its bytes, not its permissions or times) to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def atomic_create_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o666) -> bool:
    """Write ``data`` to ``path`` atomically unless ``path`` exists: the first of several writers wins. The data is
    written to a temporary file only its owner can read, given ``mode`` (less the umask), then hard-linked as
    ``path``. True when written; False when ``path`` was there already (left as it is). Where the file system
    has no hard links, ``path`` is replaced (True)."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode & ~_umask())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


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


# --------------------------------------------------------------------------------------------------
# Bounded JSON reading

MAX_JSON_BYTES = 1 << 20  # a configuration, a manifest, a checkpoint's config.json: a few KB in practice
MAX_JSON_DEPTH = 32  # the deepest file the project writes nests 5 levels
_DEPTH_CHUNK = 1 << 18  # bytes scanned at once by the depth scan (about 20 bytes of numpy arrays each)
_STEP = np.zeros(256, dtype=np.int64)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


class JSONLimitError(ValueError):
    """A JSON file or text refused, before parsing (too large, nested too deeply) or by the parser (not JSON).

    ``str(exc)`` is one sentence: ``"<what> <problem>; <fix>"``; ``problem`` alone lets a caller say it in its
    own words (``"is larger than 1 MB"``, ``"is not valid JSON (...)"``).
    """

    def __init__(self, what: str, problem: str, fix: str):
        super().__init__(f"{what} {problem}; {fix}")
        self.what, self.problem, self.fix = what, problem, fix


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def json_depth(data: bytes | str, limit: int | None = None) -> int:
    """How deeply the arrays and objects of JSON ``data`` nest (``{"a": [1]}``: 2), brackets inside strings (escaped
    quotes included) not counted: one pass in numpy over chunks of the bytes, O(n) time, bounded extra memory.
    With ``limit``, returns a number above it as soon as the nesting goes past ``limit``."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    depth = deepest = 0
    inside, backslashes = 0, 0  # in a string at the chunk's start; backslashes just before it
    for s in range(0, len(data), _DEPTH_CHUNK):
        c = np.frombuffer(data, np.uint8, min(_DEPTH_CHUNK, len(data) - s), s)
        idx = np.arange(len(c))
        is_bs = c == 92
        last = np.maximum.accumulate(np.where(is_bs, -1, idx))  # the last non-backslash at or before i
        run = idx - last + np.where(last < 0, backslashes, 0)  # backslashes ending at i
        before = np.concatenate(([backslashes], run[:-1]))  # backslashes just before i
        quote = (c == 34) & (before % 2 == 0)  # a quote that opens or closes a string
        state = (np.cumsum(quote) + inside) % 2  # 1 where i is inside a string (or is its opening quote)
        level = np.cumsum(_STEP[c] * (state == 0)) + depth
        deepest = max(deepest, int(level.max()))
        depth, inside, backslashes = int(level[-1]), int(state[-1]), int(run[-1])
        if limit is not None and deepest > limit:
            break
    return deepest


def loads_json(text: str | bytes, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
               what: str = "the JSON text", fix: str = "check that it is the right one"):
    """``json.loads(text)``, refused with :class:`JSONLimitError` (one sentence naming ``what``) when ``text`` is
    longer than ``max_bytes`` (UTF-8) or nests deeper than ``max_depth``, both checked before parsing, or when it
    is not JSON."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if len(data) > max_bytes:
        raise JSONLimitError(what, f"is larger than {_size(max_bytes)}, the most read for it", fix)
    # the usual file has too few brackets to nest too deeply: no scan needed
    if data.count(b"[") + data.count(b"{") > max_depth and json_depth(data, max_depth) > max_depth:
        raise JSONLimitError(what, f"nests arrays or objects more than {max_depth} levels deep, the most read "
                                   "for it", fix)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise JSONLimitError(what, f"is not UTF-8 text (byte {exc.start})", fix) from None
    except json.JSONDecodeError as exc:
        raise JSONLimitError(what, f"cannot be read as JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                             fix) from None
    except (ValueError, RecursionError) as exc:  # a number past Python's digit limit; nesting past the stack
        reason = str(exc).split(":")[0].splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise JSONLimitError(what, f"cannot be read as JSON ({reason})", fix) from None


def read_bytes_bounded(path: str | os.PathLike, max_bytes: int, what: str | None = None,
                       fix: str = "check that it is the right file") -> bytes:
    """The bytes of ``path``, refused (:class:`JSONLimitError`) past ``max_bytes`` after reading at most
    ``max_bytes + 1`` of them (``/dev/zero`` and other endless files included). FileNotFoundError as is; any
    other OSError (a folder, no permission) as JSONLimitError."""
    what = str(path) if what is None else what
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise JSONLimitError(what, f"cannot be read ({exc.strerror or type(exc).__name__})", fix) from None
    if len(data) > max_bytes:
        raise JSONLimitError(what, f"is larger than {_size(max_bytes)}, the most read for it", fix)
    return data


def read_json(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              what: str | None = None, fix: str = "check that it is the right file"):
    """The JSON value in file ``path``, read in bounded memory and time: :func:`read_bytes_bounded`, then
    :func:`loads_json`. ``what`` names the file in messages (default: ``path`` as given). FileNotFoundError
    when it is missing; :class:`JSONLimitError` (a ValueError, one sentence) for everything else."""
    what = str(path) if what is None else what
    return loads_json(read_bytes_bounded(path, max_bytes, what, fix), max_bytes=max_bytes, max_depth=max_depth,
                      what=what, fix=fix)
