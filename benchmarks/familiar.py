"""The "looks unlike the gallery" warning (profashion.retrieval.familiar), measured on image sets this script builds
itself (no hand-picking). Prints one JSON object.

    python benchmarks/familiar.py [--indomain 300] [--seed 0]

Per gallery (the app's two: the synthetic garments and the product photos):

- ``ood_flagged``: the share of NOT-garment images flagged, overall and per kind: scikit-image's bundled sample
  photos (each whole and as two random crops), rendered text, colour gradients (the landscape-like image of the
  issue), noise and plain shapes;
- ``indomain_flagged``: the share of unseen in-domain images flagged: for the synthetic gallery, garments drawn by
  the same generator with another seed; for the products, catalogue photos of ../shared/data that are not in it;
- ``other_gallery``: of the OTHER gallery's unseen images, the share flagged here, and of those the share the other
  gallery's check finds familiar (the app then says to try the other gallery).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data" / "fashion-product-small"
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "clock",
                  "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo", "grass", "gravel",
                  "brick", "rough_wall", "checkerboard", "horse", "cat", "motorcycle_left", "eagle", "cell",
                  "microaneurysms", "shepp_logan_phantom", "binary_blobs")


def _rgb(arr) -> Image.Image:
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (255 * (a - a.min()) / max(float(a.max() - a.min()), 1e-9)).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def skimage_photos(rng) -> list[Image.Image]:
    """Each bundled sample image that loads without a download, whole and as two random crops (half its size)."""
    from skimage import data

    out = []
    for name in SKIMAGE_PHOTOS:
        try:
            img = _rgb(getattr(data, name)())
        except Exception:  # noqa: BLE001 - not bundled (needs a download): left out
            continue
        out.append(img)
        w, h = img.size
        for _ in range(2):
            x, y = int(rng.integers(0, w // 2 + 1)), int(rng.integers(0, h // 2 + 1))
            out.append(img.crop((x, y, x + w // 2, y + h // 2)))
    return out


def rendered_text(rng, n: int) -> list[Image.Image]:
    words = "retrieval attribute sleeve length colour fashion garment query gallery model neckline".split()
    font = ImageFont.load_default(size=18)
    out = []
    for _ in range(n):
        bg = tuple(int(v) for v in rng.integers(150, 256, 3))
        img = Image.new("RGB", (320, 240), bg)
        d = ImageDraw.Draw(img)
        for line in range(8):
            text = " ".join(rng.choice(words, 4))
            d.text((10, 10 + 28 * line), text, fill=tuple(int(v) for v in rng.integers(0, 100, 3)), font=font)
        out.append(img)
    return out


def gradients(rng, n: int) -> list[Image.Image]:
    out = []
    yy, xx = np.mgrid[0:240, 0:320] / np.array([240.0, 320.0])[:, None, None]
    for i in range(n):
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = yy if i % 3 == 0 else (xx if i % 3 == 1 else np.hypot(yy - 0.5, xx - 0.5) * 1.4)
        out.append(Image.fromarray((c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]).astype(np.uint8)))
    return out


def noise(rng, n: int) -> list[Image.Image]:
    out = []
    for i in range(n):
        if i % 2:
            a = rng.integers(0, 256, (240, 320, 3))
        else:
            a = np.clip(rng.normal(rng.integers(60, 200), 40, (240, 320, 3)), 0, 255)
        out.append(Image.fromarray(a.astype(np.uint8)))
    return out


def shapes(rng, n: int) -> list[Image.Image]:
    out = []
    for _ in range(n):
        img = Image.new("RGB", (240, 240), tuple(int(v) for v in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 6))):
            x0, y0 = rng.integers(0, 200, 2)
            x1, y1 = x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=fill)
        out.append(img)
    return out


def unseen_garments(n: int, seed: int) -> list[Image.Image]:
    from profashion.data.synth import render_garment

    rng = np.random.default_rng(10_000 + seed)
    return [Image.fromarray(render_garment(rng, size=160).image) for _ in range(n)]


def unseen_products(n: int, seed: int, gallery_names: set[str]) -> list[Image.Image]:
    from profashion.data.images import load_image

    names = sorted(p.name for p in (SHARED / "images").iterdir() if p.name not in gallery_names)
    pick = np.random.default_rng(seed).choice(len(names), size=min(n, len(names)), replace=False)
    return [load_image(SHARED / "images" / names[i]) for i in sorted(pick)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--indomain", type=int, default=300, help="unseen in-domain images per gallery")
    p.add_argument("--seed", type=int, default=0, help="draws the image sets (calibrate on one, report another)")
    p.add_argument("--quantile", type=float, default=None, help="the check's quantile (default: the app's)")
    p.add_argument("--margin", type=float, default=None, help="the check's margin (default: the app's)")
    args = p.parse_args()
    from profashion.explorer.galleries import Galleries, default_galleries
    from profashion.retrieval.familiar import MARGIN, QUANTILE, FamiliarityCheck, K, image_features

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    ood = {"skimage photos": skimage_photos(rng), "rendered text": rendered_text(rng, 12),
           "gradients": gradients(rng, 12), "noise": noise(rng, 10), "shapes": shapes(rng, 12)}
    ood_feats = {k: image_features(v) for k, v in ood.items()}
    all_ood = np.concatenate(list(ood_feats.values()))
    galleries = Galleries.load(default_galleries(REPO), models=False)
    checks, unseen = {}, {}
    for name, cat in galleries.catalogs.items():
        app = cat.ensure_familiarity()  # the app's own check (kept in the cache, as the app keeps it)
        checks[name] = FamiliarityCheck(app.features, k=app.k, quantile=args.quantile or app.quantile,
                                        margin=app.margin if args.margin is None else args.margin)
        if name == "products":
            names = {Path(cat.item_path(i)).name for i in range(cat.num_items)}
            imgs = unseen_products(args.indomain, args.seed, names)
        else:
            imgs = unseen_garments(args.indomain, args.seed)
        unseen[name] = image_features(imgs)
    out = {"k": K, "quantile": args.quantile or QUANTILE, "margin": MARGIN if args.margin is None else args.margin,
           "seed": args.seed,
           "ood_images": {k: len(v) for k, v in ood.items()}, "galleries": {}}
    for name, check in checks.items():
        flags = {k: float(check.unfamiliar(f).mean()) for k, f in ood_feats.items()}
        loo = check.leave_one_out()
        row = {"images": len(check.features), "threshold": round(check.threshold, 4),
               "ood_flagged": round(float(check.unfamiliar(all_ood).mean()), 4),
               "ood_flagged_by_kind": {k: round(v, 4) for k, v in flags.items()},
               "indomain_flagged": round(float(check.unfamiliar(unseen[name]).mean()), 4),
               "indomain_images": len(unseen[name]),
               # the trade-off: each quantile of the gallery's own scores (less the margin) as the threshold
               "by_quantile": {str(q): {"ood_flagged": round(float((check.scores(all_ood) < t).mean()), 4),
                                        "indomain_flagged": round(float((check.scores(unseen[name]) < t).mean()), 4)}
                               for q in (0.001, 0.005, 0.01, 0.02, 0.05) for t in [float(np.quantile(loo, q)) - check.margin]},
               "scores": {"ood_max": round(float(check.scores(all_ood).max()), 4),
                          "indomain_p1_p5_p50": [round(float(np.percentile(check.scores(unseen[name]), p)), 4)
                                                 for p in (1, 5, 50)],
                          "gallery_loo_p1_p5_p50": [round(float(np.percentile(loo, p)), 4) for p in (1, 5, 50)]}}
        for other, feats in unseen.items():
            if other == name:
                continue
            here = check.unfamiliar(feats)
            there = ~checks[other].unfamiliar(feats[here]) if here.any() else np.zeros(0, bool)
            row["other_gallery"] = {"images": len(feats), "flagged_here": round(float(here.mean()), 4),
                                    "of_those_familiar_there": round(float(there.mean()), 4) if len(there) else None}
        out["galleries"][name] = row
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
