"""The ASEN split format: reading the official files, writing our own datasets in the same form.

A dataset folder holds (0-based indices everywhere):

- ``filenames_<split>.txt``: one image path per line, relative to the image root; line = image id (fid).
  A path that is absolute or leads out of the root (``..``; symlinks when an image is opened) is refused.
- ``label_<split>.txt``: ``fid a1 v1 [a2 v2 ...]``. The official files only have ``label_train.txt``;
  our own datasets (synthetic, CSV imports) also write ``label_valid.txt`` and ``label_test.txt`` so the
  app can show every known value of a retrieved item.
- ``query_<split>.txt`` / ``candidate_<split>.txt``: ``fid attr value`` (valid and test splits).
- ``meta.json``: attribute names and value counts. Official layout: one level up, keyed by dataset
  name (``{"FashionAI": {"ATTRIBUTES": [...], "ATTRIBUTES_NUM": {...}}}``) with value names in
  ``values.json`` beside the split files. Our layout: in the folder itself, with ``VALUES`` (names) and
  ``IMAGE_ROOT`` (relative to the folder) added.

Files are read as published: CRLF endings, missing final newline, blank trailing lines. A malformed
line raises :class:`DatasetError` naming the file and the line number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from profashion.io import MAX_JSON_DEPTH, JSONLimitError, atomic_write_json, atomic_write_text, read_json
from profashion.io import replace_folder as move_folder_into_place  # noqa: F401 - re-exported

SPLITS = ("train", "valid", "test")
EVAL_SPLITS = ("valid", "test")

EVAL_LAYOUTS = ("asen", "all-attributes")
"""How an eval split's images become queries and candidates (the ``EVAL_LAYOUT`` of meta.json):

- ``"asen"`` (the default, and the layout of the official FashionAI / DARN / DeepFashion splits): each
  image serves under exactly ONE of its attributes (:func:`query_candidate_split`);
- ``"all-attributes"``: each image serves under EVERY attribute it is labelled with, as a query for about
  ``query_fraction`` of each attribute's labelled images and as a candidate for the rest
  (:func:`all_attributes_query_split`); several times more queries per attribute on a small catalogue.

Numbers measured under one layout are not comparable with numbers measured under the other.
"""


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used as it is; the message says what to fix."""


# --------------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class AttributeSchema:
    """Attribute names (index order) and the value names of each attribute."""

    names: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        if len(self.names) != len(self.values):
            raise DatasetError(f"{len(self.names)} attribute names but {len(self.values)} value lists")
        if len(set(self.names)) != len(self.names):
            raise DatasetError(f"attribute names are not unique: {list(self.names)}")
        for name, vals in zip(self.names, self.values):
            if len(vals) < 1:
                raise DatasetError(f"attribute {name!r} has no values")

    @property
    def num_attributes(self) -> int:
        return len(self.names)

    @property
    def num_values(self) -> list[int]:
        return [len(v) for v in self.values]

    def attribute_index(self, name_or_index: str | int) -> int:
        """Index of an attribute given by name or index, with a clear error for an unknown one."""
        if isinstance(name_or_index, (int, np.integer)):
            i = int(name_or_index)
            if not 0 <= i < len(self.names):
                raise DatasetError(
                    f"attribute index {i} is out of range: this dataset has {len(self.names)} attributes "
                    f"(0..{len(self.names) - 1}: {', '.join(self.names)})"
                )
            return i
        key = str(name_or_index).strip()
        if key in self.names:
            return self.names.index(key)
        norm = key.lower().replace(" ", "_").replace("-", "_")
        for i, n in enumerate(self.names):
            if n.lower().replace(" ", "_").replace("-", "_") == norm:
                return i
        raise DatasetError(f"unknown attribute {key!r}; known attributes: {', '.join(self.names)}")

    def value_name(self, attribute: int, value: int) -> str:
        return self.values[attribute][value]

    def to_json(self) -> dict:
        return {
            "ATTRIBUTES": list(self.names),
            "ATTRIBUTES_NUM": {n: len(v) for n, v in zip(self.names, self.values)},
            "VALUES": {n: list(v) for n, v in zip(self.names, self.values)},
        }

    @classmethod
    def from_json(cls, meta: dict, values: dict | None = None, where: str = "meta.json") -> AttributeSchema:
        try:
            names = [str(n) for n in meta["ATTRIBUTES"]]
            counts = meta.get("ATTRIBUTES_NUM") or {}
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: expected an object with 'ATTRIBUTES' (and 'ATTRIBUTES_NUM')") from exc
        values = values if values is not None else meta.get("VALUES")
        value_lists = []
        for n in names:
            if values and n in values:
                vals = tuple(str(v) for v in values[n])
                if n in counts and int(counts[n]) != len(vals):
                    raise DatasetError(f"{where}: attribute {n!r} has {counts[n]} values but {len(vals)} names")
            elif n in counts:
                vals = tuple(str(i) for i in range(int(counts[n])))
            else:
                raise DatasetError(f"{where}: attribute {n!r} has neither a value count nor value names")
            value_lists.append(vals)
        return cls(tuple(names), tuple(value_lists))


