"""Benchmark of the evaluation path; prints ONE JSON object.

- ``map``: :func:`mean_average_precision` (the core of ``evaluate_random``) on the official FashionAI
  test split (3,600 queries, 14,400 candidates, random 128-d embeddings) against a plain numpy
  reference written here (a loop over queries: one ``np.argsort`` and one ``np.cumsum`` each), both
  on the same embeddings in the same run; their overall mAP must agree.
- ``csv_import``: :func:`import_csv` of the 44k-row fashion-product catalogue into a temporary folder.

Timings are best-of-N wall clock: on a shared 2-core machine single runs vary by a factor of 2 to 4.

Usage: ``.venv/bin/python benchmarks/bench_eval.py [--repeats 5] [--device cpu]``. The shared data
folder is ``../shared/data`` beside the repository (or ``$PROFASHION_SHARED_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profashion.data.csv_import import import_csv  # noqa: E402
from profashion.data.splits import load_dataset  # noqa: E402
from profashion.evaluation.retrieval_map import mean_average_precision, random_embeddings  # noqa: E402

SHARED = Path(os.environ.get("PROFASHION_SHARED_DATA", REPO.parent / "shared" / "data"))
FP_ATTRIBUTES = ["masterCategory", "subCategory", "articleType", "baseColour", "usage", "gender", "season"]


def reference_map(q, qa, qv, c, ca, cv, num_attributes: int) -> float:
    """The protocol written the plain way: per query, rank its attribute's candidates and sum precisions."""
    aps = np.zeros(len(q))
    for i in range(len(q)):
        mask = ca == qa[i]
        sims = c[mask] @ q[i]
        order = np.argsort(-sims, kind="stable")
        rel = cv[mask][order] == qv[i]
        if rel.any():
            hits = np.cumsum(rel)
            ranks = np.arange(1, len(rel) + 1)
            aps[i] = np.sum(hits[rel] / ranks[rel]) / rel.sum()
    return 100.0 * aps.mean()


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ds = load_dataset(SHARED / "asen-splits" / "FashionAI")
    s = ds.split("test")
    # float64 so that both implementations rank identically (in float32, the two matrix products round
    # differently and near-ties can swap, moving the mAP by ~1e-6); float32 is timed as well.
    emb = random_embeddings(s.num_images, 128, seed=args.seed).astype(np.float64)
    qs, cs = s.queries, s.candidates
    q, c = emb[qs[:, 0]], emb[cs[:, 0]]
    q32, c32 = q.astype(np.float32), c.astype(np.float32)
    num_attr = ds.schema.num_attributes

    mean_average_precision(q, qs[:, 1], qs[:, 2], c, cs[:, 1], cs[:, 2], num_attr, device=args.device)  # warm-up
    t_ours, ours = _best_of(
        lambda: mean_average_precision(q, qs[:, 1], qs[:, 2], c, cs[:, 1], cs[:, 2], num_attr, device=args.device),
        args.repeats,
    )
    t_ours32, ours32 = _best_of(
        lambda: mean_average_precision(q32, qs[:, 1], qs[:, 2], c32, cs[:, 1], cs[:, 2], num_attr, device=args.device),
        args.repeats,
    )
    t_ref, ref = _best_of(lambda: reference_map(q, qs[:, 1], qs[:, 2], c, cs[:, 1], cs[:, 2], num_attr),
                          max(1, min(args.repeats, 3)))

    catalogue = SHARED / "fashion-product-small"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        import_csv(catalogue / "labels.csv", catalogue, FP_ATTRIBUTES, Path(tmp) / "fp", seed=0)
        t_import = time.perf_counter() - t0
        n_rows = sum(sp.num_images for sp in load_dataset(Path(tmp) / "fp").splits.values())

    result = {
        "map": {
            "dataset": f"FashionAI test (official split), random 128-d float64 embeddings, seed {args.seed}",
            "queries": int(len(qs)),
            "candidates": int(len(cs)),
            "device": str(args.device),
            "vectorised_s": round(t_ours, 4),
            "timing": f"best of {args.repeats} (reference: of {max(1, min(args.repeats, 3))}), wall clock",
            "numpy_reference_s": round(t_ref, 4),
            "speedup": round(t_ref / t_ours, 1),
            "overall_vectorised": round(ours.overall, 6),
            "overall_reference": round(ref, 6),
            "agree_abs": float(abs(ours.overall - ref)),
            "agree": bool(abs(ours.overall - ref) < 1e-9),
            "vectorised_float32_s": round(t_ours32, 4),
            "overall_vectorised_float32": round(ours32.overall, 6),
        },
        "csv_import": {"catalogue": str(catalogue / "labels.csv"), "images": n_rows, "seconds": round(t_import, 3)},
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
