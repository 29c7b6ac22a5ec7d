"""Unbalanced entropic optimal transport: batched Sinkhorn with KL-relaxed marginals.

The balanced plan of :func:`profashion.ot.sinkhorn` must give every column exactly its mass ``b_j``. In
ProFashion's Region -> Patch step (A attribute rows of mass 1/A, N patch columns of mass 1/N) that caps every
entry at 1/N, so an attribute's row-normalised weights are at most A/N per patch and at most ``A * f`` of its
mass can fall on a region covering a fraction ``f`` of the patches, however well the model is trained (docs/
METHODS.md, "ProFashion"). Relaxing a marginal lifts that cap:

    P = argmin_{P >= 0}  <P, C> + epsilon KL(P | a b^T) + tau_a KL(P 1 | a) + tau_b KL(P^T 1 | b)

(Chizat, Peyre, Schmitzer, Vialard, "Scaling algorithms for unbalanced optimal transport problems", Math.
Comp. 2018; POT's ``ot.unbalanced.sinkhorn_unbalanced`` with ``reg_type="kl"``). ``tau = inf`` keeps that
marginal exact. The scaling iterations become

    u = (a / K v) ** rho_a,   v = (b / K^T u) ** rho_b,   rho = tau / (tau + epsilon),   K = a b^T exp(-C / epsilon)

and the plan is ``diag(u) K diag(v)``. With ``reg_m = (inf, tau)`` (the rows exact, the columns relaxed: the
"semi-relaxed" problem ProFashion uses) the two ends are known: ``tau -> inf`` is the balanced plan, ``tau -> 0``
gives ``v = 1``, i.e. each row ``a_i softmax(-C_i / epsilon)``: plain attention at temperature epsilon. In
between, a column's total mass is ``b_j ** rho (K^T u)_j ** (1 - rho)``: a patch wanted by several rows may take
more than ``b_j``, one wanted by none less, and the KL term prices the difference.

**Kernels.** Scaling iterations on ``K`` (two batched matrix-vector products and two vector powers per
iteration; autograd keeps only vectors per iteration), with each row shifted by its minimum cost when the rows
are exact (``u`` absorbs the shift exactly; a relaxed row would not), used while ``exp`` stays far from
underflow; otherwise the same iterations on log-potentials with ``logsumexp`` (stable for any epsilon, a full
``(B, n, m)`` tensor per half iteration). Batched ``(B, n, m)`` on the device and in the dtype of the cost
(half precisions in float32).

**Stopping.** With exact rows (``tau_a = inf``) the rows are a marginal to reach: after each ``v`` update the
solver measures the L1 row error, as the balanced solver does, and stops below ``tol`` (at the fixed point of
the ``v`` update it is zero). With both sides relaxed there is no marginal to reach, so it stops when the plan's
row and column sums (known for free inside the iterations) change by less than ``tol`` in L1 between two
iterations. Both for every problem of the batch, or after ``max_iter`` iterations (``info["converged"]`` False
and a ``RuntimeWarning``).

**Gradients** (``grad``) as in :func:`profashion.ot.sinkhorn`: ``"autodiff"`` through every iteration,
``"last_step"`` through one final iteration from the converged potentials, ``"none"`` a detached plan.

Zero marginal entries give zero rows / columns. NaN or infinite costs, non-positive epsilon or tau, negative
marginals raise :class:`~profashion.ot.sinkhorn.OTError`; unlike the balanced solver the two marginals may
have different masses when a side is relaxed.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch

from profashion.ot.sinkhorn import OTError, _as_cost, _as_marginal, _check_settings

__all__ = ["sinkhorn_unbalanced"]



def _rho(tau, eps: float, name: str) -> float:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or math.isnan(tau) or tau <= 0:
        raise OTError(f"{name} must be a positive number or inf, got {tau!r}")
    return 1.0 if math.isinf(tau) else float(tau) / (float(tau) + eps)


def sinkhorn_unbalanced(
    cost: torch.Tensor,
    epsilon: float = 0.05,
    reg_m: float | tuple[float, float] = (math.inf, 1.0),
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    *,
    grad: str = "autodiff",
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    """Unbalanced entropic OT plans of a batch of problems; see the module docstring.

    Args:
        cost: ``(B, n, m)`` or ``(n, m)`` cost (a numpy array is converted).
        epsilon: entropic regularisation (> 0), in the units of the cost.
        reg_m: the marginal penalties ``(tau_a, tau_b)`` (a single number relaxes both alike); ``math.inf``
            keeps that marginal exact. The default keeps the rows exact and relaxes the columns.
        a: row marginals ``(n,)`` or ``(B, n)``, default uniform ``1/n``.
        b: column marginals ``(m,)`` or ``(B, m)``, default uniform ``1/m``.
        max_iter: maximum number of iterations (one ``u`` and one ``v`` update each).
        tol: stop when the L1 change of the plan's row and column sums is below ``tol`` in every problem.
        grad: ``"autodiff"``, ``"last_step"`` or ``"none"``.
        return_info: also return ``{"n_iter", "change", "converged", "rho"}``.

    Returns:
        The plan, same shape as ``cost``; with ``return_info``, ``(plan, info)``.
    """
    _check_settings(grad, epsilon, max_iter, tol)
    tau_a, tau_b = (reg_m, reg_m) if isinstance(reg_m, numbers.Real) else tuple(reg_m)
    eps = float(epsilon)
    rho = (_rho(tau_a, eps, "reg_m[0]"), _rho(tau_b, eps, "reg_m[1]"))

    C, out_dtype, squeeze = _as_cost(cost)
    B, n, m = C.shape
    a_ = _as_marginal(a, "a", B, n, C)
    b_ = _as_marginal(b, "b", B, m, C)
    if rho == (1.0, 1.0) and not torch.allclose(a_.sum(-1), b_.sum(-1), rtol=1e-4, atol=0.0):
        raise OTError("with both marginals exact (reg_m = inf), a and b must have the same total mass")
    if grad == "none":
        C = C.detach()
    info: dict[str, Any] = {"rho": rho}
    if B == 0:
        plan = torch.zeros_like(C)
        info.update(n_iter=0, change=0.0, converged=True)
    else:
        plan = _iterate(C, eps, rho, a_, b_, int(max_iter), float(tol), grad, info)
        if not torch.isfinite(plan).all():
            raise OTError("unbalanced Sinkhorn produced a non-finite plan; please report the cost that caused it")
    if not info["converged"]:
        warnings.warn(f"sinkhorn_unbalanced did not settle to tol={tol:g} in {max_iter} iterations (L1 change "
                      f"of the marginals {info['change']:.3g}, epsilon={epsilon:g}); raise max_iter",
                      RuntimeWarning, stacklevel=2)
    plan = plan.to(out_dtype)
    if squeeze:
        plan = plan[0]
    return (plan, info) if return_info else plan


def _iterate(C, eps, rho, a, b, max_iter, tol, grad, info) -> torch.Tensor:
    """The exp kernel when it is safe (see :func:`_exp_kernel`), else log-domain iterations."""
    plan = _iterate_exp(C, eps, rho, a, b, max_iter, tol, grad, info)
    if plan is None:
        plan = _iterate_log(C, eps, rho, a, b, max_iter, tol, grad, info)
    return plan


def _settled(rows, cols, prev, a, exact_rows: bool, it: int) -> float:
    """L1 change of the plan's marginals since the previous iteration; with exact rows, the row error instead
    (a true marginal error, zero at the fixed point, as the balanced solver's)."""
    change = math.inf
    if exact_rows:
        change = float((rows - a).abs().sum(-1).max())
    elif prev is not None:
        change = float(torch.maximum((rows - prev[0]).abs().sum(-1), (cols - prev[1]).abs().sum(-1)).max())
    if not math.isfinite(change) and it > 1:
        raise OTError("unbalanced Sinkhorn produced a non-finite value; please report the cost")
    return change


def _iterate_exp(C, eps, rho, a, b, max_iter, tol, grad, info) -> torch.Tensor | None:
    """Scaling iterations on ``K = a b^T exp(-(C - f) / eps)``; None where that could under- or overflow.

    With exact rows (``rho_a = 1``) the row offsets ``f`` (each row's minimum cost) are absorbed by ``u``
    exactly, so every row of ``K`` holds its largest entry ``a_i b_j``; with relaxed rows a row offset would
    change the problem, so ``f = 0`` and the kernel is used only while ``exp(-max C / eps)`` stays far from
    underflow. Two batched matrix-vector products and two vector powers per iteration.
    """
    rho_a, rho_b = rho
    with torch.no_grad():
        f = C.amin(dim=2) if rho_a == 1.0 else torch.zeros_like(a)
        spread = float((C - f[:, :, None]).amax()) / eps
        tiny = float(torch.cat([a[a > 0], b[b > 0]]).amin()) if bool((a > 0).any() and (b > 0).any()) else 1.0
    if spread - 2 * math.log(tiny) > (60 if C.dtype == torch.float32 else 600):
        return None
    outer = torch.is_grad_enabled()
    track = grad == "autodiff" and C.requires_grad and outer
    with torch.set_grad_enabled(track):
        K = a[:, :, None] * b[:, None, :] * torch.exp((f[:, :, None] - (C if track else C.detach())) / eps)
        KT = K.transpose(1, 2).contiguous()
        u, v = torch.ones_like(a), torch.ones_like(b)
        Kv = KT.sum(1)
        prev, converged, n_iter, change = None, False, 0, math.inf
        for it in range(1, max_iter + 1):
            n_iter = it
            u = _scale(a, Kv, rho_a)
            KTu = torch.bmm(u[:, None, :], K)[:, 0]
            v = _scale(b, KTu, rho_b)
            Kv = torch.bmm(v[:, None, :], KT)[:, 0]
            with torch.no_grad():
                rows, cols = u * Kv, v * KTu
                change = _settled(rows, cols, prev, a, rho_a == 1.0, it)
                prev = (rows, cols)
            if change < tol:
                converged = True
                break
        plan = u[:, :, None] * K * v[:, None, :]
    if grad == "last_step" and C.requires_grad and outer:
        K = a[:, :, None] * b[:, None, :] * torch.exp((f[:, :, None] - C) / eps)
        u = _scale(a, torch.bmm(K, v.detach()[:, :, None])[..., 0], rho_a)
        v = _scale(b, torch.bmm(u[:, None, :], K)[:, 0], rho_b)
        plan = u[:, :, None] * K * v[:, None, :]
    if not torch.isfinite(plan).all():
        return None
    info.update(n_iter=n_iter, change=change, converged=converged, method="exp")
    return plan


def _scale(mass: torch.Tensor, kernel_sum: torch.Tensor, rho: float) -> torch.Tensor:
    """``(mass / kernel_sum) ** rho``, 0 where the marginal has no mass."""
    ratio = torch.where(mass > 0, mass / kernel_sum.clamp_min(torch.finfo(kernel_sum.dtype).tiny),
                        torch.zeros_like(mass))
    return ratio if rho == 1.0 else ratio ** rho


def _iterate_log(C, eps, rho, a, b, max_iter, tol, grad, info) -> torch.Tensor:
    """Log-domain scaling iterations; ``log u``, ``log v`` are the log-scalings of ``K = a b^T exp(-C/eps)``."""
    outer = torch.is_grad_enabled()
    track = grad == "autodiff" and C.requires_grad and outer
    with torch.no_grad():
        loga, logb = torch.log(a), torch.log(b)  # -inf where a marginal is 0: a zero row / column
    rho_a, rho_b = rho

    def log_kernel(cost):
        return loga[:, :, None] + logb[:, None, :] - cost / eps

    def safe(x):  # rows / columns without mass: keep -inf out of the arithmetic (their plan entries are 0)
        return torch.nan_to_num(x, nan=-math.inf)

    with torch.set_grad_enabled(track):
        logK = log_kernel(C if track else C.detach())
        u = torch.zeros_like(a)
        v = torch.zeros_like(b)
        lse_rows = torch.logsumexp(logK + v[:, None, :], dim=2)
        prev, converged, n_iter, change = None, False, 0, math.inf
        for it in range(1, max_iter + 1):
            n_iter = it
            u = safe(rho_a * (loga - lse_rows))
            lse_cols = torch.logsumexp(logK + u[:, :, None], dim=1)
            v = safe(rho_b * (logb - lse_cols))
            lse_rows = torch.logsumexp(logK + v[:, None, :], dim=2)
            with torch.no_grad():
                rows, cols = torch.exp(u + lse_rows), torch.exp(v + lse_cols)  # the current plan's marginals
                change = _settled(rows, cols, prev, a, rho_a == 1.0, it)
                prev = (rows, cols)
            if change < tol:
                converged = True
                break
        plan = torch.exp(logK + u[:, :, None] + v[:, None, :])
    if grad == "last_step" and C.requires_grad and outer:
        logK = log_kernel(C)
        v = v.detach()
        u = safe(rho_a * (loga - torch.logsumexp(logK + v[:, None, :], dim=2)))
        v = safe(rho_b * (logb - torch.logsumexp(logK + u[:, :, None], dim=1)))
        plan = torch.exp(logK + u[:, :, None] + v[:, None, :])
    info.update(n_iter=n_iter, change=change, converged=converged, method="log")
    return plan
