"""The balanced plan's bound on ProFashion's localisation, per part; prints ONE JSON object.

With ``transport="ot"`` the plan is balanced: A attribute rows of mass 1/A against N patch columns of mass 1/N,
so every entry is at most 1/N and an attribute's row-normalised weights ``w_a = A * plan[a]`` are at most A/N per
patch. An attribute whose region covers a fraction ``f`` of the image can then put at most ``min(1, A f)`` of
its mass there, however well the model is trained.

For the (image, attribute) pairs that ``profashion localise`` scores (the same seeded sample, visible attributes
only) this script reports, per attribute (part) and overall, the mean over the pairs of:

- ``uniform``: ``f``, the region's share of the image (what a uniform map scores);
- ``bound``: ``min(1, A f)``;
- ``bound_grid``: the exact best that a map on the model's feature grid with every weight <= A/N can score
  through ``localise`` (which resizes the grid map bilinearly to the mask): a fractional programme over the
  box ``0 <= w <= A/N, sum w = 1`` solved by Dinkelbach's method with a greedy inner step. It is below
  ``bound`` where the bilinear resize spreads a cell's mass over the region's border.

Beside them, ``--measured LABEL=FILE`` puts the ``overall`` and per-attribute ``score`` of a
``profashion localise --json FILE`` result, and ``--tau T ...`` re-poses the checkpoint's own correlation with
``transport="ot_unbalanced"`` at each ``T`` (``inf`` = the checkpoint's balanced plan), without retraining and
without superpixels: ``weights_tau_T`` is the in-region mass of the raw weights (as ``localise --map
ot_weights`` scores them), ``map_tau_T`` that of the min-max rescaled map (as ``localise --map ot_map``).

Usage::

    nice -n 19 .venv/bin/python benchmarks/ot_bound.py --checkpoint checkpoints/profashion \\
        --dataset data/synth160 --split test --max-pairs 1000 \\
        --measured ot_map=runs/ot-transport/localise-shipped-ot_map.json --tau inf 1 0.1 0.01
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profashion.data.images import load_image  # noqa: E402
from profashion.data.masks import load_attribute_masks  # noqa: E402
from profashion.data.splits import load_dataset  # noqa: E402
from profashion.evaluation.localisation import localisation_pairs, localisation_score  # noqa: E402
from profashion.models.base import load_model  # noqa: E402


def upsampling_matrix(hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(N, H*W): row p is cell p's one-hot grid map resized as ``localise`` resizes a map (bilinear)."""
    h, w = hw
    eye = torch.eye(h * w, dtype=torch.float32).view(h * w, 1, h, w)
    up = F.interpolate(eye, size=size, mode="bilinear", align_corners=False)
    return up.view(h * w, -1).numpy().astype(np.float64)


def best_capped_score(gain: np.ndarray, total: np.ndarray, cap: float) -> float:
    """max over 0 <= w <= cap, sum w = 1 of (gain . w) / (total . w), in [0, 1] (Dinkelbach + greedy)."""
    if cap * len(gain) < 1 - 1e-12:
        raise ValueError(f"no weights fit: {len(gain)} cells x cap {cap} < 1")
    n_full = int(math.floor(1 / cap + 1e-9))
    rest = 1 - n_full * cap
    lam = float(gain.sum() / total.sum())
    for _ in range(100):
        order = np.argsort(-(gain - lam * total), kind="stable")
        w = np.zeros_like(gain)
        w[order[:n_full]] = cap
        if n_full < len(gain):
            w[order[n_full]] = rest
        new = float(gain @ w / (total @ w))
        if new <= lam + 1e-12:
            return new
        lam = new
    return lam


def _grid_and_attributes(model) -> tuple[tuple[int, int], int]:
    x = torch.zeros(1, 3, model.preprocess.crop, model.preprocess.crop)
    with torch.no_grad():
        fmap, _ = model._features(x)
    return tuple(fmap.shape[-2:]), int(model.config.num_attributes)


