"""Triplet accuracy, the Zappos50K metric of CSN (Veit et al., "Conditional Similarity Networks").

A triplet ``(a, b, c | condition)`` from CSN's lists says: under that condition, ``a`` is more similar to
``c`` than to ``b``. It counts as correct when the anchor's embedding, conditioned on the triplet's
condition, is strictly closer in cosine similarity to ``c`` than to ``b`` (a tie is wrong, as in CSN's
``accuracy``: ``dist(a, b) - dist(a, c) > 0``; for L2-normalised vectors the Euclidean and cosine
orders agree). Accuracy = correct / all triplets, reported in PERCENT like the published table
(random embeddings give 50).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from profashion.data.zappos import ZapposTriplets


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _embedding_source(embeddings) -> Callable[[np.ndarray, int], np.ndarray]:
    """A function (image indices, condition index) -> (len, D) embeddings, from any accepted form."""
    if callable(embeddings):
        return lambda idx, k: _to_numpy(embeddings(idx, k))
    if isinstance(embeddings, Mapping):
        return lambda idx, k: _to_numpy(embeddings[k])[idx]
    if isinstance(embeddings, (np.ndarray, torch.Tensor)):
        arr = _to_numpy(embeddings)
        if arr.ndim == 2:  # one embedding for every condition (an unconditioned model)
            return lambda idx, k: arr[idx]
        if arr.ndim == 3:  # (conditions, images, D)
            return lambda idx, k: arr[k][idx]
        raise ValueError(f"embeddings must be (N, D) or (conditions, N, D), got shape {arr.shape}")
    if isinstance(embeddings, Sequence) and not isinstance(embeddings, (str, bytes)):
        return lambda idx, k: _to_numpy(embeddings[k])[idx]
    raise TypeError(
        "embeddings must be a function (indices, condition) -> (n, D), a mapping or sequence of (N, D) "
        f"arrays per condition, or an (N, D) / (conditions, N, D) array; got {type(embeddings).__name__}"
    )


def triplet_accuracy(
    embeddings, triplets: ZapposTriplets | np.ndarray, condition_names: Sequence[str] | None = None
) -> tuple[float, dict]:
    """(overall, per_condition) triplet accuracy in percent.

    ``embeddings`` gives, for condition ``k``, the embedding of image ``i``, in one of these forms:
    a function ``embed_fn(indices: np.ndarray, k: int) -> (len(indices), D)`` (called once per condition
    with only the images its triplets use), a mapping ``{k: (N, D)}`` or sequence ``[(N, D), ...]``, a
    ``(conditions, N, D)`` array, or an ``(N, D)`` array shared by all conditions. Embeddings need not
    be normalised. ``triplets`` is a :class:`ZapposTriplets` or an ``(n, 4)`` array
    ``[a, b, c, condition]``; ``per_condition`` is keyed by condition name (from the triplets or
    ``condition_names``; the index when no name is known) and lists only conditions with triplets.
    """
    if isinstance(triplets, ZapposTriplets):
        names = list(condition_names) if condition_names is not None else list(triplets.conditions)
        rows = triplets.triplets
    else:
        names = list(condition_names) if condition_names is not None else None
        rows = triplets
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise ValueError(f"triplets must be an (n, 4) array [a, b, c, condition], got shape {rows.shape}")
    if len(rows) == 0:
        raise ValueError("no triplets to evaluate")
    source = _embedding_source(embeddings)

    correct = np.zeros(len(rows), dtype=bool)
    per_condition = {}
    for k in np.unique(rows[:, 3]):
        sel = np.flatnonzero(rows[:, 3] == k)
        abc = rows[sel, :3]
        used, inverse = np.unique(abc, return_inverse=True)
        emb = source(used, int(k))
        if emb.ndim != 2 or len(emb) != len(used):
            raise ValueError(f"condition {int(k)}: expected {len(used)} embeddings, got shape {emb.shape}")
        emb = _normalise(emb)
        inverse = inverse.reshape(abc.shape)
        a, b, c = emb[inverse[:, 0]], emb[inverse[:, 1]], emb[inverse[:, 2]]
        ok = np.einsum("nd,nd->n", a, c) > np.einsum("nd,nd->n", a, b)
        correct[sel] = ok
        key = names[int(k)] if names is not None and 0 <= int(k) < len(names) else int(k)
        per_condition[key] = float(100.0 * ok.mean())
    return float(100.0 * correct.mean()), per_condition
