"""Benchmark of :func:`profashion.superpixels.density_superpixels` against scikit-image SLIC; prints ONE JSON object.

On ``--images`` synthetic garments (rendered in memory with :func:`profashion.data.synth.render_garment`,
ground truth = :func:`labels_from_attribute_masks` of their part masks) at each ``--sizes``:

- ``ours``: :func:`density_superpixels` (defaults) with ``n_segments``;
- ``slic``: ``skimage.segmentation.slic(image, n_segments, start_label=0)`` (its defaults:
  compactness 10, Lab colour, connectivity enforced) with the same ``n_segments``;
- ``slic_matched``: SLIC returns fewer segments than asked for, so also SLIC with ``n_segments``
  raised (x1.25 steps) until its mean segment count reaches ours;

each with the median time per image (same run, interleaved; best of the medians over ``--repeats``
passes), mean boundary recall (2 px tolerance), mean undersegmentation error, ASA and mean number of
segments. ``ratio_time`` = ours / SLIC (< 1: ours faster).

``--sweep`` adds the colour-scale measurement behind the default (see the density module docstring):
for each colour scale (0-255 RGB mapped to [0, scale]) the number of connected pieces the assignment
leaves before the clean-up, the segments after it, and BR / UE.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_superpixels.py [--images 16] [--sizes 96,224]
[--n-segments 64] [--repeats 3] [--sweep]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import skimage  # noqa: E402
from skimage.segmentation import slic  # noqa: E402

from profashion.data.synth import image_rng, render_garment  # noqa: E402
from profashion.superpixels import (  # noqa: E402
    achievable_segmentation_accuracy,
    boundary_recall,
    density_superpixels,
    labels_from_attribute_masks,
    undersegmentation_error,
)
from profashion.superpixels.density import grid_step  # noqa: E402


def quality(labels_list, gts) -> dict:
    return {
        "boundary_recall": round(float(np.mean([boundary_recall(lb, g, 2) for lb, g in zip(labels_list, gts)])), 4),
        "undersegmentation_error": round(float(np.mean([undersegmentation_error(lb, g)
                                                        for lb, g in zip(labels_list, gts)])), 4),
        "asa": round(float(np.mean([achievable_segmentation_accuracy(lb, g) for lb, g in zip(labels_list, gts)])), 4),
        "segments": round(float(np.mean([int(lb.max()) + 1 for lb in labels_list])), 1),
    }


def run(methods: dict, images, gts, repeats: int) -> dict:
    """Interleaved timing (each image through every method in turn), best of the per-pass medians."""
    times = {name: [] for name in methods}
    labels = {}
    for _ in range(repeats):
        per = {name: [] for name in methods}
        out = {name: [] for name in methods}
        for image in images:
            for name, fn in methods.items():
                t0 = time.perf_counter()
                lb = fn(image)
                per[name].append(time.perf_counter() - t0)
                out[name].append(lb)
        for name in methods:
            times[name].append(statistics.median(per[name]))
        labels = out
    return {name: {"ms_per_image": round(min(times[name]) * 1e3, 2), **quality(labels[name], gts)}
            for name in methods}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--sizes", default="96,224")
    ap.add_argument("--n-segments", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="also measure the colour scale")
    args = ap.parse_args()
    n = args.n_segments
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        samples = [render_garment(image_rng(args.seed, "test", i), size) for i in range(args.images)]
        images = [s.image for s in samples]
        gts = [labels_from_attribute_masks(s.mask) for s in samples]
        ours_k = np.mean([int(density_superpixels(im, n).max()) + 1 for im in images])
        n_matched = n
        while np.mean([int(slic(im, n_segments=n_matched, start_label=0).max()) + 1 for im in images]) < ours_k:
            n_matched = int(round(n_matched * 1.25))
        row = {"size": size, "n_segments": n, "slic_matched_n_segments": n_matched, "grid_step": grid_step(size, size, n)}
        row.update(run({
            "ours": lambda im: density_superpixels(im, n),
            "slic": lambda im: slic(im, n_segments=n, start_label=0),  # noqa: B023
            "slic_matched": lambda im: slic(im, n_segments=n_matched, start_label=0),  # noqa: B023
        }, images, gts, args.repeats))
        row["ratio_time"] = round(row["ours"]["ms_per_image"] / row["slic"]["ms_per_image"], 3)
        if args.sweep:
            S = grid_step(size, size, n)
            sweep = []
            for scale in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 255.0):
                for n_iter in (1, 4):
                    pieces = [int(density_superpixels(im, n, colour_scale=scale, n_iter=n_iter,
                                                      min_size_factor=0.0).max()) + 1 for im in images]
                    labels = [density_superpixels(im, n, colour_scale=scale, n_iter=n_iter) for im in images]
                    sweep.append({"colour_scale": scale, "colour_scale_over_S": round(scale / S, 3), "n_iter": n_iter,
                                  "pieces_before_cleanup": round(float(np.mean(pieces)), 1),
                                  **quality(labels, gts)})
            row["colour_scale_sweep"] = sweep
        results.append(row)
    print(json.dumps({
        "benchmark": "superpixels",
        "images": args.images,
        "repeats": args.repeats,
        "skimage": skimage.__version__,
        "opencv": cv2.__version__,
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
