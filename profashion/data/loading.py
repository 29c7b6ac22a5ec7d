"""Feeding images to models: decode + resize/crop once, normalise per batch.

:class:`SplitImages` serves the images of one split as uint8 (3, crop, crop) tensors after the model's
resize/centre-crop. Small splits (the demo's synthetic garments, a 44k catalogue at 96 px) are decoded
once into one uint8 array in memory with a thread pool, after which a batch is an index operation; a
split too large for the memory budget is decoded on the fly (use DataLoader workers then).
Normalisation and the training flip happen on whole batches in torch (:func:`to_model_input`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from profashion.data.images import ImageError, Preprocess, load_image
from profashion.data.splits import DatasetError, SplitDataset

DEFAULT_CACHE_BYTES = 4 * 1024**3


class SplitImages(torch.utils.data.Dataset):
    """Images of one split, indexed by image id (fid), after the model's resize + centre crop."""

    def __init__(self, dataset: SplitDataset, split: str, preprocess: Preprocess, fids: Sequence[int] | None = None,
                 cache: bool | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES, workers: int = 4,
                 progress: bool = False):
        self.dataset, self.split, self.preprocess = dataset, split, preprocess
        s = dataset.split(split)
        n = s.num_images
        self.fids = np.arange(n) if fids is None else np.unique(np.asarray(fids, dtype=np.int64))
        dataset.check_images(split, self.fids)
        c = preprocess.crop
        need = len(self.fids) * 3 * c * c
        self.cached = need <= cache_bytes if cache is None else bool(cache)
        self._slot = np.full(n, -1, dtype=np.int64)
        self._slot[self.fids] = np.arange(len(self.fids))
        self._array: np.ndarray | None = None
        if self.cached:
            self._array = np.empty((len(self.fids), c, c, 3), dtype=np.uint8)
            it = range(len(self.fids))
            with ThreadPoolExecutor(max(1, workers)) as pool:
                results = pool.map(self._decode_into, it, chunksize=64)
                if progress:
                    from tqdm import tqdm

                    results = tqdm(results, total=len(self.fids), desc=f"decoding {split} images", unit="img",
                                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
                for _ in results:
                    pass

    def _decode(self, fid: int) -> np.ndarray:
        path = self.dataset.image_path(self.split, int(fid))
        try:
            return np.asarray(self.preprocess.geometry(load_image(path)), dtype=np.uint8)
        except ImageError as exc:
            raise DatasetError(f"{self.split} image {fid} cannot be read: {exc}") from exc

    def _decode_into(self, i: int) -> None:
        self._array[i] = self._decode(self.fids[i])

    def __len__(self) -> int:
        return len(self.fids)

    def get(self, fids) -> torch.Tensor:
        """(B, 3, crop, crop) uint8 tensor of the given image ids."""
        fids = np.asarray(fids, dtype=np.int64).reshape(-1)
        slots = self._slot[fids]
        if (slots < 0).any():
            raise KeyError(f"image id(s) {fids[slots < 0][:5].tolist()} are not in this image set")
        if self.cached:
            arr = self._array[slots]
        else:
            arr = np.stack([self._decode(f) for f in fids])
        return torch.from_numpy(arr).permute(0, 3, 1, 2)

    def __getitem__(self, fid: int) -> torch.Tensor:
        return self.get([fid])[0]


def to_model_input(batch_uint8: torch.Tensor, preprocess: Preprocess, flip: torch.Tensor | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float on ``device``; ``flip`` is a (B,) bool mask of images to mirror."""
    x = batch_uint8.to(device, non_blocking=True).float().div_(255.0)
    if flip is not None and bool(flip.any()):
        flip = flip.to(x.device)
        x[flip] = x[flip].flip(-1)
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
