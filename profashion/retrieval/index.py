"""Gallery indexes: every image of a split embedded under every attribute, one faiss index per attribute.

``build_index(checkpoint, dataset, out)`` embeds the gallery with the model's ``embed_all`` (the trunk
runs once per image for all attributes), in batches whose images are decoded by a thread pool while the
model runs on the previous batch, and writes a folder::

    manifest.json      what was indexed: model, checkpoint + dataset fingerprints, schema, index kind,
                       recall of an approximate index against exact search, sha256 of every file
    items.json         per item: split, image id, image path
    values.npy         (n, A) int64 known attribute values, -1 where unknown
    embeddings.npy     (n, A, D) float32, L2-normalised (projections and disentanglement read them)
    attr_XX.faiss      one index per attribute, inner product (= cosine) search

Embedding is resumable: finished chunks of images are kept in ``<out>.partial/`` and a rerun with the
same checkpoint and dataset continues after the last one; the finished folder replaces ``out`` in one
rename. ``GalleryIndex.load`` refuses an index whose files changed (sha256) or whose manifest does not
record the checksum of every file it serves, and, when told the checkpoint or dataset it should belong to,
an index built from another one. ``embeddings.npy``, the largest file and the one search does not need, is
checked when it is first read (``GalleryIndex.embeddings``).

Index kinds: ``flat`` (exact, the default), ``hnsw`` (graph, 32 links) or ``ivf`` (inverted lists,
``nlist ~ 4 sqrt(n)``), each with ``fp32``, ``fp16`` or ``sq8`` storage. An approximate index records its
recall@k against exact search on a sample of the gallery, per attribute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from profashion.data.images import ImageError, load_image
from profashion.data.loading import to_model_input
from profashion.data.splits import (
    AttributeSchema,
    DatasetError,
    SplitDataset,
    load_dataset,
)
from profashion.io import (
    MAX_JSON_DEPTH,
    JSONLimitError,
    atomic_folder,
    atomic_save_npy,
    atomic_write_json,
    check_output_folder,
    read_json,
    sha256_file,
)
from profashion.models.base import load_model
from profashion.retrieval.accel import Embedder

INDEX_FORMAT = 1
KINDS = ("flat", "hnsw", "ivf")
STORAGES = ("fp32", "fp16", "sq8")
SPLIT_ORDER = ("train", "valid", "test")
CHUNK = 2048  # images per resumable chunk
REBUILD = "rebuild the index with `profashion index --overwrite`"
MAX_MANIFEST_BYTES = 16 << 20  # manifest.json: checksums, settings and the schema's names (a few KB)
MAX_ITEMS_BYTES = 256 << 20  # items.json: about 90 bytes an item (200 KB for a gallery of 2,302 images)


class GalleryIndexError(ValueError):
    """An index that cannot be built, loaded or searched; the message says what to do."""


# --------------------------------------------------------------------------------------------------
# Fingerprints


def checkpoint_fingerprint(ckpt_dir: str | os.PathLike) -> str:
    """sha256 of a checkpoint's config.json and model.safetensors (what the embeddings depend on)."""
    ckpt_dir = Path(ckpt_dir)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        p = ckpt_dir / name
        if not p.is_file():
            raise GalleryIndexError(f"{ckpt_dir} is not a checkpoint: it has no {name}")
        sha256_file(p, h=h)
    return h.hexdigest()


def dataset_fingerprint(dataset: SplitDataset, splits: Sequence[str]) -> str:
    """sha256 of the schema and of the indexed splits' file names and labels."""
    h = hashlib.sha256(json.dumps(dataset.schema.to_json(), sort_keys=True).encode())
    for name in splits:
        s = dataset.split(name)
        h.update(name.encode())
        h.update("\n".join(s.filenames or []).encode())
        for rows in (s.labels, s.queries, s.candidates):
            if rows is not None:
                h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# The gallery's items


