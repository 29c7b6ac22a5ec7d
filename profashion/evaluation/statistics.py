"""How much a retrieval mAP measured on a few hundred queries can be trusted, and whether two models differ.

Both tools work on the per-query APs of the protocol (retrieval_map.py): the candidates are fixed by the
split, the queries are the sample, so the uncertainty is that of the queries.

**Bootstrap interval** (:func:`bootstrap_intervals`): ``n_resamples`` seeded resamples of the queries,
drawn with replacement WITHIN each attribute (each attribute keeps its number of queries). An
attribute's mAP in a resample is the mean AP of its resampled queries; the overall mAP of the same
resample is the mean over all of them (query-weighted, like the protocol). The 95% interval is the
2.5th-97.5th percentile of the resampled values (the percentile bootstrap).

**Paired test** (:func:`paired_test`): two models measured on the SAME queries (same split, same query
and candidate files) give a per-query difference ``d = AP_B - AP_A``. The difference of mAPs is the
mean of ``d``; its 95% interval is the percentile bootstrap of that mean (the same stratified resampling,
applied to both models at once: a paired bootstrap); the two-sided p-value is a sign-flip permutation
test of "the two models are exchangeable on every query": each ``d`` keeps its size and gets a random
sign, ``n_permutations`` times (exactly, over all ``2^n`` signs, when ``2^n <= n_permutations``), and p is
the share of sign patterns whose mean is at least as far from 0 as the observed one (Monte Carlo:
``(1 + count) / (1 + n_permutations)``). The same is done per attribute and overall.

Result files (``profashion eval --json``) carry the per-query APs (:func:`load_result`), so
:func:`compare_result_files` needs no re-embedding; it refuses files from different splits or
datasets, and files without per-query APs, with one sentence (:class:`ComparisonError`).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from profashion.io import MAX_JSON_DEPTH, JSONLimitError, read_json

DEFAULT_RESAMPLES = 2000
DEFAULT_PERMUTATIONS = 10000
# Bounds of both counts: at least one (quick checks use a few; 2,000 and 10,000 are the defaults); the upper bound
# keeps a comparison to seconds and its memory to the per-attribute resampled means (100,000 x 8 bytes each)
MIN_RESAMPLES, MAX_RESAMPLES = 1, 100_000
MIN_PERMUTATIONS, MAX_PERMUTATIONS = 1, 100_000
MAX_RESULT_BYTES = 64 << 20  # a result file with per-query APs: about 30 bytes a query, so 2 million queries
LEVEL = 0.95
_CHUNK_ELEMENTS = 2_000_000  # random draws held in memory at once

NO_QUERY = "no query"
"""How an attribute without a query of the split is reported (never as 0 or nan)."""


class ComparisonError(ValueError):
    """Two result files that cannot be compared (or one that cannot be read); the message says why."""


# --------------------------------------------------------------------------------------------------
# Helpers


def _check_count(n, lo: int, hi: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not lo <= n <= hi:
        raise ValueError(f"{name} must be a whole number from {lo:,} to {hi:,}, got {str(n)[:40]}")
    return int(n)


def check_resamples(n, name: str = "n_resamples") -> int:
    """``n`` as an int when it is a number of bootstrap resamples within bounds, else ValueError (one sentence)."""
    return _check_count(n, MIN_RESAMPLES, MAX_RESAMPLES, name)


def check_permutations(n, name: str = "n_permutations") -> int:
    """``n`` as an int when it is a number of sign-flip permutations within bounds, else ValueError."""
    return _check_count(n, MIN_PERMUTATIONS, MAX_PERMUTATIONS, name)


def _finite_aps(ap, name: str = "APs") -> np.ndarray:
    """``ap`` as a 1-D float64 array of finite values, else ValueError."""
    try:
        arr = np.asarray(ap, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"the {name} must be numbers") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"the {name} must be finite numbers, got {arr[~np.isfinite(arr)][0]}")
    return arr


def _groups(attr: np.ndarray, num_attributes: int) -> list[np.ndarray]:
    attr = np.asarray(attr, dtype=np.int64).reshape(-1)
    if len(attr) and (attr.min() < 0 or attr.max() >= num_attributes):
        raise ValueError(f"query attributes must lie in [0, {num_attributes})")
    return [np.flatnonzero(attr == a) for a in range(num_attributes)]


def _resampled_sums(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples,) sums of ``len(values)`` draws with replacement from ``values``."""
    n = len(values)
    out = np.empty(n_resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for s in range(0, n_resamples, rows):
        b = min(rows, n_resamples - s)
        out[s:s + b] = values[rng.integers(0, n, size=(b, n))].sum(axis=1)
    return out


def _stratified_bootstrap(values: np.ndarray, groups: list[np.ndarray], n_resamples: int, seed: int):
    """(per-group resampled means (list, None for an empty group), overall resampled means)."""
    n_resamples = check_resamples(n_resamples)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 16]))
    total = np.zeros(n_resamples, dtype=np.float64)
    per_group = []
    n_all = sum(len(g) for g in groups)
    for g in groups:
        if len(g) == 0:
            per_group.append(None)
            continue
        sums = _resampled_sums(values[g], n_resamples, rng)
        total += sums
        per_group.append(sums / len(g))
    return per_group, (total / n_all if n_all else None)


