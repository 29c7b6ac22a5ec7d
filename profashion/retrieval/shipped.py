"""Gallery indexes shipped beside a checkpoint, so that a cold start embeds nothing the checkpoint was shipped with.

``pack(index, dataset, dest, projections)`` writes a compact copy of a built :class:`GalleryIndex` into ``dest``
(by convention ``<checkpoint>/gallery-index/``)::

    manifest.json      format, model, the checkpoint's fingerprint, the gallery's (split names and labels:
                       :func:`~profashion.retrieval.index.dataset_fingerprint`) and its images' content digest
                       (:func:`images_digest`), shape, the projections' scores, the sha256 of both files
    embeddings.npy     (n, A, D) float16: half the bytes of the index's float32, rankings unchanged but for ties
                       closer than float16 can tell (about 1e-3 in cosine)
    projections.npz    per projection ``<method>-<attribute>``: (m, 2) float32 coordinates of every labelled item
                       (the items and their values are the index's own, so they are not stored)

``unpack(dest, checkpoint, dataset, split, out, max_points)`` checks all of that against the checkpoint and the
gallery it is asked to serve and writes a full index folder ``out`` (``build_index``'s layout, float32, exact
faiss indexes) with the projections in its cache, in well under a second; anything that does not match raises
:class:`ShippedIndexError` with one sentence, and the caller builds the index as if nothing had been shipped.
Nothing here unpickles: plain ``.npy``/``.npz`` arrays and JSON.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from profashion.data.splits import DatasetError, SplitDataset
from profashion.io import atomic_folder, atomic_save_npy, atomic_write_json, read_json, sha256_file
from profashion.retrieval.index import (
    GalleryIndex,
    GalleryIndexError,
    checkpoint_fingerprint,
    dataset_fingerprint,
    gallery_items,
    write_index,
)

SHIPPED_FORMAT = 1
FOLDER = "gallery-index"  # inside a checkpoint folder
MAX_MANIFEST_BYTES = 1 << 20
MAX_PROJECTION_BYTES = 256 << 20  # inflated: 2 float32 a point, 100 projections of a million points
SEED = 0  # the projections' seed (the app's)


class ShippedIndexError(GalleryIndexError):
    """A shipped index that cannot serve this checkpoint and gallery (missing, damaged or another one's)."""


def images_digest(dataset: SplitDataset, split: str) -> str:
    """sha256 over the sha256 of every image file of ``split``, in order: what the images ARE, which the dataset's
    fingerprint (names and labels) does not see (a generated gallery drawn by another library version, a
    photo replaced in place)."""
    h = hashlib.sha256()
    s = dataset.split(split)
    for i in range(s.num_images):
        h.update(bytes.fromhex(sha256_file(dataset.image_path(split, i))))
    return h.hexdigest()


def pack(index: GalleryIndex, dataset: SplitDataset, dest: str | os.PathLike, projections=()) -> dict:
    """Write the compact copy of ``index`` (built on ``dataset``'s ``index.manifest['dataset']['split']``) and of
    ``projections`` (:class:`~profashion.retrieval.projection.Projection` of every labelled item, seed
    :data:`SEED`) into ``dest``, atomically; returns its manifest."""
    dest = Path(dest)
    split = index.manifest["dataset"]["split"]
    emb = np.asarray(index.embeddings, dtype=np.float32)
    arrays, scores = {}, {}
    for p in projections:
        labelled = np.flatnonzero(index.values[:, index.schema.attribute_index(p.attribute)] >= 0)
        if not np.array_equal(np.asarray(p.items), labelled):
            raise ShippedIndexError(f"the {p.method} projection of {p.attribute!r} is of a sample, not of every "
                                    "labelled item: project with max_points at least the gallery's size")
        key = f"{p.method}-{p.attribute}"
        arrays[key] = np.asarray(p.xy, dtype=np.float32)
        scores[key] = {"knn_accuracy": p.knn_accuracy, "chance": p.chance, "silhouette": p.silhouette}
    with atomic_folder(dest) as tmp:
        atomic_save_npy(tmp / "embeddings.npy", emb.astype(np.float16))
        with open(tmp / "projections.npz", "wb") as f:
            np.savez_compressed(f, **arrays)
        manifest = {
            "format": SHIPPED_FORMAT,
            "model": index.model_name,
            "checkpoint_fingerprint": index.manifest["checkpoint"]["fingerprint"],
            "dataset": {"name": dataset.name, "split": split, "splits": index.manifest["dataset"]["splits"],
                        "fingerprint": index.manifest["dataset"]["fingerprint"],
                        "images": images_digest(dataset, split)},
            "shape": list(emb.shape),
            "seed": SEED,
            "projections": scores,
            "files": {name: sha256_file(tmp / name) for name in ("embeddings.npy", "projections.npz")},
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _refuse(dest: Path, why: str) -> ShippedIndexError:
    return ShippedIndexError(f"the shipped index {dest.parent.name}/{dest.name} is not used: {why}")


def check(dest: str | os.PathLike, checkpoint: str | os.PathLike, dataset: SplitDataset, split: str,
          checkpoint_fp: str | None = None, images: str | None = None) -> dict:
    """The shipped manifest in ``dest`` when it belongs to ``checkpoint`` (its fingerprint, ``checkpoint_fp`` when
    the caller has it) and to ``split`` of ``dataset`` (names, labels and image contents, ``images`` when the caller has their digest), and its files are the
    ones it records; else :class:`ShippedIndexError` saying which of these fails."""
    dest = Path(dest)
    if not (dest / "manifest.json").is_file():
        raise _refuse(dest, "it has no manifest.json")
    try:
        m = read_json(dest / "manifest.json", max_bytes=MAX_MANIFEST_BYTES, what="its manifest.json")
    except (OSError, ValueError) as exc:
        raise _refuse(dest, f"its manifest.json cannot be read ({exc})") from None
    try:
        if m.get("format") != SHIPPED_FORMAT:
            raise _refuse(dest, f"its format is {m.get('format')!r}, this version reads {SHIPPED_FORMAT}")
        fp = checkpoint_fp or checkpoint_fingerprint(checkpoint)
        if m["checkpoint_fingerprint"] != fp:
            raise _refuse(dest, "it was made with other weights than the checkpoint's")
        d = m["dataset"]
        if d["split"] != split or not all(s in dataset.splits for s in d["splits"]) \
                or dataset_fingerprint(dataset, d["splits"]) != d["fingerprint"]:
            raise _refuse(dest, "it indexes another gallery (other images or labels)")
        if (images or images_digest(dataset, split)) != d["images"]:
            raise _refuse(dest, "the gallery's image files differ from the ones it was made of")
        files = m["files"]
        for name in ("embeddings.npy", "projections.npz"):
            if not (dest / name).is_file() or sha256_file(dest / name) != files[name]:
                raise _refuse(dest, f"its {name} is missing or damaged (its sha256 is not the recorded one)")
        shape = [int(v) for v in m["shape"]]
        if len(shape) != 3 or not isinstance(m.get("projections"), dict):
            raise _refuse(dest, "its manifest.json is malformed")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ShippedIndexError):
            raise
        raise _refuse(dest, f"its manifest.json is malformed ({type(exc).__name__})") from None
    except OSError as exc:
        raise _refuse(dest, f"a gallery or shipped file cannot be read ({exc.strerror or exc})") from None
    return m


def unpack(dest: str | os.PathLike, checkpoint: str | os.PathLike, dataset: SplitDataset, split: str,
           out: str | os.PathLike, max_points: int, checkpoint_fp: str | None = None,
           images: str | None = None) -> Path:
    """Write the index folder ``out`` from the shipped copy in ``dest`` (checked first: :func:`check`), with every
    shipped projection in its cache under ``max_points`` (when the projection's items are all the labelled items
    a ``max_points`` sample would take, i.e. there are at most ``max_points``)."""
    from profashion.retrieval.projection import Projection, store_projection

    dest, out, ckpt = Path(dest), Path(out), Path(checkpoint)
    m = check(dest, ckpt, dataset, split, checkpoint_fp, images)
    items, split_names = gallery_items(dataset, split)
    try:
        emb = np.load(dest / "embeddings.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _refuse(dest, f"its embeddings.npy cannot be read ({exc})") from None
    if emb.dtype != np.float16 or list(emb.shape) != m["shape"] or emb.shape[0] != len(items) \
            or emb.shape[1] != dataset.schema.num_attributes or not np.isfinite(emb).all():
        raise _refuse(dest, f"its embeddings have shape {emb.shape} ({emb.dtype}), not ({len(items)}, "
                            f"{dataset.schema.num_attributes}, D) finite float16")
    emb = emb.astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=2, keepdims=True), 1e-12)
    write_index(out, emb, items, dataset, split, split_names, m["model"], ckpt, m["checkpoint_fingerprint"],
                extra={"shipped": {"from": f"{ckpt.name}/{FOLDER}", "dtype": "float16"}})
    index = GalleryIndex.load(out, checkpoint=ckpt, dataset=dataset)
    try:
        with zipfile.ZipFile(dest / "projections.npz") as zf:  # bounded before anything is inflated
            if sum(info.file_size for info in zf.infolist()) > MAX_PROJECTION_BYTES:
                raise ValueError("projections too large")
        with np.load(dest / "projections.npz", allow_pickle=False) as z:
            for key, scores in m["projections"].items():
                method, _, attribute = key.partition("-")
                a = index.schema.attribute_index(attribute)
                labelled = np.flatnonzero(index.values[:, a] >= 0)
                xy = z[key]
                if len(labelled) > max_points or xy.shape != (len(labelled), 2) or not np.isfinite(xy).all():
                    continue  # the app samples (too many points), or a damaged array: computed when asked
                proj = Projection(attribute, method, labelled, xy.astype(np.float32), index.values[labelled, a],
                                  list(index.schema.values[a]), scores.get("knn_accuracy"), scores.get("chance"),
                                  scores.get("silhouette"))
                store_projection(index, proj, SEED, max_points)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DatasetError, zipfile.BadZipFile):
        pass  # the index stands; its projections are computed when asked, as for any other index
    return out
