"""The retrieval mAP of the attribute-specific benchmarks (the "MAP" / "Overall MAP" of every table).

The protocol (docs/PROTOCOL.md), which ASEN, ASEN++, RPF, CCA and ProFashion all use:

1. Each query and candidate is embedded conditioned on ITS OWN attribute (from the query/candidate
   file) and L2-normalised, so cosine similarity is a dot product.
2. For each attribute ``a``, every query of ``a`` ranks all candidates of ``a`` (and only those) by
   similarity. A candidate is relevant when it has the same value as the query.
3. Average precision over the FULL ranking: ``AP = (1/R) * sum over relevant positions i of
   (relevant in top i) / i`` with ``R`` the number of relevant candidates. A query with no relevant
   candidate has ``AP = 0`` and still counts.
4. The mAP of attribute ``a`` is the mean AP of its queries.
5. The overall MAP is the mean AP over ALL queries (query-weighted), not the plain mean of the
   per-attribute values.

Ties in similarity are broken deterministically: a stable sort on ``-similarity`` keeps the candidate
file's order. Numbers are reported in percent, like the papers.

:func:`evaluate_random` runs the protocol with one random vector per image id; on the official
FashionAI test split it reproduces the published "random baseline" row, which checks the split files
and this implementation together without any image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from profashion.data.splits import AttributeSchema, DatasetError, SplitDataset, atomic_write_text
from profashion.evaluation.statistics import bootstrap_intervals, split_fingerprint

# --------------------------------------------------------------------------------------------------
# Published numbers (overall MAP on the test split, percent)

PUBLISHED_SOURCES = {
    "CCA": 'Song et al., "Conditional Cross Attention Network for Multi-Space Embedding without '
    'Entanglement in Only a SINGLE Network"',
    "ProFashion": 'Zhang et al., "Fashion Microscope: Pixel-Level Attribute Perception via Optimal '
    'Transport and Neural Semantic Aggregation"',
}
"""The two papers whose tables PROTOCOL.md compiles the numbers below from."""

PUBLISHED: dict[str, dict[str, float]] = {
    # method -> dataset -> overall test MAP (percent); "Zappos50K" is CSN triplet accuracy (percent).
    "Random": {"FashionAI": 15.79, "DARN": 32.26, "DeepFashion": 3.38, "Zappos50K": 50.00},
    "Triplet network": {"FashionAI": 38.52, "DARN": 40.14, "DeepFashion": 7.36, "Zappos50K": 76.28},
    "CSN": {"FashionAI": 53.52, "DARN": 50.86, "DeepFashion": 8.01, "Zappos50K": 89.27},
    "ASEN": {"FashionAI": 61.02, "DARN": 53.31, "DeepFashion": 8.74, "Zappos50K": 90.79},
    "ASEN++": {"FashionAI": 64.31, "DARN": 55.94, "DeepFashion": 9.64},
    "RPF": {"FashionAI": 70.10, "DARN": 56.88, "DeepFashion": 10.22},
    "TF-CSN (ViT)": {"FashionAI": 64.86, "DARN": 62.85, "DeepFashion": 10.04, "Zappos50K": 94.78},
    "TF-ASEN (ViT)": {"FashionAI": 64.21, "DARN": 33.52, "DeepFashion": 8.53, "Zappos50K": 94.56},
    "CCA Type-1": {"FashionAI": 66.06, "DARN": 66.78, "DeepFashion": 10.64, "Zappos50K": 94.98},
    "CCA Type-2": {"FashionAI": 69.03, "DARN": 68.09, "DeepFashion": 11.04, "Zappos50K": 94.85},
    "ProFashion": {"FashionAI": 74.26, "DARN": 60.37, "DeepFashion": 14.50},
}
"""Published overall numbers, method -> dataset -> value (percent), as tabulated in PROTOCOL.md."""

PUBLISHED_NOTES = (
    "ASEN on DeepFashion is 8.74 in the CCA paper and 9.14 in ProFashion's table.",
    "The papers disagree on DARN: CCA Type-2 reports 68.09, above ProFashion's 60.37; "
    "ProFashion's table does not list CCA.",
    "Zappos50K is the CSN triplet accuracy, not a retrieval mAP.",
)

PUBLISHED_RANDOM_PER_ATTRIBUTE: dict[str, dict[str, float]] = {
    "FashionAI": {
        "skirt_length": 17.20,
        "sleeve_length": 12.50,
        "coat_length": 13.35,
        "pant_length": 17.45,
        "collar_design": 22.36,
        "lapel_design": 21.63,
        "neckline_design": 11.09,
        "neck_design": 21.19,
    },
}
"""The published random-embedding row per attribute (test split, percent)."""


def published_random(dataset: str) -> dict | None:
    """The published random row of ``dataset`` in the form :meth:`MAPResult.format_table` takes."""
    if dataset not in PUBLISHED["Random"]:
        return None
    return {
        "overall": PUBLISHED["Random"][dataset],
        "per_attribute": dict(PUBLISHED_RANDOM_PER_ATTRIBUTE.get(dataset, {})),
    }


# --------------------------------------------------------------------------------------------------
# The result


@dataclass
class MAPResult:
    """Overall and per-attribute mAP in PERCENT, with the number of queries of each attribute.

    ``per_attribute[a]`` is NaN for an attribute without queries (``n_queries[a] == 0``); tables and JSON
    report such an attribute as having no query, never as a number.

    :func:`mean_average_precision` also keeps every query's AP (``query_ap``, a fraction, in the order
    of the query rows) and attribute (``query_attr``), from which :meth:`intervals` computes bootstrap
    intervals (statistics.py); :func:`evaluate_random` and ``evaluate_model`` add the query rows
    (``queries``: fid, attribute, value) and the split's ``fingerprint``, so a result file can be compared
    with another one query by query (``profashion compare``).
    """

    overall: float
    per_attribute: list[float]
    n_queries: list[int]
    # arrays: left out of == and repr (equal results have equal overall, per-attribute values and fingerprint)
    query_ap: np.ndarray | None = field(default=None, repr=False, compare=False)
    query_attr: np.ndarray | None = field(default=None, repr=False, compare=False)
    queries: np.ndarray | None = field(default=None, repr=False, compare=False)
    fingerprint: str | None = None
    n_resamples: int = 2000
    bootstrap_seed: int = 0
    _intervals: object = field(default=None, init=False, repr=False, compare=False)

    def attach_split(self, queries: np.ndarray, candidates: np.ndarray) -> MAPResult:
        """Record the split's query rows (the order of ``query_ap``) and its fingerprint; returns self."""

        queries = np.asarray(queries, dtype=np.int64).reshape(-1, 3)
        if self.query_ap is not None and len(queries) != len(self.query_ap):
            raise ValueError(f"{len(queries)} query rows for {len(self.query_ap)} APs")
        self.queries = queries
        self.fingerprint = split_fingerprint(queries, candidates)
        return self

    def intervals(self):
        """Bootstrap intervals (:class:`~profashion.evaluation.statistics.MAPIntervals`), or None when the
        per-query APs are not known; computed once."""
        if self.query_ap is None or self.query_attr is None:
            return None
        if self._intervals is None:
            self._intervals = bootstrap_intervals(self.query_ap, self.query_attr, len(self.per_attribute),
                                                  n_resamples=self.n_resamples, seed=self.bootstrap_seed)
        return self._intervals

    def to_json(self, schema: AttributeSchema, per_query: bool = True) -> dict:
        """``{"overall", "per_attribute": {name: mAP}, "n_queries": {name: n}}``; attributes without a
        query are left out of these and listed under ``"no_queries"``. With per-query APs known:
        ``"ci95": [lo, hi]`` (overall), ``"per_attribute_ci95": {name: [lo, hi]}``, ``"bootstrap"``
        (how), and with ``per_query`` and the query rows known, ``"queries"`` (``attributes``, and per
        query ``fid``, ``attribute`` index, ``value``, ``ap``) and ``"split_fingerprint"``."""
        names = schema.names
        if len(names) != len(self.per_attribute):
            raise ValueError(f"the schema has {len(names)} attributes, the result {len(self.per_attribute)}")
        keep = [i for i, n in enumerate(self.n_queries) if n > 0]
        out = {
            "overall": float(self.overall),
            "per_attribute": {names[i]: float(self.per_attribute[i]) for i in keep},
            "n_queries": {names[i]: int(self.n_queries[i]) for i in keep},
        }
        missing = [names[i] for i, n in enumerate(self.n_queries) if n == 0]
        if missing:
            out["no_queries"] = missing
        iv = self.intervals()
        if iv is not None:
            if iv.overall is not None:
                out["ci95"] = [round(v, 4) for v in iv.overall]
            out["per_attribute_ci95"] = {names[i]: [round(v, 4) for v in iv.per_attribute[i]] for i in keep}
            out["bootstrap"] = {"method": "percentile bootstrap over queries, resampled within each attribute",
                                "resamples": iv.n_resamples, "seed": iv.seed, "level": iv.level}
        if per_query and self.queries is not None and self.query_ap is not None:
            out["split_fingerprint"] = self.fingerprint
            out["queries"] = {
                "attributes": list(names),
                "fid": self.queries[:, 0].tolist(),
                "attribute": self.queries[:, 1].tolist(),
                "value": self.queries[:, 2].tolist(),
                "ap": [round(float(x), 8) for x in self.query_ap],
            }
        return out

    def format_table(self, schema: AttributeSchema, published: dict | None = None) -> str:
        """A text table (attribute, #queries, mAP[, published, difference]) with the overall row last.

        ``published`` is either ``{"overall": x, "per_attribute": {name: y}}`` (e.g.
        :func:`published_random`) or a flat ``{name: y, "overall": x}``.
        """
        pub_attr: dict = {}
        pub_overall = None
        if published:
            if "per_attribute" in published:
                pub_attr = dict(published.get("per_attribute") or {})
                pub_overall = published.get("overall")
            else:
                pub_attr = {k: v for k, v in published.items() if k != "overall"}
                pub_overall = published.get("overall")
        iv = self.intervals()
        rows = []
        for i, name in enumerate(schema.names):
            n = self.n_queries[i]
            ci = iv.per_attribute[i] if iv is not None else None
            rows.append((name, n, self.per_attribute[i] if n else None, ci, pub_attr.get(name)))
        rows.append(("overall", sum(self.n_queries), self.overall if sum(self.n_queries) else None,
                     iv.overall if iv is not None else None, pub_overall))

        width = max(len("attribute"), *(len(r[0]) for r in rows))
        header = f"{'attribute':<{width}}  {'#queries':>8}  {'mAP':>7}"
        if iv is not None:
            header += f"  {'95% CI':>16}"
        if published:
            header += f"  {'published':>9}  {'diff':>6}"
        lines = [header, "-" * len(header)]
        for k, (name, n, value, ci, pub) in enumerate(rows):
            if k == len(rows) - 1:
                lines.append("-" * len(header))
            if value is None:
                lines.append(f"{name:<{width}}  {n:>8d}  no query")
                continue
            line = f"{name:<{width}}  {n:>8d}  {value:7.2f}"
            if iv is not None:
                line += f"  {f'[{ci[0]:.2f}, {ci[1]:.2f}]' if ci else '':>16}"
            if published:
                pub_s = f"{pub:9.2f}" if pub is not None else f"{'':>9}"
                diff_s = f"{value - pub:+6.2f}" if pub is not None else f"{'':>6}"
                line += f"  {pub_s}  {diff_s}"
            lines.append(line.rstrip())
        if iv is not None:
            lines.append(f"95% CI: {iv.describe()}.")
        return "\n".join(lines)