# --------------------------------------------------------------------------------------------------
# Reading


def decode_utf8(data: bytes, path) -> str:
    """``data`` (read from ``path``) as UTF-8 text; a DatasetError naming the first bad byte otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc


def read_utf8(path, missing: str = "missing file") -> str:
    """The UTF-8 text of the file ``path``; a DatasetError ``"<missing>: <path>"`` when it is not there, or
    naming the first byte that is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"{missing}: {path}") from exc
    return decode_utf8(data, path)


def numbered_lines(path, missing: str = "missing file") -> list[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line; CRLF and no final newline are fine.
    ``missing`` names a missing file in its error (:func:`read_utf8`)."""
    text = read_utf8(path, missing)
    return [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if ln.strip()]


def three_ints(path, lineno: int, line: str, expected: str) -> tuple[int, int, int]:
    """The three integers of a stripped ``line`` (``lineno`` of ``path``); a DatasetError saying it expected
    ``expected`` (``'fid attribute value'``) otherwise."""
    parts = line.split()
    if len(parts) != 3:
        raise DatasetError(f"{path}, line {lineno}: expected {expected}, got {line!r}")
    try:
        a, b, c = (int(p) for p in parts)
    except ValueError as exc:
        raise DatasetError(f"{path}, line {lineno}: expected three integers, got {line!r}") from exc
    return a, b, c


def read_filenames(path: Path) -> list[str]:
    """Image paths of a ``filenames_<split>.txt``; the list index is the image id."""
    lines = [ln.strip() for ln in read_utf8(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for i, ln in enumerate(lines):
        if not ln:
            raise DatasetError(f"{path}, line {i + 1}: empty image path (line numbers are image ids)")
    return lines


def read_pairs(path: Path, schema: AttributeSchema, num_images: int | None = None) -> np.ndarray:
    """``fid attr value`` lines (query/candidate files) as an int64 array of shape (n, 3), validated."""
    rows = []
    for lineno, ln in numbered_lines(path):
        fid, a, v = three_ints(path, lineno, ln, "'fid attribute value'")
        _check_label(path, lineno, schema, a, v)
        _check_fid(path, lineno, fid, num_images)
        rows.append((fid, a, v))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def read_labels(path: Path, schema: AttributeSchema, num_images: int | None = None) -> np.ndarray:
    """``fid a1 v1 [a2 v2 ...]`` lines as an (n, 3) int64 array, one row per (fid, attribute, value)."""
    rows = []
    for lineno, ln in numbered_lines(path):
        parts = ln.split()
        if len(parts) < 3 or len(parts) % 2 == 0:
            raise DatasetError(f"{path}, line {lineno}: expected 'fid a1 v1 [a2 v2 ...]', got {ln!r}")
        try:
            nums = [int(p) for p in parts]
        except ValueError as exc:
            raise DatasetError(f"{path}, line {lineno}: expected integers, got {ln!r}") from exc
        fid = nums[0]
        _check_fid(path, lineno, fid, num_images)
        for a, v in zip(nums[1::2], nums[2::2]):
            _check_label(path, lineno, schema, a, v)
            rows.append((fid, a, v))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _check_label(path, lineno, schema: AttributeSchema, a: int, v: int) -> None:
    if not 0 <= a < schema.num_attributes:
        raise DatasetError(
            f"{path}, line {lineno}: attribute {a} is out of range (the dataset has {schema.num_attributes})"
        )
    if not 0 <= v < schema.num_values[a]:
        raise DatasetError(
            f"{path}, line {lineno}: value {v} is out of range for attribute {schema.names[a]!r} "
            f"({schema.num_values[a]} values)"
        )


def check_image_path(path: str, root: str | os.PathLike | None, where: str, resolve: bool = False) -> None:
    """Refuse an image path that is absolute or leads out of the image ``root`` once ``..`` is resolved and,
    with ``resolve`` (a disk look-up, done when an image is opened), once symlinks are resolved too; the
    root's own path may be a symlink. The error names ``where`` (file and line) and the root."""
    outside = os.path.isabs(path) or (".." in path and os.path.normpath(path).split(os.sep)[0] == os.pardir)
    if not outside and resolve and root is not None:
        real_root = os.path.realpath(root)
        outside = os.path.commonpath([real_root, os.path.realpath(os.path.join(real_root, path))]) != real_root
    if outside:
        raise DatasetError(f"{where}: image path {path!r} leads out of the image root"
                           f"{f' {root}' if root is not None else ''}; "
                           "image paths must be relative to it and stay inside it")


def _check_fid(path, lineno, fid: int, num_images: int | None) -> None:
    if fid < 0 or (num_images is not None and fid >= num_images):
        raise DatasetError(
            f"{path}, line {lineno}: image id {fid} is out of range"
            + (f" (the split has {num_images} images)" if num_images is not None else "")
        )


# --------------------------------------------------------------------------------------------------
# The dataset object


@dataclass
class Split:
    """One split of a dataset: its image paths and labels."""

    name: str
    filenames: list[str] | None  # None when the filenames file is not published (FashionAI train)
    labels: np.ndarray  # (n, 3) fid, attribute, value: every known label of the split
    queries: np.ndarray | None = None  # (n, 3), eval splits only
    candidates: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        if self.filenames is not None:
            return len(self.filenames)
        return int(self.labels[:, 0].max()) + 1 if len(self.labels) else 0

    def known_values(self, num_attributes: int) -> np.ndarray:
        """(num_images, A) int64 matrix of known values, -1 where unknown."""
        out = np.full((self.num_images, num_attributes), -1, dtype=np.int64)
        for rows in (self.labels, self.queries, self.candidates):
            if rows is not None and len(rows):
                out[rows[:, 0], rows[:, 1]] = rows[:, 2]
        return out


@dataclass
class SplitDataset:
    """A dataset in the ASEN split format, loaded and validated."""

    root: Path
    name: str
    schema: AttributeSchema
    image_root: Path | None
    splits: dict[str, Split] = field(default_factory=dict)
    mask_root: Path | None = None  # synthetic datasets: ground-truth attribute masks
    eval_layout: str = "asen"  # see EVAL_LAYOUTS; meta.json's EVAL_LAYOUT, "asen" when absent
    # image paths already checked (symlinks resolved): a gallery of 2,302 images is asked for each path many times
    # at start-up (its index, its shipped copy, its URLs), and each check is a walk of the disk
    _paths: dict = field(default_factory=dict, repr=False, compare=False)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DatasetError(
                f"{self.root} has no {name!r} split (it has: {', '.join(self.splits) or 'none'})"
            )
        return self.splits[name]

    def image_path(self, split: str, fid: int) -> Path:
        s = self.split(split)
        if s.filenames is None:
            raise DatasetError(f"{self.root}: filenames_{split}.txt is missing, so images cannot be found")
        if self.image_root is None:
            raise DatasetError(f"{self.root}: no image root; pass --image-root DIR")
        key = (split, fid, self.image_root)
        hit = self._paths.get(key)
        if hit is not None:
            return hit
        path = s.filenames[fid]
        check_image_path(path, self.image_root, f"{self.root / f'filenames_{split}.txt'}, line {fid + 1}",
                         resolve=True)
        out = self._paths[key] = self.image_root / path
        return out

    def mask_path(self, split: str, fid: int) -> Path | None:
        if self.mask_root is None:
            return None
        return self.mask_root / Path(self.split(split).filenames[fid]).with_suffix(".png")

    def missing_images(self, split: str, fids: Iterable[int] | None = None) -> list[Path]:
        s = self.split(split)
        fids = range(s.num_images) if fids is None else fids
        return [p for p in (self.image_path(split, int(f)) for f in fids) if not p.is_file()]

    def check_images(self, split: str, fids: Iterable[int] | None = None) -> None:
        """Raise one error naming how many images are missing and the first few."""
        missing = self.missing_images(split, fids)
        if missing:
            first = ", ".join(str(p) for p in missing[:3])
            raise DatasetError(
                f"{len(missing)} image(s) of the {split} split are missing under {self.image_root} "
                f"(first: {first}); check --image-root"
            )


def _find_meta(root: Path) -> tuple[AttributeSchema, str, dict]:
    own = root / "meta.json"
    if own.is_file():
        meta = _read_json(own)
        if "ATTRIBUTES" in meta:
            values = _read_json(root / "values.json") if (root / "values.json").is_file() else None
            return AttributeSchema.from_json(meta, values, where=str(own)), str(meta.get("NAME", root.name)), meta
    parent = root.parent / "meta.json"
    if parent.is_file():
        meta = _read_json(parent)
        if root.name in meta:
            values = _read_json(root / "values.json") if (root / "values.json").is_file() else None
            return AttributeSchema.from_json(meta[root.name], values, where=f"{parent}[{root.name!r}]"), root.name, {}
        raise DatasetError(f"{parent} has no entry for dataset {root.name!r} (it has: {', '.join(meta)})")
    raise DatasetError(f"{root}: no meta.json in the folder or one level up; is this an ASEN split folder?")


MAX_META_BYTES = 16 << 20  # meta.json / values.json: attribute and value names (a few KB in practice)


def _read_json(path: Path) -> dict:
    """A dataset's meta.json or values.json: a JSON object, read in bounded memory; DatasetError otherwise."""
    try:
        data = read_json(path, max_bytes=MAX_META_BYTES, max_depth=MAX_JSON_DEPTH, what=str(path),
                         fix="fix or regenerate the dataset's metadata")
    except FileNotFoundError as exc:
        raise DatasetError(f"missing file: {path}") from exc
    except JSONLimitError as exc:
        raise DatasetError(str(exc)) from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object (attribute names and values), got a "
                           f"{type(data).__name__}")
    return data


