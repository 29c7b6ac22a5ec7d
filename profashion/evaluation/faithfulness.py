"""Faithfulness: does a model's embedding depend on the pixels its map points at? No ground truth needed.

Localisation (:mod:`profashion.evaluation.localisation`) says where a map looks; it needs a ground-truth region
and cannot tell whether the embedding uses what the map shows. Faithfulness removes the query's pixels in the
map's order and watches the retrieval react: the deletion and insertion curves of RISE (Petsiuk et al., BMVC
2018), adapted to retrieval, with ROAD's removal (Rong et al., ICML 2022) and IROF's superpixel units (Rieger et
al., 2020).

For one query image, one attribute and one map:

1. **Units.** A heatmap (or a box) is scored on a ``grid`` x ``grid`` lattice of cells (default 16 x 16: 10 px
   cells on the 160 px demo input), each cell weighted by the map's mean over it. A superpixel map (kind
   ``"labels"``) removes whole superpixels, weighted by its ``selection`` (unselected ones weigh 0): IROF. Ties
   are broken by a seeded random key. Cells rather than single pixels so that the random baseline removes the
   same kind of compact pieces as the map (a random pixel order removes scattered pixels, which imputation
   restores almost perfectly, and every compact map would look faithful against it).
2. **Orders.** ``map``: heaviest unit first; ``inverse``: the same order reversed (lightest first); ``random``: a
   seeded random order of the same units. Removed fractions (of the image's area) step from 0 to 1 in ``steps``
   steps (default 10; each step removes the prefix of units whose area is nearest to ``t / steps``, so the
   x-axis of a superpixel curve is the area actually removed).
3. **Removal (ROAD).** Removed pixels are filled by ROAD's noisy linear imputation: each removed pixel is the
   weighted mean of its 8 neighbours (weights 1/6 side, 1/12 diagonal, as in ROAD's reference implementation
   and pytorch-grad-cam's ``NoisyLinearImputer``), solved jointly, plus Gaussian noise of std 0.01 (in the
   model's normalised input units). The linear system is relaxed on the model's input in one torch batch, coarse
   to fine (:func:`road_impute`), not solved by a sparse direct solver (scipy's SuperLU, as ROAD and
   pytorch-grad-cam do: 0.4-0.6 s for one 160 px image with 90% removed on this CPU, one image at a time, on
   the CPU only); the batch relaxation agrees with the direct solve to within the noise
   (tests/test_faithfulness.py). It is not cheaper on this CPU (22-35 s for the 29 images of a pair under a
   load average of 7-10), but it is one batched tensor computation that runs wherever the model runs. An image
   with every pixel removed has no neighbour to impute from: it is the normalisation's mean colour (0 in model
   units) plus the noise, the same for every order.
4. **Score.** The removed images are embedded under the attribute, in batches of up to 64 (one for a heatmap),
   and each is scored by its mean cosine similarity to the ORIGINAL query's top-``k`` matches (default 5) in
   that attribute's space. Curves are normalised per pair: 1 at the original image, 0 at the fully removed one,
   so an AUC does not depend on the model's similarity scale (compare a map with its own random baseline, not
   across models). A pair whose original and fully removed image score within :data:`MIN_GAP` of each other
   has no curve to normalise and is left out (counted).
5. **AUCs.** Deletion AUC (trapezoid over the removed fraction): lower = the map's units matter more = more
   faithful. Insertion starts from the fully removed image and adds units back, heaviest first: higher = better.
   With ROAD both curves see the same images: inserting a fraction ``p`` in the map's order leaves exactly the
   image that deleting ``1 - p`` in the inverse order leaves, so insertion AUC(map) = deletion AUC(inverse),
   insertion AUC(inverse) = deletion AUC(map) and insertion AUC(random) = deletion AUC(random), exactly; each
   image is made and embedded once.

Cost per pair (image, attribute) of one model: ``2 + (steps - 1) * (1 + R + 2 M)`` forward passes for ``M``
maps of which ``R`` are superpixel maps (the random order of the cells is shared by every cell map); 47 for
the two heatmaps of ASEN at 10 steps, in one batch. Images are the model's input (160 px for the demo
models); larger inputs are refused above :data:`MAX_SIDE`.

:func:`evaluate_faithfulness` walks the pairs of a dataset split (as localisation does) with bootstrap 95%
intervals over pairs (:func:`~profashion.evaluation.statistics.bootstrap_intervals`, resampled within each
attribute); :func:`query_faithfulness` answers one query for one or several models (the app).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from profashion.explain.explanation import Explanation, Map
from profashion.io import atomic_write_json

DEFAULT_STEPS, MIN_STEPS, MAX_STEPS = 10, 4, 20
DEFAULT_GRID, MIN_GRID, MAX_GRID = 16, 4, 64
DEFAULT_K, MIN_K, MAX_K = 5, 1, 100
MAX_SIDE = 512  # the largest model input (pixels a side) the imputation runs on
ROAD_NOISE = 0.01  # std of the noise ROAD adds to imputed pixels (its reference implementation's default)
MIN_GAP = 1e-3  # original vs fully removed similarity below which a pair has no curve to normalise
SCORED_KINDS = ("heatmap", "labels", "box")
ORDERS = ("map", "random", "inverse")
BATCH = 64  # images per forward batch
# ROAD's neighbour weights (offset, weight): sides 1/6, diagonals 1/12
ROAD_WEIGHTS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def _check_range(value, lo: int, hi: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {str(value)[:40]}")
    return int(value)


def check_settings(steps: int, grid: int, k: int) -> tuple[int, int, int]:
    """``(steps, grid, k)`` as ints within bounds, else one ValueError sentence naming the first bad one."""
    return (_check_range(steps, MIN_STEPS, MAX_STEPS, "steps"), _check_range(grid, MIN_GRID, MAX_GRID, "grid"),
            _check_range(k, MIN_K, MAX_K, "k"))


# --------------------------------------------------------------------------------------------------
# ROAD's noisy linear imputation, batched


def _neighbour_sum(y: torch.Tensor) -> torch.Tensor:
    """ROAD's weighted sum of each pixel's 8 neighbours (outside the image counts 0); shifted adds, several times
    faster than a depthwise ``conv2d`` on the CPU."""
    p = F.pad(y, (1, 1, 1, 1))
    diag = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
    side = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    return diag * float(ROAD_WEIGHTS[0, 0]) + side * float(ROAD_WEIGHTS[0, 1])


def _relax(x: torch.Tensor, keep: torch.Tensor, y: torch.Tensor, iters: int, omega: float = 1.7) -> torch.Tensor:
    """``iters`` over-relaxed Gauss-Seidel sweeps of "each removed pixel = the weighted mean of its in-image
    neighbours", in four colours (y, x parities: no pixel neighbours another of its colour). Each colour's step
    computes the neighbour sums of the whole image: slicing a colour's strided quarter out is slower in torch on
    the CPU (non-contiguous element-wise ops, ~8x per element here)."""
    h, w = x.shape[-2:]
    norm = _neighbour_sum(torch.ones_like(x[:1, :1]))  # in-image weight of each pixel's neighbours
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    colours = [((yy % 2 == a) & (xx % 2 == b)).to(x.device) & ~keep for a in (0, 1) for b in (0, 1)]
    for _ in range(iters):
        for c in colours:
            y = torch.where(c, (1 - omega) * y + omega * _neighbour_sum(y) / norm, y)
    return y


def _harmonic_fill(x: torch.Tensor, keep: torch.Tensor, fill: float, iters: int) -> torch.Tensor:
    """Solve the imputation system coarse to fine: the 2x-pooled problem's solution, upsampled, starts the sweeps
    (so a large hole converges in a few sweeps per level instead of thousands)."""
    h, w = x.shape[-2:]
    if min(h, w) <= 4:
        n = keep.sum((-2, -1), keepdim=True)
        mean = (x * keep).sum((-2, -1), keepdim=True) / n.clamp_min(1)
        init = torch.where(n > 0, mean, torch.full_like(mean, fill)).expand_as(x)
    else:
        k = keep.to(x.dtype)
        den = F.avg_pool2d(k, 2, ceil_mode=True)
        xc = F.avg_pool2d(x * k, 2, ceil_mode=True) / den.clamp_min(1e-12)
        coarse = _harmonic_fill(xc, den > 0, fill, iters)
        init = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return _relax(x, keep, torch.where(keep, x, init), iters)


@torch.no_grad()
def road_impute(images: torch.Tensor, keep: torch.Tensor, noise: float = ROAD_NOISE, fill: float = 0.0,
                generator: torch.Generator | None = None, iters: int = 12) -> torch.Tensor:
    """(B, C, H, W) ``images`` with the pixels where ``keep`` (B, H, W) is False replaced by ROAD's noisy linear
    imputation (module docstring, step 3); an image with no kept pixel becomes ``fill`` plus the noise."""
    if images.ndim != 4 or keep.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images (B, C, H, W) and keep (B, H, W) expected, got {tuple(images.shape)} and "
                         f"{tuple(keep.shape)}")
    keep = keep[:, None].to(images.device)
    filled = _harmonic_fill(images.float(), keep, fill, iters)
    eps = torch.randn(filled.shape, generator=generator, dtype=filled.dtype).to(filled.device)
    return torch.where(keep, images.float(), filled + noise * eps).to(images.dtype)


# --------------------------------------------------------------------------------------------------
# Units and orders


@dataclass(frozen=True)
class Units:
    """A partition of the image into removal units: ``ids`` (H, W) unit of each pixel, ``sizes`` pixels per
    unit, ``scores`` the map's weight of each unit, ``kind`` "cell" or "superpixel"."""

    ids: np.ndarray
    sizes: np.ndarray
    scores: np.ndarray
    kind: str