def result_json_text(payload: dict) -> str:
    """``payload`` (a :meth:`MAPResult.to_json`, possibly with more keys) as indented JSON text, with each
    per-query column on one line (a file of a few dozen lines, not one line per query)."""
    queries = payload.get("queries")
    if not isinstance(queries, dict):
        return json.dumps(payload, indent=2) + "\n"
    marks = {k: f"@@queries-{k}@@" for k in queries}
    text = json.dumps({**payload, "queries": {k: marks[k] for k in queries}}, indent=2)
    for k, mark in marks.items():
        text = text.replace(json.dumps(mark), json.dumps(queries[k]), 1)
    return text + "\n"


def write_result_json(result: MAPResult, schema: AttributeSchema, path, extra: dict | None = None) -> None:
    """Write ``{**extra, **result.to_json(schema)}`` to ``path`` atomically (never a half-written file)."""
    atomic_write_text(Path(path), result_json_text({**(extra or {}), **result.to_json(schema)}))


# --------------------------------------------------------------------------------------------------
# The protocol


def _as_float_tensor(x, device, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, D) array, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t.to(device)


def _as_index_array(x, n: int, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} embeddings")
    return arr


def mean_average_precision(
    query_emb,
    query_attr,
    query_val,
    cand_emb,
    cand_attr,
    cand_val,
    num_attributes: int,
    device: str | torch.device = "cpu",
    chunk: int = 1024,
) -> MAPResult:
    """The ASEN retrieval mAP (percent) of conditioned, L2-normalised embeddings.

    ``query_emb`` (nq, D) and ``cand_emb`` (nc, D) are float arrays or tensors, each row embedded for its
    own attribute ``query_attr`` / ``cand_attr`` (ints in ``[0, num_attributes)``); ``query_val`` /
    ``cand_val`` are the values. Per attribute, queries are processed ``chunk`` at a time: one matrix
    product, one stable sort on ``-similarity``, one cumulative sum of the relevance matrix. Similarity is
    computed in the embeddings' dtype (float64 in, float64 similarities); AP is accumulated in float64.
    """
    if num_attributes < 1:
        raise ValueError("num_attributes must be at least 1")
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    if len(query_attr) == 0:
        raise ValueError("there is no query: the mAP of an empty query set is undefined")
    q = _as_float_tensor(query_emb, device, "query_emb")
    c = _as_float_tensor(cand_emb, device, "cand_emb")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"query embeddings have {q.shape[1]} dimensions, candidates {c.shape[1]}")
    dtype = torch.promote_types(q.dtype, c.dtype)
    q, c = q.to(dtype), c.to(dtype)
    qa = _as_index_array(query_attr, len(q), "query_attr")
    qv = _as_index_array(query_val, len(q), "query_val")
    ca = _as_index_array(cand_attr, len(c), "cand_attr")
    cv = _as_index_array(cand_val, len(c), "cand_val")
    for name, arr in (("query_attr", qa), ("cand_attr", ca)):
        if len(arr) and (arr.min() < 0 or arr.max() >= num_attributes):
            raise ValueError(f"{name} must lie in [0, {num_attributes}), got {arr.min()}..{arr.max()}")

    ap = np.zeros(len(q), dtype=np.float64)
    for a in range(num_attributes):
        qi = np.flatnonzero(qa == a)
        ci = np.flatnonzero(ca == a)
        if len(qi) == 0 or len(ci) == 0:
            continue  # no candidate: every query of a has AP 0 (already zero)
        cand = c[torch.as_tensor(ci, device=c.device)]
        cand_vals = torch.as_tensor(cv[ci], device=c.device)
        ranks = torch.arange(1, len(ci) + 1, dtype=torch.float64, device=c.device)
        for s in range(0, len(qi), chunk):
            idx = qi[s : s + chunk]
            sim = q[torch.as_tensor(idx, device=q.device)] @ cand.T
            order = torch.sort(-sim, dim=1, stable=True).indices
            rel = (cand_vals[order] == torch.as_tensor(qv[idx], device=c.device)[:, None]).to(torch.float64)
            hits = rel.cumsum(dim=1)
            n_rel = rel.sum(dim=1)
            ap_chunk = (rel * hits / ranks).sum(dim=1) / n_rel.clamp(min=1.0)
            ap[idx] = ap_chunk.cpu().numpy()

    n_queries = [int(np.sum(qa == a)) for a in range(num_attributes)]
    per_attribute = [
        float(100.0 * ap[qa == a].mean()) if n_queries[a] else math.nan for a in range(num_attributes)
    ]
    overall = float(100.0 * ap.mean())
    return MAPResult(overall=overall, per_attribute=per_attribute, n_queries=n_queries, query_ap=ap,
                     query_attr=qa.copy())