def load_dataset(root: str | os.PathLike, image_root: str | os.PathLike | None = None) -> SplitDataset:
    """Load a dataset folder in the ASEN split format.

    ``image_root`` defaults to the ``IMAGE_ROOT`` of our own meta.json (relative to the folder), else
    none (labels only: enough for ``eval --embeddings random``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    schema, name, meta = _find_meta(root)
    if image_root is None and meta.get("IMAGE_ROOT"):
        image_root = root / meta["IMAGE_ROOT"]
    mask_root = root / meta["MASK_ROOT"] if meta.get("MASK_ROOT") else None
    layout = str(meta.get("EVAL_LAYOUT", "asen"))
    if layout not in EVAL_LAYOUTS:
        raise DatasetError(f"{root / 'meta.json'}: unknown EVAL_LAYOUT {layout!r} (known: {', '.join(EVAL_LAYOUTS)})")
    ds = SplitDataset(root=root, name=name, schema=schema,
                      image_root=Path(image_root) if image_root is not None else None, mask_root=mask_root,
                      eval_layout=layout)
    for split in SPLITS:
        fn = root / f"filenames_{split}.txt"
        lab = root / f"label_{split}.txt"
        q, c = root / f"query_{split}.txt", root / f"candidate_{split}.txt"
        if not (fn.is_file() or lab.is_file() or q.is_file()):
            continue
        filenames = read_filenames(fn) if fn.is_file() else None
        for i, path in enumerate(filenames or []):  # symlinks are resolved when an image is opened (image_path)
            check_image_path(path, ds.image_root, f"{fn}, line {i + 1}")
        n = len(filenames) if filenames is not None else None
        labels = read_labels(lab, schema, n) if lab.is_file() else np.zeros((0, 3), np.int64)
        queries = read_pairs(q, schema, n) if q.is_file() else None
        candidates = read_pairs(c, schema, n) if c.is_file() else None
        if (queries is None) != (candidates is None):
            raise DatasetError(f"{root}: {split} has one of query_{split}.txt / candidate_{split}.txt but not both")
        ds.splits[split] = Split(split, filenames, labels, queries, candidates)
    if not ds.splits:
        raise DatasetError(f"{root}: no split files (filenames_*.txt, label_*.txt, query_*.txt) found")
    return ds


# --------------------------------------------------------------------------------------------------
# Writing (atomically: a dataset is written to a temporary folder and renamed into place, profashion.io)


# atomic_write_text and move_folder_into_place live in profashion.io (imported above); they stay importable
# from here for the code that imports them from this module.


def format_labels(labels: Sequence[Sequence[tuple[int, int]]]) -> str:
    """Label lines ``fid a1 v1 ...`` from, per image, its list of known (attribute, value) pairs."""
    lines = []
    for fid, pairs in enumerate(labels):
        if pairs:
            lines.append(" ".join([str(fid)] + [f"{a} {v}" for a, v in pairs]))
    return "\n".join(lines) + ("\n" if lines else "")


def format_pairs(rows: np.ndarray) -> str:
    return "".join(f"{int(f)} {int(a)} {int(v)}\n" for f, a, v in np.asarray(rows).reshape(-1, 3))


def write_split_files(
    out: Path,
    split: str,
    filenames: Sequence[str],
    labels: Sequence[Sequence[tuple[int, int]]],
    queries: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> None:
    """Write one split's files into ``out`` (a folder that is itself renamed into place by the caller)."""
    out = Path(out)
    atomic_write_text(out / f"filenames_{split}.txt", "".join(f"{f}\n" for f in filenames))
    atomic_write_text(out / f"label_{split}.txt", format_labels(labels))
    if queries is not None:
        atomic_write_text(out / f"query_{split}.txt", format_pairs(queries))
        atomic_write_text(out / f"candidate_{split}.txt", format_pairs(candidates))