@dataclasses.dataclass
class Items:
    splits: list[str]
    fids: np.ndarray  # (n,) image id within its split
    paths: list[str]
    values: np.ndarray  # (n, A) known values, -1 unknown

    def __len__(self) -> int:
        return len(self.paths)


def gallery_items(dataset: SplitDataset, split: str) -> tuple[Items, list[str]]:
    """The images of ``split`` ("train", "valid", "test" or "all"), with their known values."""
    names = [s for s in SPLIT_ORDER if s in dataset.splits] if split == "all" else [split]
    splits, fids, paths, values = [], [], [], []
    A = dataset.schema.num_attributes
    for name in names:
        s = dataset.split(name)
        if s.filenames is None:
            if split == "all":
                continue
            raise DatasetError(f"{dataset.root}: filenames_{name}.txt is missing, so the {name} images cannot be indexed")
        n = s.num_images
        splits += [name] * n
        fids.append(np.arange(n))
        paths += [os.path.abspath(dataset.image_path(name, i)) for i in range(n)]
        values.append(s.known_values(A))
    if not paths:
        raise GalleryIndexError(f"the {split} split of {dataset.root} has no images: there is nothing to index")
    return Items(splits, np.concatenate(fids), paths, np.concatenate(values)), names


# --------------------------------------------------------------------------------------------------
# faiss