def _correlation(model, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    with torch.no_grad():
        fmap, _ = model._features(x[None])
        return model.correlation(fmap), tuple(fmap.shape[-2:])


def _reposed(model, corr: torch.Tensor, hw, a: int, mask: np.ndarray, taus: list[float]) -> list[float]:
    """In-region mass of attribute ``a``'s weights from the checkpoint's correlation under each tau: the raw
    weights (as ``--map ot_weights`` scores them), then the min-max rescaled map (as ``--map ot_map``)."""
    raw, rescaled = [], []
    saved = (model.config.transport, model.config.ot_tau)
    try:
        for tau in taus:
            model.config.transport = "ot" if math.isinf(tau) else "ot_unbalanced"
            model.config.ot_tau = 1.0 if math.isinf(tau) else tau
            with torch.no_grad():
                weights, _ = model.transport(corr, hw, torch.tensor([[a]]))
            grid = weights[0, 0].view(hw)
            raw.append(localisation_score(grid, mask))
            rescaled.append(localisation_score(model.upsample_map(grid, mask.shape), mask))
    finally:
        model.config.transport, model.config.ot_tau = saved
    return raw + rescaled


def measure(model, dataset, split: str, max_pairs: int | None, seed: int, taus: list[float]) -> dict[int, list]:
    """Per attribute: one row per visible pair, (uniform, bound, bound_grid, reposed scores...) in percent."""
    (h, w), n_attr = _grid_and_attributes(model)
    cap = n_attr / (h * w)
    pre = model.preprocess
    up = upsampling_matrix((h, w), (pre.crop, pre.crop))
    total = up.sum(1)
    rows: dict[int, list] = {}
    cache: dict[int, tuple] = {}
    for fid, a in localisation_pairs(dataset, split, max_pairs, seed):
        fid, a = int(fid), int(a)
        mask = pre.geometry_mask(load_attribute_masks(dataset.mask_path(split, fid), n_attr)[a])
        if not mask.any():
            continue  # as localise: an invisible attribute has no region
        f = float(mask.mean())
        grid = best_capped_score(up @ mask.reshape(-1).astype(np.float64), total, cap)
        extra = []
        if taus:
            if fid not in cache:  # pairs come sorted by image: one image's correlation at a time
                cache = {fid: _correlation(model, pre.to_tensor(load_image(dataset.image_path(split, fid))))}
            extra = _reposed(model, *cache[fid], a, mask, taus)
        rows.setdefault(a, []).append([100 * f, 100 * min(1.0, n_attr * f), 100 * grid, *extra])
    return rows


def summarise(rows: dict[int, list], names, taus: list[float], measured: dict[str, dict], grid, n_attr) -> dict:
    cols = (["uniform", "bound", "bound_grid"] + [f"weights_tau_{t:g}" for t in taus]
            + [f"map_tau_{t:g}" for t in taus])
    per = {}
    for a in sorted(rows):
        v = np.asarray(rows[a], dtype=float)
        per[names[a]] = {"n": len(v), **{c: round(float(v[:, i].mean()), 2) for i, c in enumerate(cols)}}
        for label, res in measured.items():
            per[names[a]][f"measured_{label}"] = res.get("per_attribute", {}).get(names[a], {}).get("score")
    allv = np.asarray([r for a in sorted(rows) for r in rows[a]], dtype=float)
    overall = {"n": len(allv), **{c: round(float(allv[:, i].mean()), 2) for i, c in enumerate(cols)}}
    for label, res in measured.items():
        overall[f"measured_{label}"] = res.get("overall")
        if res.get("n") != len(allv):
            overall[f"measured_{label}_pairs"] = res.get("n")  # another sample: not comparable pair by pair
    return {"grid": list(grid), "attributes": n_attr, "cap_per_patch": round(n_attr / (grid[0] * grid[1]), 4),
            "overall": overall, "per_attribute": per}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/ot_bound.py", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "profashion"))
    p.add_argument("--dataset", default=str(REPO / "data" / "synth160"))
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--max-pairs", type=int, default=1000, help="the seeded sample of localise (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measured", action="append", default=[], metavar="LABEL=FILE",
                   help="a `profashion localise --json` result to put beside the bound (repeatable)")
    p.add_argument("--tau", type=float, nargs="*", default=[],
                   help="re-pose the checkpoint's correlation with ot_unbalanced at these tau (inf: balanced)")
    args = p.parse_args(argv)
    measured = {}
    for item in args.measured:
        label, sep, path = item.partition("=")
        if not sep:
            p.error(f"--measured wants LABEL=FILE, got {item!r}")
        measured[label] = json.loads(Path(path).read_text())
    torch.set_num_threads(1)
    model = load_model(args.checkpoint)
    if model.name != "profashion":
        p.error(f"{args.checkpoint} is a {model.name} checkpoint; the bound is ProFashion's")
    ds = load_dataset(args.dataset)
    grid, n_attr = _grid_and_attributes(model)
    rows = measure(model, ds, args.split, args.max_pairs, args.seed, args.tau)
    out = {"checkpoint": args.checkpoint, "transport": model.config.transport, "dataset": ds.name,
           "split": args.split, "max_pairs": args.max_pairs, "seed": args.seed,
           **summarise(rows, ds.schema.names, args.tau, measured, grid, n_attr)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
