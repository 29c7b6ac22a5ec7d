"""Searching gallery indexes: one query image and attribute, one or several models, top-k with their values.

``RetrievalEngine`` holds loaded (model, index) pairs by name and answers queries for the CLI and the app::

    engine = RetrievalEngine()
    engine.add("asen", "indexes/asen")                # the index remembers its checkpoint
    result = engine.search("asen", "query.jpg", "sleeve_length", k=5)
    results = engine.search_all("query.jpg", "sleeve_length", k=5)   # every model on the same query

A query image is embedded once per model under every attribute (``embed_all``) and kept, keyed by the image's
content and the served model (segment-anything's predictor pattern: embed once, ask many): asking the same
image under another attribute, or for more results, runs no model.

A bad query (not an image, a decompression bomb, an unknown attribute) raises one ``QueryError`` with a
clear message; in ``search_all`` a model that fails reports its error in its own result and the others
still answer, so the engine keeps serving.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from profashion.data.images import ImageError, load_image
from profashion.data.splits import DatasetError
from profashion.models.base import load_model
from profashion.retrieval.accel import Embedder, one_thread
from profashion.retrieval.index import GalleryIndex, GalleryIndexError, checkpoint_fingerprint


class QueryError(ValueError):
    """A query that cannot be answered: a bad image, an unknown attribute or model, a bad k."""


@dataclasses.dataclass
class Hit:
    rank: int  # 1-based
    item: int  # item id in the gallery
    score: float  # cosine similarity
    path: str
    split: str
    fid: int
    value: str | None  # the item's known value of the queried attribute
    values: dict[str, str]  # all its known values
    match: bool | None = None  # equal to the query's value, when both are known

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SearchResult:
    model: str  # the engine's name for the model
    method: str  # the registered method (asen, cca2, ...)
    attribute: str
    hits: list[Hit]
    query_value: str | None = None
    embed_ms: float = 0.0
    search_ms: float = 0.0
    error: str | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hits"] = [h.to_json() for h in self.hits]
        return d


TENSOR_CACHE = 4  # (query, preprocessing) model inputs kept: the request's own, and a few concurrent ones
QUERY_CACHE = 512  # (query image, model) embeddings kept, (A, D) float32 each: ~3 KB for the demo models


def attribute_id(schema, attribute: str | int) -> int:
    """The index of ``attribute`` (a name or an index) in ``schema``, or one QueryError saying which ones there are:
    the one place a query's attribute is resolved (the engine's per model, the app's catalog once per request)."""
    try:
        return schema.attribute_index(attribute)
    except DatasetError as exc:
        raise QueryError(str(exc)) from None


