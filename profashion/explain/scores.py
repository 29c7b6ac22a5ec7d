"""Where a map falls against a ground-truth region: the two numbers the renderer prints on a heatmap and the
localisation evaluation (:mod:`profashion.evaluation.localisation`) averages over a split.

- :func:`localisation_score`: the share of the map's mass inside the mask, ``sum(h * m) / sum(h)`` in percent
  (an all-zero map counts as uniform);
- :func:`pointing_hit`: whether the map's maximum lies inside the mask (the "pointing game").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_map(heatmap) -> np.ndarray:
    h = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap, float)
    if h.ndim != 2:
        raise ValueError(f"a localisation map must be (H, W), got shape {h.shape}")
    return h


def _resize_map(h: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if h.shape == tuple(shape):
        return h
    t = torch.from_numpy(np.ascontiguousarray(h, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def localisation_score(heatmap, mask) -> float:
    """Percent of the (non-negative part of the) map's mass inside the boolean ``mask``.

    A map at another resolution than the mask is resized bilinearly first. A map without mass (all zero
    or negative) counts as uniform. NaN or infinite values are an error, not a score.
    """
    m = np.asarray(mask, dtype=bool)
    h = _resize_map(_as_map(heatmap), m.shape)
    if not np.isfinite(h).all():
        raise ValueError("the map has NaN or infinite values; it cannot be scored")
    h = np.clip(h, 0.0, None)
    total = float(h.sum())
    if total <= 0.0:
        return 100.0 * float(m.mean())
    return 100.0 * float(h[m].sum()) / total


def pointing_hit(heatmap, mask) -> bool:
    """Whether the map's maximum lies inside the mask (ties: the first maximum in raster order)."""
    m = np.asarray(mask, dtype=bool)
    h = _resize_map(_as_map(heatmap), m.shape)
    return bool(m.flat[int(np.nanargmax(h))]) if np.isfinite(h).any() else False