def _cells(shape: tuple[int, int], grid: int) -> np.ndarray:
    h, w = shape
    ys = (np.arange(h) * grid) // h
    xs = (np.arange(w) * grid) // w
    return ys[:, None] * grid + xs[None, :]


def _as_numpy(data) -> np.ndarray:
    return data.detach().float().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)


def map_units(m: Map, shape: tuple[int, int], grid: int = DEFAULT_GRID) -> Units:
    """The removal units of ``m`` on an image of ``shape`` and the map's weight of each (module docstring, 1)."""
    h, w = shape
    if m.kind == "labels":
        labels = _as_numpy(m.data).astype(np.int64)
        if labels.shape != (h, w):
            t = torch.from_numpy(labels)[None, None].float()
            labels = F.interpolate(t, size=(h, w), mode="nearest")[0, 0].long().numpy()
        uniq, ids = np.unique(labels, return_inverse=True)
        weight = dict(m.selection or ())
        scores = np.array([float(weight.get(int(u), 0.0)) for u in uniq])
        return Units(ids.reshape(h, w), np.bincount(ids.ravel(), minlength=len(uniq)), scores, "superpixel")
    if m.kind == "box":
        y0, x0, y1, x1 = (float(v) for v in m.data)
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        heat = ((yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)).astype(np.float64)
    elif m.kind == "heatmap":
        heat = _as_numpy(m.data).astype(np.float64)
        if heat.shape != (h, w):
            t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
            heat = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].double().numpy()
    else:
        raise ValueError(f"map {m.name!r} is a {m.kind}; faithfulness scores maps of kind "
                         f"{', '.join(SCORED_KINDS)}")
    if not np.isfinite(heat).all():
        raise ValueError(f"map {m.name!r} has NaN or infinite values; it cannot be scored")
    ids = _cells((h, w), grid)
    sizes = np.bincount(ids.ravel(), minlength=grid * grid)
    scores = np.bincount(ids.ravel(), weights=heat.ravel(), minlength=grid * grid) / np.maximum(sizes, 1)
    return Units(ids, sizes, scores, "cell")


