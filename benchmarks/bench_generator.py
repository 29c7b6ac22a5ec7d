"""Speed of the synthetic garment generator, read against the cost of just writing PNG files.

Prints one JSON object (images per second, higher is better):

- ``render``: drawing only (image + masks in memory, no files), one process;
- ``render_encode``: drawing and PNG-encoding image + mask in memory (the CPU part of the work), one process;
- ``generate_1_worker`` / ``generate_<W>_workers``: :func:`generate_synth` end to end (drawing, PNG
  encoding, writing image + mask files, split files), one process / W processes;
- ``blank_png_save``: saving a blank RGB PNG of the same size with PIL, one file per image (pure I/O
  and encoder overhead); ``blank_png_pair_save``: a blank RGB PNG and a blank 16-bit mask PNG per
  image, i.e. the file count the generator writes.

    .venv/bin/python benchmarks/bench_generator.py [--n 500 --size 112 --workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from profashion.data.synth import _encode_png, generate_synth, image_rng, render_garment


def _render_encode(i: int, size: int) -> int:
    sample = render_garment(image_rng(0, "train", i), size)
    return len(_encode_png(sample.image)) + len(_encode_png(sample.mask))


def _rate(n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round(n / (time.perf_counter() - t0), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="images per measurement (default 500)")
    ap.add_argument("--size", type=int, default=112, help="image size in pixels (default 112)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes for the parallel measurement (default: all cores)")
    ap.add_argument("--tmp", default=None, help="folder for the temporary output (default: the system's)")
    args = ap.parse_args()
    n, size = max(3, args.n), args.size
    work = Path(tempfile.mkdtemp(prefix="bench-synth-", dir=args.tmp))
    try:
        render_garment(image_rng(0, "train", 0), size)  # warm-up (imports, caches)
        out = {"n": n, "size": size, "cpu_count": os.cpu_count()}
        out["render"] = _rate(n, lambda: [render_garment(image_rng(0, "train", i), size) for i in range(n)])
        out["render_encode"] = _rate(n, lambda: [_render_encode(i, size) for i in range(n)])
        out["generate_1_worker"] = _rate(n, lambda: generate_synth(work / "g1", n - 2, 1, 1, size=size))
        if args.workers > 1:
            out[f"generate_{args.workers}_workers"] = _rate(
                n, lambda: generate_synth(work / "gw", n - 2, 1, 1, size=size, workers=args.workers))

        blank = Image.new("RGB", (size, size))
        blank_mask = Image.fromarray(np.zeros((size, size), np.uint16))

        def save_blank(folder: Path, pair: bool) -> None:
            folder.mkdir()
            for i in range(n):
                blank.save(folder / f"{i:06d}.png", format="PNG", compress_level=1)
                if pair:
                    blank_mask.save(folder / f"m{i:06d}.png", format="PNG", compress_level=1)

        out["blank_png_save"] = _rate(n, lambda: save_blank(work / "blank", False))
        out["blank_png_pair_save"] = _rate(n, lambda: save_blank(work / "blank_pair", True))
        out["unit"] = "images/s"
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