# --------------------------------------------------------------------------------------------------
# The random baseline


def random_embeddings(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """``n`` seeded standard-Gaussian vectors of ``dim`` dimensions, L2-normalised (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def eval_rows(dataset: SplitDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The (queries, candidates) rows of ``split``; a split without query files or without a query (whose
    mAP would be undefined) is refused."""
    s = dataset.split(split)
    if s.queries is None or s.candidates is None:
        raise DatasetError(f"{dataset.root}: the {split} split has no query/candidate files")
    if not len(s.queries):
        raise DatasetError(f"{dataset.root}: the {split} split has no query, so it has no mAP to measure; evaluate "
                           f"another split or rebuild the dataset with more {split} images")
    return s.queries, s.candidates


def evaluate_random(dataset: SplitDataset, split: str = "test", seed: int = 0, dim: int = 128) -> MAPResult:
    """The protocol with one random vector per image id of ``split`` (labels only, no image needed).

    In the ASEN layout each image is either a query or a candidate, so a query never shares its vector
    with a candidate; in the all-attributes layout an image can be a query under one attribute and a
    candidate under another, but the protocol never compares rows of different attributes.
    """
    qs, cs = eval_rows(dataset, split)
    n = max(dataset.split(split).num_images, int(qs[:, 0].max()) + 1)
    if len(cs):
        n = max(n, int(cs[:, 0].max()) + 1)
    emb = random_embeddings(n, dim=dim, seed=seed)
    return mean_average_precision(
        emb[qs[:, 0]], qs[:, 1], qs[:, 2], emb[cs[:, 0]], cs[:, 1], cs[:, 2], dataset.schema.num_attributes
    ).attach_split(qs, cs)
