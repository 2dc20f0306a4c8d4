"""The Newton step's linear algebra, once: preconditioned CG with a coarse space, and a dense step.

Newton solves ``H d = −g`` in Jacobi-scaled form: with ``D = diag(H)`` and the model's
``S = D^{-1/2} H D^{-1/2}`` (unit diagonal), ``S y = −D^{-1/2} g``, ``d = D^{-1/2} y``. Large
systems go to conjugate gradients (inexact Newton: relative residual ``0.1·min(1, r)``) with a
two-level preconditioner: the Jacobi part is the identity, plus an additive coarse correction
on one scale per level (a layer, a depth level) — the slow modes of deep networks are
layer-wise scale shifts, which the coarse space removes (docs/design.md §2). Small systems get
a dense LU in row-scaled form, which keeps tiny units exact beside huge ones.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la

from ..backend import spd_inverse_factor, to_host
from ..costs import CostModel, Hessian, Point

__all__ = ["pcg", "CoarseCorrection", "dense_step", "cg_step"]


def pcg(matvec, precondition, b, rtol: float, maxiter: int, xp):
    """Preconditioned CG on an SPD operator; returns ``(y, iterations)`` (one host sync per step).

    Stops when ``‖b − S y‖ <= rtol ‖b‖``, after ``maxiter`` steps, or when rounding breaks
    positive curvature (the last good iterate is kept).
    """
    y = xp.zeros_like(b)
    r = b.copy()
    z = precondition(r)
    d = z.copy()
    rz = r @ z
    bnorm = float(to_host(xp.sqrt(b @ b)))
    if not bnorm > 0.0:
        return y, 0
    for it in range(1, maxiter + 1):
        q = matvec(d)
        curv = d @ q
        alpha = rz / curv
        y += alpha * d
        r -= alpha * q
        res, curv = (float(v) for v in to_host(xp.stack([xp.sqrt(r @ r), curv])))
        if not curv > 0.0:
            y -= alpha * d
            return y, it
        if res <= rtol * bnorm:
            return y, it
        z = precondition(r)
        rz_new = r @ z
        d = z + (rz_new / rz) * d
        rz = rz_new
    return y, maxiter


class CoarseCorrection:
    """``r ↦ r + W E⁻¹ Wᵀ r`` with ``E = Wᵀ S W`` on one scale per level.

    In the unscaled variables the coarse space holds the vectors constant on a level (moving a
    whole layer's scale); in the scaled variables its columns are ``w_k = sqrt(D_k / Σ_level D)``.
    ``E`` is ``L × L`` (tridiagonal for a chain) and is factored once per Newton iteration.
    """

    def __init__(self, model: CostModel, H: Hessian):
        xp = model.xp
        self.xp = xp
        levels = model.levels
        L = model.n_levels
        self.levels = xp.asarray(levels)
        half = 0.5 * H.log_d
        top = xp.full(L, -np.inf)
        if xp is np:
            np.maximum.at(top, levels, half)
        else:
            import cupyx

            cupyx.scatter_max(top, self.levels, half)
        w = xp.exp(half - top[self.levels])
        norms = xp.sqrt(xp.bincount(self.levels, weights=w * w, minlength=L))
        self.w = w / norms[self.levels]
        self.L = L
        E = H.coarse_matrix(self.w, levels, L)
        # The coarse operator only needs to be a fair approximation: a tiny ridge keeps the
        # factorization defined when two levels carry nearly parallel vectors.
        E = E + 1e-12 * xp.eye(L) * float(to_host(xp.diag(E).max()))
        self.F = spd_inverse_factor(xp, E)

    def __call__(self, r):
        xp = self.xp
        zeta = xp.bincount(self.levels, weights=self.w * r, minlength=self.L)
        return r + self.w * (self.F.T @ (self.F @ zeta))[self.levels]


def cg_step(model: CostModel, pt: Point, H: Hessian, *, rtol: float, maxiter: int, coarse: bool):
    """The inexact Newton direction by PCG; returns ``(d, cg iterations)``."""
    xp = model.xp
    half = 0.5 * H.log_d
    half_r = 0.5 * pt.log_cost
    # −g/√D, scaled by 1/√R so that CG's norms stay inside float64.
    b = xp.exp(pt.log_n - half - half_r) - xp.exp(pt.log_p - half - half_r)
    use_coarse = coarse and model.levels is not None and 1 < model.n_levels < model.n
    precondition = CoarseCorrection(model, H) if use_coarse else (lambda r: r)
    y, its = pcg(H.matvec, precondition, b, rtol, maxiter, xp)
    return y * xp.exp(half_r - half), its


def dense_step(model: CostModel, pt: Point, H: Hessian):
    """Solve ``H d = −g`` densely in row-scaled form ``D^{-1} H d = −γ`` (``γ = g / D``).

    ``D^{-1} H = D'^{-1/2} S D'^{1/2}`` has unit diagonal and entries ``H_kl / D_k`` of order one;
    its right-hand side ``γ_k`` is a relative gradient and its solution a step in log-scale:
    every row is equally well scaled, so the step of a unit whose costs are 1e-300 is not
    drowned by rounding from units whose costs are 1e+300. LU with partial pivoting; least
    squares if singular.
    """
    S = H.matrix()
    log_d = to_host(H.log_d)
    log_p, log_n = to_host(pt.log_p), to_host(pt.log_n)
    gamma = np.exp(log_p - log_d) - np.exp(log_n - log_d)
    h = 0.5 * (log_d - 0.5 * (log_d.max(initial=0.0) + log_d.min(initial=0.0)))
    with np.errstate(divide="ignore"):
        M = np.sign(S) * np.exp(np.log(np.abs(S)) + (h[None, :] - h[:, None]))
    try:
        d = la.lu_solve(la.lu_factor(M, check_finite=False), -gamma, check_finite=False)
    except (la.LinAlgError, ValueError):
        d = la.lstsq(M, -gamma, check_finite=False)[0]
    return model.xp.asarray(d)