def _interval(samples: np.ndarray | None, level: float = LEVEL) -> tuple[float, float] | None:
    if samples is None:
        return None
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _pct(x):
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(100.0 * v for v in x)
    return 100.0 * x


def split_fingerprint(queries: np.ndarray, candidates: np.ndarray) -> str:
    """A short hash of a split's query and candidate rows: two results with the same one were measured on
    the same queries against the same candidates."""
    h = hashlib.sha256()
    for rows in (queries, candidates):
        arr = np.ascontiguousarray(np.asarray(rows, dtype="<i8").reshape(-1, 3))
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Bootstrap intervals of one result


@dataclass
class MAPIntervals:
    """Percentile-bootstrap intervals (percent) of the overall and per-attribute mAP; ``None`` for an
    attribute without queries."""

    overall: tuple[float, float] | None
    per_attribute: list[tuple[float, float] | None]
    n_resamples: int
    seed: int
    level: float = LEVEL

    def describe(self) -> str:
        return (f"{self.level:.0%} percentile bootstrap over queries, resampled within each attribute, "
                f"{self.n_resamples} resamples, seed {self.seed}")


def bootstrap_intervals(ap, attr, num_attributes: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        level: float = LEVEL) -> MAPIntervals:
    """Bootstrap intervals of the mAP from per-query APs ``ap`` (fractions in [0, 1]) and their attributes
    ``attr``; see the module docstring."""
    ap = _finite_aps(ap)
    groups = _groups(attr, num_attributes)
    if sum(len(g) for g in groups) != len(ap):
        raise ValueError(f"{len(ap)} APs for {sum(len(g) for g in groups)} query attributes")
    per, overall = _stratified_bootstrap(ap, groups, n_resamples, seed)
    return MAPIntervals(overall=_pct(_interval(overall, level)),
                        per_attribute=[_pct(_interval(p, level)) for p in per],
                        n_resamples=int(n_resamples), seed=int(seed), level=level)


# --------------------------------------------------------------------------------------------------
# The paired test


