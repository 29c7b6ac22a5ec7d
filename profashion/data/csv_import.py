"""CSV catalogues (the practitioner's format) turned into a dataset folder in the ASEN split format.

A catalogue is a CSV with a header row, one column of image paths (relative to an image root) and one
column per attribute; an empty cell means "unknown". :func:`import_csv` writes:

- ``meta.json`` (via :func:`~profashion.data.splits.write_meta`): the attributes in the order given,
  each attribute's value names = its distinct non-empty cells (whitespace-stripped) sorted
  alphabetically, ``IMAGE_ROOT`` = the image root relative to the output folder, and an ``IMPORT``
  record (source, seed, fractions, stratification, skipped rows);
- ``filenames_/label_{train,valid,test}.txt`` with every known label of each image;
- ``query_/candidate_{valid,test}.txt`` in one of two eval layouts (``eval_layout``):
  ``"asen"`` (the default, the official benchmarks' layout, :func:`~profashion.data.splits.query_candidate_split`):
  each eval image gets ONE of its known attributes (kept balanced) and about ``query_fraction`` of each
  (attribute, value) become queries; ``"all-attributes"``
  (:func:`~profashion.data.splits.all_attributes_query_split`): each eval image serves under EVERY
  attribute it is labelled with, as a query for about ``query_fraction`` of each (attribute, value) and
  as a candidate for the rest (meta.json then records ``EVAL_LAYOUT``). The second gives several times
  more queries per attribute on a small catalogue; numbers under one layout are not comparable with
  numbers under the other. With the default layout the files are byte-identical to earlier versions.

A catalogue too small for the requested fractions (an eval split that would hold no query, i.e. no two
of its images sharing a value) is refused with the smallest fraction that works for the seed; so are
valid and test fractions both 0 (nothing to evaluate on) and image paths that are absolute or lead out of
the image root once ``..`` is resolved (symlinks are resolved when an image is opened).

Train/valid/test split (seeded, stratified). Each row's stratum is its RAREST known label: the
(attribute, value) with the fewest images in the whole catalogue (ties: attribute order, then value
name). That is the label a plain random split is most likely to leave out of a split. Rows are shuffled
inside their stratum, strata are laid end to end, and the sequence is split by systematic sampling with
a random offset: every run of ``n`` consecutive rows, so every stratum, sends ``floor`` or ``ceil`` of
``n * test_fraction`` rows to test (then likewise for valid among the rest), and the totals are exact
to one row. Strata too small for a share (a value with a single image) are spread across the splits by
the offset rather than all falling in train.

Values with fewer than two images are kept (retrieval can still use them as candidates); the triplet
sampler skips them as positives. Rows with no known value at all are skipped and counted in meta.json.

The folder is written atomically: everything goes into a temporary sibling folder that is renamed into
place at the end, so an error leaves nothing half-written (and an existing dataset is replaced only by
a complete one). ``overwrite=True`` replaces only a dataset folder (one with ``meta.json``), never a
folder holding the CSV or the images.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from profashion.data.splits import (
    EVAL_LAYOUTS,
    AttributeSchema,
    DatasetError,
    check_image_path,
    eval_query_split,
    write_meta,
    write_split_files,
)
from profashion.io import atomic_folder, check_output_folder

STRATIFICATION = "rarest known (attribute, value) of each row; systematic sampling with a random offset"


def _read_catalogue(csv_path: Path, image_column: str, attributes: list[str]):
    """(header, image paths, per-row attribute cells, CSV line numbers) with every check on the CSV."""
    if not csv_path.is_file():
        raise DatasetError(f"CSV file not found: {csv_path}")
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{csv_path} is empty: expected a header row and one row per image")
            header = [h.strip() for h in header]
            missing = [a for a in attributes if a not in header]
            if missing:
                raise DatasetError(
                    f"{csv_path} has no column(s) {', '.join(map(repr, missing))}; "
                    f"available columns: {', '.join(header)}"
                )
            if image_column not in header:
                raise DatasetError(
                    f"{csv_path} has no image column {image_column!r} (pass image_column=...); "
                    f"available columns: {', '.join(header)}"
                )
            img_i = header.index(image_column)
            attr_i = [header.index(a) for a in attributes]
            paths, cells, lines = [], [], []
            for row in reader:
                if not row or not any(x.strip() for x in row):
                    continue  # blank line
                lineno = reader.line_num
                if len(row) != len(header):
                    raise DatasetError(
                        f"{csv_path}, line {lineno}: {len(row)} fields where the header has {len(header)}"
                    )
                path = row[img_i].strip()
                if not path:
                    raise DatasetError(f"{csv_path}, line {lineno}: empty {image_column!r} cell")
                if "\n" in path or "\r" in path:
                    raise DatasetError(f"{csv_path}, line {lineno}: the image path contains a line break")
                paths.append(path)
                cells.append([row[i].strip() for i in attr_i])
                lines.append(lineno)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path} is not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DatasetError(f"{csv_path} is not a readable CSV file: {exc}") from exc
    if not paths:
        raise DatasetError(f"{csv_path} has a header but no rows")
    return paths, cells, lines


def _systematic(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over ``n`` ordered items: item k is chosen when ``k * fraction + u`` crosses an
    integer (u uniform in [0, 1)), so any ``m`` consecutive items hold floor/ceil of ``m * fraction``."""
    k = np.arange(n, dtype=np.float64)
    u = rng.random()
    return np.floor((k + 1) * fraction + u) - np.floor(k * fraction + u) >= 1


