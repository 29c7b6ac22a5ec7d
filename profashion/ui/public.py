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
        """The URL (relative to the page) under which Gradio serves the mirror of ``src``."""
        from gradio_client.utils import encode_file_path

        return "gradio_api/file=" + encode_file_path(self.path(src))


PUBLIC = PublicFiles()  # the app's mirror (its folder follows GRADIO_TEMP_DIR)


def content_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's content, remembered by its path and stat (:meth:`PublicFiles.digest`)."""
    return PUBLIC.digest(path)


GRADIO_CACHE_BYTES = 512 * 2**20  # Gradio's uploads and outputs kept at most, in bytes; PROFASHION_GRADIO_CACHE_MB


def gradio_cache_bytes() -> int:
    try:
        return max(16, int(os.environ.get("PROFASHION_GRADIO_CACHE_MB", GRADIO_CACHE_BYTES >> 20))) << 20
    except ValueError:
        return GRADIO_CACHE_BYTES


def bound_gradio_cache(blocks, max_bytes: int | None = None) -> int:
    """Remove the oldest files Gradio made for ``blocks`` (uploads, outputs: its ``temp_file_sets``) beyond
    ``max_bytes`` in all; the files a component keeps (its default value) stay. Returns the bytes removed.

    Gradio's own ``delete_cache`` removes them by age only, so a flood of uploads within that age would fill
    the disk (the second hostile probe: 330 uploads, 570 MB)."""
    max_bytes = gradio_cache_bytes() if max_bytes is None else max_bytes
    keep = set()
    for component in blocks.blocks.values():
        keep.update(getattr(component, "keep_in_cache", ()) or ())
    files = []
    for temp_set in blocks.temp_file_sets:
        for name in list(temp_set):
            if name in keep:
                continue
            try:
                st = os.lstat(name)
            except OSError:
                temp_set.discard(name)
                continue
            files.append((st.st_mtime, st.st_size, name, temp_set))
    files.sort(key=lambda f: f[0], reverse=True)  # newest first: they stay
    total = removed = 0
    for _, size, name, temp_set in files:
        total += size
        if total > max_bytes:
            try:
                os.remove(name)
                removed += size
            except OSError:
                pass
            temp_set.discard(name)
    return removed


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


DIRECT_CALLS = 8  # direct calls (the page's unqueued events) served at once; one more is refused at once
DIRECT_PREFIXES = ("/gradio_api/run/", "/gradio_api/api/")
# Each client's direct calls: a burst of DIRECT_BURST, then DIRECT_RATE a second. A page opening a link makes ~15
# (the load, then each changed choice's banner, link and item box), a gallery switch 8-11, a click one to three; a
# flood from one address gets a few a second instead of whatever the global bound lets through (each costs Gradio
# ~65 ms of the event loop for a new session: benchmarks/load_test.py --flood-only).
DIRECT_BURST, DIRECT_RATE = 60, 4.0
DIRECT_CLIENTS = 10_000  # clients remembered (least recently seen forgotten first): bounded memory under a spray
# Every client behind one connection's peer (a proxy) together: PEER_SHARE times a client's bucket. The proxy's
# X-Forwarded-For names the client; where nothing in front sets it, a caller could forge a new client per call, and
# this bound still holds (second hostile probe: 166 of 166 forged calls had passed).
PEER_SHARE = 4
# An event's inputs, as JSON, are small (a file is sent to the upload route and named here; a job's model config is
# at most 64 KB): a bigger request is refused before Gradio parses it, or echoes it in an error (a 1 MB gallery name
# came back as a 1 MB error).
MAX_EVENT_BODY = 256 * 1024
EVENT_PREFIXES = ("/gradio_api/run/", "/gradio_api/api/", "/gradio_api/queue/join", "/gradio_api/call/")


def client_key(scope) -> str:
    """The caller's address: behind a Hugging Face Space's proxy (``SPACE_ID`` set) the last ``X-Forwarded-For``
    entry, the one the proxy added (earlier entries are the caller's to forge); elsewhere the connection's peer
    (uvicorn has already resolved a trusted proxy's headers into it)."""
    if os.environ.get("SPACE_ID"):
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                last = value.decode("latin-1").rsplit(",", 1)[-1].strip()
                if last:
                    return last[:64]
    client = scope.get("client")
    return str(client[0]) if client else "?"


class DirectCallLimit:
    """ASGI middleware for direct calls (``POST /gradio_api/run/...``, the route of the events that run outside the
    queue): at most ``limit`` in flight, and per client a token bucket (``burst`` calls, refilled at ``rate`` a
    second); a call beyond either is answered ``429`` at once, before Gradio reads its body.

    The events outside the queue do O(1) work or are bounded (:func:`profashion.ui.common.bounded`), but every call
    still costs Gradio ~35-65 ms of this 2-core machine's event loop (parsing, a new session's state, dispatch to a
    worker thread, the answer): 300 concurrent calls took it ~10 s, during which a queued Retrieve waited. Refused
    here, a call costs well under a millisecond. (Queued events are never served on this route: the app's queue is
    not open to direct calls.)"""

    def __init__(self, app, limit: int = DIRECT_CALLS, prefixes: tuple[str, ...] = DIRECT_PREFIXES,
                 burst: float = DIRECT_BURST, rate: float = DIRECT_RATE, clients: int = DIRECT_CLIENTS,
                 clock=time.monotonic):
        self.app, self.limit, self.prefixes = app, limit, prefixes
        self.burst, self.rate, self.clients, self.clock = float(burst), float(rate), clients, clock
        self.in_flight = 0  # one event loop: no lock needed
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when); insertion order = recency

    @staticmethod
    async def bounded_body(scope, receive, send):
        """An event's request (its inputs as JSON) is at most ``MAX_EVENT_BODY`` bytes: a longer declared one is
        answered 413 at once (None returned); one sent in chunks is cut off as a disconnect past the bound."""
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_EVENT_BODY):
                body = (b'{"error": "The request is too large: an event\'s inputs are at most '
                        + str(MAX_EVENT_BODY // 1024).encode() + b' KB (upload files through the upload route)"}')
                await send({"type": "http.response.start", "status": 413,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return None
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            return {"type": "http.disconnect"} if seen > MAX_EVENT_BODY else message

        return counted

    def admit(self, key: str, peer: str | None = None) -> bool:
        """Take one of ``key``'s tokens, and one of its ``peer``'s (the connection's, when it is another: a proxy's
        bucket, ``PEER_SHARE`` times a client's); False, and nothing taken, when either has none now."""
        now = self.clock()
        wanted = [(key, 1)] + ([("peer:" + peer, PEER_SHARE)] if peer is not None and peer != key else [])
        states = []
        for k, share in wanted:
            tokens, then = self.buckets.pop(k, (self.burst * share, now))
            states.append((k, min(self.burst * share, tokens + (now - then) * self.rate * share)))
        ok = all(tokens >= 1.0 for _, tokens in states)
        for k, tokens in states:
            while len(self.buckets) >= self.clients:  # forget the least recently seen
                del self.buckets[next(iter(self.buckets))]
            self.buckets[k] = (tokens - 1.0 if ok else tokens, now)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST" and any(
                scope.get("path", "").startswith(p) for p in EVENT_PREFIXES):
            receive = await self.bounded_body(scope, receive, send)
            if receive is None:
                return
        if scope["type"] != "http" or scope.get("method") != "POST" or not any(
                scope.get("path", "").startswith(p) for p in self.prefixes):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if self.in_flight >= self.limit or not self.admit(client_key(scope), str(client[0]) if client else None):
            body = b'{"error": "The app is busy right now; try again in a moment"}'
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
