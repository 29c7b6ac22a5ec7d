"""A case you can share (no Gradio here): the page's state as a link, and the link back to the state.

The state is the gallery, the query (a gallery item by id, or an upload by its content hash), the attribute, the
models and the open tab: ``?gallery=products&item=12&attribute=baseColour&models=asen,csn&tab=explore``.

- :func:`link_query` writes it. An upload is kept once, under its content's sha256, in the cache's
  ``uploads/`` folder (:class:`UploadStore`, at most ``MAX_UPLOADS`` files and 512 MB, the oldest removed first), so a
  link names the content, never a server path, and reopens it on this server while it is kept.
- :func:`read_link` reads it back against what this app has: whatever does not exist here (an unknown gallery,
  item, attribute, model or tab, an upload no longer kept) is ignored, the default used instead, and one line
  says what was ignored.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

from profashion.explorer.catalog import MAX_UPLOAD_BYTES
from profashion.explorer.public import content_digest, escape_markdown
from profashion.io import atomic_copy

MAX_UPLOADS = 256
MAX_UPLOAD_STORE_BYTES = 512 * 2**20  # and at most this much in all (the newest upload is always kept)
HEX = re.compile(r"[0-9a-f]{64}")
ITEM = re.compile(r"[0-9]{1,9}")  # ASCII digits only ("²".isdigit() is true), and short: int() never overflows
MAX_VALUE_CHARS = 256  # a longer link value is ignored (and echoed cut short)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class UploadStore:
    """Uploads kept by content (``<sha256><suffix>``) so that a link can name them; bounded in number."""

    def __init__(self, root: str | os.PathLike, max_files: int = MAX_UPLOADS):
        self.root = Path(root)
        self.max_files = max_files

    def keep(self, path: str | os.PathLike) -> str | None:
        """The sha256 of the upload at ``path``, kept under it (once); None when it is not a keepable file."""
        p = Path(path)
        try:
            if not p.is_file() or p.stat().st_size > MAX_UPLOAD_BYTES:
                return None
            digest = content_digest(p)
            suffix = p.suffix.lower() if p.suffix.lower() in IMAGE_SUFFIXES else ".img"
            dest = self.root / f"{digest}{suffix}"
            if not dest.is_file():
                atomic_copy(p, dest)
                self._trim()
            return digest
        except OSError:
            return None

    def find(self, digest: str) -> Path | None:
        """The kept upload of that sha256, or None (never a path outside the store: the digest must be hex)."""
        if not isinstance(digest, str) or not HEX.fullmatch(digest) or not self.root.is_dir():
            return None
        return next((f for f in sorted(self.root.glob(f"{digest}.*")) if not f.name.startswith(".")), None)

    def _trim(self) -> None:
        """Remove the oldest kept uploads beyond ``max_files`` or beyond ``MAX_UPLOAD_STORE_BYTES`` in all."""
        files = sorted((f for f in self.root.iterdir() if f.is_file() and not f.name.startswith(".")),
                       key=lambda f: f.stat().st_mtime, reverse=True)  # newest first
        total = 0
        for i, f in enumerate(files):
            total += f.stat().st_size
            if i >= self.max_files or (i > 0 and total > MAX_UPLOAD_STORE_BYTES):
                f.unlink(missing_ok=True)


@dataclasses.dataclass
class LinkState:
    """What a link asks for, as this app has it (None: keep the default)."""

    gallery: str | None = None
    query: str | None = None  # a file path: the gallery item's image or the kept upload
    attribute: str | None = None
    models: list[str] | None = None
    tab: str | None = None
    ignored: list[str] = dataclasses.field(default_factory=list)

    def note(self) -> str:
        """One line saying what was ignored, as plain text (the values a visitor typed are cut short)."""
        return ("Opened the link; ignored what this app does not have: " + "; ".join(self.ignored) + "."
                if self.ignored else "")

    def note_markdown(self) -> str:
        """:meth:`note` for a Markdown component: every character markdown or HTML would read escaped, so a
        link's value is shown as text, never as a tag, an image or a link."""
        return f"_{escape_markdown(self.note())}_" if self.ignored else ""


def _short(value, n: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= n else text[:n] + "…")


def read_link(galleries, params: dict, uploads: UploadStore | None, tabs: Sequence[str] = ()) -> LinkState:
    """The state a link's query parameters ask for, checked against ``galleries`` (and its tab against ``tabs``,
    the page's tab ids)."""
    state = LinkState()

    def get(key) -> str:
        value = params.get(key)
        return value.strip() if isinstance(value, str) else ""

    for key in ("gallery", "item", "upload", "attribute", "models", "tab"):
        if len(get(key)) > MAX_VALUE_CHARS:
            state.ignored.append(f"{key} {_short(get(key))} (too long)")
            params = {**params, key: ""}
    name = get("gallery")
    if name and name in galleries.catalogs:
        state.gallery = name
    elif name:
        state.ignored.append(f"gallery {_short(name)} (not here)")
    catalog = galleries.get(state.gallery)
    item, upload = get("item"), get("upload")
    if item:
        if ITEM.fullmatch(item) and int(item) < catalog.num_items:
            state.query = catalog.item_path(int(item))
        else:
            state.ignored.append(f"item {_short(item)} (the {catalog.name} gallery has items 0-{catalog.num_items - 1})")
    elif upload:
        found = uploads.find(upload) if uploads is not None else None
        if found is not None:
            state.query = str(found)
        else:
            state.ignored.append("the uploaded query image (no longer kept on this server)")
    attribute = get("attribute")
    if attribute and attribute in catalog.attributes:
        state.attribute = attribute
    elif attribute:
        state.ignored.append(f"attribute {_short(attribute)} (not in the {catalog.name} gallery)")
    models = [m for m in get("models").split(",") if m.strip()]
    if models:
        known = [m.strip() for m in models if m.strip() in catalog.models]
        unknown = [m.strip() for m in models if m.strip() not in catalog.models]
        state.models = known or None
        if unknown:
            state.ignored.append(f"model{'s' if len(unknown) > 1 else ''} "
                                 + ", ".join(_short(m, 30) for m in unknown[:5]) + " (not loaded)")
    tab = get("tab")
    if tab and tab in tabs:
        state.tab = tab
    elif tab:
        state.ignored.append(f"tab {_short(tab)}")
    return state


def link_query(catalog, query, attribute, models, tab, uploads: UploadStore | None,
               tabs: Sequence[str] = ()) -> str:
    """The link's query string for this state (``gallery``, ``item`` or ``upload``, ``attribute``, ``models``,
    ``tab``, when one of ``tabs``, the page's tab ids); a query that is neither a gallery item nor a keepable upload
    is left out."""
    params = {"gallery": catalog.name}
    if query and catalog.allows(query):  # a path outside the app's folders is no query (never copied, never named)
        item = catalog.identify(query)
        if item is not None:
            params["item"] = str(item)
        elif uploads is not None:
            digest = uploads.keep(query)
            if digest:
                params["upload"] = digest
    if attribute:
        params["attribute"] = str(attribute)
    if models:
        params["models"] = ",".join(str(m) for m in models)
    if tab in tabs:
        params["tab"] = tab
    return urlencode(params, safe=",")
