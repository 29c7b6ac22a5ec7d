"""Entropic optimal transport: batched Sinkhorn for many small problems at once.

ProFashion's Region -> Patch step (Eq. 2 of the paper) transports attribute embeddings onto image
patches with entropic OT (Cuturi, "Sinkhorn Distances", NeurIPS 2013): for a cost ``C`` (n x m) and
marginals ``a`` (n), ``b`` (m) the plan is

    P = argmin_{P 1 = a, P^T 1 = b, P >= 0}  <P, C> - epsilon H(P),   P = diag(u) exp(-C / epsilon) diag(v).

A model solves one such problem per image (and per attribute set), so :func:`sinkhorn` takes a
whole batch ``(B, n, m)`` and runs every problem in the same tensor operations, on the device and in
the dtype of the cost (CPU or CUDA, float32 or float64; half precisions are computed in float32).

**Two kernels** (``method``):

- ``"exp"`` (the default, via ``"auto"``): scaling iterations ``u = a / (K v)``, ``v = b / (K^T u)``
  on ``K = exp(-(C - f - g) / epsilon)``, where the offsets ``f``, ``g`` start as each row's minimum
  and then each column's minimum of the row-shifted cost, so that every row and every column of
  ``K`` holds a 1 and nothing underflows to an all-zero row or column even for tiny ``epsilon`` in
  float32 (a plain ``exp(-C / epsilon)`` overflows/underflows in float32 once
  ``range(C) / epsilon > ~87``). When a scaling leaves ``[1e-30, 1e30]`` (float32) it is absorbed
  into the offsets (``f += epsilon log u``, ``K`` recomputed, ``u = 1``): the stabilised Sinkhorn of
  Schmitzer (SIAM J. Sci. Comput. 2019). Each iteration is two batched matrix-vector products: no
  ``exp`` per iteration, and autograd keeps only ``K`` and the scaling vectors.
- ``"log"``: the same iterations on log-potentials with ``logsumexp`` (as POT's
  ``sinkhorn_log``): unconditionally stable, but an ``exp`` over the whole cost every half
  iteration, and autograd keeps a full ``(B, n, m)`` tensor per iteration. ``"auto"`` falls back to it
  if the exp kernel ever produces a non-finite value.

**Stopping.** After each ``v`` update the column sums are exact, so the marginal error is the row
error. It costs nothing to measure: the row sums of the current plan are ``u * (K v)`` and ``K v`` is
computed anyway for the next ``u`` (in the log domain: ``a * exp(u_old - u_new)``). The solver stops
when ``max over problems of sum_i |P 1 - a|_i < tol`` (an L1 error in probability mass), never on the
change of a scaling vector, or after ``max_iter`` iterations (``info["converged"]`` is then False and a
``RuntimeWarning`` is issued). The error reported in ``info`` is recomputed on the returned plan, over
both marginals: ``max_b max(|P 1 - a|_1, |P^T 1 - b|_1)``.

**Gradients** (``grad``): ``"autodiff"`` backpropagates through every iteration (the exact
derivative of the computed plan; with the exp kernel, memory is ``K`` and its transpose per
absorption plus O(B (n + m)) per iteration, against a full (B, n, m) tensor per iteration in the log
domain); ``"last_step"`` runs the iterations without a graph and then one differentiable iteration
from the converged ``v`` (the gradient of that last step only: an approximation that ignores how the
earlier iterations depend on the cost, cheap in memory, as POT's ``grad="last_step"``); ``"none"``
returns a detached plan. Under ``torch.no_grad()`` no graph is built whatever ``grad`` says.

**Degenerate inputs.** A cost with all entries equal gives the product plan ``a b^T`` (uniform
``1/(n m)`` by default) in one iteration. NaN or infinite costs raise :class:`OTError` (we do not guess
what they meant); so do non-positive ``epsilon``, negative or non-finite marginals and marginals whose
masses differ. Zero entries in ``a`` / ``b`` are allowed: their rows / columns of the plan are zero.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["OTError", "sinkhorn"]

_METHODS = ("auto", "exp", "log")
_GRADS = ("autodiff", "last_step", "none")
# a scaling beyond [1/x, x] is absorbed into the offsets (far from overflow: K v <= m * max v)
_ABSORB_AT = {torch.float32: 1e30, torch.float64: 1e100}


class OTError(ValueError):
    """Invalid input to an optimal-transport solver (shapes, NaN/inf costs, marginals, epsilon)."""



def _check_settings(grad, epsilon, max_iter, tol) -> None:
    """One OTError for a bad solver setting (shared by :func:`sinkhorn` and the unbalanced solver)."""
    if grad not in _GRADS:
        raise OTError(f"grad must be one of {_GRADS}, got {grad!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon) \
            or epsilon <= 0:
        raise OTError(f"epsilon must be a positive finite number, got {epsilon!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise OTError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise OTError(f"tol must be a number >= 0, got {tol!r}")

def sinkhorn(
    cost: torch.Tensor,
    epsilon: float = 0.05,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    *,
    method: str = "auto",
    grad: str = "autodiff",
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    """Entropic OT plans of a batch of problems; see the module docstring for the algorithm.

    Args:
        cost: ``(B, n, m)`` or ``(n, m)`` cost tensor (a numpy array is converted). Its device is used;
            float16/bfloat16 (and integers) are computed in float32 and the plan is cast back.
        epsilon: entropic regularisation (> 0), in the units of the cost.
        a: row marginals, ``(n,)`` shared by the batch or ``(B, n)``; default uniform ``1/n``.
        b: column marginals, ``(m,)`` or ``(B, m)``; default uniform ``1/m``. ``a`` and ``b`` of each
            problem must have the same total mass.
        max_iter: maximum number of Sinkhorn iterations (one ``u`` and one ``v`` update each).
        tol: stop when the L1 marginal error of every problem is below ``tol``.
        method: ``"auto"`` (stabilised exp kernel, log-domain fallback), ``"exp"`` or ``"log"``.
        grad: ``"autodiff"``, ``"last_step"`` or ``"none"`` (see the module docstring).
        return_info: also return ``{"n_iter", "err", "converged", "method", "absorptions"}``.

    Returns:
        The plan, same shape as ``cost``: row sums ``a``, column sums ``b``. With ``return_info``,
        ``(plan, info)``.
    """
    if method not in _METHODS:
        raise OTError(f"method must be one of {_METHODS}, got {method!r}")
    _check_settings(grad, epsilon, max_iter, tol)

    C, out_dtype, squeeze = _as_cost(cost)
    B, n, m = C.shape
    a_ = _as_marginal(a, "a", B, n, C)
    b_ = _as_marginal(b, "b", B, m, C)
    mass_a, mass_b = a_.sum(-1), b_.sum(-1)
    if not torch.allclose(mass_a, mass_b, rtol=1e-5 if C.dtype == torch.float64 else 1e-4, atol=0.0):
        worst = (mass_a - mass_b).abs().max().item()
        raise OTError(f"a and b must have the same total mass in every problem (largest difference {worst:.3g})")

    if grad == "none":
        C = C.detach()
    if B == 0:  # an empty batch: nothing to solve
        plan = torch.zeros_like(C).to(out_dtype)
        info0 = {"n_iter": 0, "err": 0.0, "converged": True, "method": method, "absorptions": 0}
        return (plan[0] if squeeze else plan, info0) if return_info else plan
    info: dict[str, Any] = {}
    if method in ("auto", "exp"):
        plan = _sinkhorn_exp(C, float(epsilon), a_, b_, int(max_iter), float(tol), grad, info)
        if plan is None:
            if method == "exp":
                raise OTError("the exp kernel produced a non-finite value; use method='log' (or 'auto')")
            info = {"fallback": "exp kernel produced a non-finite value"}
    else:
        plan = None
    if plan is None:
        plan = _sinkhorn_log(C, float(epsilon), a_, b_, int(max_iter), float(tol), grad, info)

    with torch.no_grad():
        p = plan.detach()
        err_rows = (p.sum(-1) - a_).abs().sum(-1)
        err_cols = (p.sum(-2) - b_).abs().sum(-1)
        info["err"] = float(torch.maximum(err_rows, err_cols).max())
        if not torch.isfinite(p).all():  # never hand back a NaN plan silently
            raise OTError("Sinkhorn produced a non-finite plan; please report the cost that caused it")
    if not info["converged"]:
        warnings.warn(f"sinkhorn did not reach tol={tol:g} in {max_iter} iterations (L1 marginal error "
                      f"{info['err']:.3g}, epsilon={epsilon:g}); raise max_iter or epsilon",
                      RuntimeWarning, stacklevel=2)
    plan = plan.to(out_dtype)
    if squeeze:
        plan = plan[0]
    return (plan, info) if return_info else plan


# --------------------------------------------------------------------------------------------------
# Input checks


def _as_cost(cost) -> tuple[torch.Tensor, torch.dtype, bool]:
    if isinstance(cost, np.ndarray):
        cost = torch.from_numpy(cost)
    if not isinstance(cost, torch.Tensor):
        raise OTError(f"cost must be a torch.Tensor or numpy array, got {type(cost).__name__}")
    if cost.dim() not in (2, 3):
        raise OTError(f"cost must have shape (n, m) or (B, n, m), got {tuple(cost.shape)}")
    squeeze = cost.dim() == 2
    C = cost[None] if squeeze else cost
    if C.shape[1] == 0 or C.shape[2] == 0:
        raise OTError(f"cost must have n >= 1 rows and m >= 1 columns, got {tuple(cost.shape)}")
    out_dtype = C.dtype if C.is_floating_point() else torch.get_default_dtype()
    if C.dtype not in (torch.float32, torch.float64):
        C = C.to(torch.float32)
    bad = ~torch.isfinite(C)
    if bad.any():
        nan = int(torch.isnan(C).sum())
        raise OTError(f"cost holds {int(bad.sum())} non-finite entries ({nan} NaN, the rest +-inf); "
                      "sinkhorn needs finite costs (replace forbidden pairs by a large finite cost)")
    return C, out_dtype, squeeze


def _as_marginal(x, name: str, B: int, n: int, C: torch.Tensor) -> torch.Tensor:
    if x is None:
        return torch.full((B, n), 1.0 / n, dtype=C.dtype, device=C.device)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    x = x.to(device=C.device, dtype=C.dtype)
    if x.dim() == 1 and x.shape[0] == n:
        x = x.expand(B, n)
    if tuple(x.shape) != (B, n):
        raise OTError(f"{name} must have shape ({n},) or ({B}, {n}) for a cost of {B} x {n} x ..., "
                      f"got {tuple(x.shape)}")
    if not torch.isfinite(x).all() or (x < 0).any():
        raise OTError(f"{name} must be finite and non-negative")
    if B and (x.sum(-1) <= 0).any():
        raise OTError(f"{name} must have a positive total mass in every problem")
    return x


# --------------------------------------------------------------------------------------------------
# Kernels


def _shifts(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row minima, then column minima of the row-shifted cost: every row and column of K holds a 1."""
    with torch.no_grad():
        f = C.amin(dim=2)
        g = (C - f[:, :, None]).amin(dim=1)
    return f, g