def unit_orders(units: Units, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``{"map": heaviest first (ties in a random order), "inverse": its reverse}``."""
    order = np.lexsort((rng.random(len(units.scores)), -units.scores))
    return {"map": order, "inverse": order[::-1].copy()}


def step_keeps(units: Units, order: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps + 1, H, W) kept-pixel masks after each step of removing ``order``'s units, and the removed
    fraction of the area at each step (0 first, 1 last)."""
    cum = np.concatenate([[0], np.cumsum(units.sizes[order])]).astype(np.float64)
    total = cum[-1]
    targets = np.linspace(0.0, total, steps + 1)
    j = np.clip(np.searchsorted(cum, targets), 1, len(cum) - 1)
    j = np.where(np.abs(cum[j - 1] - targets) <= np.abs(cum[j] - targets), j - 1, j)
    j[0], j[-1] = 0, len(order)
    pos = np.empty(len(order), np.int64)
    pos[order] = np.arange(len(order))
    rank = pos[units.ids]
    return rank[None] >= j[:, None, None], cum[j] / total


# --------------------------------------------------------------------------------------------------
# Curves of one pair


@dataclass
class MapCurves:
    """The deletion curves of one map on one (image, attribute): per order, the removed fraction ``x`` and
    the similarity ``sim`` to the original's top-k matches at each step."""

    map: str
    kind: str
    unit: str
    x: dict[str, np.ndarray]
    sim: dict[str, np.ndarray]

    @property
    def gap(self) -> float:
        return float(self.sim["map"][0] - self.sim["map"][-1])

    @property
    def valid(self) -> bool:
        return self.gap > MIN_GAP

    def curve(self, order: str) -> np.ndarray:
        """The normalised deletion curve: 1 at the original, 0 at the fully removed image."""
        s = self.sim[order]
        return (s - s[-1]) / self.gap

    def deletion_auc(self, order: str) -> float:
        return float(np.trapezoid(self.curve(order), self.x[order]))

    def insertion_auc(self, order: str) -> float:
        """Insertion in ``order`` = deletion in the reverse order, read backwards (module docstring, 5)."""
        other = {"map": "inverse", "inverse": "map", "random": "random"}[order]
        return self.deletion_auc(other)

    def drop_at(self, order: str, fraction: float) -> float:
        """Share of the similarity gone after removing ``fraction`` of the area in ``order`` (interpolated)."""
        return float(1.0 - np.interp(fraction, self.x[order], self.curve(order)))

    def sentence(self, fraction: float = 0.2) -> str:
        """One sentence for a person: how much faster this map's top units take the match away than random ones."""
        if not self.valid:
            return ("the fully removed image still matches as well as the original, so this map's faithfulness "
                    "cannot be measured on this query")
        pct = round(100 * fraction)
        d_map, d_rand = self.drop_at("map", fraction), self.drop_at("random", fraction)
        what = "superpixels" if self.unit == "superpixel" else "area"
        took = "all" if d_map >= 0.995 else f"{100 * d_map:.0f}%"
        head = f"removing this map's top {pct}% ({what}) takes away {took} of the match similarity"
        if d_rand <= 0.02:
            return f"{head}; removing a random {pct}% takes away {max(0.0, 100 * d_rand):.0f}%"
        ratio = d_map / d_rand
        speed = f"{ratio:.1f}x faster than" if ratio >= 1.05 else (
            "about as fast as" if ratio > 0.95 else f"{1 / ratio:.1f}x slower than" if ratio > 0 else "less than")
        return f"{head}: it drops the similarity {speed} removing a random {pct}% ({100 * d_rand:.0f}%)"

    def to_json(self) -> dict:
        out = {"map": self.map, "kind": self.kind, "unit": self.unit, "valid": self.valid,
               "similarity": {o: np.round(self.sim[o], 5).tolist() for o in ORDERS},
               "removed_fraction": {o: np.round(self.x[o], 5).tolist() for o in ORDERS}}
        if self.valid:
            out["deletion_auc"] = {o: round(self.deletion_auc(o), 5) for o in ORDERS}
            out["insertion_auc"] = {o: round(self.insertion_auc(o), 5) for o in ORDERS}
            out["sentence"] = self.sentence()
        return out


def scored_maps(explanation: Explanation, names: Sequence[str] | None = None) -> list[Map]:
    """The maps of ``explanation`` faithfulness can score (heatmaps, superpixel maps with a selection, boxes), or
    those called ``names`` (a ValueError naming the scoreable ones when one is missing or of another kind)."""
    ok = [m for m in explanation.maps if m.kind in ("heatmap", "box") or (m.kind == "labels" and m.selection)]
    if names is None:
        return ok
    by_name = {m.name: m for m in ok}
    for n in names:
        if n not in by_name:
            raise ValueError(f"no map {n!r} to score (heatmaps, superpixel maps and boxes); scoreable maps: "
                             f"{', '.join(by_name)}")
    return [by_name[n] for n in names]


def _plan(maps: Sequence[Map], shape, steps: int, grid: int, rng: np.random.Generator):
    """The kept-pixel masks to embed (deduplicated by order) and, per map, which rows of them are its curves."""
    keeps, rows, random_cells = [], [], None

    def add(units: Units, order: np.ndarray) -> tuple[list[int], np.ndarray]:
        k, x = step_keeps(units, order, steps)
        idx = [0] + [len(keeps) + 2 + i for i in range(steps - 1)] + [1]  # rows 0, 1: original, fully removed
        keeps.extend(k[1:-1])
        return idx, x

    for m in maps:
        units = map_units(m, shape, grid)
        orders = unit_orders(units, rng)
        if units.kind == "cell":
            if random_cells is None:
                random_cells = add(units, rng.permutation(len(units.scores)))
            rand = random_cells
        else:
            rand = add(units, rng.permutation(len(units.scores)))
        got = {o: add(units, orders[o]) for o in ("map", "inverse")}
        got["random"] = rand
        rows.append((m, units.kind, {o: g[0] for o, g in got.items()}, {o: g[1] for o, g in got.items()}))
    h, w = shape
    full = [np.ones((h, w), bool), np.zeros((h, w), bool)]
    return np.stack(full + keeps), rows


def forward_passes(num_maps: int, num_superpixel_maps: int = 0, steps: int = DEFAULT_STEPS) -> int:
    """Images embedded per pair for ``num_maps`` maps of which ``num_superpixel_maps`` are superpixel maps (the
    module docstring's cost)."""
    if num_maps == 0:
        return 0
    return 2 + (steps - 1) * ((num_maps > num_superpixel_maps) + num_superpixel_maps + 2 * num_maps)


def top_matches(query: torch.Tensor | np.ndarray, gallery: torch.Tensor | np.ndarray, k: int = DEFAULT_K,
                exclude: Sequence[int] = ()) -> np.ndarray:
    """(k, D) the rows of ``gallery`` (N, D) most similar (cosine: rows are L2-normalised) to ``query`` (D,),
    leaving out the rows ``exclude`` (the query itself, when it is in the gallery)."""
    g = _as_numpy(gallery).astype(np.float32)
    sims = g @ _as_numpy(query).astype(np.float32).reshape(-1)
    sims[list(exclude)] = -np.inf
    k = min(k, len(g) - len(set(exclude)))
    if k < 1:
        raise ValueError("the gallery has no image besides the query: there are no matches to track")
    return g[np.argsort(-sims, kind="stable")[:k]]


def _embed(model, images: torch.Tensor, attribute_id: int, batch: int = BATCH) -> torch.Tensor:
    out = []
    for s in range(0, len(images), batch):
        x = images[s:s + batch].to(model.device)
        out.append(model.embed(x, torch.full((len(x),), int(attribute_id), dtype=torch.long)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def pair_curves(model, image: torch.Tensor, attribute_id: int, targets, maps: Sequence[Map],
                steps: int = DEFAULT_STEPS, grid: int = DEFAULT_GRID, seed: int = 0,
                batch: int = BATCH) -> list[MapCurves]:
    """The curves of every map in ``maps`` for one (3, H, W) model input ``image`` and attribute, tracking the
    mean similarity to ``targets`` (k, D): the original query's top-k matches (:func:`top_matches`).

    All removed images of the pair are imputed in one batch and embedded in batches of ``batch``
    (:func:`forward_passes` images in all); ``seed`` fixes the tie-breaking, the random order and the noise."""
    steps, grid, _ = check_settings(steps, grid, 1)
    if image.ndim != 3 or max(image.shape[-2:]) > MAX_SIDE:
        raise ValueError(f"one (3, H, W) image of at most {MAX_SIDE} px a side expected, got {tuple(image.shape)}")
    if not maps:
        return []
    shape = tuple(image.shape[-2:])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 25]))
    keeps, rows = _plan(maps, shape, steps, grid, rng)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    images = road_impute(image[None].expand(len(keeps), *image.shape).cpu().float(), torch.from_numpy(keeps),
                         generator=gen)
    emb = _embed(model, images, attribute_id, batch)
    t = torch.as_tensor(_as_numpy(targets), dtype=torch.float32).reshape(-1, emb.shape[1])
    sim = (emb @ t.T).mean(1).numpy().astype(np.float64)
    return [MapCurves(m.name, m.kind, unit, {o: x[o] for o in ORDERS}, {o: sim[idx[o]] for o in ORDERS})
            for m, unit, idx, x in rows]