def sign_flip_p_value(d: np.ndarray, n_permutations: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of ``mean(d) == 0`` by flipping the signs of ``d`` (exact when ``2^n`` is at most
    ``n_permutations``, else Monte Carlo)."""
    d = _finite_aps(d, "AP differences")
    n_permutations = check_permutations(n_permutations)
    n = len(d)
    if n == 0:
        return math.nan
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if n <= 20 and 2 ** n <= n_permutations:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
        stats = np.abs((2.0 * bits - 1.0) @ d)
        return float(np.mean(stats >= observed - tol))
    count = 0
    rows = max(1, _CHUNK_ELEMENTS // n)
    for s in range(0, n_permutations, rows):
        b = min(rows, n_permutations - s)
        signs = rng.integers(0, 2, size=(b, n)).astype(np.float64) * 2.0 - 1.0
        count += int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + count) / (1 + n_permutations)


@dataclass
class PairedRow:
    """One line of a comparison: mAPs, their difference B - A (percent), its interval, the p-value."""

    name: str
    n_queries: int
    map_a: float | None = None
    map_b: float | None = None
    diff: float | None = None
    ci95: tuple[float, float] | None = None
    p_value: float | None = None

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value is not None and self.p_value < alpha

    def to_json(self) -> dict:
        if self.n_queries == 0:
            return {"n_queries": 0, "status": NO_QUERY}
        return {"n_queries": self.n_queries, "map_a": self.map_a, "map_b": self.map_b, "diff": self.diff,
                "ci95": list(self.ci95), "p_value": self.p_value, "significant_5pct": self.significant()}


@dataclass
class PairedComparison:
    """A paired comparison of model B against model A on the same queries, per attribute and overall."""

    label_a: str
    label_b: str
    per_attribute: list[PairedRow]
    overall: PairedRow
    n_resamples: int
    n_permutations: int
    seed: int
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "a": self.label_a, "b": self.label_b, **self.info,
            "method": {"difference": "mAP(B) - mAP(A), percent, on the same queries",
                       "ci95": f"paired percentile bootstrap over queries within each attribute, "
                               f"{self.n_resamples} resamples, seed {self.seed}",
                       "p_value": f"two-sided sign-flip permutation test on the per-query AP differences, "
                                  f"{self.n_permutations} permutations (exact when fewer sign patterns)"},
            "overall": self.overall.to_json(),
            "per_attribute": {r.name: r.to_json() for r in self.per_attribute},
        }

    def format_table(self) -> str:
        rows = [*self.per_attribute, self.overall]
        width = max(len("attribute"), *(len(r.name) for r in rows))
        head = (f"{'attribute':<{width}}  {'#queries':>8}  {'A':>7}  {'B':>7}  {'B - A':>7}  {'95% CI':>16}  "
                f"{'p':>7}")
        lines = [f"A = {self.label_a}", f"B = {self.label_b}", head, "-" * len(head)]
        for k, r in enumerate(rows):
            if k == len(rows) - 1:
                lines.append("-" * len(head))
            if r.n_queries == 0:
                lines.append(f"{r.name:<{width}}  {0:>8d}  {NO_QUERY}")
                continue
            ci = f"[{r.ci95[0]:+.2f}, {r.ci95[1]:+.2f}]"
            mark = " *" if r.significant() else ""
            lines.append(f"{r.name:<{width}}  {r.n_queries:>8d}  {r.map_a:7.2f}  {r.map_b:7.2f}  {r.diff:+7.2f}  "
                         f"{ci:>16}  {_format_p(r.p_value):>7}{mark}")
        lines.append(f"* significant at 5% (p < 0.05). p: two-sided sign-flip permutation test "
                     f"({self.n_permutations} permutations); CI: paired bootstrap ({self.n_resamples} resamples, "
                     f"seed {self.seed}).")
        return "\n".join(lines)


def _format_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def paired_test(ap_a, ap_b, attr, names, label_a: str = "A", label_b: str = "B",
                n_resamples: int = DEFAULT_RESAMPLES, n_permutations: int = DEFAULT_PERMUTATIONS,
                seed: int = 0) -> PairedComparison:
    """Paired comparison of per-query APs ``ap_a`` and ``ap_b`` (fractions, the SAME queries in the same
    order, attributes ``attr`` indexing ``names``); see the module docstring."""
    ap_a, ap_b = _finite_aps(ap_a, "APs of A"), _finite_aps(ap_b, "APs of B")
    if ap_a.shape != ap_b.shape:
        raise ValueError(f"{len(ap_a)} APs for A but {len(ap_b)} for B: a paired test needs the same queries")
    n_resamples, n_permutations = check_resamples(n_resamples), check_permutations(n_permutations)
    groups = _groups(attr, len(names))
    d = ap_b - ap_a
    per_boot, overall_boot = _stratified_bootstrap(d, groups, n_resamples, seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 17]))

    def row(name, idx, boot) -> PairedRow:
        if len(idx) == 0:
            return PairedRow(name, 0)
        return PairedRow(name, len(idx), float(100.0 * ap_a[idx].mean()), float(100.0 * ap_b[idx].mean()),
                         float(100.0 * d[idx].mean()), _pct(_interval(boot)),
                         float(sign_flip_p_value(d[idx], n_permutations, rng)))

    per = [row(n, g, b) for n, g, b in zip(names, groups, per_boot)]
    overall = row("overall", np.arange(len(d)), overall_boot)
    return PairedComparison(label_a, label_b, per, overall, int(n_resamples), int(n_permutations), int(seed))


# --------------------------------------------------------------------------------------------------
# Result files


def _column(path, q: dict, key: str, kind: str) -> list:
    """``q[key]`` checked as a list of whole numbers (``kind`` "int") or of finite numbers in [0, 1] ("ap")."""
    col = q[key]
    if not isinstance(col, list):
        raise ComparisonError(f"{path}: the field queries.{key} must be a list, got {type(col).__name__}")
    for i, v in enumerate(col):
        if kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and -(2**62) < v < 2**62
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
        if not ok:
            want = "a whole number" if kind == "int" else "a finite number from 0 to 1"
            raise ComparisonError(f"{path}: the field queries.{key}[{i}] must be {want}, got {json.dumps(v)[:40]}; "
                                  "write the file again with `profashion eval --json`")
    return col


def load_result(path) -> dict:
    """A result file of ``profashion eval --json`` with its per-query APs, checked; :class:`ComparisonError`
    with one sentence when it cannot serve a paired comparison. The file is read in bounded memory (at most
    :data:`MAX_RESULT_BYTES`, nested at most ``MAX_JSON_DEPTH`` levels) and every per-query field is checked
    (whole-number ids, finite APs in [0, 1])."""
    path = Path(path)
    try:
        res = read_json(path, max_bytes=MAX_RESULT_BYTES, max_depth=MAX_JSON_DEPTH, what=f"the result file {path}",
                        fix="give a file written by `profashion eval --json`")
    except FileNotFoundError as exc:
        raise ComparisonError(f"result file not found: {path}") from exc
    except JSONLimitError as exc:
        raise ComparisonError(str(exc)) from None
    if not isinstance(res, dict) or "overall" not in res:
        raise ComparisonError(f"{path} is not a result file of `profashion eval --json` (no 'overall' mAP)")
    q = res.get("queries")
    if not isinstance(q, dict) or "ap" not in q:
        raise ComparisonError(
            f"{path} has no per-query APs: it was written by an older version or another tool; write it again "
            "with `profashion eval --dataset DATA --split SPLIT --checkpoint CKPT --json FILE`, which keeps them")
    missing = [k for k in ("attributes", "fid", "attribute", "value", "ap") if k not in q]
    if missing:
        raise ComparisonError(f"{path}: the 'queries' block is incomplete (no {', '.join(missing)}; expected "
                              "attributes, fid, attribute, value, ap)")
    if not isinstance(q["attributes"], list) or not all(isinstance(n, str) for n in q["attributes"]):
        raise ComparisonError(f"{path}: the field queries.attributes must be a list of attribute names")
    names = list(q["attributes"])
    cols = {k: _column(path, q, k, "ap" if k == "ap" else "int") for k in ("fid", "attribute", "value", "ap")}
    n = len(cols["ap"])
    if any(len(c) != n for c in cols.values()):
        raise ComparisonError(f"{path}: the 'queries' block is inconsistent (its columns have different lengths)")
    attr = np.asarray(cols["attribute"], dtype=np.int64) if n else np.zeros(0, np.int64)
    if n and (attr.min() < 0 or attr.max() >= len(names)):
        raise ComparisonError(f"{path}: the field queries.attribute holds indices outside the {len(names)} "
                              "attributes of queries.attributes")
    for k in ("model", "dataset", "split", "layout", "split_fingerprint"):
        if res.get(k) is not None and not isinstance(res[k], str):
            raise ComparisonError(f"{path}: the field {k} must be text, got {json.dumps(res[k])[:40]}")
    res["_names"] = names
    res["_rows"] = np.stack([np.asarray(cols["fid"], dtype=np.int64).reshape(-1), attr,
                             np.asarray(cols["value"], dtype=np.int64).reshape(-1)], axis=1).reshape(-1, 3)
    res["_ap"] = np.asarray(cols["ap"], dtype=np.float64).reshape(-1)
    res["_path"] = str(path)
    return res


def _where(res: dict) -> str:
    parts = [str(res[k]) for k in ("dataset", "split") if res.get(k)]
    what = " ".join(parts) if parts else "unknown dataset/split"
    return f"{what}, {len(res['_ap'])} queries"


def compare_results(res_a: dict, res_b: dict, n_resamples: int = DEFAULT_RESAMPLES,
                    n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedComparison:
    """Paired comparison of two loaded result files (:func:`load_result`): B against A."""
    pa, pb = res_a.get("_path", "A"), res_b.get("_path", "B")
    if res_a["_names"] != res_b["_names"]:
        raise ComparisonError(
            f"{pa} and {pb} come from different datasets: their attributes differ ({', '.join(res_a['_names'])} vs "
            f"{', '.join(res_b['_names'])}); a paired test needs results on the same split")
    key_a = {tuple(r): i for i, r in enumerate(res_a["_rows"].tolist())}
    key_b = {tuple(r): i for i, r in enumerate(res_b["_rows"].tolist())}
    if len(key_a) != len(res_a["_rows"]) or len(key_b) != len(res_b["_rows"]):
        raise ComparisonError(f"{pa if len(key_a) != len(res_a['_rows']) else pb} lists a query twice")
    if key_a.keys() != key_b.keys():
        common = len(key_a.keys() & key_b.keys())
        raise ComparisonError(
            f"{pa} and {pb} were measured on different query sets ({_where(res_a)} vs {_where(res_b)}, "
            f"{common} in common): they come from different splits or datasets, and a paired test needs "
            "results of the same dataset and split")
    fa, fb = res_a.get("split_fingerprint"), res_b.get("split_fingerprint")
    if fa and fb and fa != fb:
        raise ComparisonError(
            f"{pa} and {pb} have the same queries but different candidates (split fingerprints {fa} vs {fb}): "
            "they come from different splits or datasets; compare results of the same dataset and split")
    order = sorted(key_a)
    ia = np.array([key_a[k] for k in order], dtype=np.int64)
    ib = np.array([key_b[k] for k in order], dtype=np.int64)
    attr = res_a["_rows"][ia, 1]
    cmp = paired_test(res_a["_ap"][ia], res_b["_ap"][ib], attr, res_a["_names"],
                      label_a=str(res_a.get("model") or pa), label_b=str(res_b.get("model") or pb),
                      n_resamples=n_resamples, n_permutations=n_permutations, seed=seed)
    cmp.info = {k: res_a.get(k) for k in ("dataset", "split", "layout") if res_a.get(k) is not None}
    cmp.info.update({"file_a": pa, "file_b": pb})
    return cmp


def compare_result_files(path_a, path_b, n_resamples: int = DEFAULT_RESAMPLES,
                         n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedComparison:
    """:func:`compare_results` of two ``profashion eval --json`` files."""
    return compare_results(load_result(path_a), load_result(path_b), n_resamples, n_permutations, seed)
