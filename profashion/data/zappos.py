"""Zappos50K with the fixed triplet lists of Conditional Similarity Networks (CSN, Veit et al. 2017).

The layout CSN's loader (``triplet_image_loader.py`` of andreasveit/conditional-similarity-networks)
reads, and that its ``get_data.py`` unpacks into ``data/``::

    <root>/filenames.json                      one image path per line (despite the name); line = index
    <root>/tripletlists/<cond>_tripletlist_<split>.txt
    <root>/ut-zap50k-images/<path from filenames.json>

with ``<cond>`` in ``class, closure, gender, heel`` (condition indices 0..3, in that order) and
``<split>`` in ``train, val, test``. A triplet line ``a b c`` (indices into the filenames list) means:
under that condition, anchor ``a`` is more similar to ``c`` than to ``b`` (CSN names them anchor, far,
close). Accuracy on these lists is :func:`profashion.evaluation.triplet_accuracy.triplet_accuracy`.

``filenames.json`` is also accepted as a real JSON list of paths, and ``filenames.txt`` as its name.
Malformed lines raise :class:`~profashion.data.splits.DatasetError` naming the file and the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profashion.data.splits import DatasetError, check_image_path, decode_utf8, numbered_lines, three_ints
from profashion.io import MAX_JSON_DEPTH, JSONLimitError, loads_json, read_bytes_bounded

MAX_FILENAMES_BYTES = 64 << 20  # the list of image paths: about 3 MB for the 50,025 images of Zappos50k

CONDITIONS = ("class", "closure", "gender", "heel")
ZAPPOS_SPLITS = ("train", "val", "test")
IMAGE_FOLDER = "ut-zap50k-images"
_SPLIT_ALIASES = {"valid": "val", "validation": "val"}


@dataclass
class ZapposTriplets:
    """One split's triplets: ``triplets[i] = (anchor, far, close, condition)`` (int64)."""

    filenames: list[str]
    conditions: list[str]
    triplets: np.ndarray  # (n, 4): a, b, c, condition index into ``conditions``
    image_root: Path | None = None

    def __len__(self) -> int:
        return len(self.triplets)

    def image_path(self, index: int) -> Path:
        if self.image_root is None:
            raise DatasetError("no image root for these triplets")
        name = self.filenames[int(index)]
        check_image_path(name, self.image_root, f"image {int(index)} of the triplets", resolve=True)
        return self.image_root / name


def triplet_list_path(root, condition: str, split: str) -> Path:
    """Where CSN keeps the triplet list of ``condition`` for ``split``."""
    return Path(root) / "tripletlists" / f"{condition}_tripletlist_{split}.txt"


def read_zappos_filenames(path) -> list[str]:
    """Image paths, the list index being the image index: one per line, or a JSON list of strings."""
    path = Path(path)
    fix = "give one image path per line, or a JSON list of image paths"
    try:
        data = read_bytes_bounded(path, MAX_FILENAMES_BYTES, str(path), fix)
    except FileNotFoundError as exc:
        raise DatasetError(f"missing file: {path} (CSN's list of Zappos image paths)") from exc
    except JSONLimitError as exc:
        raise DatasetError(str(exc)) from None
    text = decode_utf8(data, path)
    if text.lstrip().startswith("["):
        try:
            names = loads_json(data, max_bytes=MAX_FILENAMES_BYTES, max_depth=MAX_JSON_DEPTH,
                               what=f"{path} (it starts like a JSON list)", fix=fix)
        except JSONLimitError as exc:
            raise DatasetError(str(exc)) from None
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise DatasetError(f"{path}: expected a JSON list of non-empty image paths")
        return [n.strip() for n in names]
    lines = [ln.strip() for ln in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for i, ln in enumerate(lines):
        if not ln:
            raise DatasetError(f"{path}, line {i + 1}: empty image path (line numbers are image indices)")
    if not lines:
        raise DatasetError(f"{path} lists no image")
    return lines


def read_triplet_list(path, num_images: int | None = None) -> np.ndarray:
    """``a b c`` lines of one triplet list as an (n, 3) int64 array, validated."""
    path = Path(path)
    rows = []
    for lineno, line in numbered_lines(path, missing="missing triplet list"):
        a, b, c = three_ints(path, lineno, line, "three image indices 'a b c'")
        for idx in (a, b, c):
            if idx < 0 or (num_images is not None and idx >= num_images):
                raise DatasetError(
                    f"{path}, line {lineno}: image index {idx} is out of range"
                    + (f" (the filenames list has {num_images} images)" if num_images is not None else "")
                )
        rows.append((a, b, c))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _filenames_file(root: Path) -> Path:
    for name in ("filenames.json", "filenames.txt"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: no filenames.json (CSN's list of image paths); is this CSN's Zappos data folder?")


def load_zappos_triplets(root, split: str, conditions=CONDITIONS, image_root=None) -> ZapposTriplets:
    """Read CSN's Zappos triplet lists of ``split`` (``train``, ``val``/``valid`` or ``test``).

    ``conditions`` selects and orders the condition lists (names from :data:`CONDITIONS`); the fourth
    column of ``triplets`` indexes into that tuple. ``image_root`` defaults to ``<root>/ut-zap50k-images``
    when that folder exists.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Zappos folder not found: {root}")
    split = _SPLIT_ALIASES.get(split, split)
    if split not in ZAPPOS_SPLITS:
        raise DatasetError(f"unknown Zappos split {split!r}; CSN's splits are {', '.join(ZAPPOS_SPLITS)}")
    conditions = [str(c) for c in conditions]
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise DatasetError(f"unknown condition(s) {unknown or conditions}; CSN's conditions are {', '.join(CONDITIONS)}")
    filenames = read_zappos_filenames(_filenames_file(root))
    parts = []
    for k, cond in enumerate(conditions):
        trip = read_triplet_list(triplet_list_path(root, cond, split), len(filenames))
        parts.append(np.concatenate([trip, np.full((len(trip), 1), k, dtype=np.int64)], axis=1))
    if image_root is None and (root / IMAGE_FOLDER).is_dir():
        image_root = root / IMAGE_FOLDER
    return ZapposTriplets(
        filenames=filenames,
        conditions=conditions,
        triplets=np.concatenate(parts, axis=0),
        image_root=Path(os.fspath(image_root)) if image_root is not None else None,
    )
