"""What the app sends a visitor names no server folder (no Gradio import here).

Gradio serves a file under ``gradio_api/file=<its path>``, so a file served where it lies (a static path: the
repository's gallery, the cache) shows that folder in every URL, in ``/config`` and in the page. The app therefore
serves every file it names in HTML (gallery images, framed thumbnails, examples) from a mirror inside Gradio's own
upload folder (``GRADIO_TEMP_DIR``, default ``<temp>/gradio``), where Gradio keeps every file it serves anyway:

- each file is mirrored once under its content's sha256 (``<upload folder>/profashion/<sha256><suffix>``): a
  copy (never a hard link, which a write in place to the source would change under its old name), written
  atomically; a changed file gets a new name, so a browser never shows a stale image;
- the digest of a source file is remembered by (path, inode, size, mtime, ctime): a write moves ctime, which
  nothing sets back, so a page of 40 thumbnails costs 40 ``stat`` calls once the files are mirrored.

Files returned to Gradio components (the query image, an export) are copied into the same upload folder by Gradio
itself (see :func:`profashion.ui.demo.launch_kwargs`).
"""

from __future__ import annotations

import functools
import html
import os
import re
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from profashion.io import atomic_copy, atomic_create_bytes, atomic_write_bytes, sha256_file

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".json")
MIRROR = "profashion"


def upload_folder() -> Path:
    """Gradio's upload folder, as Gradio itself works it out (``GRADIO_TEMP_DIR``, else ``<temp>/gradio``); resolved
    once per value of the variable (a Retrieve asks 40 times, the Embeddings tab 2,302 times)."""
    return _resolved(os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio"))


@functools.lru_cache(maxsize=8)
def _resolved(folder: str) -> Path:
    return Path(folder).resolve()


class PublicFiles:
    """Server files mirrored by content into Gradio's upload folder (thread-safe)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self._root = Path(root) if root is not None else None
        self._digests: dict[tuple, str] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else upload_folder() / MIRROR

    def digest(self, src: str | os.PathLike) -> str:
        """The sha256 of the file ``src``, read once per (path, inode, size, mtime, ctime): a flood of requests
        naming the same 19 MB upload hashes it once."""
        src = Path(src)
        st = src.stat()
        key = (str(src), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            digest = self._digests.get(key)
        if digest is None:
            digest = sha256_file(src)
            with self._lock:
                if len(self._digests) > 100_000:  # bounded: a long-running app forgets the oldest half
                    for k in list(self._digests)[:50_000]:
                        del self._digests[k]
                self._digests[key] = digest
        return digest

    def path(self, src: str | os.PathLike) -> str:
        """The mirror of ``src`` (made when missing): a path inside Gradio's upload folder, named by content. A file
        already there (a visitor's upload) is served as it is. A mirror in use has its mtime refreshed (at most once
        a minute), so :meth:`trim` removes the ones unused longest."""
        src = Path(src)
        if src.resolve().is_relative_to(upload_folder()):
            return str(src)
        digest = self.digest(src)
        suffix = src.suffix.lower() if src.suffix.lower() in SUFFIXES else ".bin"
        dest = self.root / f"{digest}{suffix}"
        try:
            st = dest.stat()
            if time.time() - st.st_mtime > 60:
                os.utime(dest)
            return str(dest)
        except OSError:
            pass
        if not dest.is_file():
            atomic_copy(src, dest)
        return str(dest)

    def trim(self, max_bytes: int) -> int:
        """Remove the mirrors unused longest beyond ``max_bytes`` in all (a removed one is made again when next
        served); returns the bytes removed."""
        files = []
        for f in self.root.glob("*") if self.root.is_dir() else ():
            try:
                st = f.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, f))
        files.sort(reverse=True)  # the newest first: they stay
        total = removed = 0
        for _, size, f in files:
            total += size
            if total > max_bytes:
                f.unlink(missing_ok=True)
                removed += size
        return removed

    def url(self, src: str | os.PathLike) -> str:
        """The URL (relative to the page) under which Gradio serves the mirror of ``src`` (its ``/file=`` route, the
        path quoted as ``gradio_client.utils.encode_file_path`` quotes it)."""
        return "gradio_api/file=" + urllib.parse.quote(self.path(src), safe="/")


PUBLIC = PublicFiles()  # the app's mirror (its folder follows GRADIO_TEMP_DIR)


def content_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's content, remembered by its path and stat (:meth:`PublicFiles.digest`)."""
    return PUBLIC.digest(path)


SECRET_NAME = "browser-secret"


def browser_secret(cache_root: str | os.PathLike) -> str:
    """The key the page's ``gr.BrowserState`` encrypts with, made once and kept in ``<cache>/browser-secret``
    (mode 0600, readable by the app's user only): a browser's owner token then reads the same after a restart,
    so the jobs it launched stay its own. A file that is unreadable or not a key is replaced by a new key."""
    import secrets

    path = Path(cache_root) / SECRET_NAME
    kept = _read_secret(path)
    if kept is not None:
        return kept
    key = secrets.token_hex(32)
    data = (key + "\n").encode("ascii")
    # two apps starting at once on one cache: the first key written wins, both use it
    if not atomic_create_bytes(path, data, mode=0o600):
        kept = _read_secret(path)
        if kept is not None:
            return kept
        atomic_write_bytes(path, data, mode=0o600)  # a damaged key: replaced
    return key


def _read_secret(path: Path) -> str | None:
    try:
        if path.stat().st_size > 1024:
            return None
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeError):
        return None
    return text if 32 <= len(text) <= 256 and text.isalnum() else None


# An absolute path in a message (two or more parts: /a/b), not part of a URL or a word ("and/or", "1/2")
ABS_PATH = re.compile(r"(?<![\w.<>:/~-])(?:~|/)(?:/?[\w.@+=,-]+)*/[\w.@+=,-]+/?")


def public_text(text: str, names=()) -> str:
    """``text`` (a reason, an error) as a visitor may see it: each ``(folder, public name)`` of ``names``
    replaced by its name (the longest folder first, as given and resolved), then any other absolute path by its
    last part (``/srv/app/cache/gallery-v2-x`` -> ``gallery-v2-x``)."""
    text = str(text)
    pairs = []
    for folder, name in names:
        for p in {str(folder), os.path.abspath(folder), os.path.realpath(folder)}:
            if p not in ("", "/", "."):
                pairs.append((p, name))
    for p, name in sorted(pairs, key=lambda pn: -len(pn[0])):
        text = text.replace(p, name)
    return ABS_PATH.sub(lambda m: Path(m.group().rstrip("/")).name or "…", text)


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:])")  # after html.escape: no & or ; left to escape


def escape_markdown(text: str) -> str:
    """``text`` shown literally by a Markdown component: no tag (``<cache>`` stays text, not an element that
    swallows the rest), link, image or emphasis of its own."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))
