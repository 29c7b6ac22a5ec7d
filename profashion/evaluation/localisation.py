"""Localisation: how much of a model's map falls on the pixels where the queried attribute lives.

No public ASFR benchmark can measure this: the synthetic garments (``profashion generate synth``) store a
ground-truth mask per attribute (the sleeve pixels for sleeve length, the whole garment for colour), so
any map a model's ``explain`` returns (ASEN's attention, CCA's cross-attention, ProFashion's correlation
or OT map) can be scored against it.

For one image and attribute, with the map ``h >= 0`` and the mask ``m`` at the model's input resolution:

- ``score``: the share of the map's mass inside the mask, ``sum(h * m) / sum(h)`` in percent (an
  all-zero map counts as uniform);
- ``uniform``: what a uniform map scores, i.e. the mask's share of the image; a map is only useful
  where ``score`` is well above it;
- ``pointing``: whether the map's maximum lies inside the mask (the "pointing game").

Pairs are the labelled (image, attribute) rows of a split whose attribute is visible (its mask is not
empty); an "Invisible" label has no region to find.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from profashion.data.images import load_image
from profashion.data.masks import load_attribute_masks
from profashion.data.splits import DatasetError, SplitDataset
from profashion.explain.explanation import Explanation
from profashion.explain.scores import localisation_score, pointing_hit  # importable from here too
from profashion.io import atomic_write_json


@dataclass
class LocalisationResult:
    """Mean scores in percent, overall (mean over pairs) and per attribute."""

    key: str
    overall: float
    uniform: float
    pointing: float
    n: int
    per_attribute: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"map": self.key, "overall": round(self.overall, 2), "uniform": round(self.uniform, 2),
                "pointing": round(self.pointing, 2), "n": self.n,
                "per_attribute": {k: {kk: (round(vv, 2) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                                  for k, v in self.per_attribute.items()}}

    def format_table(self) -> str:
        lines = [f"{'attribute':24s} {'pairs':>6s} {'in-mask %':>10s} {'uniform %':>10s} {'pointing %':>11s}"]
        for name, r in self.per_attribute.items():
            lines.append(f"{name:24s} {r['n']:6d} {r['score']:10.2f} {r['uniform']:10.2f} {r['pointing']:11.2f}")
        lines.append(f"{'overall':24s} {self.n:6d} {self.overall:10.2f} {self.uniform:10.2f} {self.pointing:11.2f}")
        return "\n".join(lines)


def localisation_pairs(dataset: SplitDataset, split: str = "test", max_pairs: int | None = None,
                       seed: int = 0) -> np.ndarray:
    """(n, 2) unique (image id, attribute) pairs labelled in ``split`` (queries, candidates, labels)."""
    s = dataset.split(split)
    rows = [r[:, :2] for r in (s.queries, s.candidates, s.labels) if r is not None and len(r)]
    if not rows:
        raise DatasetError(f"the {split} split of {dataset.root} has no labelled images")
    pairs = np.unique(np.concatenate(rows), axis=0)
    if max_pairs is not None and len(pairs) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False)
        pairs = pairs[np.sort(pick)]
    return pairs


def explained_heatmap(explanation, key: str, model_name: str = "model"):
    """The heatmap called ``key`` of an :class:`~profashion.explain.explanation.Explanation` (a ValueError
    naming the heatmaps there are when it has none, or when ``key`` is a map of another kind); a free-form
    dict (a model outside this package) gives its ``key`` entry."""

    if not isinstance(explanation, Explanation):
        if key not in explanation:
            raise ValueError(f"model {model_name!r} has no {key!r} map; its maps: {', '.join(sorted(explanation))}")
        return explanation[key]
    heatmaps = [m.name for m in explanation.of_kind("heatmap")]
    if key not in explanation.names():
        raise ValueError(f"model {model_name!r} has no {key!r} map; its heatmaps: {', '.join(heatmaps)}")
    m = explanation.map(key) if key not in explanation.numbers else None
    if m is None or m.kind != "heatmap":
        raise ValueError(f"the {key!r} map of model {model_name!r} is {'a number' if m is None else 'a ' + m.kind}, "
                         f"not a heatmap: localisation scores a heatmap ({', '.join(heatmaps)})")
    return m.data


@torch.no_grad()
def evaluate_localisation(model, dataset: SplitDataset, split: str = "test", key: str = "heatmap",
                          max_pairs: int | None = None, seed: int = 0, progress: bool = False) -> LocalisationResult:
    """Score the ``key`` map of ``model.explain`` against the ground-truth masks of a synthetic split."""
    if dataset.mask_path(split, 0) is None:
        raise DatasetError(f"{dataset.root} has no attribute masks: localisation needs a synthetic dataset "
                           "(profashion generate synth)")
    pairs = localisation_pairs(dataset, split, max_pairs, seed)
    pre = model.preprocess
    A = dataset.schema.num_attributes
    per: dict[int, list[tuple[float, float, bool]]] = {}
    it = pairs
    if progress:
        from tqdm import tqdm

        it = tqdm(pairs, desc=f"localising {key}", unit="pair", leave=False)
    cache: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
    for fid, a in it:
        fid, a = int(fid), int(a)
        if fid not in cache:
            cache.clear()  # pairs are sorted by image: keep one image at a time
            masks = load_attribute_masks(dataset.mask_path(split, fid), A)
            x = pre.to_tensor(load_image(dataset.image_path(split, fid)))
            cache[fid] = (x, masks)
        x, masks = cache[fid]
        mask = pre.geometry_mask(masks[a])
        if not mask.any():
            continue  # not visible in this image (or cropped away): nothing to localise
        heat = explained_heatmap(model.explain(x, a), key, model.name)
        per.setdefault(a, []).append((localisation_score(heat, mask), 100.0 * float(mask.mean()),
                                      pointing_hit(heat, mask)))
    if not per:
        raise DatasetError(f"no visible attribute in the {split} split of {dataset.root}: nothing to localise")
    allv = [v for a in sorted(per) for v in per[a]]
    table = {}
    for a in sorted(per):
        v = np.asarray(per[a], dtype=float)
        table[dataset.schema.names[a]] = {"n": len(v), "score": float(v[:, 0].mean()),
                                          "uniform": float(v[:, 1].mean()), "pointing": 100.0 * float(v[:, 2].mean())}
    v = np.asarray(allv, dtype=float)
    return LocalisationResult(key, float(v[:, 0].mean()), float(v[:, 1].mean()), 100.0 * float(v[:, 2].mean()),
                              len(v), table)


def write_localisation_json(result: LocalisationResult, path, extra: dict | None = None) -> None:
    atomic_write_json(path, {**(extra or {}), **result.to_json()})
