"""Newton–CG on dense layer blocks (the fast path of design.md §2), warmed up by exact sweeps.

Newton on ``x = p·u``: gradient ``in − c·out``, Hessian ``diag(in + c²·out) − K``
(:mod:`._costs`). Each iteration solves the Jacobi-scaled Newton equation by CG, inexactly
(relative residual ``0.1·min(1, r)``, ``r`` the largest per-unit relative imbalance), with the
additive one-scale-per-layer coarse correction, then backtracks on ``log R``; when the
predicted decrease ``−gᵀd`` is below ``1e-12·R`` (beyond what ``R`` resolves, about ``R r²``)
a step is judged by the largest log-imbalance instead. Up to ``warmup`` exact layer sweeps
(eqs. 5.6, 6.6; :mod:`._sweep`) come first. Cost per Newton iteration: 2 passes over the free-to-free blocks
for the sums, 2 per CG iteration; blocks with a fixed side cost nothing after set-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..newton import final_message, stalled_message
from ._costs import LayeredCosts, Point, RangeExceeded
from ._sweep import LayerSweeps
from ._xp import to_host

__all__ = ["newton_cg"]

_FLAT = 1e-12
_ARMIJO = 1e-4
_MAX_BACKTRACKS = 40
_MAX_STEP = 30.0


def _history() -> dict:
    return {"iteration": [], "log_cost": [], "max_imbalance": [], "time": []}


def _record(history: dict, k: int, pt: Point, start: float) -> None:
    history["iteration"].append(k)
    history["log_cost"].append(pt.log_cost)
    history["max_imbalance"].append(pt.worst)
    history["time"].append(time.perf_counter() - start)


def warm(costs: LayeredCosts, x, max_sweeps: int, tol: float):
    """Up to ``max_sweeps`` alternating sweeps; stop when the log-imbalance shrinks < 30 % a sweep."""
    state = LayerSweeps(costs, x, "alternating")
    worst, done = state.gap, 0
    while done < max_sweeps and state.gap > 2.0 * tol:
        state.sweep()
        done += 1
        if state.gap > 0.7 * worst:
            break
        worst = state.gap
    return state.x, done


def pcg(op, b, rtol: float, maxiter: int, xp):
    """Preconditioned CG on ``op`` (SPD) with ``op.precondition``; returns ``(y, iterations)``."""
    y = xp.zeros_like(b)
    r = b.copy()
    z = op.precondition(r)
    d = z.copy()
    rz = r @ z
    bnorm = float(to_host(xp.sqrt(b @ b)))
    if not bnorm > 0.0:
        return y, 0
    for it in range(1, maxiter + 1):
        q = op(d)
        curv = d @ q
        alpha = rz / curv
        y += alpha * d
        r -= alpha * q
        res, curv = (float(v) for v in to_host(xp.stack([xp.sqrt(r @ r), curv])))
        if not curv > 0.0:
            y -= alpha * d  # rounding broke positive curvature: keep the last good iterate
            return y, it
        if res <= rtol * bnorm:
            return y, it
        z = op.precondition(r)
        rz_new = r @ z
        d = z + (rz_new / rz) * d
        rz = rz_new
    return y, maxiter


def newton_cg(
    costs: LayeredCosts,
    x,
    *,
    tol: float,
    max_iter: int,
    warmup: int = 10,
    cg_maxiter: int = 1000,
    coarse: bool = True,
    callback: Callable | None = None,
    info: dict,
    start: float,
):
    """Newton–CG from ``x``; returns ``(x, converged, iterations, message, history)``.

    ``info`` receives ``warmup_sweeps``, ``newton_iterations``, ``cg_iterations`` and
    ``backtracks``. Raises :class:`RangeExceeded` when float64 mat-vecs cannot hold the costs.
    """
    xp = costs.xp
    x, info["warmup_sweeps"] = warm(costs, x, warmup, tol) if warmup > 0 else (x, 0)
    info.update(newton_iterations=0, cg_iterations=0, backtracks=0)
    history = _history()
    pt = Point(costs, x)
    _record(history, 0, pt, start)
    converged = pt.worst <= tol
    k, message = 0, ""
    while not converged and k < max_iter:
        k += 1
        H = costs.hessian(pt, coarse)
        # The right side −g/√D, scaled by 1/√R so that CG's norms stay within float64.
        half_r = 0.5 * pt.log_cost
        b = xp.exp(pt.log_n - H.half - half_r) - xp.exp(pt.log_in - H.half - half_r)
        y, its = pcg(H, b, 0.1 * min(1.0, pt.worst), cg_maxiter, xp)
        info["cg_iterations"] += its
        d = y * xp.exp(half_r - H.half)
        new, backtracks = _line_search(costs, pt, d, H.half)
        info["backtracks"] += backtracks
        if new is None:
            message = stalled_message(k, pt.worst)
            break
        pt = new
        _record(history, k, pt, start)
        if callback is not None:
            callback(k, to_host(pt.x) / costs.p)
        converged = pt.worst <= tol
    info["newton_iterations"] = k
    return pt.x, converged, k, final_message(converged, pt.worst, tol, max_iter, message), history


def _line_search(costs: LayeredCosts, pt: Point, d, half):
    """Backtrack from the full step (capped at ``_MAX_STEP`` in log-scale); ``(point, backtracks)``.

    Armijo on ``log R`` while ``−gᵀd/R`` is resolvable, else a step must lower the largest
    log-imbalance. A direction spoilt by rounding gives way to the Jacobi step ``−g/D``.
    """
    xp = costs.xp
    grad = xp.exp(pt.log_in - pt.log_cost) - xp.exp(pt.log_n - pt.log_cost)  # g / R
    slope, big = costs.check(xp.stack([grad @ d, xp.abs(d).max()]))
    if not slope < 0.0:
        d = xp.exp(pt.log_n - 2 * half) - xp.exp(pt.log_in - 2 * half)
        slope, big = costs.check(xp.stack([grad @ d, xp.abs(d).max()]))
    floor = max(_FLAT, 64 * np.finfo(float).eps * max(1.0, abs(pt.log_cost)))
    flat = not -slope > floor
    alpha = min(1.0, _MAX_STEP / max(big, 1e-300))
    for b in range(_MAX_BACKTRACKS):
        try:
            new = Point(costs, pt.x + alpha * d)
        except RangeExceeded:
            new = None
        if new is not None and np.isfinite(new.log_cost):
            if flat:
                ok = new.gap < pt.gap
            else:
                ok = new.log_cost - pt.log_cost <= np.log1p(_ARMIJO * alpha * slope)
            if ok:
                return new, b
        alpha *= 0.5
    return None, _MAX_BACKTRACKS
