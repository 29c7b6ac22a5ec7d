"""Attribute masks of the synthetic datasets: where each attribute lives in a picture.

Beside ``images/<split>/<i>.png`` lies ``masks/<split>/<i>.png``, a 16-bit grayscale PNG whose bit ``a``
is set where attribute ``a`` (ATTRIBUTES order) lives in the picture; an ``"Invisible"`` value has an
empty mask. :mod:`profashion.data.synth` writes them; this module only reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from profashion.data.splits import DatasetError, SplitDataset

NUM_ATTRIBUTES = 10  # of the synthetic schema (profashion.data.synth.SYNTH_SCHEMA)


def load_attribute_masks(path: str | os.PathLike, num_attributes: int = NUM_ATTRIBUTES) -> np.ndarray:
    """The (A, H, W) boolean masks stored in one 16-bit mask PNG (bit ``a`` = attribute ``a``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"mask not found: {path}")
    with Image.open(path, formats=("PNG",)) as im:  # the masks are 16-bit PNGs: no other decoder runs
        bits = np.asarray(im).astype(np.uint16)
    if bits.ndim != 2:
        raise DatasetError(f"{path} is not a single-channel mask (shape {bits.shape})")
    shifts = np.arange(num_attributes, dtype=np.uint16)[:, None, None]
    return ((bits[None] >> shifts) & 1).astype(bool)


def attribute_mask(dataset: SplitDataset, split: str, fid: int, attribute: str | int) -> np.ndarray:
    """(H, W) boolean mask of where ``attribute`` lives in image ``fid`` of ``split``."""
    a = dataset.schema.attribute_index(attribute)
    path = dataset.mask_path(split, int(fid))
    if path is None:
        raise DatasetError(f"{dataset.root} has no attribute masks (only synthetic datasets have them)")
    return load_attribute_masks(path, a + 1)[a]
