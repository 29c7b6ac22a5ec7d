"""The app's model catalog (no Gradio here): the embedded gallery, the checkpoints found, their indexes.

``Catalog(checkpoints_root, cache_root).load()``

1. generates the embedded gallery, a synthetic garment dataset, deterministically into the cache
   folder (``gallery-v<GENERATOR_VERSION>-s<seed>-<size>px-<train>-<valid>-<test>``), once; its test
   split is the gallery;
2. discovers the models: every sub-folder of the checkpoints root holding ``config.json`` and
   ``model.safetensors`` is a model, named by its folder; a new folder is a new model, no UI change;
3. per model, builds (once, cached in ``indexes/<name>-<checkpoint fp>-<dataset fp>``) and loads a
   gallery index, and serves it from one :class:`RetrievalEngine`. A checkpoint that cannot serve the
   gallery (other attributes, corrupt files) is listed in ``skipped`` with the reason; the others load.

Everything the tabs compute goes through here: search, explain maps with the ground-truth region,
projections, nearest neighbours, the measured mAP (cached per checkpoint) and the published numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from profashion import paths
from profashion.data.images import ImageError, load_image
from profashion.data.splits import DatasetError, SplitDataset, atomic_write_text, load_dataset
from profashion.device import on_gpu
from profashion.io import atomic_path
from profashion.models.base import display_name, method_about
from profashion.retrieval import shipped
from profashion.retrieval.accel import one_thread
from profashion.retrieval.familiar import FamiliarityCheck, check_images, query_features
from profashion.retrieval.index import (
    GalleryIndex,
    GalleryIndexError,
    build_index,
    build_indexes,
    checkpoint_fingerprint,
    dataset_fingerprint,
)
from profashion.retrieval.search import QueryError, RetrievalEngine, SearchResult, attribute_id

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# How long a query waits for a model still warming up (loading, or indexing the gallery) before it is refused with
# the progress; a Retrieve waits RETRIEVE_WAIT, then shows the models not ready yet as warming up in their own rows
# (the page's first Retrieve is sent as it opens: long enough for the shipped models of a cold start, measured
# 8-34 s on 2 cores, so that a visitor sees the whole comparison rather than rows that do not fill by themselves).
WARM_WAIT = 60.0
RETRIEVE_WAIT = 40.0
WARMING = "warming up: still loading, ready in a moment; press Retrieve again"
GALLERY_SPLIT = "test"
NOT_A_QUERY = "the query is not an image this app was given: upload the image, or pick an example or a result"
FAMILIAR_FILE = "gallery-familiar.npz"  # beside the checkpoints: the gallery's familiarity reference, shipped

# Registered method -> its row in retrieval_map.PUBLISHED (PROTOCOL.md). A method without a row simply
# shows no published number.
PUBLISHED_NAME = {
    "triplet": "Triplet network", "csn": "CSN", "asen": "ASEN", "tf-csn": "TF-CSN (ViT)",
    "tf-asen": "TF-ASEN (ViT)", "cca1": "CCA Type-1", "cca2": "CCA Type-2", "profashion": "ProFashion",
}

# The curated examples' attributes, in this order: the larger garment parts first, then the global attributes.
# collar_design and neck_design are left out: their parts are a few pixels at 160 px and invisible on three
# quarters of the gallery, so every shipped model misses them and an example of them teaches nothing.
EXAMPLE_ATTRIBUTES = ("skirt_length", "sleeve_length", "coat_length", "pant_length", "lapel_design",
                      "neckline_design", "texture", "colour")


class Example(NamedTuple):
    """A curated query: a gallery item, its image file, a short caption and the attribute it illustrates
    (visible in the image: its value is known, not 'Invisible', and its ground-truth region is the largest
    of the gallery's items with that attribute)."""

    item: int
    path: str
    caption: str
    attribute: str


@dataclasses.dataclass(frozen=True)
class GallerySpec:
    """The embedded synthetic gallery: image counts per split, image size, seed."""

    n_train: int = 16
    n_valid: int = 16
    n_test: int = 400
    size: int = 160  # the demo presets' input size (the models see the garments' parts at 160 px)
    seed: int = 12345

    def folder_name(self) -> str:
        from profashion.data.synth import GENERATOR_VERSION

        return f"gallery-v{GENERATOR_VERSION}-s{self.seed}-{self.size}px-{self.n_train}-{self.n_valid}-{self.n_test}"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# What a checkpoint's config.json says about itself and the app shows (ModelEntry.describe): (section, field, check,
# what it must be). The model's own settings ("config") are checked in full when it is loaded (check_config).
DESCRIBED_FIELDS = (
    ("config", "preset", lambda v: isinstance(v, str) and len(v) <= 100, "text"),
    ("config", "backbone", lambda v: isinstance(v, str) and len(v) <= 100, "text"),
    ("config", "image_size", _is_int, "a whole number"),
    ("dataset", "name", lambda v: isinstance(v, str) and len(v) <= 200, "text of at most 200 characters"),
    ("trainer", "epoch", lambda v: _is_int(v) and 0 <= v <= 1_000_000, "a whole number from 0 to 1,000,000"),
    # a real number: a run whose first epoch was NaN records -Infinity (not damage; describe() leaves it out)
    ("trainer", "best", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
)


def described_problem(config: dict) -> str | None:
    """What is malformed in the parts of a checkpoint's config.json that the app shows (:data:`DESCRIBED_FIELDS`),
    as ``"<section>.<field> must be <what>"``, or None. Absent and null fields are fine; the values themselves are
    never repeated (they may be anything)."""
    if not isinstance(config.get("config"), dict):
        return "'config' must be an object"
    for section in ("dataset", "trainer"):
        if config.get(section) is not None and not isinstance(config[section], dict):
            return f"'{section}' must be an object"
    for section, name, ok, what in DESCRIBED_FIELDS:
        value = (config.get(section) or {}).get(name)
        if value is not None and not ok(value):
            return f"{section}.{name} must be {what}"
    return None


def _is_map(v) -> bool:
    return _is_number(v) and 0 <= v <= 100


def _is_interval(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_map(x) for x in v) and v[0] <= v[1]


MAX_RESULT_ATTRIBUTES = 256  # as many as a model may have (ModelConfig.MAX_ATTRIBUTES)


def numbers_problem(r) -> str | None:
    """What is malformed in one row of measured numbers (``MAPResult.to_json``: a shipped model's or random's row of
    results.json, a measurement cached by :meth:`Catalog.measured`), as one clause, or None when every number the
    Results tab shows is well formed: ``overall`` and ``per_attribute`` mAPs (finite, 0 to 100), ``n_queries``
    (positive whole numbers, the same attributes), ``ci95`` / ``per_attribute_ci95`` (pairs of such mAPs, low
    first) where present, ``no_queries`` (attribute names) where present."""
    if not isinstance(r, dict):
        return "a row of numbers must be an object"
    if not _is_map(r.get("overall")):
        return "overall must be a mAP: a finite number from 0 to 100"
    n = r.get("n_queries")
    if not (isinstance(n, dict) and 1 <= len(n) <= MAX_RESULT_ATTRIBUTES
            and all(isinstance(a, str) and _is_int(c) and 1 <= c <= 10**9 for a, c in n.items())):
        return "n_queries must give each attribute a positive whole number of queries"
    per = r.get("per_attribute")
    if not (isinstance(per, dict) and set(per) == set(n) and all(_is_map(v) for v in per.values())):
        return "per_attribute must give each attribute of n_queries a mAP from 0 to 100"
    if "ci95" in r and not _is_interval(r["ci95"]):
        return "ci95 must be a pair of finite numbers from 0 to 100, the lower first"
    if "per_attribute_ci95" in r:
        per_ci = r["per_attribute_ci95"]
        if not (isinstance(per_ci, dict) and set(per_ci) == set(n) and all(_is_interval(v) for v in per_ci.values())):
            return ("per_attribute_ci95 must give each attribute of n_queries a pair of finite numbers from 0 to 100, "
                    "the lower first")
    if "no_queries" in r:
        none = r["no_queries"]
        if not (isinstance(none, list) and len(none) <= MAX_RESULT_ATTRIBUTES
                and all(isinstance(a, str) and a not in n for a in none)):
            return "no_queries must list attributes without queries"
    return None


@dataclasses.dataclass
class ModelEntry:
    """One discovered checkpoint folder, loaded or not (``error`` says why not). An entry whose config.json is
    malformed where the app describes the model (:func:`described_problem`) is born with its error: that model
    is skipped with one sentence naming the folder and the field, and the app starts with the others."""

    name: str
    checkpoint: Path
    config: dict
    fingerprint: str = ""
    index_dir: Path | None = None
    error: str | None = None
    load_seconds: float = 0.0
    shipped: bool = False  # its gallery index came from the checkpoint's shipped copy (retrieval.shipped)

    def __post_init__(self):
        if self.error is None:
            problem = described_problem(self.config)
            if problem is not None:
                self.error = (f"checkpoint {self.name!r} is skipped: its config.json is damaged ({problem}); "
                              "copy or train the checkpoint again")

    @property
    def method(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def label(self) -> str:
        """The model's one name for people, everywhere (the method's registered display name; a checkpoint of
        another name, e.g. a published fine-tuned one, adds it: "asen-ft (ASEN)")."""
        shown = display_name(self.method)
        return shown if self.name == self.method else f"{self.name} ({shown})"

    @property
    def about(self) -> str:
        """What the model's method is, in one line (its registration's)."""
        return method_about(self.method) or f"method {self.method}"

    @property
    def published_name(self) -> str | None:
        return PUBLISHED_NAME.get(self.method)

    def describe(self) -> str:
        """One line: method, preset, backbone, input size, training data and best validation score. Only fields of
        the right type are shown (a loaded entry's were checked: :func:`described_problem`), so it never raises."""
        def field(section: str, name: str, ok):
            part = self.config.get(section)
            value = part.get(name) if isinstance(part, dict) else None
            return value if value is not None and ok(value) else None

        text = lambda v: isinstance(v, str) and 0 < len(v) <= 200  # noqa: E731
        parts = [f"method {self.method}"]
        if (preset := field("config", "preset", text)) is not None:
            parts.append(f"preset {preset}")
        if (backbone := field("config", "backbone", text)) is not None:
            parts.append(f"backbone {backbone}")
        if (size := field("config", "image_size", lambda v: _is_int(v) and 0 < v <= 100_000)) is not None:
            parts.append(f"{size} px")
        if (data := field("dataset", "name", text)) is not None:
            parts.append(f"trained on {data}")
        epoch = field("trainer", "epoch", lambda v: _is_int(v) and 0 <= v <= 1_000_000)
        if epoch is not None:
            parts.append(f"epoch {epoch + 1}")
            if (best := field("trainer", "best", _is_number)) is not None:
                parts.append(f"best valid mAP {best:.2f}")
        return ", ".join(parts)


@dataclasses.dataclass
class Explained:
    """One model's maps for one image and attribute, as pictures, with localisation scores."""

    model: str
    panels: list  # explain.render.RenderedPanel
    numbers: dict[str, float]
    mask_share: float | None  # percent of the image inside the ground-truth region (None: no mask)
    note: str = ""


class CatalogModels:
    """A catalog's models: found in its checkpoints folder, served once their gallery index is ready (built in one
    pass of the shared frozen trunk, or shipped), listed as warming up meanwhile, refused in one sentence when
    unknown or failed: a part of :class:`Catalog`, which holds the state."""

    def load_models(self, log=None) -> None:
        """Serve every model still warming up, each as soon as it is ready (readers see the models one by one):
        from its index in the cache, else from the index shipped beside its checkpoint
        (:mod:`~profashion.retrieval.shipped`), else indexed with every other model that needs it in one pass
        per image of each shared trunk (:func:`~profashion.retrieval.index.build_indexes`)."""
        log = log or (lambda msg: None)
        need = []
        for entry in list(self.warming.values()):
            if not self._serve_ready(entry, log):
                need.append(entry)
        if not need:
            return
        t0 = time.perf_counter()
        names = ", ".join(e.name for e in need)
        log(f"indexing the gallery with {names} (one trunk pass per image for the models that share it)")
        with self._ready:
            self.warming_note_text = f"indexing the gallery with {names}"
        served = set()

        def done(i, out):
            entry = need[i]
            try:
                self._serve(entry, GalleryIndex.load(out, checkpoint=entry.checkpoint, dataset=self.dataset), t0,
                            log)
            except (GalleryIndexError, DatasetError, OSError) as exc:
                self._fail(entry, exc, log)
            served.add(entry.name)

        try:
            build_indexes([e.checkpoint for e in need], self.dataset, [e.index_dir for e in need],
                          split=GALLERY_SPLIT, batch_size=64, device=self.engine.device, on_model=done)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not cost the others: each alone
            log(self.public(f"indexing together failed ({type(exc).__name__}: {exc}); indexing one by one"))
            for entry in need:
                if entry.name not in served:
                    self._build_alone(entry, log)

    def _ready_index(self, entry: ModelEntry, log) -> GalleryIndex | None:
        """The entry's index from the cache, else unpacked from its shipped copy; None when it must be built (its
        fingerprint and index folder are set on the way)."""
        ds = self.dataset
        entry.fingerprint = checkpoint_fingerprint(entry.checkpoint)
        data_fp = dataset_fingerprint(ds, [GALLERY_SPLIT])
        out = self.cache_root / "indexes" / f"{entry.name}-{entry.fingerprint[:12]}-{data_fp[:12]}"
        entry.index_dir = out
        if (out / "manifest.json").is_file():
            try:
                index = GalleryIndex.load(out, checkpoint=entry.checkpoint, dataset=ds)
                index.embeddings  # noqa: B018 - checked against its checksum now, not at the first plot
                return index
            except GalleryIndexError:
                pass  # damaged: made again
        if self.use_shipped and (entry.checkpoint / shipped.FOLDER).is_dir():
            try:  # shipped beside the checkpoint: unpacked into the cache in well under a second
                if self._images_digest is None:  # once per gallery, not once per model
                    self._images_digest = shipped.images_digest(ds, GALLERY_SPLIT)
                shipped.unpack(entry.checkpoint / shipped.FOLDER, entry.checkpoint, ds, GALLERY_SPLIT, out,
                               self.max_points, checkpoint_fp=entry.fingerprint, images=self._images_digest)
                entry.shipped = True
                return GalleryIndex.load(out, checkpoint=entry.checkpoint, dataset=ds)
            except GalleryIndexError as exc:
                log(self.public(f"{entry.name}: {exc}; indexing the gallery instead"))
        out.parent.mkdir(parents=True, exist_ok=True)
        return None

    def _build_alone(self, entry: ModelEntry, log) -> None:
        from profashion.models.base import ModelError

        t0 = time.perf_counter()
        try:
            log(f"indexing the gallery with {entry.name}")
            build_index(entry.checkpoint, self.dataset, entry.index_dir, split=GALLERY_SPLIT, backend=self.backend,
                        batch_size=64, overwrite=True)
            index = GalleryIndex.load(entry.index_dir, checkpoint=entry.checkpoint, dataset=self.dataset)
        except (GalleryIndexError, ModelError, DatasetError, RuntimeError, OSError, KeyError, TypeError) as exc:
            self._fail(entry, exc, log)
            return
        self._serve(entry, index, t0, log)

    def _serve(self, entry: ModelEntry, index: GalleryIndex, t0: float, log) -> None:
        from profashion.models.base import ModelError, load_model

        try:
            self.engine.add(entry.name, index, model=load_model(entry.checkpoint, device=self.engine.device),
                            backend=self.backend)
        except (GalleryIndexError, ModelError, DatasetError, RuntimeError, OSError, KeyError, TypeError) as exc:
            self._fail(entry, exc, log)
            return
        entry.load_seconds = time.perf_counter() - t0
        with self._ready:
            # rebound, not mutated: readers never see a dict change under them; in discovery order
            models = {**self.models, entry.name: entry}
            self.models = {n: models[n] for n in [*self._order, *models] if n in models}
            self.warming = {n: e for n, e in self.warming.items() if n != entry.name}
            if not self.warming:
                self.warming_note_text = ""
            self._ready.notify_all()

    def _fail(self, entry: ModelEntry, exc: Exception, log) -> None:
        entry.error = self.public(f"checkpoint {entry.name!r} cannot serve the gallery: {exc}")
        log(entry.error)
        with self._ready:
            self.skipped = [*self.skipped, entry]
            self.warming = {n: e for n, e in self.warming.items() if n != entry.name}
            self._ready.notify_all()

    @property
    def listed(self) -> list[str]:
        """The models a visitor can choose: the served ones and the ones still warming up, in discovery order."""
        served, warming = self.models, self.warming
        return [n for n in dict.fromkeys([*self._order, *served]) if n in served or n in warming]

    def entry(self, name: str) -> ModelEntry | None:
        """The served or warming model called ``name`` (None: neither)."""
        return self.models.get(name) or self.warming.get(name)

    def label_of(self, name: str) -> str:
        """The served or warming model's name for people (:attr:`ModelEntry.label`); another name as it is."""
        entry = self.entry(name)
        return entry.label if entry is not None else name

    def warming_note(self) -> str:
        """One line on the models still warming up, with the progress ("" when every model is served)."""
        warming = list(self.warming)
        if not warming:
            return ""
        done = len(self.models)
        what = f": {self.warming_note_text}" if self.warming_note_text else ""
        return (f"{done} of {done + len(warming)} models ready; warming up: {', '.join(warming)}{what}")

    def wait_ready(self, names, timeout: float) -> None:
        """Wait until none of ``names`` is warming up, or ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._ready:
            while any(n in self.warming for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._ready.wait(left)

    def discover(self) -> list[ModelEntry]:
        """Every sub-folder of the checkpoints root with config.json + model.safetensors, by name."""
        from profashion.models.base import ModelError, read_checkpoint_config

        out = []
        root = self.checkpoints_root
        if not root.is_dir():
            return out
        for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not ((d / "config.json").is_file() and (d / "model.safetensors").is_file()):
                continue
            try:
                cfg = read_checkpoint_config(d)
            except ModelError as exc:
                out.append(ModelEntry(d.name, d, {}, error=self.public(str(exc))))
                continue
            entry = ModelEntry(d.name, d, cfg)
            if entry.error is None:
                entry.error = self._schema_problem(entry)
            out.append(entry)
        return out

    def _schema_problem(self, entry: ModelEntry) -> str | None:
        """Why the checkpoint cannot serve this gallery, when its config.json already says so (other attributes or
        value counts), so that it is never offered as warming up; None when it may serve it."""
        values = (entry.config.get("config") or {}).get("num_values")
        if self.dataset is None or not isinstance(values, list):
            return None
        schema = self.dataset.schema
        if len(values) != schema.num_attributes:
            return (f"checkpoint {entry.name!r} cannot serve the gallery: it was trained on {len(values)} attributes "
                    f"but the gallery has {schema.num_attributes}: index a dataset with the model's attributes")
        if [v if isinstance(v, int) else None for v in values] != list(schema.num_values):
            return (f"checkpoint {entry.name!r} cannot serve the gallery: its attributes have other numbers of values "
                    "than the gallery's")
        return None

    def failure(self, name: str) -> str | None:
        """Why model ``name`` was found but cannot serve the gallery (None: it can, or there is no such model)."""
        e = next((e for e in self.skipped if e.name == name), None)
        return (e.error or f"model {name!r} cannot serve the gallery") if e is not None else None

    def _add(self, entry: ModelEntry, log) -> None:
        """Serve one more discovered entry now (a published job's checkpoint), or list it as skipped."""
        if entry.error:
            self.skipped = [*self.skipped, entry]
            return
        with self._ready:
            self._order = [*self._order, entry.name]
            self.warming = {**self.warming, entry.name: entry}
        if not self._serve_ready(entry, log):
            self._build_alone(entry, log)

    def _serve_ready(self, entry: ModelEntry, log) -> bool:
        """Serve ``entry`` from its cached or shipped index (:meth:`_ready_index`); False when it must be indexed
        first (an entry that fails is listed as skipped: True)."""
        t0 = time.perf_counter()
        try:
            index = self._ready_index(entry, log)
        except (GalleryIndexError, DatasetError, OSError) as exc:
            self._fail(entry, exc, log)
            return True
        if index is None:
            return False
        self._serve(entry, index, t0, log)
        return True

    def add_checkpoint(self, name: str, checkpoint: str | os.PathLike, log=None) -> ModelEntry:
        """Serve one more checkpoint (e.g. a fine-tuning job's best) under ``name``: index the gallery with it
        and add it to the models; a checkpoint that cannot serve the gallery is listed in ``skipped``."""
        from profashion.models.base import ModelError, read_checkpoint_config

        with self._add_lock:
            if name in self.models:
                return self.models[name]
            self.skipped = [e for e in self.skipped if e.name != name]
            path = Path(checkpoint)
            try:
                entry = ModelEntry(name, path, read_checkpoint_config(path))
            except ModelError as exc:
                entry = ModelEntry(name, path, {}, error=self.public(str(exc)))
            self._add(entry, log or (lambda msg: None))
            return entry

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def empty_message(self) -> str | None:
        """Why no model can be shown and what to do, or None when at least one is loaded or warming up."""
        if self.models or self.warming:
            return None
        msg = (f"No trained model checkpoint was found in `{self.checkpoints_root}`. Run `make checkpoints` to "
               "train every implemented model with the documented presets (or copy a checkpoint folder holding "
               "`config.json` and `model.safetensors` there), then restart the app.")
        if self.skipped:
            msg += " Checkpoints found but not usable: " + "; ".join(e.error or e.name for e in self.skipped)
        return msg

    def check_models(self, names, wait: float | None = None, warming_ok: bool = False) -> list[str]:
        """``names`` without blanks, each a served model: one still warming up is waited for (``wait`` seconds,
        :data:`WARM_WAIT` by default), then refused with the progress in one sentence, unless ``warming_ok``
        (the caller answers it itself); an unknown one, or one that could not be served, is refused."""
        if not self.models and not self.warming:
            raise QueryError(self.empty_message())
        names = self.asked(names)
        if not names:
            raise QueryError("no model selected: tick at least one model")
        self._refuse_unserved(names)
        self.wait_ready(names, WARM_WAIT if wait is None else wait)
        self._refuse_unserved(names)  # one may have failed while warming up
        warming = [n for n in names if n in self.warming]
        if warming and not warming_ok:
            raise QueryError(f"model {warming[0]!r} is still warming up ({self.warming_note()}); try again in a "
                             "moment")
        return names

    def asked(self, names) -> list[str]:
        """The model names a request asks for, blanks left out: a list (or tuple) of names; anything else (an API
        caller's number, dict or nested list) is refused in one sentence."""
        if names is None or names == "":
            return []
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or \
                not all(n is None or isinstance(n, str) for n in names):
            raise QueryError("the models are given as a list of model names; loaded models: "
                             + ", ".join(self.listed))
        return [n for n in names if n]

    def _refuse_unserved(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self.models and n not in self.warming]
        if not unknown:
            return
        failed = next((e for e in self.skipped if e.name == unknown[0]), None)
        if failed is not None:
            raise QueryError(failed.error or f"model {failed.name!r} cannot serve the gallery")
        raise QueryError(f"unknown model {unknown[0]!r}; loaded models: {', '.join(self.listed)}")


class CatalogQueries:
    """What a catalog answers about a query: the image read only from the served roots, recognised as a gallery
    item, searched by the chosen models, explained, projected, its neighbours; and the models' numbers measured
    on the gallery: a part of :class:`Catalog`."""

    def check_query(self, path) -> Path:
        """The query file, refused with one clear sentence when missing, too big or not an image."""
        return self.decode_query(path)[0]

    def confine_queries(self, roots) -> None:
        """Query files are read from ``roots`` only (the app's upload folder, the galleries, the kept uploads)."""
        self.query_roots = tuple(Path(r).resolve() for r in roots)

    def allows(self, path) -> bool:
        """Whether the query file ``path`` may be read: inside :attr:`query_roots` once every link is followed
        (a link inside pointing out is outside), or anywhere when they are not set. Nothing is read to decide."""
        if self.query_roots is None:
            return True
        try:
            rp = Path(path).resolve()
        except (OSError, RuntimeError, ValueError, TypeError):
            return False
        return any(rp.is_relative_to(r) for r in self.query_roots)

    def decode_query(self, path):
        """(the query file, its decoded RGB image): decoded once per request, refused with one clear sentence
        when missing, too big or not an image, or outside the folders queries are read from (the same sentence
        whether such a file exists or not)."""
        if path is None or path == "":
            raise QueryError("no query image: upload an image or click one of the examples")
        if not isinstance(path, (str, os.PathLike)) or not self.allows(path):
            raise QueryError(NOT_A_QUERY)
        p = Path(path)
        if not p.is_file():
            raise QueryError(f"the query image {p.name} is no longer available; upload it again")
        size = p.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise QueryError(f"the upload is {size / 2**20:.1f} MB, more than the {MAX_UPLOAD_BYTES // 2**20} MB "
                             "we accept; resize it and try again")
        try:
            img = load_image(p)
        except ImageError as exc:
            raise QueryError(str(exc).replace(str(p), "the upload")) from None
        return p, img

    def identify(self, path) -> int | None:
        """The gallery item a query file is (same path or same bytes), else None."""
        if path is None or not isinstance(path, (str, os.PathLike)) or not self.allows(path):
            return None
        p = Path(path)
        try:
            rp = p.resolve()
            root = (self.gallery_root / "images" / GALLERY_SPLIT).resolve()
            if rp.parent == root:
                stem = rp.stem
                if stem.isdigit() and int(stem) < self.num_items and str(self.dataset.image_path(
                        GALLERY_SPLIT, int(stem)).resolve()) == str(rp):
                    return int(stem)
            if not p.is_file() or p.stat().st_size > MAX_UPLOAD_BYTES:
                return None
            from profashion.explorer.public import content_digest

            with self._lock:
                if self._by_hash is None:
                    self._by_hash = {content_digest(self.item_path(i)): i for i in range(self.num_items)}
            return self._by_hash.get(content_digest(p))
        except OSError:
            return None

    def query_value(self, item: int | None, a: int) -> str | None:
        if item is None:
            return None
        v = int(self.dataset.split(GALLERY_SPLIT).known_values(self.dataset.schema.num_attributes)[item, a])
        return self.dataset.schema.values[a][v] if v >= 0 else None

    @on_gpu
    def search(self, path, attribute, names, k: int = 5) -> tuple[dict[str, SearchResult], int | None]:
        """Top-``k`` of each named model for the query file; the query's own gallery item is left out."""
        asked = self.asked(names)
        failed = {n: self.failure(n) for n in asked if n not in self.models and n not in self.warming
                  and self.failure(n)}  # failed while warming up (the page may still tick it): its own row
        names = self.check_models([n for n in asked if n not in failed] or asked, wait=RETRIEVE_WAIT, warming_ok=True)
        a = self.attribute_index(attribute)
        p, img = self.decode_query(path)
        item = self.identify(p)
        ready = [n for n in names if n in self.models]
        qv = self.query_value(item, a)
        results = self.engine.search_all(img, a, k=k, names=ready, exclude=[item] if item is not None else (),
                                         query_value=qv, exclude_query=False) if ready else {}
        note = self.warming_note()
        # a model still warming up answers in its own row, so that the others are not kept waiting for it
        out = {n: results.get(n) or SearchResult(n, self.entry(n).method if self.entry(n) else "?",
                                                 self.attributes[a], [], qv, error=f"{WARMING} ({note})")
               for n in names}
        out.update({n: SearchResult(n, "?", self.attributes[a], [], qv, error=why) for n, why in failed.items()})
        return {n: out[n] for n in asked if n in out}, item

    def ensure_familiarity(self, log=None) -> FamiliarityCheck | None:
        """The gallery's "is it like us?" check (:mod:`profashion.retrieval.familiar`): the one kept in the cache,
        else the one shipped beside the checkpoints (:data:`FAMILIAR_FILE`, ``scripts/ship_indexes.py``), each only
        when made from these very image files (their digest), else computed from them (about 85 ms an image on 2
        cores) and kept in the cache. None when it cannot be made (the warning is then not given)."""
        from profashion.models.base import ModelError

        if self.familiarity is not None or self.dataset is None:
            return self.familiarity
        try:
            if self._images_digest is None:
                self._images_digest = shipped.images_digest(self.dataset, GALLERY_SPLIT)
            path = self.cache_root / "familiar" / f"{self.name}-{self._images_digest[:24]}.npz"
            check = (FamiliarityCheck.load(path, self._images_digest, self.num_items)  # the cache's, else shipped
                     or FamiliarityCheck.load(Path(self.checkpoints_root) / FAMILIAR_FILE, self._images_digest,
                                              self.num_items))
            if check is None:
                t0 = time.perf_counter()
                check = check_images([self.item_path(i) for i in range(self.num_items)],
                                     fingerprint=self._images_digest)
                check.save(path)
                if log:
                    log(f"{self.name} gallery: its familiarity check made in {time.perf_counter() - t0:.0f} s")
        except (OSError, ValueError, ImageError, ModelError) as exc:
            if log:
                log(f"{self.name} gallery: no familiarity check ({self.public(str(exc))})")
            return None
        self.familiarity = check
        return check

    def unfamiliar_warning(self, image) -> str:
        """"" when the (uploaded, decoded) ``image`` looks like this gallery's images, or while the check is not made
        yet; else one sentence saying so, and naming the other gallery when the image looks like that one's."""
        if self.familiarity is None:
            return ""
        feats = query_features(image)
        if not self.familiarity.unfamiliar(feats)[0]:
            return ""
        other = next((c for c in self.siblings if c.familiarity is not None and not c.familiarity.unfamiliar(feats)[0]),
                     None)
        what = f"the {self.title.lower()} gallery"
        if other is not None:
            return (f"This upload looks unlike {what} and like the {other.title.lower()} one: try that gallery (the "
                    "switch at the top), where these models were trained on images like it.")
        return (f"This upload looks unlike {what} (and unlike every gallery here): the models were trained on "
                "images like the gallery's, so these results may mean little. Try an image like the gallery's.")

    @on_gpu
    @torch.no_grad()
    def explain(self, name: str, path, attribute, item: int | None = None, image=None) -> Explained:
        """The model's :class:`~profashion.explain.explanation.Explanation` for the query, each map drawn by its
        kind (with the sentence saying what it means), with the ground-truth region when known; ``image`` is
        the query already decoded (:meth:`decode_query`), if it is."""
        from profashion.data.masks import load_attribute_masks
        from profashion.explain.render import explain_panels

        a = self.attribute_index(attribute)
        model = self.engine.model(name)
        pre = model.preprocess
        img = image if image is not None else load_image(path)
        with one_thread():  # one image: see accel.one_thread
            explanation = model.explain(pre.to_tensor(img).to(model.device), a)
        shown = np.asarray(pre.geometry(img))
        mask, share, note = None, None, ""
        if item is not None and self.dataset.mask_path(GALLERY_SPLIT, item) is not None:
            masks = load_attribute_masks(self.dataset.mask_path(GALLERY_SPLIT, item), self.dataset.schema.num_attributes)
            m = pre.geometry_mask(masks[a])
            if m.any():
                mask, share = m, 100.0 * float(m.mean())
            else:
                note = f"{self.attributes[a]} is not visible in this image: there is no region to localise"
        elif item is None:
            note = "an uploaded image has no ground-truth region; pick a gallery example to see localisation scores"
        panels, numbers = explain_panels(shown, explanation, mask, a, self.attributes)
        return Explained(name, panels, numbers, share, note)

    def projection(self, name: str, attribute, method: str = "tsne"):
        from profashion.retrieval.projection import METHODS, attribute_projection

        if method not in METHODS:
            raise QueryError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
        a = self.attribute_index(attribute)
        self.check_models([name])
        return attribute_projection(self.engine.index(name), a, method=method, seed=0, max_points=self.max_points)

    def neighbours(self, name: str, attribute, item: int, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` nearest gallery items of ``item`` in the model's space of ``attribute`` (cosine)."""
        a = self.attribute_index(attribute)
        self.check_models([name])
        if item is None or not (0 <= int(item) < self.num_items):
            raise QueryError(f"item must be a gallery item id between 0 and {self.num_items - 1}")
        index = self.engine.index(name)
        vec = np.asarray(index.embeddings[int(item), a], dtype=np.float32)
        scores, ids = index.search_vectors(vec[None], a, k, exclude=[int(item)])
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]

    @on_gpu(duration=120)
    def measured(self, name: str, compute: bool = True) -> dict | None:
        """mAP (percent) per attribute and overall of ``name`` on the gallery dataset's test split
        (PROTOCOL.md), cached per checkpoint and dataset; None when not computed and ``compute`` is False."""
        from profashion.evaluation.evaluate import evaluate_model

        self.check_models([name])
        entry = self.models[name]
        data_fp = dataset_fingerprint(self.dataset, [GALLERY_SPLIT])
        # v2: results carry per-query APs and 95% intervals (older cached results are measured again)
        key = f"{name}-{entry.fingerprint[:12]}-{data_fp[:12]}-v2"
        if key in self._results:
            return self._results[key]
        path = self.cache_root / "results" / f"{key}.json"
        if path.is_file():
            try:
                res = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                res = None
            if numbers_problem(res) is None:  # a damaged cache file is measured again, as if it were not there
                self._results[key] = res
                return res
        if not compute:
            return None
        t0 = time.perf_counter()
        model = self.engine.model(name).model
        r = evaluate_model(model, self.dataset, split=GALLERY_SPLIT)
        res = {**r.to_json(self.dataset.schema), "seconds": round(time.perf_counter() - t0, 2),
               "dataset": self.dataset.name, "split": GALLERY_SPLIT}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(res, indent=2) + "\n")
        self._results[key] = res
        return res


class Catalog(CatalogModels, CatalogQueries):
    """The embedded gallery, the discovered models and everything the app asks of them."""

    def __init__(self, checkpoints_root: str | os.PathLike | None = None, cache_root: str | os.PathLike | None = None,
                 gallery: GallerySpec | str | os.PathLike = GallerySpec(), backend: str = "fp32",
                 max_points: int = 5000, device: str = "cpu", name: str = "synthetic", title: str | None = None,
                 description: str = "", use_shipped: bool = True):
        self.checkpoints_root = Path(checkpoints_root) if checkpoints_root is not None else paths.checkpoints_root()
        self.cache_root = Path(cache_root) if cache_root is not None else paths.cache_root()
        # a GallerySpec is generated into the cache; a folder is a dataset shipped as it is (its test split)
        self.spec = gallery if isinstance(gallery, GallerySpec) else None
        self.folder = None if isinstance(gallery, GallerySpec) else Path(gallery)
        self.name = name
        self.title = title or name
        self.description = description
        self.backend = backend
        self.use_shipped = use_shipped  # start from the indexes shipped beside the checkpoints (retrieval.shipped)
        self.max_points = max_points
        self.engine = RetrievalEngine(device)
        self.models: dict[str, ModelEntry] = {}
        self.skipped: list[ModelEntry] = []
        self.dataset: SplitDataset | None = None
        self.examples: list[Example] = []
        self._by_hash: dict[str, int] | None = None
        self._lock = threading.Lock()
        self._add_lock = threading.Lock()
        self._ready = threading.Condition()  # served or failed: the waiters of wait_ready look again
        self._order: list[str] = []  # the models' discovery order
        self.warming: dict[str, ModelEntry] = {}  # discovered, not yet served (load_models serves them)
        self.warming_note_text = ""
        self._results: dict[str, dict] = {}
        self.familiarity: FamiliarityCheck | None = None  # the gallery's check, once made (ensure_familiarity)
        # the folders a query file may be read from (None: any, the library's use); the app sets them to what it
        # serves (confine_queries): a query is a JSON path the caller chose, and /etc/passwd is a path too
        self.query_roots: tuple[Path, ...] | None = None
        self.siblings: list[Catalog] = []  # the app's other galleries (Galleries sets them)
        self._work_root: Path | None = None
        self._images_digest: str | None = None  # the gallery's image files' digest (retrieval.shipped)

    @property
    def gallery_root(self) -> Path:
        """The gallery's dataset folder: the shipped folder, or the generated one in the cache."""
        return self.folder if self.folder is not None else self.cache_root / self.spec.folder_name()

    @property
    def work_root(self) -> Path:
        """Where files drawn from the gallery (framed thumbnails) are kept: the generated gallery's own folder in
        the cache, a cache folder per shipped gallery (its content's fingerprint in the name), never the shipped
        folder itself."""
        if self.folder is None:
            return self.gallery_root
        if self.dataset is None:
            return self.cache_root / f"gallery-{self.name}-unloaded"
        if self._work_root is None:  # the fingerprint reads the split's files: once
            fp = dataset_fingerprint(self.dataset, [GALLERY_SPLIT])
            self._work_root = self.cache_root / f"gallery-{self.name}-{fp[:12]}"
        return self._work_root

    @property
    def has_regions(self) -> bool:
        """Whether the gallery has ground-truth regions (masks) of its attributes."""
        return self.dataset is not None and self.dataset.mask_root is not None

    @property
    def served_paths(self) -> list[str]:
        """The folders the app may serve files from for this gallery (its images, its thumbnails)."""
        return list(dict.fromkeys([str(self.gallery_root), str(self.work_root)]))

    def public(self, text: str) -> str:
        """``text`` with no server folder: the checkpoints folder as ``<checkpoints>``, the gallery as its name,
        the cache as ``<cache>``, any other absolute path by its last part (:func:`public.public_text`)."""
        from profashion.explorer.public import public_text

        names = [(self.checkpoints_root, "<checkpoints>"), (self.cache_root, "<cache>")]
        if self.folder is not None:
            names.append((self.folder, f"<{self.name} gallery>"))
        return public_text(text, names)

    def load(self, log=None, models: bool = True) -> Catalog:
        """Generate (or reuse) the gallery and discover its checkpoints; with ``models``, serve them now
        (:meth:`load_models`). Without, they are listed as warming up until :meth:`load_models` serves them (the
        app runs it in the background, so that its port answers at once)."""
        log = log or (lambda msg: None)
        self.dataset = self._ensure_gallery(log)
        self._spread = self._shipped_spread()
        self.examples = self._pick_examples()
        found = self.discover()
        self.skipped = [*self.skipped, *(e for e in found if e.error)]
        with self._ready:
            self._order = [e.name for e in found if not e.error]
            self.warming = {e.name: e for e in found if not e.error}
        if models:
            self.load_models(log)
        return self

    def _ensure_gallery(self, log) -> SplitDataset:
        from profashion.data.synth import generate_synth

        root = self.gallery_root
        if self.folder is not None:  # shipped: loaded as it is, and its images must be there
            ds = load_dataset(root)
            split = ds.split(GALLERY_SPLIT) if GALLERY_SPLIT in ds.splits else None
            if split is None or split.filenames is None or not split.num_images:
                raise DatasetError(f"the gallery folder {root.name} has no {GALLERY_SPLIT} images "
                                   f"(filenames_{GALLERY_SPLIT}.txt)")
            missing = ds.missing_images(GALLERY_SPLIT)
            if missing:
                raise DatasetError(f"the gallery folder {root.name} lacks its images (e.g. {missing[0].name})")
            return ds
        if not (root / "meta.json").is_file():
            t0 = time.perf_counter()
            s = self.spec
            log(f"generating the embedded gallery ({s.n_train + s.n_valid + s.n_test} synthetic images) in {root}")
            try:
                generate_synth(root, s.n_train, s.n_valid, s.n_test, size=s.size, seed=s.seed)
            except (DatasetError, OSError):
                if not (root / "meta.json").is_file():  # not another process that finished first
                    raise
            log(f"gallery ready in {time.perf_counter() - t0:.1f} s")
        return load_dataset(root)

    def _pick_examples(self, n: int = 8) -> list[Example]:
        """One gallery image per attribute of EXAMPLE_ATTRIBUTES (in that order, then the schema's others), each
        showing that attribute clearly: a visible value (index > 0 for the local attributes, whose value 0 is
        'Invisible') and, where masks exist, the item whose ground-truth region of it is the largest."""
        from profashion.data.masks import load_attribute_masks

        ds = self.dataset
        schema = ds.schema
        values = ds.split(GALLERY_SPLIT).known_values(schema.num_attributes)
        names = [a for a in EXAMPLE_ATTRIBUTES if a in schema.names]
        # then the others, where the shipped models differ most first (a trivial attribute, e.g. masterCategory,
        # that every model gets right teaches nothing as the page's first example)
        spread = getattr(self, "_spread", None) or {}
        names += sorted((a for a in schema.names if a not in names), key=lambda a: -spread.get(a, (0.0,))[0])
        shares = np.zeros(values.shape, np.float64)  # share of each item's image inside each attribute's region
        has_masks = False
        for item in range(len(values)):
            mp = ds.mask_path(GALLERY_SPLIT, item)
            if mp is None:
                continue
            try:
                masks = load_attribute_masks(mp, schema.num_attributes)
            except (OSError, ValueError, DatasetError):
                continue
            has_masks = True
            shares[item] = masks.reshape(len(masks), -1).mean(axis=1)
        chosen: list[Example] = []
        for name in names:
            if len(chosen) >= n:
                break
            a = schema.attribute_index(name)
            local = schema.values[a][0].lower() == "invisible"
            taken = {c.item for c in chosen}
            ok = [i for i in range(len(values)) if i not in taken and int(values[i, a]) >= (1 if local else 0)
                  and (not has_masks or shares[i, a] > 0)]
            if not ok:
                continue
            if has_masks:
                item = max(ok, key=lambda i: (shares[i, a], -i))
            else:  # no regions (real photos): a common value, alternating the most and the second most common
                count = collections.Counter(int(values[i, a]) for i in ok)
                ranked = [v for v, c in count.most_common() if c >= 10] or [count.most_common(1)[0][0]]
                v = ranked[len(chosen) % 2 if len(ranked) > 1 else 0]
                item = min(i for i in ok if int(values[i, a]) == v)
            value = schema.values[a][int(values[item, a])]
            chosen.append(Example(item, str(ds.image_path(GALLERY_SPLIT, item)),
                                  f"{name.replace('_', ' ')}: {value}", name))
        return chosen

    def _shipped_spread(self) -> dict[str, tuple[float, str, str]]:
        """Per attribute, from the shipped numbers (results.json, checked as the Results tab checks it): (the
        spread of the models' mAPs, the best model, the worst); empty when nothing is shipped."""
        from profashion.explorer.results import read_shipped

        rows = (read_shipped(self).data or {}).get("models") or {}
        spread = {}
        for a in self.attributes:
            maps = {n: r["per_attribute"][a] for n, r in rows.items() if a in r.get("per_attribute", {})}
            if len(maps) > 1:
                best, worst = max(maps, key=maps.get), min(maps, key=maps.get)
                spread[a] = (maps[best] - maps[worst], best, worst)
        return spread

    def default_pair(self) -> tuple[str | None, str | None]:
        """Embeddings' first pair: on the first example's attribute, the shipped models that differ most (the best
        and the worst) when both are listed, else the first and the last model listed."""
        names = self.listed
        attr = self.examples[0].attribute if self.examples else None
        _, best, worst = (getattr(self, "_spread", None) or {}).get(attr, (0.0, None, None))
        if best in names and worst in names and best != worst:
            return best, worst
        return (names[0], names[-1]) if names else (None, None)

    @property
    def attributes(self) -> list[str]:
        return list(self.dataset.schema.names) if self.dataset is not None else []

    def attribute_index(self, attribute) -> int:
        if attribute is None or attribute == "":
            raise QueryError("no attribute chosen: pick one from the list")
        return attribute_id(self.dataset.schema, attribute)

    def item_path(self, item: int) -> str:
        return str(self.dataset.image_path(GALLERY_SPLIT, int(item)))

    def thumbnail(self, item: int, match: bool | None) -> str:
        """A gallery item's framed thumbnail (green hit, red miss, grey unknown) as a file in the gallery's work
        folder, drawn once and then served as it is: a Retrieve of eight models sends 40 paths, not 40 images
        to encode. Its name holds the sha256 of the item's image file (:meth:`_image_key`), so an image changed
        in place gets a new thumbnail, never the old picture; the one it replaces is removed."""
        from PIL import Image

        from profashion.explain.render import hit_thumbnail

        item = int(item)
        kind = {True: "hit", False: "miss", None: "unknown"}[match]
        source = self.item_path(item)
        key = self._image_key(item, source)
        path = self.work_root / "thumbs" / f"{item}-{kind}-{key}.png"
        if not path.is_file():
            try:
                framed = hit_thumbnail(load_image(source), match)
            except ImageError:
                framed = np.zeros((64, 64, 3), np.uint8)
            with atomic_path(path) as tmp:
                Image.fromarray(framed).save(tmp, format="PNG")
            for old in path.parent.glob(f"{item}-*.png"):  # every frame of the image's former content (and of
                if not old.name.endswith(f"-{key}.png"):  # the old id-only names): never served again
                    old.unlink(missing_ok=True)
        return str(path)

    @staticmethod
    def _image_key(item: int, source: str) -> str:
        """The first 16 hex digits of the sha256 of ``item``'s image file (``"unreadable"`` when it cannot be read).

        Content, not (size, mtime): a rewrite of the same size keeps its mtime when it is copied with its times
        (``cp -p``, ``rsync -t``, an archive) or lands within the clock's tick. The digest is the app's shared one
        (:func:`profashion.explorer.public.content_digest`), remembered beside the file's (inode, size, mtime, ctime), so
        a Retrieve stats its 40 images and hashes none of them again until a file changes (a write always moves
        ctime, which nothing can set back)."""
        from profashion.explorer.public import content_digest

        try:
            return content_digest(source)[:16]
        except OSError:
            return "unreadable"

    def item_values(self, item: int) -> dict[str, str]:
        schema = self.dataset.schema
        vals = self.dataset.split(GALLERY_SPLIT).known_values(schema.num_attributes)[int(item)]
        return {schema.names[a]: schema.values[a][int(v)] for a, v in enumerate(vals) if v >= 0}

    @property
    def num_items(self) -> int:
        return self.dataset.split(GALLERY_SPLIT).num_images if self.dataset is not None else 0
