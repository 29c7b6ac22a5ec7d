"""ProFashion: embedding an image under ALL attributes against embedding it under ONE, in the same run.

The work that does not depend on the attribute (trunk features, superpixels, the OT between all
attributes and the patches) is done once per image, so ``embed_all`` must cost at most 2x ``embed``.
Prints one JSON object; ``ratio`` = time(embed_all) / time(embed), per transport. The superpixel cache
is off, so both calls compute the superpixels of every image; the two calls alternate and each
keeps its best time of ``--repeat``.

    .venv/bin/python benchmarks/bench_profashion.py [--batch 64] [--attributes 10] [--size 64]
        [--superpixels density|grid] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from profashion.models.base import build_model


def _superpixels_default() -> str:
    try:
        from profashion.superpixels import density_superpixels  # noqa: F401
    except ImportError:
        return "grid"
    return "density"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--attributes", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--superpixels", choices=["density", "grid"], default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sp = args.superpixels or _superpixels_default()
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    ids = torch.randint(0, args.attributes, (args.batch,), generator=torch.Generator().manual_seed(args.seed + 1))
    results = {}
    for transport in ("ot", "ot_literal", "attention"):
        model = build_model("profashion", "demo", [5] * args.attributes, image_size=args.size, resize=args.size,
                            superpixels=sp, superpixel_cache=0, transport=transport).eval()
        best = {"embed": float("inf"), "embed_all": float("inf")}
        with torch.no_grad():
            model.embed(x[:2], ids[:2])  # first-call overheads
            for _ in range(args.repeat):
                for name in ("embed", "embed_all"):
                    t0 = time.perf_counter()
                    if name == "embed":
                        model.embed(x, ids)
                    else:
                        model.embed_all(x)
                    best[name] = min(best[name], time.perf_counter() - t0)
        results[transport] = {
            "embed_s": round(best["embed"], 4),
            "embed_all_s": round(best["embed_all"], 4),
            "ratio": round(best["embed_all"] / best["embed"], 3),
            "ok": best["embed_all"] <= 2 * best["embed"],
        }
    print(json.dumps({"benchmark": "profashion embed_all vs embed", "batch": args.batch,
                      "attributes": args.attributes, "size": args.size, "superpixels": sp,
                      "threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
