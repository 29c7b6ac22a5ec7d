"""ProFashion's PS module (Patch -> Superpixel), as the paper draws it: superpixels of the image (density-based, or a
grid), how many pixels of each fall in each patch cell, and the superpixels selected inside an attribute's crop
by their mean transport weight. A mixin of :class:`~profashion.models.profashion.ProFashion` (no parameters of
its own)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from profashion.superpixels import density_superpixels


def grid_superpixels(height: int, width: int, n_segments: int = 64) -> np.ndarray:
    """A regular grid of about ``n_segments`` rectangular cells as an (H, W) int32 label map."""
    g = max(1, int(round(np.sqrt(max(1, n_segments)))))
    gy, gx = min(g, height), min(g, width)
    rows = np.minimum(np.arange(height) * gy // max(1, height), gy - 1)
    cols = np.minimum(np.arange(width) * gx // max(1, width), gx - 1)
    return (rows[:, None] * gx + cols[None]).astype(np.int32)


class PatchToSuperpixel:
    """PS: superpixel labels (cached by the image's bytes), their overlap with the patch grid, the selection."""

    # -- PS -----------------------------------------------------------------------------------------------
    def superpixel_labels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) long superpixel labels of normalised images (cached by the image's bytes)."""
        pre = self.preprocess
        mean = torch.tensor(pre.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(pre.std, device=images.device).view(1, 3, 1, 1)
        pix = torch.nan_to_num(images.detach() * std + mean, 0.0, 1.0, 0.0)
        pix = (pix.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for img in pix:
            key = hashlib.blake2b(img.tobytes(), digest_size=16).digest() + bytes(str(img.shape), "ascii")
            labels = self._sp_cache.get(key)
            if labels is None:
                labels = self._compute_superpixels(np.ascontiguousarray(img))
                labels = labels.astype(np.uint8 if labels.max() < 256 else np.int32)
                if self.config.superpixel_cache > 0:
                    self._sp_cache[key] = labels
                    while len(self._sp_cache) > self.config.superpixel_cache:
                        self._sp_cache.popitem(last=False)
            else:
                self._sp_cache.move_to_end(key)
            out.append(torch.from_numpy(labels.astype(np.int64)))
        return torch.stack(out).to(images.device)

    def _compute_superpixels(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if min(h, w) < self.config.superpixel_window:
            return np.zeros((h, w), np.int32)  # smaller than the density window: one superpixel
        if self.config.superpixels == "grid":
            labels = grid_superpixels(h, w, self.config.n_segments)
        else:
            labels = np.asarray(density_superpixels(img, n_segments=self.config.n_segments))
        # relabel to 0..K-1 (a label map with gaps would waste rows)
        _, labels = np.unique(labels, return_inverse=True)
        return labels.reshape(h, w).astype(np.int32)

    @staticmethod
    def superpixel_overlap(labels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(B, S, N) number of pixels of superpixel s that fall in patch cell p (nearest cell)."""
        b, big_h, big_w = labels.shape
        h, w = hw
        rows = torch.arange(big_h, device=labels.device) * h // big_h
        cols = torch.arange(big_w, device=labels.device) * w // big_w
        cell = (rows[:, None] * w + cols[None]).flatten()  # (H*W,)
        s = int(labels.max()) + 1
        n = h * w
        idx = labels.flatten(1) * n + cell[None]
        counts = torch.zeros(b, s * n, device=labels.device)
        counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=counts.dtype))
        return counts.view(b, s, n)

    def select_superpixels(self, overlap: torch.Tensor, weights: torch.Tensor,
                           crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean weight (B, K, S) of each superpixel and the selection mask (B, K, S)."""
        size = overlap.sum(-1)  # (B, S) pixels per superpixel
        exists = size > 0
        denom = size.clamp_min(1)[:, None]
        mean_w = torch.einsum("bsn,bkn->bks", overlap, weights) / denom
        inside = torch.einsum("bsn,bkn->bks", overlap, crop.to(overlap.dtype)) / denom >= 0.5
        inside = inside & exists[:, None]
        w_in = mean_w.detach().masked_fill(~inside, 0)
        count = inside.sum(-1, keepdim=True).clamp_min(1)
        avg = w_in.sum(-1, keepdim=True) / count
        selected = inside & (mean_w.detach() >= avg - 1e-12)
        none = ~selected.any(-1, keepdim=True)  # a crop with no superpixel in it
        best = mean_w.detach().masked_fill(~exists[:, None], -1.0).argmax(-1, keepdim=True)
        fallback = torch.zeros_like(selected).scatter_(-1, best, True)
        selected = torch.where(none, fallback, selected)
        return mean_w, selected
