"""How the Gradio app is served to the public: the bound on Gradio's own upload folder, and the ASGI middleware that
bounds the direct calls (the page's unqueued events) per client and every event's request size. No Gradio import:
the Blocks come as arguments, the middleware is plain ASGI."""

from __future__ import annotations

import os
import time

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