def stratified_split(
    codes: np.ndarray, valid_fraction: float, test_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of each row of ``codes`` (n, A) (value index, -1 unknown),
    stratified on each row's rarest known (attribute, value); see the module docstring."""
    n, num_attr = codes.shape
    # images per (attribute, value), looked up for every known cell
    rarity = np.full(codes.shape, np.iinfo(np.int64).max, dtype=np.int64)
    for a in range(num_attr):
        known = codes[:, a] >= 0
        counts = np.bincount(codes[known, a])
        rarity[known, a] = counts[codes[known, a]]
    rarest_attr = np.argmin(rarity, axis=1)  # first attribute on ties
    rows = np.arange(n)
    key_count = rarity[rows, rarest_attr]
    key_value = codes[rows, rarest_attr]
    # strata laid end to end (rarest first), rows shuffled inside each stratum by a random tie-breaker
    order = np.lexsort((rng.random(n), key_value, rarest_attr, key_count))
    split = np.zeros(n, dtype=np.int64)
    is_test = _systematic(n, test_fraction, rng)
    split[order[is_test]] = 2
    rest = order[~is_test]
    if test_fraction < 1 and valid_fraction > 0:
        is_valid = _systematic(len(rest), valid_fraction / (1.0 - test_fraction), rng)
        split[rest[is_valid]] = 1
    return split


def _check_fractions(valid_fraction: float, test_fraction: float, query_fraction: float) -> None:
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise DatasetError(
            f"valid_fraction ({valid_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and leave some images for training"
        )
    if not 0 < query_fraction < 1:
        raise DatasetError(f"query_fraction must be between 0 and 1, got {query_fraction}")
    if valid_fraction == 0 and test_fraction == 0:
        raise DatasetError("valid_fraction and test_fraction are both 0, which leaves no valid or test query to "
                           "evaluate a model on; give the test split a share, e.g. --test-fraction 0.2")



def _plan(codes: np.ndarray, seed: int, valid_fraction: float, test_fraction: float, query_fraction: float,
          layout: str) -> tuple[np.ndarray, dict]:
    """(split index of each row, {eval split: (queries, candidates)}), all from ``seed``."""
    split_rng, valid_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    split_of = stratified_split(codes, valid_fraction, test_fraction, split_rng)
    files = {}
    for k, (split, rng) in enumerate((("valid", valid_rng), ("test", test_rng)), start=1):
        sub = codes[split_of == k]  # CSV order inside each split
        fid, attr = np.nonzero(sub >= 0)
        triples = np.stack([fid, attr, sub[fid, attr]], axis=1)
        files[split] = eval_query_split(triples, codes.shape[1], rng, layout, query_fraction=query_fraction)
    return split_of, files


def _check_eval_splits(codes, seed, valid_fraction, test_fraction, query_fraction, layout, split_of,
                       files) -> None:
    """Refuse a catalogue too small for the fractions: an eval split (with a fraction > 0) without a query.

    The message names the smallest fractions (steps of 0.01, same seed) that work: first the test
    fraction (the test split is drawn first, so it does not depend on the valid fraction), then, with
    that test fraction, the valid fraction; each must leave images for training.
    """
    n = len(codes)
    fractions = {"valid": valid_fraction, "test": test_fraction}
    problems, fixes = [], {}
    for split in ("test", "valid"):
        if fractions[split] <= 0:
            continue
        if split == "valid" and fixes:  # the test fraction changed: the valid split changes with it
            split_of, files = _plan(codes, seed, fractions["valid"], fractions["test"], query_fraction, layout)
        if len(files[split][0]):
            continue
        other = fractions["valid" if split == "test" else "test"]
        smallest = None
        for step in range(int(np.floor(fractions[split] * 100)) + 1, 100):
            f = step / 100
            if f + other >= 1:
                break
            trial_split_of, trial = _plan(codes, seed, *((fractions["valid"], f) if split == "test"
                                                         else (f, fractions["test"])), query_fraction, layout)
            if len(trial[split][0]) and (trial_split_of == 0).any():
                smallest = f
                break
        got = int(np.sum(split_of == (2 if split == "test" else 1)))
        text = (f"{split}_fraction {fractions[split]} gives the {split} split {got} image(s) and no query (a query "
                f"needs two {split} images sharing a value)")
        if split == "valid" and fixes:
            text = f"with that test fraction, {text}"
        if smallest is None:
            problems.append(f"{text}, and no {split} fraction below {1 - other:.2f} gives one")
            break
        problems.append(f"{text}; the smallest {split} fraction that gives one with seed {seed} is {smallest}")
        fixes[split] = fractions[split] = smallest
    if problems:
        advice = (": add images, or labels that several images share" if len(problems) > len(fixes)
                  else ": use " + " ".join(f"--{k}-fraction {v}" for k, v in fixes.items()))
        raise DatasetError(f"the catalogue ({n} labelled images) is too small for the requested fractions: "
                           + "; ".join(problems) + advice)


def import_csv(
    csv_path,
    image_root,
    attributes: list[str],
    out,
    seed: int = 0,
    image_column: str = "image",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    query_fraction: float = 0.2,
    check_images: bool = True,
    overwrite: bool = False,
    eval_layout: str = "asen",
) -> Path:
    """Turn a CSV catalogue into a dataset folder ``out`` in the ASEN split format; returns ``out``.

    ``attributes`` are the CSV columns to use, in the order they get as attribute indices. With
    ``check_images`` every image file must exist under ``image_root``. ``eval_layout`` is ``"asen"``
    (one attribute per eval image) or ``"all-attributes"`` (every labelled attribute of an eval image;
    see the module docstring). The same ``seed`` gives byte-identical files. Every problem raises one
    :class:`DatasetError` sentence.
    """
    csv_path, image_root, out = Path(csv_path), Path(image_root), Path(out)
    attributes = [str(a).strip() for a in attributes]
    if not attributes:
        raise DatasetError("no attribute columns given: name at least one CSV column to use as an attribute")
    if len(set(attributes)) != len(attributes):
        raise DatasetError(f"attribute columns are named more than once: {attributes}")
    if image_column in attributes:
        raise DatasetError(f"the image column {image_column!r} cannot also be an attribute")
    if eval_layout not in EVAL_LAYOUTS:
        raise DatasetError(f"unknown eval layout {eval_layout!r}: choose one of {', '.join(EVAL_LAYOUTS)}")
    _check_fractions(valid_fraction, test_fraction, query_fraction)
    check_output_folder(out, overwrite, marker="meta.json", inputs=[csv_path, image_root], error=DatasetError)

    paths, cells, lines = _read_catalogue(csv_path, image_column, attributes)

    first_line: dict[str, int] = {}
    for p, ln in zip(paths, lines):
        check_image_path(p, image_root, f"{csv_path}, line {ln}")
        if p in first_line:
            raise DatasetError(f"{csv_path}, line {ln}: image {p!r} is already listed on line {first_line[p]}")
        first_line[p] = ln

    values = []
    for j, name in enumerate(attributes):
        distinct = sorted({row[j] for row in cells if row[j]})
        if not distinct:
            raise DatasetError(f"attribute {name!r} has no known value: every cell of that column in {csv_path} is empty")
        values.append(tuple(distinct))
    schema = AttributeSchema(tuple(attributes), tuple(values))
    index = [{v: i for i, v in enumerate(vals)} for vals in values]
    codes = np.array([[index[j][c] if c else -1 for j, c in enumerate(row)] for row in cells], dtype=np.int64)
    codes = codes.reshape(len(cells), len(attributes))

    labelled = (codes >= 0).any(axis=1)
    skipped = int((~labelled).sum())
    keep = np.flatnonzero(labelled)
    paths = [paths[i] for i in keep]
    codes = codes[keep]

    if check_images:
        if not image_root.is_dir():
            raise DatasetError(f"image root not found: {image_root}")
        missing = [p for p in paths if not (image_root / p).is_file()]
        if missing:
            first = ", ".join(missing[:3])
            raise DatasetError(
                f"{len(missing)} of {len(paths)} image files listed in {csv_path} are missing under "
                f"{image_root} (first: {first}); check image_root and the {image_column!r} column"
            )

    split_of, eval_files = _plan(codes, seed, valid_fraction, test_fraction, query_fraction, eval_layout)
    _check_eval_splits(codes, seed, valid_fraction, test_fraction, query_fraction, eval_layout, split_of, eval_files)

    with atomic_folder(out) as tmp:
        for k, split in enumerate(("train", "valid", "test")):
            rows = np.flatnonzero(split_of == k)  # CSV order inside each split
            labels = [[(a, int(v)) for a, v in enumerate(r) if v >= 0] for r in codes[rows]]
            queries, candidates = eval_files.get(split, (None, None))
            write_split_files(tmp, split, [paths[i] for i in rows], labels, queries, candidates)
        image_root_rel = os.path.relpath(os.path.abspath(image_root), os.path.abspath(out))
        extra = {
            "IMPORT": {
                "csv": csv_path.name,
                "image_column": image_column,
                "rows": len(lines),
                "skipped_rows_without_labels": skipped,
                "seed": seed,
                "valid_fraction": valid_fraction,
                "test_fraction": test_fraction,
                "query_fraction": query_fraction,
                "stratification": STRATIFICATION,
            }
        }
        if eval_layout != "asen":  # the default layout leaves meta.json as it always was
            extra["EVAL_LAYOUT"] = eval_layout
        write_meta(tmp, schema, out.name, image_root=Path(image_root_rel).as_posix(), extra=extra)
    return out