def write_meta(out: Path, schema: AttributeSchema, name: str, image_root: str = "images",
               mask_root: str | None = None, extra: dict | None = None) -> None:
    meta = {"NAME": name, **schema.to_json(), "IMAGE_ROOT": image_root}
    if mask_root:
        meta["MASK_ROOT"] = mask_root
    if extra:
        meta.update(extra)
    atomic_write_json(Path(out) / "meta.json", meta)


def query_candidate_split(
    labels: np.ndarray, num_attributes: int, rng: np.random.Generator, query_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Assign each image of an eval split to ONE attribute, then to query or candidate, stratified.

    ``labels`` is (n, 3) fid/attribute/value with every known label. Each image gets one attribute
    among those it has a label for (the attribute with the fewest images so far, ties at random,
    so the attributes stay balanced); then, per (attribute, value), about ``query_fraction`` of its
    images become queries (at least one when the value has two or more images, so every query can
    have a relevant candidate). Returns (queries, candidates), each (m, 3), sorted by fid.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1, 3)
    by_fid: dict[int, list[tuple[int, int]]] = {}
    for f, a, v in labels:
        by_fid.setdefault(int(f), []).append((int(a), int(v)))
    counts = np.zeros(num_attributes, dtype=np.int64)
    chosen = []
    for f in rng.permutation(np.array(sorted(by_fid), dtype=np.int64)):
        pairs = by_fid[int(f)]
        order = rng.permutation(len(pairs))
        a, v = min((pairs[i] for i in order), key=lambda p: counts[p[0]])
        counts[a] += 1
        chosen.append((int(f), a, v))
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1, 3)
    is_query = np.zeros(len(chosen), dtype=bool)
    for key in {(a, v) for _, a, v in chosen}:
        idx = np.flatnonzero((chosen[:, 1] == key[0]) & (chosen[:, 2] == key[1]))
        if len(idx) < 2:
            continue
        k = max(1, int(round(query_fraction * len(idx))))
        k = min(k, len(idx) - 1)
        is_query[rng.choice(idx, size=k, replace=False)] = True
    q, c = chosen[is_query], chosen[~is_query]
    return q[np.argsort(q[:, 0], kind="stable")], c[np.argsort(c[:, 0], kind="stable")]


