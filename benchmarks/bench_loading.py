"""Data loading against the model forward: loading must not be the bottleneck of training.

Prints one JSON object. For each demo model it times, on the same batch of triplet images:
decoding from disk (what an uncached epoch pays), assembling a batch from the in-memory cache
(what training pays per step), and the model's forward and forward+backward.

    .venv/bin/python benchmarks/bench_loading.py --dataset data/synth [--batch 192]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from profashion.data.loading import SplitImages, to_model_input
from profashion.data.splits import load_dataset
from profashion.models.base import build_model


def _rate(fn, n_items: int, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def _bench_model(name: str, ds, batch: int, rng) -> dict:
    model = build_model(name, "demo", num_values=ds.schema.num_values)
    pre = model.preprocess
    n = ds.split("train").num_images
    fids = rng.choice(n, size=min(batch, n), replace=False)
    t0 = time.perf_counter()
    cached = SplitImages(ds, "train", pre, fids=fids, cache=True)
    decode_rate = len(fids) / (time.perf_counter() - t0)
    uncached = SplitImages(ds, "train", pre, fids=fids, cache=False)
    attrs = torch.as_tensor(rng.integers(0, ds.schema.num_attributes, size=len(fids)))
    flip = torch.rand(len(fids)) < 0.5
    x = to_model_input(cached.get(fids), pre, flip=flip)
    model.train()

    def step():
        model.zero_grad()
        model.embed(x, attrs).sum().backward()

    with torch.no_grad():
        fwd = _rate(lambda: model.embed(x, attrs), len(fids))
    m = {
        "decode_from_disk_img_s": round(decode_rate, 1),
        "decode_uncached_get_img_s": round(_rate(lambda: uncached.get(fids), len(fids), 1), 1),
        "cached_batch_img_s": round(_rate(lambda: to_model_input(cached.get(fids), pre, flip=flip), len(fids)), 1),
        "forward_img_s": round(fwd, 1),
        "forward_backward_img_s": round(_rate(step, len(fids)), 1),
    }
    m["cached_batch_over_train_step"] = round(m["cached_batch_img_s"] / m["forward_backward_img_s"], 1)
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--batch", type=int, default=192, help="images per step (64 triplets = 192 images)")
    ap.add_argument("--models", default="triplet,csn,asen")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    rng = np.random.default_rng(0)
    out = {"dataset": str(args.dataset), "batch_images": args.batch, "threads": torch.get_num_threads(),
           "models": {}}
    for name in args.models.split(","):
        out["models"][name] = _bench_model(name, ds, args.batch, rng)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
