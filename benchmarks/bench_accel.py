"""Inference backends against PyTorch fp32: speed of embed_all and the retrieval mAP each one gives.

For each trained checkpoint given (demo presets), the test-split mAP (ASEN protocol) with fp32, bf16
autocast and ONNX Runtime, and images/s of ``embed_all`` on the same batch; for each method's paper preset
(random weights: the speed does not depend on them), images/s and the largest embedding difference
from fp32. A backend is kept (``keep``) only when it is faster than fp32 and its mAP is within 0.2 points.

    .venv/bin/python benchmarks/bench_accel.py --dataset data/synth \\
        --checkpoint runs/synth-asen-warm2000/best --checkpoint runs/synth-triplet-warm2000/best
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from profashion.retrieval.accel import Embedder

BACKENDS = ("fp32", "bf16", "onnx")


def _rate(emb, x, repeat: int = 3) -> float:
    with torch.no_grad():
        emb.embed_all(x)
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            emb.embed_all(x)
            ts.append(time.perf_counter() - t0)
    return len(x) / float(np.median(ts))


def bench_checkpoint(ckpt: str, ds, batch: int) -> dict:
    from profashion.data.loading import SplitImages
    from profashion.evaluation.evaluate import evaluate_model
    from profashion.models.base import load_model

    model = load_model(ckpt)
    s = ds.split("test")
    images = SplitImages(ds, "test", model.preprocess, fids=np.concatenate([s.queries[:, 0], s.candidates[:, 0]]))
    x = torch.randn(batch, 3, model.preprocess.crop, model.preprocess.crop, generator=torch.Generator().manual_seed(0))
    row = {"model": model.name, "image_size": model.preprocess.crop}
    for b in BACKENDS:
        emb = Embedder(model, b)
        res = evaluate_model(emb, ds, "test", images=images)
        row[b] = {"used": emb.backend, "note": emb.note, "test_map": round(res.overall, 3),
                  "img_s": round(_rate(emb, x), 1)}
    ref = row["fp32"]
    for b in BACKENDS[1:]:
        r = row[b]
        r["speedup"] = round(r["img_s"] / ref["img_s"], 2)
        r["map_delta"] = round(r["test_map"] - ref["test_map"], 3)
        r["keep"] = r["used"] == b and r["speedup"] > 1.0 and abs(r["map_delta"]) <= 0.2
    return row


def bench_paper(name: str, batch: int) -> dict:
    from profashion.models.base import build_model

    torch.manual_seed(0)
    model = build_model(name, "paper", num_values=[5] * 8).eval()
    x = torch.randn(batch, 3, model.preprocess.crop, model.preprocess.crop)
    with torch.no_grad():
        ref = model.embed_all(x)
    row = {"image_size": model.preprocess.crop, "batch": batch}
    fp32 = None
    for b in BACKENDS:
        emb = Embedder(model, b)
        rate = _rate(emb, x, repeat=2)
        fp32 = fp32 or rate
        with torch.no_grad():
            diff = float((emb.embed_all(x).float() - ref).abs().max())
        row[b] = {"used": emb.backend, "note": emb.note, "img_s": round(rate, 2), "speedup": round(rate / fp32, 2),
                  "max_abs_diff_vs_fp32": diff}
    return row


def main() -> None:
    from profashion.data.splits import load_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--checkpoint", action="append", default=[])
    p.add_argument("--paper", action="append", default=None, help="methods whose paper preset to time")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--paper-batch", type=int, default=8)
    args = p.parse_args()
    ds = load_dataset(args.dataset)
    out = {"torch_threads": torch.get_num_threads(), "demo": {}, "paper": {}}
    for c in args.checkpoint:
        out["demo"][c] = bench_checkpoint(c, ds, args.batch)
    for name in args.paper if args.paper is not None else ["triplet", "asen"]:
        out["paper"][name] = bench_paper(name, args.paper_batch)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