def all_attributes_query_split(
    labels: np.ndarray, num_attributes: int, rng: np.random.Generator, query_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """The ``"all-attributes"`` eval layout: every (image, attribute) label serves, as query or candidate.

    ``labels`` is (n, 3) fid/attribute/value with every known label of the split (one row per image and
    attribute). Per (attribute, value), in that order, about ``query_fraction`` of its images become
    queries (at least one when the value has two or more images, never all of them, so every query has
    a relevant candidate); the others are candidates. An image can thus be a query under one attribute
    and a candidate under another, but never both under the same attribute. Returns (queries,
    candidates), each (m, 3), sorted by fid then attribute (the split-file format: a line per image and
    attribute).
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1, 3)
    if len(labels):
        if labels[:, 1].min() < 0 or labels[:, 1].max() >= num_attributes:
            raise DatasetError(f"attribute indices must lie in [0, {num_attributes})")
        keys = labels[:, 0] * num_attributes + labels[:, 1]
        if len(np.unique(keys)) != len(keys):
            raise DatasetError("an (image, attribute) pair is labelled twice")
    is_query = np.zeros(len(labels), dtype=bool)
    for a in range(num_attributes):
        for v in np.unique(labels[labels[:, 1] == a, 2]):
            idx = np.flatnonzero((labels[:, 1] == a) & (labels[:, 2] == v))
            if len(idx) < 2:
                continue
            k = min(max(1, int(round(query_fraction * len(idx)))), len(idx) - 1)
            is_query[rng.choice(idx, size=k, replace=False)] = True

    def ordered(rows: np.ndarray) -> np.ndarray:
        return rows[np.lexsort((rows[:, 1], rows[:, 0]))]

    return ordered(labels[is_query]), ordered(labels[~is_query])


def eval_query_split(
    labels: np.ndarray, num_attributes: int, rng: np.random.Generator, layout: str = "asen",
    query_fraction: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """(queries, candidates) of an eval split in ``layout`` (one of :data:`EVAL_LAYOUTS`)."""
    if layout == "asen":
        return query_candidate_split(labels, num_attributes, rng, query_fraction=query_fraction)
    if layout == "all-attributes":
        return all_attributes_query_split(labels, num_attributes, rng, query_fraction=query_fraction)
    raise DatasetError(f"unknown eval layout {layout!r}: choose one of {', '.join(EVAL_LAYOUTS)}")
