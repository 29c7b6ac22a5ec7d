"""The app's galleries (no Gradio here): each a :class:`~profashion.explorer.catalog.Catalog` of its own images and models.

``Galleries.load(specs, log)`` loads every gallery it can: a gallery whose folder is missing or corrupt, or
whose catalog fails to load, is listed in ``skipped`` with the reason, and the app starts with the others.
Every query names its gallery (``get(name)``; an unknown name is refused with the names there are). The first
gallery loaded is the default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

from profashion.data.splits import DatasetError
from profashion.explorer.catalog import Catalog, GallerySpec
from profashion.retrieval.search import QueryError

GALLERY_FILE = "gallery.json"  # a gallery folder's description: see default_galleries
GALLERY_FORMAT = "profashion-gallery/1"
MAX_GALLERY_FILE = 64 * 1024


@dataclasses.dataclass(frozen=True)
class GalleryDef:
    """What a gallery is made of: its name, title and description, its images (a :class:`GallerySpec` generated
    into the cache, or a dataset folder) and the folder of the checkpoints that serve it."""

    name: str
    title: str
    description: str
    gallery: GallerySpec | Path
    checkpoints: Path


def default_galleries(repo: str | os.PathLike, checkpoints: str | os.PathLike | None = None) -> list[GalleryDef]:
    """The embedded galleries of a checkout, found by data: every ``galleries/<folder>/gallery.json``
    (:func:`read_gallery_def`), in the order their files give (then by name). ``checkpoints``: the checkpoints root
    (default ``<repo>/checkpoints``), under which each gallery names the folder of its models."""
    repo = Path(repo)
    ckpt = Path(checkpoints) if checkpoints is not None else repo / "checkpoints"
    found = []
    for path in sorted((repo / "galleries").glob(f"*/{GALLERY_FILE}")):
        order, d = read_gallery_def(path, ckpt)
        found.append((order, d.name, d))
    names = [name for _, name, _ in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"two galleries are called {twice[0]!r}: each {GALLERY_FILE} needs a name of its own")
    return [d for _, _, d in sorted(found, key=lambda f: (f[0], f[1]))]


def read_gallery_def(path: str | os.PathLike, checkpoints: str | os.PathLike) -> tuple[float, GalleryDef]:
    """(its order, the gallery) of one ``gallery.json``: its ``name`` (letters, digits, ``-`` and ``_``), ``title``,
    ``description`` (``{n}`` becomes its number of images), ``order``, ``images`` (``"."``: the dataset in the
    file's folder; ``{"generate": {...}}``: synthetic garments made into the cache with those
    :class:`GallerySpec` settings) and ``checkpoints`` (its models' folder under the checkpoints root). A file that
    is not so is refused in one sentence naming the field."""
    from profashion.io import JSONLimitError, read_json

    path = Path(path)
    where = f"{path.parent.name}/{GALLERY_FILE}"
    try:
        raw = read_json(path, what=where, max_bytes=MAX_GALLERY_FILE)
    except (OSError, JSONLimitError, ValueError) as exc:
        raise DatasetError(f"{where} cannot be read ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != GALLERY_FORMAT:
        raise DatasetError(f"{where} is not a gallery description (its format is not {GALLERY_FORMAT!r})")
    for key in ("name", "title", "description", "checkpoints"):
        if not isinstance(raw.get(key), str):
            raise DatasetError(f"{where}: {key!r} must be a string")
    name, sub = raw["name"], raw["checkpoints"]
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
        raise DatasetError(f"{where}: the name {name[:40]!r} must be 1-40 letters, digits, '-' or '_'")
    if Path(sub).is_absolute() or ".." in Path(sub).parts:
        raise DatasetError(f"{where}: 'checkpoints' must be a folder under the checkpoints root")
    order = raw.get("order", 0)
    if not isinstance(order, (int, float)) or isinstance(order, bool) or not math.isfinite(order):
        raise DatasetError(f"{where}: 'order' must be a number")
    images = raw.get("images")
    if images == ".":
        gallery: GallerySpec | Path = path.parent
    elif isinstance(images, dict) and isinstance(images.get("generate"), dict):
        fields = {f.name for f in dataclasses.fields(GallerySpec)}
        spec = images["generate"]
        if set(spec) - fields or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                         for v in spec.values()):
            raise DatasetError(f"{where}: 'generate' takes whole numbers for {', '.join(sorted(fields))}")
        gallery = GallerySpec(**spec)
    else:
        raise DatasetError(f"{where}: 'images' must be \".\" (the dataset beside it) or {{\"generate\": {{...}}}}")
    return order, GalleryDef(name, raw["title"], raw["description"], gallery, Path(checkpoints) / sub)


@dataclasses.dataclass
class SkippedGallery:
    name: str
    title: str
    error: str


class Galleries:
    """The loaded galleries by name (the first is the default) and the ones that could not be loaded."""

    def __init__(self, catalogs: list[Catalog], skipped: list[SkippedGallery] | None = None):
        if not catalogs:
            raise DatasetError("no gallery could be loaded: " + "; ".join(s.error for s in skipped or []))
        self.catalogs = {c.name: c for c in catalogs}
        self.skipped = list(skipped or [])

    @classmethod
    def load(cls, defs: list[GalleryDef], cache_root=None, log=None, models: bool = True,
             **catalog_kwargs) -> Galleries:
        """Load each gallery of ``defs``; one that fails is skipped with its reason (logged), the others load.
        Without ``models`` the checkpoints are discovered, not served: :meth:`load_models` serves them."""
        log = log or (lambda msg: None)
        catalogs, skipped = [], []
        for d in defs:
            catalog = Catalog(d.checkpoints, cache_root, gallery=d.gallery, name=d.name, title=d.title,
                              description=d.description, **catalog_kwargs)
            try:
                catalog.load(log=log, models=models)
            except (DatasetError, OSError, ValueError) as exc:
                reason = catalog.public(str(exc))
                skipped.append(SkippedGallery(d.name, d.title, f"the {d.name} gallery is not available: {reason}"))
                log(skipped[-1].error)
                continue
            if "{n}" in catalog.description:
                catalog.description = catalog.description.format(n=f"{catalog.num_items:,}")
            catalogs.append(catalog)
        for c in catalogs:
            c.siblings = [o for o in catalogs if o is not c]
        return cls(catalogs, skipped)

    def ensure_familiarity(self, log=None) -> None:
        """Every gallery's "is it like us?" check (:meth:`Catalog.ensure_familiarity`), kept in the cache."""
        for catalog in self.catalogs.values():
            catalog.ensure_familiarity(log)

    def load_models(self, log=None) -> None:
        """Serve every gallery's models still warming up (:meth:`Catalog.load_models`), gallery by gallery."""
        for catalog in self.catalogs.values():
            catalog.load_models(log)

    @property
    def names(self) -> list[str]:
        return list(self.catalogs)

    @property
    def default(self) -> Catalog:
        return next(iter(self.catalogs.values()))

    def get(self, name) -> Catalog:
        """The gallery called ``name`` (None or "": the default); an unknown name is refused in one sentence."""
        if name is None or name == "":
            return self.default
        if not isinstance(name, str):  # an API caller's list or dict (unhashable): the same kind of sentence
            raise QueryError(f"the gallery is given by its name, one of: {', '.join(self.catalogs)}")
        if name not in self.catalogs:
            known = ", ".join(self.catalogs)
            missing = next((s for s in self.skipped if s.name == name), None)
            if missing is not None:
                raise QueryError(f"{missing.error}; available galleries: {known}")
            raise QueryError(f"unknown gallery {str(name)[:60]!r}; available galleries: {known}")
        return self.catalogs[name]

    def for_checkpoint(self, checkpoint) -> Catalog:
        """The gallery a checkpoint can serve: the first whose attributes and value counts are the ones it was
        trained on (the default when none is, or its config cannot be read: it is then listed there with why)."""
        from profashion.models.base import ModelError, read_checkpoint_config

        try:
            ds = read_checkpoint_config(checkpoint).get("dataset") or {}
        except ModelError:
            return self.default
        attrs, values = ds.get("attributes"), ds.get("values")
        for c in self.catalogs.values():
            schema = c.dataset.schema
            if attrs == list(schema.names) and isinstance(values, list) and \
                    [len(v) for v in values] == list(schema.num_values):
                return c
        return self.default

    def choices(self) -> list[tuple[str, str]]:
        return [(c.title, c.name) for c in self.catalogs.values()]

    def served_paths(self) -> list[str]:
        return list(dict.fromkeys(p for c in self.catalogs.values() for p in c.served_paths))

    def describe(self) -> list[dict]:
        """``/galleries``: name, title, description, size, attributes, whether it has ground-truth regions, its
        models (each with what it is) and the models that could not serve it (with why); the unavailable
        galleries with why."""
        out = []
        for c in self.catalogs.values():
            out.append({
                "name": c.name, "title": c.title, "description": c.description, "items": c.num_items,
                "attributes": c.attributes, "ground_truth_regions": c.has_regions,
                "models": [{"name": n, "label": e.label, "method": e.method, "about": e.describe()}
                           for n, e in c.models.items()],
                "warming_up": [{"name": n, "label": e.label, "method": e.method, "about": e.describe()}
                               for n, e in c.warming.items()],
                "warming_note": c.warming_note(),
                "skipped_models": [{"name": e.name, "reason": e.error} for e in c.skipped],  # public already
                "available": True,
            })
        out += [{"name": s.name, "title": s.title, "available": False, "reason": s.error} for s in self.skipped]
        return out
