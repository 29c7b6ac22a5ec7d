"""Superpixel quality against a ground-truth segmentation: boundary recall, undersegmentation error, ASA.

The standard measures of the superpixel literature (Stutz, Hermans and Leibe, "Superpixels: an
evaluation of the state-of-the-art", CVIU 2018), which ProFashion's superpixels are judged by here:

- **boundary recall** (BR): the share of ground-truth boundary pixels that lie within ``tolerance``
  pixels (chessboard distance) of a superpixel boundary pixel. Higher is better. A pixel is a boundary
  pixel when one of its 4-neighbours has another label.
- **undersegmentation error** (UE, the corrected form of Neubert and Protzel 2012):
  ``(1/N) sum_G sum_{S meets G} min(|S & G|, |S - G|)``: how much superpixels leak across
  ground-truth segments, each leak counted by its smaller side. Lower is better.
- **achievable segmentation accuracy** (ASA): the accuracy of the best labelling of the superpixels
  by ground-truth segments, ``(1/N) sum_S max_G |S & G|``. Higher is better.

Ground truth for the synthetic garments: :func:`labels_from_attribute_masks` turns the per-attribute
part masks of :mod:`profashion.data.synth` into a label map (one label per distinct combination of
attribute bits, split into 4-connected pieces): the garment parts (skirt, sleeves, collar, ...) and
everything else (background, skin, clutter) as the rest.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label as connected_label

__all__ = [
    "achievable_segmentation_accuracy",
    "boundary_map",
    "boundary_recall",
    "labels_from_attribute_masks",
    "undersegmentation_error",
]


def _check_pair(labels: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, gt = np.asarray(labels), np.asarray(gt)
    if labels.ndim != 2 or labels.shape != gt.shape:
        raise ValueError(f"labels and ground truth must be two (H, W) maps of one shape, got {labels.shape} "
                         f"and {gt.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) and np.issubdtype(gt.dtype, np.integer)):
        raise ValueError(f"labels and ground truth must be integer maps, got {labels.dtype} and {gt.dtype}")
    return labels, gt


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour of another label (both sides of every boundary)."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, bool)
    dh = labels[:, 1:] != labels[:, :-1]
    dv = labels[1:, :] != labels[:-1, :]
    out[:, 1:] |= dh
    out[:, :-1] |= dh
    out[1:, :] |= dv
    out[:-1, :] |= dv
    return out


def boundary_recall(labels: np.ndarray, gt: np.ndarray, tolerance: int = 2) -> float:
    """Share of ground-truth boundary pixels within ``tolerance`` px of a superpixel boundary (1.0 if none)."""
    labels, gt = _check_pair(labels, gt)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    gt_b = boundary_map(gt)
    n = int(gt_b.sum())
    if n == 0:
        return 1.0
    sp_b = boundary_map(labels)
    if tolerance:
        sp_b = ndimage.maximum_filter(sp_b, size=2 * tolerance + 1, mode="constant")
    return float((gt_b & sp_b).sum() / n)


def _contingency(labels: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(S, G) pixel counts of superpixel s and ground-truth segment g."""
    _, s = np.unique(labels.ravel(), return_inverse=True)
    _, g = np.unique(gt.ravel(), return_inverse=True)
    S, G = int(s.max()) + 1, int(g.max()) + 1
    return np.bincount(s * G + g, minlength=S * G).reshape(S, G)


def undersegmentation_error(labels: np.ndarray, gt: np.ndarray) -> float:
    """Corrected undersegmentation error (Neubert and Protzel 2012): 0 = no leak; lower is better."""
    labels, gt = _check_pair(labels, gt)
    table = _contingency(labels, gt)
    inside = table
    outside = table.sum(1, keepdims=True) - table
    return float(np.minimum(inside, outside)[table > 0].sum() / labels.size)


def achievable_segmentation_accuracy(labels: np.ndarray, gt: np.ndarray) -> float:
    """Best accuracy of labelling each superpixel by one ground-truth segment (1 = perfect)."""
    labels, gt = _check_pair(labels, gt)
    return float(_contingency(labels, gt).max(1).sum() / labels.size)


def labels_from_attribute_masks(masks: np.ndarray) -> np.ndarray:
    """(H, W) int32 ground-truth segments from synth part masks: (A, H, W) bool or (H, W) bit-coded ints.

    One segment per distinct combination of attribute bits, split into 4-connected pieces (the left and
    the right sleeve are two segments); pixels without any attribute are the rest (background, skin,
    clutter), also split into connected pieces.
    """
    masks = np.asarray(masks)
    if masks.ndim == 3:
        if masks.dtype != bool:
            raise ValueError(f"(A, H, W) masks must be boolean, got {masks.dtype}")
        code = np.zeros(masks.shape[1:], np.int64)
        for a in range(masks.shape[0]):
            code |= masks[a].astype(np.int64) << a
    elif masks.ndim == 2 and np.issubdtype(masks.dtype, np.integer):
        code = masks.astype(np.int64)
    else:
        raise ValueError(f"masks must be (A, H, W) bool or an (H, W) integer bit map, got {masks.shape} "
                         f"{masks.dtype}")
    return (connected_label(code, background=-1, connectivity=1) - 1).astype(np.int32)