def query_key(image) -> str:
    """The content of a decoded query image, as a key: the same picture uploaded twice is the same query."""
    h = hashlib.blake2b(f"{image.mode}{image.size}".encode(), digest_size=16)
    h.update(image.tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class _Entry:
    index: GalleryIndex
    model: torch.nn.Module
    trunk_key: str | None = None  # _trunk_key(model), worked out once: walking the modules costs ~8 ms a model


def _trunk_key(embedder) -> str | None:
    """What identifies the frozen trunk output of a served model (its frozen weights and its preprocessing), or
    None when it has none or is not served by PyTorch in float32 (ONNX and bf16 run the whole model)."""
    if getattr(embedder, "backend", None) != "fp32" or not embedder.model.cacheable_trunk():
        return None
    key = embedder.model.trunk_cache_key()
    if key is None:
        return None
    return json.dumps([key["shared"], embedder.model.preprocess.to_json(), str(embedder.model.device)],
                      sort_keys=True, default=str)


class RetrievalEngine:
    """Loaded (model, gallery index) pairs by name; thread-safe for concurrent queries."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._queries: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()  # LRU
        self._tensors: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()  # LRU

    def add(self, name: str, index: str | os.PathLike | GalleryIndex, checkpoint: str | os.PathLike | None = None,
            model: torch.nn.Module | None = None, backend: str = "auto") -> None:
        """Serve ``index`` under ``name``, with ``model`` or the model of ``checkpoint`` (default: the
        checkpoint the index was built from); an index of another checkpoint is refused. Queries are
        embedded through ``backend`` (accel.Embedder; ``auto`` = ONNX Runtime on CPU when it exports)."""
        if not isinstance(index, GalleryIndex):
            index = GalleryIndex.load(index, checkpoint=checkpoint)
        elif checkpoint is not None:
            index = GalleryIndex.load(index.root, checkpoint=checkpoint)
        if model is None:
            ckpt = Path(checkpoint) if checkpoint is not None else index.checkpoint_path
            if checkpoint is None and checkpoint_fingerprint(ckpt) != index.manifest["checkpoint"]["fingerprint"]:
                raise GalleryIndexError(f"the checkpoint {ckpt} changed since {index.root} was built; rebuild "
                                        f"the index with `profashion index --checkpoint {ckpt} --overwrite`")
            model = load_model(ckpt, device=self.device)
        model.eval()
        cache = index.root / "accel"
        if not os.access(index.root, os.W_OK):
            cache = None
        model = Embedder(model, backend, cache_dir=cache, fingerprint=index.manifest["checkpoint"]["fingerprint"])
        if model.num_attributes != index.schema.num_attributes:
            raise GalleryIndexError(f"model {name!r} knows {model.num_attributes} attributes, its index "
                                    f"{index.schema.num_attributes}")
        with self._lock:
            self._entries[name] = _Entry(index, model, _trunk_key(model))

    def remove(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise QueryError(f"unknown model {name!r}; loaded: {', '.join(self._entries) or 'none'}") from None

    def index(self, name: str) -> GalleryIndex:
        return self.entry(name).index

    def model(self, name: str):
        return self.entry(name).model

    # -- queries ---------------------------------------------------------------------------------------
    @staticmethod
    def load_query(image):
        """The query as an RGB PIL image (path, bytes, PIL image or array), or one clear QueryError."""
        if image is None:
            raise QueryError("no query image: upload an image or pick an example")
        try:
            return load_image(image)
        except ImageError as exc:
            raise QueryError(str(exc)) from None
        except FileNotFoundError as exc:
            raise QueryError(f"query image not found: {exc.filename}") from None

    @torch.no_grad()
    def embed_query(self, name: str, image, attribute: str | int, decoded=None, shared=None,
                    key: str | None = None) -> np.ndarray:
        """The query's embedding under ``attribute``; ``decoded`` is ``image`` already loaded, if it is,
        ``shared`` what :meth:`shared_trunks` computed for this model, if it did, and ``key`` its
        :func:`query_key`, if known."""
        a = attribute_id(self.entry(name).index.schema, attribute)
        img = decoded if decoded is not None else self.load_query(image)
        return self.embed_all_query(name, img, shared, key)[a]

    def _cache_key(self, name: str, key: str) -> tuple:
        return key, name, id(self._entries[name].model)  # a model re-added under the same name is another one

    def cached(self, name: str, key: str) -> bool:
        with self._lock:
            return self._cache_key(name, key) in self._queries

    @torch.no_grad()
    def embed_all_query(self, name: str, decoded, shared=None, key: str | None = None) -> np.ndarray:
        """(A, D) embeddings of a decoded query image under every attribute of model ``name``: computed once,
        then read from the cache (LRU, ``QUERY_CACHE`` entries); ``key`` is the image's :func:`query_key`
        when the caller has it (search_all hashes the image once for every model)."""
        e = self.entry(name)
        ck = self._cache_key(name, key or query_key(decoded))
        with self._lock:
            hit = self._queries.get(ck)
            if hit is not None:
                self._queries.move_to_end(ck)
                return hit
        x = self.model_input(e.model, decoded, ck[0])
        with one_thread():
            feats = shared.get(e.trunk_key) if shared else None
            if feats is not None:  # the shared trunk ran once for several models: this one adds its extras
                m = e.model.model
                q = m.embed_all_from_trunk(m.trunk_features(x, shared=feats))
            else:
                q = e.model.embed_all(x)
        out = q.float().cpu().numpy()[0]
        out.setflags(write=False)
        with self._lock:
            self._queries[ck] = out
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return out

    def model_input(self, model, decoded, key: str) -> torch.Tensor:
        """The query as ``model``'s input (1, 3, H, W): made once per query and preprocessing (the demo presets
        share one), kept for the last few queries, so that eight models do not resize and normalise it eight times."""
        pre = model.preprocess
        tk = (key, pre.resize, pre.crop, tuple(pre.mean), tuple(pre.std), str(model.device))
        with self._lock:
            x = self._tensors.get(tk)
        if x is None:
            x = pre.to_tensor(decoded)[None].to(model.device)
            with self._lock:
                self._tensors[tk] = x
                while len(self._tensors) > TENSOR_CACHE:
                    self._tensors.popitem(last=False)
        return x

    @torch.no_grad()
    def shared_trunks(self, names: Sequence[str], decoded, key: str | None = None) -> dict:
        """The frozen pretrained trunk's output for the query, once per trunk and preprocessing that two or more
        of ``names`` share (the demo presets all freeze the same EfficientNet-Lite0 stages): a Retrieve with
        every model runs that trunk once, not once per model."""
        groups: dict = {}
        for n in names:
            if n in self._entries:
                trunk = self._entries[n].trunk_key
                if trunk is not None:
                    groups.setdefault(trunk, []).append(n)
        out = {}
        key = key or query_key(decoded)  # the query's content: the input tensors are kept by it
        for trunk, members in groups.items():
            if len(members) > 1:
                m = self._entries[members[0]].model
                x = self.model_input(m, decoded, key)
                with one_thread():
                    out[trunk] = m.model.shared_trunk_features(x)
        return out

    def search(self, name: str, image, attribute: str | int, k: int = 5, exclude: Sequence[int] = (),
               query_value: str | None = None, exclude_query: bool = True, decoded=None,
               shared=None, key: str | None = None) -> SearchResult:
        """Top-``k`` of model ``name`` for ``image`` under ``attribute``.

        A query that is a gallery image (given by its path) is left out of its own results unless
        ``exclude_query`` is False, and its known value marks each hit as a match or not; ``exclude``
        drops further items; ``query_value`` gives the value of an uploaded query; ``decoded`` is the
        image already loaded and ``shared`` its shared trunk features (search_all computes both once for every
        model).
        """
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k must be a positive integer, got {k!r}")
        e = self.entry(name)
        ix = e.index
        a = attribute_id(ix.schema, attribute)
        if isinstance(image, (str, os.PathLike)):
            item = ix.find_path(image)
            if item is not None:
                if exclude_query:
                    exclude = [*exclude, item]
                if query_value is None and ix.values[item, a] >= 0:
                    query_value = ix.schema.values[a][int(ix.values[item, a])]
        t0 = time.perf_counter()
        q = self.embed_all_query(name, decoded if decoded is not None else self.load_query(image), shared, key)[a]
        t1 = time.perf_counter()
        scores, ids = ix.search_vectors(q[None], a, k, exclude)
        t2 = time.perf_counter()
        hits = []
        for rank, (s, i) in enumerate(zip(scores[0].tolist(), ids[0].tolist()), start=1):
            if i < 0:
                break
            v = int(ix.values[i, a])
            value = ix.schema.values[a][v] if v >= 0 else None
            hits.append(Hit(rank, i, float(s), ix.paths[i], ix.splits[i], int(ix.fids[i]), value,
                            ix.item_values(i),
                            None if value is None or query_value is None else value == query_value))
        return SearchResult(name, ix.model_name, ix.schema.names[a], hits, query_value,
                            round(1000 * (t1 - t0), 3), round(1000 * (t2 - t1), 3))

    def search_all(self, image, attribute: str | int, k: int = 5, names: Sequence[str] | None = None,
                   exclude: Sequence[int] = (), query_value: str | None = None,
                   exclude_query: bool = True) -> dict[str, SearchResult]:
        """Every (or the named) model on the same query. A bad image or k fails once for all; a model that
        cannot answer (e.g. it lacks the attribute) reports its error in its own result."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k must be a positive integer, got {k!r}")
        names = list(self._entries) if names is None else list(names)
        if not names:
            raise QueryError("no model is loaded: build an index with `profashion index` and add it")
        decoded = self.load_query(image)  # once for all models: one clear error before any model runs
        key = query_key(decoded)
        shared = self.shared_trunks([n for n in names if n in self._entries and not self.cached(n, key)], decoded,
                                    key)
        out = {}
        for n in names:
            try:
                out[n] = self.search(n, image, attribute, k, exclude, query_value, exclude_query, decoded, shared,
                                     key)
            except (QueryError, GalleryIndexError, RuntimeError) as exc:
                method = self._entries[n].index.model_name if n in self._entries else "?"
                out[n] = SearchResult(n, method, str(attribute), [], query_value, error=str(exc))
        return out