def _row_error(a: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Largest (over the batch) L1 distance between row sums and ``a``."""
    return (rows - a).abs().sum(-1).amax()


def _sinkhorn_exp(C, eps, a, b, max_iter, tol, grad, info) -> torch.Tensor | None:
    """Stabilised scaling iterations; None if a non-finite value appears (the caller falls back)."""
    big = _ABSORB_AT[C.dtype]
    f, g = _shifts(C)
    outer = torch.is_grad_enabled()
    track = grad == "autodiff" and C.requires_grad and outer
    Cw = C if track else C.detach()

    def kernel(f, g):
        K = torch.exp((f[:, :, None] + g[:, None, :] - Cw) / eps)
        # both layouts, so that both products are row-vector x matrix (the fastest bmm form on CPU)
        return K, K.transpose(1, 2).contiguous()

    with torch.set_grad_enabled(track):
        K, KT = kernel(f, g)
        u = torch.ones_like(a)
        v = torch.ones_like(b)
        absorptions = 0
        converged = False
        n_iter = 0
        Kv = KT.sum(1)
        for it in range(1, max_iter + 1):
            n_iter = it
            u = a / Kv
            v = b / torch.bmm(u[:, None, :], K)[:, 0]  # b / (K^T u)
            Kv = torch.bmm(v[:, None, :], KT)[:, 0]
            with torch.no_grad():
                # row sums of the current plan diag(u) K diag(v) are u * Kv (columns are exact)
                err, lo, hi = torch.stack([
                    _row_error(a, u * Kv),
                    torch.minimum(u.amin(), v.amin()),
                    torch.maximum(u.amax(), v.amax()),
                ]).tolist()
            if not (math.isfinite(err) and math.isfinite(hi)) or hi <= 0:
                return None
            if err < tol:
                converged = True
                break
            if hi > big or (lo < 1 / big and lo > 0) or lo == 0 and _nonzero_where_mass(u, v, a, b):
                # absorb the scalings into the offsets and start again from u = v = 1
                f, g = _absorb(Cw, eps, f, g, u, v, a, b)
                K, KT = kernel(f, g)
                u, v = torch.ones_like(u), torch.ones_like(v)
                Kv = K.sum(-1)
                absorptions += 1
        plan = u[:, :, None] * K * v[:, None, :]
    if grad == "last_step" and C.requires_grad and outer:
        # one differentiable iteration from the converged (detached) v; the gradient of this step only
        K = torch.exp((f[:, :, None] + g[:, None, :] - C) / eps)
        u = a / torch.bmm(K, v[:, :, None])[..., 0]
        v = b / torch.bmm(u[:, None, :], K)[:, 0]
        plan = u[:, :, None] * K * v[:, None, :]
    if not torch.isfinite(plan).all():
        return None
    info.update(n_iter=n_iter, converged=converged, method="exp", absorptions=absorptions)
    return plan


def _nonzero_where_mass(u, v, a, b) -> bool:
    """A scaling that underflowed to 0 where the marginal has mass must be absorbed."""
    return bool(((u == 0) & (a > 0)).any() or ((v == 0) & (b > 0)).any())


def _absorb(C, eps, f, g, u, v, a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the scalings into the offsets: ``f += eps log u``, ``g += eps log v``.

    Rows / columns without mass have zero scalings; their offsets are reset to the minimum of the
    shifted cost so that their kernel entries stay <= 1 (their plan entries are 0 anyway).
    """
    with torch.no_grad():
        Cd = C.detach()
    f = torch.where(a > 0, f + eps * torch.log(torch.where(u > 0, u, torch.ones_like(u))),
                    (Cd - g[:, None, :].detach()).amin(2))
    g = torch.where(b > 0, g + eps * torch.log(torch.where(v > 0, v, torch.ones_like(v))),
                    (Cd - f[:, :, None].detach()).amin(1))
    return f, g


def _sinkhorn_log(C, eps, a, b, max_iter, tol, grad, info) -> torch.Tensor:
    """Log-domain iterations (logsumexp), as POT's ``sinkhorn_log``; stable for any epsilon."""
    outer = torch.is_grad_enabled()
    track = grad == "autodiff" and C.requires_grad and outer
    M = -(C if track else C.detach()) / eps
    with torch.no_grad():
        loga = torch.log(a)  # -inf where a == 0: those rows get u = -inf, a zero row of the plan
        logb = torch.log(b)
        mass_a = a > 0
    with torch.set_grad_enabled(track):
        u = torch.zeros_like(a)
        v = torch.zeros_like(b)
        converged = False
        n_iter = 0
        lse_rows = torch.logsumexp(M + v[:, None, :], dim=2)
        for it in range(1, max_iter + 1):
            n_iter = it
            u = loga - lse_rows
            v = logb - torch.logsumexp(M + u[:, :, None], dim=1)
            lse_rows = torch.logsumexp(M + v[:, None, :], dim=2)
            with torch.no_grad():
                rows = torch.where(mass_a, torch.exp(u + lse_rows), torch.zeros_like(a))
                err = float(_row_error(a, rows))
            if not math.isfinite(err):
                raise OTError("log-domain Sinkhorn produced a non-finite value; please report the cost")
            if err < tol:
                converged = True
                break
        plan = torch.exp(M + u[:, :, None] + v[:, None, :])
    if grad == "last_step" and C.requires_grad and outer:
        M = -C / eps
        u = loga - torch.logsumexp(M + v[:, None, :], dim=2)
        v = logb - torch.logsumexp(M + u[:, :, None], dim=1)
        plan = torch.exp(M + u[:, :, None] + v[:, None, :])
    info.update(n_iter=n_iter, converged=converged, method="log", absorptions=0)
    return plan
