"""Per-attribute 2-D maps of a gallery's embedding space, and how disentangled each space is.

For one index and attribute, the gallery items with a known value of the attribute are projected to 2-D
with t-SNE (scikit-learn) or UMAP (umap-learn), seeded, and cached beside the index
(``projections/<method>-<attribute>-s<seed>-n<max_points>.npz``, plain arrays, no pickle) so the app
draws them instantly the second time.

How well an attribute space separates the attribute's values, measured in the embedding space itself
(not in the 2-D picture, which t-SNE and UMAP distort):

- ``knn_accuracy``: leave-one-out k-nearest-neighbour (cosine, k = 5, majority vote with ties to the
  nearest) accuracy of the value, in percent; ``chance`` is the share of the most common value;
- ``silhouette``: the mean silhouette coefficient of the values (cosine distance), in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from profashion.retrieval.index import GalleryIndex, GalleryIndexError

METHODS = ("tsne", "umap")


@dataclasses.dataclass
class Projection:
    attribute: str
    method: str
    items: np.ndarray  # (n,) gallery item ids
    xy: np.ndarray  # (n, 2)
    values: np.ndarray  # (n,) value index of each item
    value_names: list[str]
    knn_accuracy: float | None
    chance: float | None
    silhouette: float | None
    cached: bool = False


def disentanglement(embeddings: np.ndarray, labels: np.ndarray, k: int = 5) -> dict[str, float | None]:
    """kNN accuracy (%), chance (%) and silhouette of ``labels`` in an (n, D) L2-normalised space."""
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels)
    n = len(y)
    out: dict[str, float | None] = {"knn_accuracy": None, "chance": None, "silhouette": None}
    if n < 2:
        return out
    _, counts = np.unique(y, return_counts=True)
    out["chance"] = 100.0 * float(counts.max()) / n
    import faiss

    kk = min(k, n - 1)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(x))
    _, nn = index.search(np.ascontiguousarray(x), kk + 1)
    correct = 0
    for i in range(n):
        neigh = [j for j in nn[i] if j != i and j >= 0][:kk]
        votes: dict[int, int] = {}
        for j in neigh:
            votes[int(y[j])] = votes.get(int(y[j]), 0) + 1
        best = max(votes.values())
        pred = next(int(y[j]) for j in neigh if votes[int(y[j])] == best)  # ties: the nearest one
        correct += pred == int(y[i])
    out["knn_accuracy"] = 100.0 * correct / n
    if 2 <= len(counts) < n:
        from sklearn.metrics import silhouette_score

        out["silhouette"] = float(silhouette_score(x, y, metric="cosine"))
    return out


def project_2d(embeddings: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE or UMAP coordinates of an (n, D) embedding set (cosine metric), seeded."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if method not in METHODS:
        raise GalleryIndexError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    if n < 3:
        return np.zeros((n, 2), np.float32) if n < 2 else np.array([[-1.0, 0.0], [1.0, 0.0]], np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed,
                  max_iter=500, n_jobs=1).fit_transform(x)
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap warns that a seed disables its parallelism
            import umap

            xy = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine", random_state=seed,
                           init="spectral" if n > 10 else "random").fit_transform(x)
    return np.asarray(xy, dtype=np.float32)


def _cache_path(index: GalleryIndex, method: str, attribute: str, seed: int, max_points: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in attribute)
    return index.root / "projections" / f"{method}-{safe}-s{seed}-n{max_points}.npz"


def attribute_projection(index: GalleryIndex, attribute: str | int, method: str = "tsne", seed: int = 0,
                         max_points: int = 1000, cache: bool = True) -> Projection:
    """The 2-D map of ``attribute``'s embedding space of the gallery, coloured by known value.

    At most ``max_points`` labelled items (a seeded sample) are projected. Cached beside the index when
    its folder is writable; a damaged cache file is recomputed.
    """
    a = index.schema.attribute_index(attribute)
    name = index.schema.names[a]
    if method not in METHODS:
        raise GalleryIndexError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    path = _cache_path(index, method, name, seed, max_points)
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == index.manifest["checkpoint"]["fingerprint"]:
                    return Projection(name, method, z["items"], z["xy"], z["values"], list(index.schema.values[a]),
                                      _nan_none(z["knn"]), _nan_none(z["chance"]), _nan_none(z["silhouette"]),
                                      cached=True)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: recompute and replace it
    items = np.flatnonzero(index.values[:, a] >= 0)
    if len(items) == 0:
        raise GalleryIndexError(f"no gallery item has a known {name!r} value: there is nothing to colour")
    if len(items) > max_points:
        items = np.sort(np.random.default_rng(seed).choice(items, size=max_points, replace=False))
    emb = np.asarray(index.embeddings[items, a], dtype=np.float32)
    labels = index.values[items, a]
    scores = disentanglement(emb, labels)
    xy = project_2d(emb, method, seed)
    proj = Projection(name, method, items, xy, labels, list(index.schema.values[a]), scores["knn_accuracy"],
                      scores["chance"], scores["silhouette"])
    if cache:
        _save_cache(path, proj, index.manifest["checkpoint"]["fingerprint"])
    return proj


def _nan_none(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def _save_cache(path: Path, p: Projection, fingerprint: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, items=p.items, xy=p.xy, values=p.values, fingerprint=np.array(fingerprint),
                     knn=np.float64(np.nan if p.knn_accuracy is None else p.knn_accuracy),
                     chance=np.float64(np.nan if p.chance is None else p.chance),
                     silhouette=np.float64(np.nan if p.silhouette is None else p.silhouette))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only index folder: the projection is simply not cached


def disentanglement_table(index: GalleryIndex, max_points: int = 2000, seed: int = 0) -> dict[str, dict]:
    """kNN accuracy, chance and silhouette for every attribute of an index (no projection needed)."""
    out = {}
    for a, name in enumerate(index.schema.names):
        items = np.flatnonzero(index.values[:, a] >= 0)
        if len(items) > max_points:
            items = np.sort(np.random.default_rng(seed).choice(items, size=max_points, replace=False))
        out[name] = {"n": int(len(items)),
                     **disentanglement(np.asarray(index.embeddings[items, a]), index.values[items, a])}
    return out