def faiss_description(kind: str, storage: str, n: int) -> tuple[str, dict]:
    """index_factory string and search parameters for a gallery of ``n`` vectors."""
    if kind not in KINDS:
        raise GalleryIndexError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if storage not in STORAGES:
        raise GalleryIndexError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
    code = {"fp32": "Flat", "fp16": "SQfp16", "sq8": "SQ8"}[storage]
    if kind == "flat":
        return code, {}
    if kind == "hnsw":
        return ("HNSW32" if storage == "fp32" else f"HNSW32_{code}"), {"efSearch": 128}
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
    return f"IVF{nlist},{code}", {"nprobe": max(1, min(nlist, max(8, nlist // 8)))}


def make_faiss_index(vectors: np.ndarray, kind: str = "flat", storage: str = "fp32"):
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    desc, params = faiss_description(kind, storage, len(x))
    index = faiss.index_factory(x.shape[1], desc, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    apply_search_params(index, params)
    return index


def apply_search_params(index, params: dict) -> None:
    import faiss

    for key, value in params.items():
        faiss.ParameterSpace().set_index_parameter(index, key, value)


def recall_at_k(approx, vectors: np.ndarray, queries: np.ndarray, k: int = 5) -> float:
    """Share of the exact top-k (inner product) that ``approx`` also returns, in percent."""
    import faiss

    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    k = min(k, len(vectors))
    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact.search(q, k)
    _, got = approx.search(q, k)
    hits = sum(len(set(t) & set(g)) for t, g in zip(truth.tolist(), got.tolist()))
    return 100.0 * hits / (len(q) * k)


# --------------------------------------------------------------------------------------------------
# Embedding the gallery


def _decode(path: str, preprocess) -> np.ndarray:
    try:
        return np.asarray(preprocess.geometry(load_image(path)), dtype=np.uint8)
    except ImageError as exc:
        raise DatasetError(f"gallery image {path} cannot be read: {exc}") from exc


def prefetched_batches(paths: Sequence[str], preprocess, batch_size: int, workers: int = 2,
                       depth: int = 2) -> Iterator[np.ndarray]:
    """(B, H, W, 3) uint8 batches, decoded by ``workers`` threads ``depth`` batches ahead of the consumer."""
    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        def submit(i):
            return [pool.submit(_decode, p, preprocess) for p in paths[starts[i]:starts[i] + batch_size]]

        pending = [submit(i) for i in range(min(depth, len(starts)))]
        for i in range(len(starts)):
            futures = pending.pop(0)
            if i + depth < len(starts):
                pending.append(submit(i + depth))
            yield np.stack([f.result() for f in futures])


@torch.no_grad()
def embed_images(model, batches: Iterator[np.ndarray], total: int, progress: bool = False,
                 desc: str = "embedding gallery") -> np.ndarray:
    """(n, A, D) float32 ``embed_all`` of uint8 batches."""

    model.eval()
    pre, device = model.preprocess, model.device
    out = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for b in batches:
        x = to_model_input(torch.from_numpy(b).permute(0, 3, 1, 2), pre, device=device)
        out.append(model.embed_all(x).float().cpu().numpy())
        if bar is not None:
            bar.update(len(b))
    if bar is not None:
        bar.close()
    return np.concatenate(out) if out else np.zeros((0, model.num_attributes, 0), np.float32)


def build_index(checkpoint: str | os.PathLike, dataset: str | os.PathLike | SplitDataset, out: str | os.PathLike,
                split: str = "test", image_root: str | None = None, kind: str = "flat", storage: str = "fp32",
                batch_size: int = 128, device: str | torch.device = "cpu", overwrite: bool = False,
                workers: int = 2, progress: bool = False, recall_k: int = 5, backend: str = "auto",
                on_chunk: Callable[[int, int], None] | None = None) -> Path:
    """Embed ``split`` of ``dataset`` with the checkpoint's model and write the index folder ``out``.

    ``backend`` is the inference backend of accel.Embedder (``auto``: ONNX Runtime on CPU when the model
    exports, else PyTorch fp32); its exported graph is kept in ``out/accel/`` for the search engine.
    """
    out = Path(out)
    faiss_description(kind, storage, 1000)  # validate the options before any work
    if batch_size < 1:
        raise GalleryIndexError(f"batch size must be at least 1, got {batch_size}")
    check_output_folder(out, overwrite, flag="--overwrite", error=GalleryIndexError)
    ds = dataset if isinstance(dataset, SplitDataset) else load_dataset(dataset, image_root)
    items, split_names = gallery_items(ds, split)
    ckpt = Path(checkpoint)
    ckpt_fp = checkpoint_fingerprint(ckpt)
    data_fp = dataset_fingerprint(ds, split_names)
    model = load_model(ckpt, device=device)
    if model.num_attributes != ds.schema.num_attributes:
        raise GalleryIndexError(f"{ckpt} was trained on {model.num_attributes} attributes but {ds.root} has "
                          f"{ds.schema.num_attributes}: index a dataset with the model's attributes")
    for path in (items.paths[0], items.paths[-1]):
        if not Path(path).is_file():
            raise DatasetError(f"gallery image not found: {path}; check the dataset's image root")

    # resumable embedding: finished chunks live in <out>.partial/ with the fingerprints they belong to
    partial = out.parent / f"{out.name}.partial"
    stamp = {"checkpoint": ckpt_fp, "dataset": data_fp, "n": len(items), "chunk": CHUNK,
             "preprocess": model.preprocess.to_json()}
    if partial.is_dir():
        try:
            same = read_json(partial / "stamp.json", what="the unfinished index's stamp.json") == stamp
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(partial / "stamp.json", stamp)
    embedder = Embedder(model, backend, cache_dir=partial / "accel", fingerprint=ckpt_fp)

    t0 = time.perf_counter()
    chunks = []
    n_chunks = math.ceil(len(items) / CHUNK)
    for c in range(n_chunks):
        lo, hi = c * CHUNK, min(len(items), (c + 1) * CHUNK)
        path = partial / f"chunk_{c:06d}.npy"
        emb = None
        if path.is_file():
            try:
                emb = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                emb = None  # a chunk cut short: embed it again
            if emb is not None and emb.shape[0] != hi - lo:
                emb = None
        if emb is None:
            batches = prefetched_batches(items.paths[lo:hi], model.preprocess, batch_size, workers)
            emb = embed_images(embedder, batches, hi - lo, progress=progress,
                               desc=f"embedding gallery {c + 1}/{n_chunks}")
            atomic_save_npy(path, emb)
        chunks.append(emb)
        if on_chunk is not None:
            on_chunk(c, n_chunks)
    embeddings = np.concatenate(chunks)
    embed_seconds = time.perf_counter() - t0

    write_index(out, embeddings, items, ds, split, split_names, model.name, ckpt, ckpt_fp, kind=kind,
                storage=storage, recall_k=recall_k, accel=partial / "accel",
                extra={"embed_seconds": round(embed_seconds, 2),
                       "backend": {"requested": backend, "used": embedder.backend, "note": embedder.note},
                       "preprocess": model.preprocess.to_json()})
    shutil.rmtree(partial, ignore_errors=True)
    return out


def trunk_group_key(model) -> str | None:
    """What identifies the frozen trunk output of a PyTorch model (its frozen weights, its preprocessing and its
    device): models with the same key can share one trunk pass per image; None when it has no frozen trunk."""
    if not model.cacheable_trunk():
        return None
    key = model.trunk_cache_key()
    if key is None:
        return None
    return json.dumps([key["shared"], model.preprocess.to_json(), str(model.device)], sort_keys=True, default=str)


@torch.no_grad()
def build_indexes(checkpoints: Sequence[str | os.PathLike], dataset: SplitDataset, outs: Sequence[str | os.PathLike],
                  split: str = "test", batch_size: int = 64, device: str | torch.device = "cpu", workers: int = 2,
                  on_model: Callable[[int, Path], None] | None = None) -> list[Path]:
    """Index ``split`` of ``dataset`` with several checkpoints at once (PyTorch float32, exact indexes: the app's
    setting), writing ``outs[i]`` for ``checkpoints[i]``: the models that freeze the same pretrained trunk (every
    demo preset freezes the same EfficientNet-Lite0 stages) share ONE decode and ONE trunk pass per image, and
    only their own heads run per model; a model with no shared trunk is embedded on its own. ``on_model(i, out)``
    is called as each index is written."""
    if len(checkpoints) != len(outs):
        raise GalleryIndexError("build_indexes needs one output folder per checkpoint")
    items, split_names = gallery_items(dataset, split)
    ckpts = [Path(c) for c in checkpoints]
    models, groups = [], {}
    for i, ckpt in enumerate(ckpts):
        model = load_model(ckpt, device=device).eval()
        if model.num_attributes != dataset.schema.num_attributes:
            raise GalleryIndexError(f"{ckpt.name} was trained on {model.num_attributes} attributes but the gallery "
                                    f"has {dataset.schema.num_attributes}")
        models.append(model)
        key = trunk_group_key(model)
        groups.setdefault(key if key is not None else f"alone-{i}", []).append(i)
    written = []
    for members in groups.values():
        first = models[members[0]]
        shared = len(members) > 1
        t0 = time.perf_counter()
        parts = {i: [] for i in members}
        for b in prefetched_batches(items.paths, first.preprocess, batch_size, workers):
            x = to_model_input(torch.from_numpy(b).permute(0, 3, 1, 2), first.preprocess, device=first.device)
            feats = first.shared_trunk_features(x) if shared else None
            for i in members:
                m = models[i]
                emb = m.embed_all(x) if feats is None else m.embed_all_from_trunk(m.trunk_features(x, shared=feats))
                parts[i].append(emb.float().cpu().numpy())
        seconds = time.perf_counter() - t0
        for i in members:
            m, ckpt = models[i], ckpts[i]
            write_index(Path(outs[i]), np.concatenate(parts[i]), items, dataset, split, split_names, m.name, ckpt,
                        checkpoint_fingerprint(ckpt),
                        extra={"embed_seconds": round(seconds, 2), "trunk_shared_with": len(members) - 1,
                               "backend": {"requested": "fp32", "used": "fp32", "note": ""},
                               "preprocess": m.preprocess.to_json()})
            written.append(Path(outs[i]))
            if on_model is not None:
                on_model(i, Path(outs[i]))
    return written


def write_index(out: Path, embeddings: np.ndarray, items: Items, ds: SplitDataset, split: str,
                split_names: Sequence[str], model_name: str, ckpt: Path, ckpt_fp: str, kind: str = "flat",
                storage: str = "fp32", recall_k: int = 5, accel: Path | None = None, extra: dict | None = None) -> Path:
    """Write the index folder ``out`` (atomically: it appears whole or not at all) of (n, A, D) ``embeddings`` of
    ``items``: the files of the module's docstring, a faiss index per attribute and the manifest with every
    file's sha256. ``extra`` adds fields to the manifest (how the embeddings were made); ``accel`` is a folder of
    exported graphs copied in as a cache."""
    import faiss

    data_fp = dataset_fingerprint(ds, split_names)
    with atomic_folder(out) as tmp:
        A, D = embeddings.shape[1], embeddings.shape[2]
        atomic_save_npy(tmp / "embeddings.npy", embeddings.astype(np.float32))
        atomic_save_npy(tmp / "values.npy", items.values.astype(np.int64))
        atomic_write_json(tmp / "items.json", {"split": items.splits, "fid": items.fids.tolist(),
                                               "path": items.paths}, indent=None)
        desc, params = faiss_description(kind, storage, len(items))
        recall = {}
        rng = np.random.default_rng(0)
        sample = rng.choice(len(items), size=min(len(items), 500), replace=False)
        for a in range(A):
            index = make_faiss_index(embeddings[:, a], kind, storage)
            if kind != "flat" or storage != "fp32":
                recall[ds.schema.names[a]] = round(recall_at_k(index, embeddings[:, a], embeddings[sample, a],
                                                               recall_k), 2)
            faiss.write_index(index, str(tmp / f"attr_{a:02d}.faiss"))
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        if accel is not None and accel.is_dir():
            shutil.copytree(accel, tmp / "accel")  # a cache: not part of the checked files
        manifest = {
            "format": INDEX_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model_name,
            "checkpoint": {"path": str(ckpt.resolve()), "fingerprint": ckpt_fp,
                           "relative": os.path.relpath(ckpt.resolve(), out.resolve())},
            "dataset": {"root": str(Path(ds.root).resolve()), "name": ds.name, "split": split,
                        "splits": list(split_names), "fingerprint": data_fp,
                        "image_root": str(ds.image_root) if ds.image_root else None},
            "schema": ds.schema.to_json(),
            "items": len(items),
            "dim": D,
            "index": {"kind": kind, "storage": storage, "faiss": desc, "params": params,
                      f"recall_at_{recall_k}": recall or None},
            **(extra or {}),
            "files": files,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return out


# --------------------------------------------------------------------------------------------------
# Loading and searching

SINGLE_THREAD_BELOW = 16  # queries; see _search


def _search(index, q: np.ndarray, k: int):
    """faiss search; a handful of queries runs on one OpenMP thread.

    Measured on the 44k-item catalogue (benchmarks/bench_retrieval.py latency): one query on 2 threads
    took 0.6-1.0 ms median and 64 ms p95 on a busy machine, on 1 thread 0.22 ms and 23 ms, because the
    threads' start-up and spin-waiting cost more than the 44k x 64 dot products they share.
    """
    import faiss

    if len(q) >= SINGLE_THREAD_BELOW:
        return index.search(q, k)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(q, k)
    finally:
        faiss.omp_set_num_threads(before)


def served_files(num_attributes: int) -> list[str]:
    """The files of an index folder that are read, each of which the manifest must record a sha256 of."""
    return ["items.json", "values.npy", "embeddings.npy", *(f"attr_{a:02d}.faiss" for a in range(num_attributes))]


def _changed(path: Path) -> GalleryIndexError:
    return GalleryIndexError(f"{path} is corrupt or was changed after the index was built (its checksum does not "
                             f"match the manifest); {REBUILD}")


class GalleryIndex:
    """A loaded index folder: the per-attribute faiss indexes, the items and their known values."""

    def __init__(self, root: Path, manifest: dict, items: dict, values: np.ndarray, indexes: list,
                 verify: bool = True):
        self.root, self.manifest = root, manifest
        self.verify = verify  # check embeddings.npy against the manifest when it is first read
        self.schema = AttributeSchema.from_json(manifest["schema"])
        self.splits: list[str] = items["split"]
        self.fids = np.asarray(items["fid"], dtype=np.int64)
        self.paths: list[str] = items["path"]
        self.values = values
        self._indexes = indexes
        self._embeddings: np.ndarray | None = None
        self._embeddings_lock = threading.Lock()  # one reader hashes the file; the others wait for it
        self._by_path: dict[str, int] | None = None  # resolved image path -> item, built on first use

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def model_name(self) -> str:
        return self.manifest["model"]

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint the index was built from: beside the index as it was then (so a folder holding
        both can move), else at its absolute path."""
        c = self.manifest["checkpoint"]
        rel = self.root / c.get("relative", "")
        return rel if c.get("relative") and (rel / "config.json").is_file() else Path(c["path"])

    @classmethod
    def load(cls, root: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
             dataset: SplitDataset | None = None, verify: bool = True) -> GalleryIndex:
        """Load ``root``; refuse it when its files changed (``verify``; embeddings.npy is checked when
        first read), or when it was built from another ``checkpoint`` / ``dataset`` than the ones given."""
        import faiss

        root = Path(root)
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise GalleryIndexError(f"{root} is not an index folder (no manifest.json); build one with `profashion index`")
        try:
            manifest = read_json(mpath, max_bytes=MAX_MANIFEST_BYTES, max_depth=MAX_JSON_DEPTH, what=str(mpath))
        except JSONLimitError as exc:
            raise GalleryIndexError(f"{mpath} is corrupt: it {exc.problem}; {REBUILD}") from None
        try:
            files = dict(manifest["files"])
            A = len(manifest["schema"]["ATTRIBUTES"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GalleryIndexError(f"{mpath} is corrupt ({exc}); rebuild the index with `profashion index --overwrite`") from exc
        if manifest.get("format") != INDEX_FORMAT:
            raise GalleryIndexError(f"{root} has index format {manifest.get('format')!r}, this version reads "
                              f"{INDEX_FORMAT}; rebuild it with `profashion index --overwrite`")
        if verify:
            served = served_files(A)
            unchecked = [name for name in served if not isinstance(files.get(name), str)]
            if unchecked:
                raise GalleryIndexError(f"{mpath} records no checksum of {', '.join(unchecked)}, so a changed file "
                                        f"would go unnoticed; {REBUILD}")
            for name in served:
                p = root / name
                if not p.is_file():
                    raise GalleryIndexError(f"{root} is incomplete: {name} is missing; rebuild it with `profashion index --overwrite`")
                if name != "embeddings.npy" and sha256_file(p) != files[name]:
                    raise _changed(p)
        if checkpoint is not None:
            fp = checkpoint_fingerprint(checkpoint)
            if fp != manifest["checkpoint"]["fingerprint"]:
                raise GalleryIndexError(f"{root} was built from another checkpoint ({manifest['checkpoint']['path']}), "
                                  f"not from {checkpoint}; rebuild it with `profashion index --checkpoint {checkpoint}`")
        if dataset is not None:
            fp = dataset_fingerprint(dataset, manifest["dataset"]["splits"]) if all(
                s in dataset.splits for s in manifest["dataset"]["splits"]) else None
            if fp != manifest["dataset"]["fingerprint"]:
                raise GalleryIndexError(f"{root} was built from another dataset ({manifest['dataset']['root']}), not "
                                  f"from {dataset.root}; rebuild it with `profashion index --dataset {dataset.root}`")
        try:
            items = read_json(root / "items.json", max_bytes=MAX_ITEMS_BYTES, max_depth=MAX_JSON_DEPTH,
                              what=str(root / "items.json"))
            values = np.load(root / "values.npy", allow_pickle=False)
            indexes = [faiss.read_index(str(root / f"attr_{a:02d}.faiss")) for a in range(A)]
        except JSONLimitError as exc:
            raise GalleryIndexError(f"{root / 'items.json'} is corrupt: it {exc.problem}; {REBUILD}") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise GalleryIndexError(f"{root} cannot be read ({exc}); rebuild it with `profashion index --overwrite`") from exc
        if len(items["path"]) == 0 or any(ix.ntotal != len(items["path"]) for ix in indexes):
            raise GalleryIndexError(f"{root} is empty or inconsistent (its indexes do not hold one vector per item); "
                              "rebuild it with `profashion index --overwrite`")
        for ix in indexes:
            apply_search_params(ix, manifest["index"].get("params") or {})
        if dataset is not None:  # the dataset may have moved since: take the image paths from it
            items["path"] = [str(dataset.image_path(s, f)) for s, f in zip(items["split"], items["fid"])]
        return cls(root, manifest, items, values, indexes, verify=verify)

    @property
    def embeddings(self) -> np.ndarray:
        """(n, A, D) gallery embeddings, memory-mapped on first use; first checked against the manifest's
        sha256 when the index was loaded with ``verify`` (the file is hashed in blocks, once)."""
        if self._embeddings is None:
            with self._embeddings_lock:
                if self._embeddings is None:
                    self._embeddings = self._read_embeddings()
        return self._embeddings

    def _read_embeddings(self) -> np.ndarray:
        p = self.root / "embeddings.npy"
        try:
            digest = sha256_file(p) if self.verify else None
            emb = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise GalleryIndexError(f"{p} cannot be read ({exc}); {REBUILD}") from exc
        if digest is not None and digest != self.manifest["files"].get("embeddings.npy"):
            raise _changed(p)
        if emb.shape[:2] != (len(self), self.schema.num_attributes):
            raise GalleryIndexError(f"{p} has shape {emb.shape}, not ({len(self)}, {self.schema.num_attributes}, D); "
                                    f"{REBUILD}")
        return emb

    def search_vectors(self, queries: np.ndarray, attribute: int, k: int = 5,
                       exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, item ids) of (m, D) query vectors in ``attribute``'s index."""
        if k < 1:
            raise GalleryIndexError(f"k must be at least 1, got {k}")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise GalleryIndexError(f"query vectors have dimension {q.shape[1]}, the index {self.dim}")
        exclude = set(int(e) for e in exclude)
        kk = min(len(self), k + len(exclude))
        scores, ids = _search(self._indexes[attribute], q, kk)
        out_s, out_i = [], []
        for s_row, i_row in zip(scores, ids):
            keep = [(s, i) for s, i in zip(s_row.tolist(), i_row.tolist()) if i >= 0 and i not in exclude][:k]
            out_s.append([s for s, _ in keep])
            out_i.append([i for _, i in keep])
        width = max((len(r) for r in out_i), default=0)
        S = np.full((len(q), width), np.nan, np.float32)
        I_ = np.full((len(q), width), -1, np.int64)
        for r, (s, i) in enumerate(zip(out_s, out_i)):
            S[r, :len(s)], I_[r, :len(i)] = s, i
        return S, I_

    def item_values(self, item: int) -> dict[str, str]:
        """The known attribute values of an item, by attribute name."""
        return {self.schema.names[a]: self.schema.values[a][int(v)]
                for a, v in enumerate(self.values[item]) if v >= 0}

    def find_path(self, path: str | os.PathLike) -> int | None:
        """The item id of an image path in this gallery, if it is one."""
        if self._by_path is None:
            self._by_path = {str(Path(p).resolve()): i for i, p in enumerate(self.paths)}
        return self._by_path.get(str(Path(path).resolve()))
