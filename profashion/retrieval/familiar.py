"""Is a query image like a gallery's images at all? A check on what the image is, not on one attribute.

Every retrieval model answers any image: a green landscape is close to green shirts in a colour space, and an image
of text lands somewhere in every space. Comparing a query's best match inside one attribute's space with the
gallery's own nearest-neighbour similarities therefore flags almost nothing (issue 23 measured 0 of 4 such uploads).

This module asks the question on the whole image instead, with the ImageNet-1k EfficientNet-Lite0 the demo presets'
trunk comes from (:mod:`profashion.models.pretrained`, installed, never downloaded): the 1280-d pooled features
before its classifier, L2-normalised. A query's *familiarity* with a gallery is the mean cosine similarity of its
``k`` nearest gallery images (:data:`K`). The gallery is its own reference: each of its images is scored against the
others (leave one out), and a query scoring :data:`MARGIN` below the :data:`QUANTILE` quantile of those scores is
*unfamiliar*.
``benchmarks/familiar.py`` measures both error rates on image sets it builds itself (docs/BENCHMARKS.md).

Features of a gallery are computed once (about 85 ms an image on 2 CPU cores) and kept in a float16 ``.npz`` keyed
by the gallery's fingerprint (:meth:`FamiliarityCheck.save` / :meth:`FamiliarityCheck.load`).
"""

from __future__ import annotations

import collections
import threading
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from profashion.io import atomic_path

SIZE = 224  # the Lite0's ImageNet input size
K = 5  # nearest gallery images averaged
# A query is unfamiliar below the gallery's least typical images (this quantile of its leave-one-out scores) by
# MARGIN: calibrated on benchmarks/familiar.py's image sets drawn with seed 0, reported on those of seed 1. A quantile
# alone is too strict for a curated gallery: the product gallery keeps only common values, so 17% of the catalogue's
# other photos score below its own 2% quantile, while no non-garment image comes within 0.05 of its 0.1% quantile.
QUANTILE = 0.001
MARGIN = 0.03
BATCH = 32
FORMAT = "profashion-familiarity-1"

_NET: list = []  # the feature network, built once per process
_NET_LOCK = threading.Lock()


def _network() -> torch.nn.Module:
    with _NET_LOCK:
        return _NET[0] if _NET else _build()


def _build() -> torch.nn.Module:
    if not _NET:
        import timm

        from profashion.models.pretrained import TIMM_ARCH, imagenet_lite0_weights

        net = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
        state, _ = imagenet_lite0_weights()
        net.load_state_dict(state)
        _NET.append(net.eval())
    return _NET[0]


def _tensor(img: Image.Image) -> torch.Tensor:
    """The whole image, RGB, squashed to SIZE x SIZE (every image the same way: the gallery's and the query's), in
    the Lite0's [-1, 1]."""
    arr = np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


@torch.no_grad()
def image_features(images: Iterable[Image.Image], batch: int = BATCH) -> np.ndarray:
    """(n, 1280) float32: each image's pooled ImageNet features, L2-normalised."""
    net, out, chunk = _network(), [], []

    def flush():
        x = torch.stack(chunk)
        f = net.forward_head(net.forward_features(x), pre_logits=True)
        out.append(torch.nn.functional.normalize(f.float(), dim=1).numpy())
        chunk.clear()

    for img in images:
        chunk.append(_tensor(img))
        if len(chunk) == batch:
            flush()
    if chunk:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


_QUERY_CACHE: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
QUERY_CACHE = 256  # queries' features kept (1280 float32 each: 1.3 MB in all)


def query_features(image: Image.Image) -> np.ndarray:
    """(1, 1280): :func:`image_features` of one query, kept by its content (the same upload searched again, for
    another attribute or model, costs no second forward pass)."""
    from profashion.retrieval.search import query_key

    key = query_key(image)
    with _NET_LOCK:
        hit = _QUERY_CACHE.get(key)
        if hit is not None:
            _QUERY_CACHE.move_to_end(key)
            return hit
    feats = image_features([image])
    with _NET_LOCK:
        _QUERY_CACHE[key] = feats
        while len(_QUERY_CACHE) > QUERY_CACHE:
            _QUERY_CACHE.popitem(last=False)
    return feats


def _topk_mean(sims: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, sims.shape[1]))
    return np.sort(np.partition(sims, -k, axis=1)[:, -k:], axis=1).mean(axis=1)


class FamiliarityCheck:
    """One gallery's reference: its images' features and the threshold below which a query is unfamiliar."""

    def __init__(self, features: np.ndarray, k: int = K, quantile: float = QUANTILE, margin: float = MARGIN,
                 fingerprint: str = ""):
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError("a familiarity check needs the features of at least two gallery images")
        self.features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        self.k, self.quantile, self.margin, self.fingerprint = k, quantile, margin, fingerprint
        self.threshold = float(np.quantile(self.leave_one_out(), quantile)) - margin

    @classmethod
    def from_images(cls, images: Iterable[Image.Image], fingerprint: str = "", **kw) -> FamiliarityCheck:
        return cls(image_features(images), fingerprint=fingerprint, **kw)

    def leave_one_out(self) -> np.ndarray:
        """Each gallery image's score against the others (itself left out)."""
        sims = self.features @ self.features.T
        np.fill_diagonal(sims, -np.inf)
        return _topk_mean(sims, min(self.k, len(self.features) - 1))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Each query's familiarity: the mean cosine similarity of its k nearest gallery images."""
        f = np.atleast_2d(np.asarray(features, np.float32))
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        return _topk_mean(f @ self.features.T, self.k)

    def unfamiliar(self, features: np.ndarray) -> np.ndarray:
        """Per query, whether it is unlike the gallery (its score below the threshold)."""
        return self.scores(features) < self.threshold

    def image_unfamiliar(self, img: Image.Image) -> bool:
        return bool(self.unfamiliar(image_features([img]))[0])

    # -- kept on disk --------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """The features (float16) and the gallery's fingerprint, written atomically (the settings come from the
        code: a changed threshold needs no new features)."""
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez(f, features=self.features.astype(np.float16), fingerprint=np.array(self.fingerprint),
                     format=np.array(FORMAT))

    @classmethod
    def load(cls, path: str | Path, fingerprint: str, n: int, **kw) -> FamiliarityCheck | None:
        """The check kept at ``path`` when it is this gallery's (same fingerprint, ``n`` images); else None."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                if str(z["format"]) != FORMAT or str(z["fingerprint"]) != fingerprint:
                    return None
                feats = z["features"]
                if feats.shape != (n, 1280) or not np.isfinite(feats).all():
                    return None
                return cls(feats.astype(np.float32), fingerprint=fingerprint, **kw)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # missing, damaged: made again
            return None


def check_images(paths: Sequence[str | Path], fingerprint: str = "", **kw) -> FamiliarityCheck:
    """The check of a gallery whose images are ``paths`` (decoded with the project's bounded loader)."""
    from profashion.data.images import load_image

    return FamiliarityCheck.from_images((load_image(p) for p in paths), fingerprint=fingerprint, **kw)
