"""Benchmark of :func:`profashion.ot.sinkhorn` against POT in the same run; prints ONE JSON object.

For each shape (B problems of n x m cosine costs ``1 - cos(x_i, y_j)`` between random unit vectors,
as ProFashion's patches x attributes) and each epsilon:

- ``ours_exp`` / ``ours_log``: :func:`sinkhorn` with ``method="exp"`` (the default) / ``"log"``;
- ``pot_batch``: POT's batched log-domain solver ``ot.batch.solve_batch(M, reg, method="log_sinkhorn")``
  on the same torch tensor (POT's torch backend, ``grad="detach"``);
- ``ours_exp_fwd_bwd_*``: forward + backward of ``sum(P * W)`` through the default kernel, with
  ``grad="autodiff"`` (through every iteration) and ``grad="last_step"`` (one differentiable step);
- every solver runs to ``tol`` (ours: L1 row error; POT: L2 row error, checked every 10 iterations),
  and for each we report the achieved L1 marginal error of its plan (both marginals, max over the
  batch, measured here the same way for all) and the largest plan difference to a float64 reference
  (POT's ``ot.bregman.sinkhorn_log`` per problem, ``stopThr=1e-12``) on the first ``--check`` problems.

Timings are the median of ``--repeats`` wall-clock runs; ``ratio_*`` = ours / POT (< 1: ours faster).
POT checks its error every 10 iterations, so it may run a few iterations more than needed and end
more accurate than ``tol``; ``ms_per_iteration`` compares the kernels at equal work.
On a shared 2-core machine single runs vary a lot; only the ratios of the same run mean something.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ot.py [--repeats 5] [--device cpu]
[--dtype float32] [--batch 1024]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ot  # noqa: E402
from ot.batch import solve_batch  # noqa: E402

from profashion.ot import sinkhorn  # noqa: E402


def cosine_costs(B: int, n: int, m: int, d: int, dtype, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(B, n, d, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(B, m, d, generator=g, dtype=torch.float64), dim=-1)
    return (1 - x @ y.transpose(1, 2)).to(dtype=dtype, device=device)


def marginal_error(P: torch.Tensor) -> float:
    P = P.double()
    n, m = P.shape[-2:]
    rows = (P.sum(-1) - 1.0 / n).abs().sum(-1)
    cols = (P.sum(-2) - 1.0 / m).abs().sum(-1)
    return float(torch.maximum(rows, cols).max())


def timed(fn, repeats: int, device: str):
    times, out = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def solve(name: str, C: torch.Tensor, eps: float, tol: float):
    if name == "pot_batch":
        return solve_batch(C, eps, max_iter=10000, tol=tol, method="log_sinkhorn", grad="detach")
    return sinkhorn(C, eps, max_iter=10000, tol=tol, method=name[5:], return_info=True)


def backward(C: torch.Tensor, W: torch.Tensor, eps: float, tol: float, mode: str) -> None:
    c = C.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (sinkhorn(c, eps, max_iter=10000, tol=tol, grad=mode) * W).sum().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--check", type=int, default=16, help="problems compared with the float64 reference")
    ap.add_argument("--eps", default="0.05,0.1")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    device = args.device
    results = []
    for n, m, d in ((49, 8, 64), (196, 32, 64)):
        for eps in (float(e) for e in args.eps.split(",")):
            C = cosine_costs(args.batch, n, m, d, dtype, device)
            Cd = C[: args.check].double().cpu().numpy()
            ref = np.stack([ot.bregman.sinkhorn_log(np.full(n, 1 / n), np.full(m, 1 / m), c, eps,
                                                    numItermax=100000, stopThr=1e-12) for c in Cd])
            row = {"B": args.batch, "n": n, "m": m, "eps": eps}
            for name in ("ours_exp", "ours_log", "pot_batch"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    seconds, out = timed(lambda: solve(name, C, eps, args.tol), args.repeats, device)  # noqa: B023
                if name == "pot_batch":
                    P, iters = out.plan, int(out.log["n_iter"]) + 1
                else:
                    P, iters = out[0], out[1]["n_iter"]
                row[name] = {
                    "seconds": round(seconds, 5),
                    "iterations": iters,
                    "ms_per_iteration": round(seconds / max(iters, 1) * 1e3, 3),
                    "marginal_err_l1": marginal_error(P),
                    "max_plan_diff_vs_ref": float(np.abs(P[: args.check].double().cpu().numpy() - ref).max()),
                }
            # training: forward + backward of <P, W> through the default kernel, both gradient modes
            W = torch.randn(C.shape, dtype=dtype, device=device, generator=None)
            for mode in ("autodiff", "last_step"):
                seconds, _ = timed(lambda: backward(C, W, eps, args.tol, mode), args.repeats, device)  # noqa: B023
                row[f"ours_exp_fwd_bwd_{mode}"] = {"seconds": round(seconds, 5)}
            row["ratio_exp_vs_pot"] = round(row["ours_exp"]["seconds"] / row["pot_batch"]["seconds"], 3)
            row["ratio_log_vs_pot"] = round(row["ours_log"]["seconds"] / row["pot_batch"]["seconds"], 3)
            results.append(row)
    print(json.dumps({
        "benchmark": "ot",
        "device": device,
        "dtype": args.dtype,
        "tol": args.tol,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pot": ot.__version__,
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