# --------------------------------------------------------------------------------------------------
# A split: every pair, bootstrap intervals over pairs


@dataclass
class MapSummary:
    """A map's AUCs over the pairs (percent of the unit square), each with its 95% bootstrap interval."""

    map: str
    kind: str
    unit: str
    n: int  # pairs with a curve
    flat: int  # pairs left out: the fully removed image matches as well as the original
    auc: dict[str, float]  # "deletion map", "deletion random", ..., "deletion map - random", ...
    ci95: dict[str, tuple[float, float] | None]

    def to_json(self) -> dict:
        return {"map": self.map, "kind": self.kind, "unit": self.unit, "pairs": self.n, "flat_pairs": self.flat,
                "auc_percent": {k: round(v, 2) for k, v in self.auc.items()},
                "ci95": {k: (None if v is None else [round(v[0], 2), round(v[1], 2)]) for k, v in self.ci95.items()}}


AUC_COLUMNS = ("deletion map", "deletion random", "deletion inverse", "deletion map - random",
               "insertion map", "insertion random", "insertion inverse", "insertion map - random")


def summarise(curves: Sequence[MapCurves], attributes: Sequence[int], num_attributes: int,
              n_resamples: int = 2000, seed: int = 0) -> MapSummary:
    """Mean AUCs of one map's curves over pairs (``attributes``: each pair's attribute), with percentile-
    bootstrap 95% intervals resampled within each attribute (the mAP's own bootstrap, statistics.py)."""
    from profashion.evaluation.statistics import bootstrap_intervals

    ok = [(c, a) for c, a in zip(curves, attributes) if c.valid]
    first = curves[0]
    values: dict[str, np.ndarray] = {}
    for what in ("deletion", "insertion"):
        for o in ORDERS:
            values[f"{what} {o}"] = np.array([getattr(c, f"{what}_auc")(o) for c, _ in ok])
        values[f"{what} map - random"] = values[f"{what} map"] - values[f"{what} random"]
    attr = np.array([a for _, a in ok], dtype=np.int64)
    auc, ci = {}, {}
    for key in AUC_COLUMNS:
        v = values[key]
        auc[key] = 100.0 * float(v.mean()) if len(v) else math.nan
        ci[key] = bootstrap_intervals(v, attr, num_attributes, n_resamples, seed).overall if len(v) else None
    return MapSummary(first.map, first.kind, first.unit, len(ok), len(curves) - len(ok), auc, ci)


