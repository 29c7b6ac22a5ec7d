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

A degenerate space is refused before any of that (:func:`space_defect`): NaN or infinite values, or every
point (nearly) the same, which is what a model whose space collapsed in training makes of every image
(scikit-learn's t-SNE crashes the process on such a set). ``project_2d`` and ``attribute_projection`` raise
:class:`DegenerateSpaceError` with one sentence; ``disentanglement_table`` marks the attribute collapsed;
``collapsed_attributes`` lists a model's degenerate attributes cheaply.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from profashion.io import atomic_path
from profashion.retrieval.index import GalleryIndex, GalleryIndexError

METHODS = ("tsne", "umap")
COLLAPSE_TOL = 1e-5  # points closer than this share of the largest norm count as one point
MIN_DISTINCT = 3  # distinct points a space needs to be mapped or measured
SCORES = ("knn_accuracy", "chance", "silhouette")


class DegenerateSpaceError(GalleryIndexError):
    """An embedding space with nothing to project: not finite, or collapsed to a point or two."""


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


def space_defect(embeddings: np.ndarray) -> str | None:
    """Why an (n, D) embedding set cannot be projected or measured, as the predicate of a sentence about
    it, or None when it can: NaN or infinite values, or (from ``MIN_DISTINCT`` points on) fewer than
    ``MIN_DISTINCT`` points further apart than ``COLLAPSE_TOL`` times the largest norm."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        return (f"hold NaN or infinite values ({n - int(finite.sum())} of {n} items): the model's training "
                "diverged and there is nothing to project or measure; retrain it")
    if n < MIN_DISTINCT:
        return None
    centred = x - x.mean(axis=0)
    spread = float(np.sqrt((centred ** 2).sum(axis=1).max()))
    tol = COLLAPSE_TOL * float(np.sqrt((x ** 2).sum(axis=1).max()))
    distinct = 1 if spread <= tol else len(np.unique(np.round(centred / tol), axis=0))
    if distinct >= MIN_DISTINCT:
        return None
    shape = (f"are all (nearly) identical (spread {spread:.1e})" if distinct == 1
             else f"fall on only {distinct} distinct points among {n} items")
    return (f"{shape}: the model's space collapsed in training and there is nothing to project or measure; "
            "retrain it (the warm-up of the demo presets, --warmup-steps, prevents this)")


def project_2d(embeddings: np.ndarray, method: str = "tsne", seed: int = 0,
               what: str = "the embeddings") -> np.ndarray:
    """(n, 2) t-SNE or UMAP coordinates of an (n, D) embedding set (cosine metric), seeded; a degenerate
    set (:func:`space_defect`) raises DegenerateSpaceError, ``what`` naming it in the sentence."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if method not in METHODS:
        raise GalleryIndexError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    defect = space_defect(x)
    if defect:
        raise DegenerateSpaceError(f"{what} {defect}")
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


def _sample(items: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """At most ``max_points`` of ``items``, a seeded sample in order."""
    if len(items) <= max_points:
        return items
    return np.sort(np.random.default_rng(seed).choice(items, size=max_points, replace=False))


def _embeddings_of(index: GalleryIndex, attribute: str) -> str:
    """The subject of a defect sentence: "the 'colour' embeddings of model asen (checkpoint asen-ft)"."""
    ckpt = Path(index.manifest["checkpoint"]["path"]).name
    return (f"the {attribute!r} embeddings of model {index.model_name}"
            + ("" if ckpt == index.model_name else f" (checkpoint {ckpt})"))


def _cache_path(index: GalleryIndex, method: str, attribute: str, seed: int, max_points: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in attribute)
    return index.root / "projections" / f"{method}-{safe}-s{seed}-n{max_points}.npz"


def attribute_projection(index: GalleryIndex, attribute: str | int, method: str = "tsne", seed: int = 0,
                         max_points: int = 1000, cache: bool = True) -> Projection:
    """The 2-D map of ``attribute``'s embedding space of the gallery, coloured by known value.

    At most ``max_points`` labelled items (a seeded sample) are projected. Cached beside the index when
    its folder is writable; a damaged cache file, or one that does not fit the index, is recomputed. A
    degenerate space raises DegenerateSpaceError.
    """
    a = index.schema.attribute_index(attribute)
    name = index.schema.names[a]
    if method not in METHODS:
        raise GalleryIndexError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    path = _cache_path(index, method, name, seed, max_points)
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == index.manifest["checkpoint"]["fingerprint"] and \
                        _fits(index, a, z["items"], z["xy"], z["values"]):
                    return Projection(name, method, z["items"], z["xy"], z["values"], list(index.schema.values[a]),
                                      _nan_none(z["knn"]), _nan_none(z["chance"]), _nan_none(z["silhouette"]),
                                      cached=True)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: recompute and replace it
    items = np.flatnonzero(index.values[:, a] >= 0)
    if len(items) == 0:
        raise GalleryIndexError(f"no gallery item has a known {name!r} value: there is nothing to colour")
    items = _sample(items, max_points, seed)
    emb = np.asarray(index.embeddings[items, a], dtype=np.float32)
    labels = index.values[items, a]
    xy = project_2d(emb, method, seed, what=_embeddings_of(index, name))  # first: it refuses a degenerate space
    scores = disentanglement(emb, labels)
    proj = Projection(name, method, items, xy, labels, list(index.schema.values[a]), scores["knn_accuracy"],
                      scores["chance"], scores["silhouette"])
    if cache:
        _save_cache(path, proj, index.manifest["checkpoint"]["fingerprint"])
    return proj


def store_projection(index: GalleryIndex, proj: Projection, seed: int, max_points: int) -> None:
    """Cache ``proj`` beside ``index`` as :func:`attribute_projection` would have (with ``seed`` and ``max_points``):
    how a shipped projection (:mod:`profashion.retrieval.shipped`) joins the cache."""
    _save_cache(_cache_path(index, proj.method, proj.attribute, seed, max_points), proj,
                index.manifest["checkpoint"]["fingerprint"])


def _fits(index: GalleryIndex, a: int, items: np.ndarray, xy: np.ndarray, values: np.ndarray) -> bool:
    """Whether cached arrays are a drawable map of attribute ``a`` of this index: gallery items with their
    known values, one finite point each."""
    return (items.ndim == 1 and items.dtype.kind in "iu" and bool(((items >= 0) & (items < len(index))).all())
            and xy.shape == (len(items), 2) and bool(np.isfinite(xy).all())
            and np.array_equal(values, index.values[items, a]))


def _nan_none(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def _save_cache(path: Path, p: Projection, fingerprint: str) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, items=p.items, xy=p.xy, values=p.values, fingerprint=np.array(fingerprint),
                     knn=np.float64(np.nan if p.knn_accuracy is None else p.knn_accuracy),
                     chance=np.float64(np.nan if p.chance is None else p.chance),
                     silhouette=np.float64(np.nan if p.silhouette is None else p.silhouette))
    except OSError:
        pass  # a read-only index folder: the projection is simply not cached


def disentanglement_table(index: GalleryIndex, max_points: int = 2000, seed: int = 0) -> dict[str, dict]:
    """kNN accuracy, chance and silhouette for every attribute of an index (no projection needed), as
    plain JSON values. A degenerate space (:func:`space_defect`) has ``collapsed`` true, the sentence why in
    ``defect`` and None scores; a sound one ``collapsed`` false and ``defect`` None."""
    out = {}
    for a, name in enumerate(index.schema.names):
        items = _sample(np.flatnonzero(index.values[:, a] >= 0), max_points, seed)
        emb = np.asarray(index.embeddings[items, a], dtype=np.float32)
        defect = space_defect(emb)
        scores = dict.fromkeys(SCORES) if defect else disentanglement(emb, index.values[items, a])
        out[name] = {"n": int(len(items)), **scores, "collapsed": bool(defect),
                     "defect": f"{_embeddings_of(index, name)} {defect}" if defect else None}
    return out


def collapsed_attributes(index: GalleryIndex, sample: int = 256, seed: int = 0) -> dict[str, str]:
    """The attributes whose gallery embeddings are degenerate (:func:`space_defect`), each with the
    sentence why; empty for a sound model. Reads a seeded sample of ``sample`` items: cheap."""
    items = _sample(np.arange(len(index)), sample, seed)
    emb = np.asarray(index.embeddings[items], dtype=np.float32)
    out = {}
    for a, name in enumerate(index.schema.names):
        defect = space_defect(emb[:, a])
        if defect:
            out[name] = f"{_embeddings_of(index, name)} {defect}"
    return out