@dataclass
class FaithfulnessResult:
    """Every scored map of one model on a split: its summary, and its per-pair curves (for the JSON)."""

    model: str
    maps: list[MapSummary]
    settings: dict
    pairs: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def format_table(self) -> str:
        def cell(s: MapSummary, key: str) -> str:
            lo_hi = s.ci95[key]
            if lo_hi is None:
                return f"{'-':>21s}"
            sign = "+" if "-" in key else ""
            return f"{s.auc[key]:{sign}6.1f} [{lo_hi[0]:{sign}5.1f},{lo_hi[1]:{sign}6.1f}]"

        head = (f"{'map':16s} {'pairs':>5s} | {'deletion: map':>21s} {'random':>21s} {'inverse':>21s} "
                f"{'map - random':>21s} | {'insertion: map':>21s} {'map - random':>21s}")
        lines = [head, "-" * len(head)]
        for s in self.maps:
            lines.append(f"{s.map:16s} {s.n:5d} | " + " ".join(cell(s, k) for k in AUC_COLUMNS[:4]) + " | "
                         + " ".join(cell(s, k) for k in ("insertion map", "insertion map - random")))
        lines.append("AUC in % of the unit square, mean over pairs [95% bootstrap interval]; deletion: lower = more "
                     "faithful, insertion: higher; insertion random = deletion random, insertion inverse = "
                     "deletion map (ROAD: the same images)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"model": self.model, "settings": self.settings, "seconds": round(self.seconds, 1),
                "maps": [s.to_json() for s in self.maps], "pairs": self.pairs}


def _gallery(model, dataset, split: str, batch: int, progress: bool) -> torch.Tensor:
    """(N, A, D) every image of ``split`` embedded under every attribute."""
    from profashion.data.images import load_image

    n = dataset.split(split).num_images
    pre, out = model.preprocess, []
    it = range(0, n, batch)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="embedding the gallery", unit="batch", leave=False)
    for s in it:
        x = torch.stack([pre.to_tensor(load_image(dataset.image_path(split, i))) for i in range(s, min(n, s + batch))])
        out.append(model.embed_all(x.to(model.device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def evaluate_faithfulness(model, dataset, split: str = "test", maps: Sequence[str] | None = None,
                          max_pairs: int | None = None, steps: int = DEFAULT_STEPS, grid: int = DEFAULT_GRID,
                          k: int = DEFAULT_K, seed: int = 0, n_resamples: int = 2000, batch: int = BATCH,
                          progress: bool = False) -> FaithfulnessResult:
    """Faithfulness of every scoreable map of ``model.explain`` (or those named ``maps``) on the (image,
    attribute) pairs labelled in ``split`` (a seeded sample of ``max_pairs``, as localisation draws them); the
    gallery of each query's top-``k`` matches is the rest of the split."""
    import time

    from profashion.data.images import load_image
    from profashion.evaluation.localisation import localisation_pairs
    from profashion.evaluation.statistics import check_resamples

    steps, grid, k = check_settings(steps, grid, k)
    check_resamples(n_resamples, "n_resamples")
    if max_pairs is not None:
        _check_range(max_pairs, 1, 1_000_000, "max_pairs")
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        pairs = localisation_pairs(dataset, split, max_pairs, seed)
        gallery = _gallery(model, dataset, split, batch, progress)
        per_map: dict[str, list[MapCurves]] = {}
        attrs: list[int] = []
        records = []
        it = pairs
        if progress:
            from tqdm import tqdm

            it = tqdm(pairs, desc="faithfulness", unit="pair", leave=False)
        for i, (fid, a) in enumerate(it):
            fid, a = int(fid), int(a)
            x = model.preprocess.to_tensor(load_image(dataset.image_path(split, fid)))
            chosen = scored_maps(model.explain(x, a), maps)
            targets = top_matches(gallery[fid, a], gallery[:, a], k, exclude=[fid])
            curves = pair_curves(model, x, a, targets, chosen, steps, grid, seed=seed * 1_000_003 + i, batch=batch)
            for c in curves:
                per_map.setdefault(c.map, []).append(c)
            attrs.append(a)
            records.append({"image": fid, "attribute": dataset.schema.names[a], "maps": [c.to_json() for c in curves]})
    finally:
        if was_training:
            model.train(True)
    if any(len(v) != len(attrs) for v in per_map.values()):
        raise ValueError("the model's explanations name different maps for different images; score one map "
                         "with --map")
    summaries = [summarise(v, attrs, dataset.schema.num_attributes, n_resamples, seed) for v in per_map.values()]
    settings = {"steps": steps, "grid": grid, "k": k, "seed": seed, "removal": "ROAD noisy linear imputation",
                "noise": ROAD_NOISE, "bootstrap_resamples": n_resamples, "pairs": len(attrs),
                "forward_passes_per_pair": forward_passes(len(per_map), sum(s.unit == "superpixel" for s in summaries),
                                                          steps)}
    return FaithfulnessResult(model.name, summaries, settings, records, time.perf_counter() - t0)


def write_faithfulness_json(result: FaithfulnessResult, path, extra: dict | None = None) -> None:
    atomic_write_json(path, {**(extra or {}), **result.to_json()})


# --------------------------------------------------------------------------------------------------
# One query, one or several models (the app)


@torch.no_grad()
def query_faithfulness(models: Mapping[str, torch.nn.Module], image, attribute_id: int,
                       galleries: Mapping[str, np.ndarray | torch.Tensor], maps: Sequence[str] | None = ("heatmap",),
                       k: int = DEFAULT_K, exclude: Sequence[int] = (), steps: int = DEFAULT_STEPS,
                       grid: int = DEFAULT_GRID, seed: int = 0,
                       on_model: Callable[[str, list[MapCurves]], None] | None = None) -> dict[str, list[MapCurves]]:
    """The curves of one query for each model of ``models`` (name -> model): ``maps`` of its explanation (default
    its main ``"heatmap"``; None: every scoreable map), tracking the query's top-``k`` matches among
    ``galleries[name]`` ((N, D): the gallery embedded under ``attribute_id`` by that model) without the items
    ``exclude``. ``image`` is anything :func:`~profashion.data.images.load_image` reads. Each curve's
    :meth:`MapCurves.sentence` says in words how much faster its map's top 20% takes the match away than random.
    ``on_model(name, curves)`` is called as each model finishes (progress: one model is ~30 forward passes at the
    default 10 steps).
    """
    from profashion.data.images import load_image

    steps, grid, k = check_settings(steps, grid, k)
    picture = load_image(image)
    out = {}
    for name, model in models.items():
        if name not in galleries:
            raise ValueError(f"no gallery embeddings for model {name!r}: give galleries[{name!r}] (N, D)")
        x = model.preprocess.to_tensor(picture)
        query = model.embed(x[None].to(model.device), torch.tensor([int(attribute_id)])).float().cpu()[0]
        targets = top_matches(query, galleries[name], k, exclude)
        chosen = scored_maps(model.explain(x, int(attribute_id)), maps)
        out[name] = pair_curves(model, x, int(attribute_id), targets, chosen, steps, grid, seed)
        if on_model is not None:
            on_model(name, out[name])
    return out
