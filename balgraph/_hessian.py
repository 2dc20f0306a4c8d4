"""Linear algebra of the Newton step: the Jacobi-scaled Hessian, direct and CG solves.

The Hessian of ``R(u) = Σ_e φ_e((G u)_e)`` is ``H = Gᵀ diag(φ'') G`` (design.md §1). Its diagonal
``D_k = Σ_e φ''_e G_ek²`` can span 1e±600 when weights span 1e±150, so everything is scaled in
the log domain before any number is formed:

    B = diag(√φ'') G D^{-1/2},     B_ek = G_ek exp((log φ''_e − log D_k) / 2),   |B_ek| <= 1,
    S = Bᵀ B   (unit diagonal),     H = D^{1/2} S D^{1/2}.

The Newton equation ``H d = −g`` becomes ``S y = −D^{-1/2} g``, ``d = D^{-1/2} y``. Since
``H d = −g`` is invariant under multiplying ``H`` and ``g`` by one constant, ``D`` is stored as
``D' = D e^{-s}`` with ``s`` the midpoint of the range of ``log D``, so that ``√D'`` and the
scaled right-hand side stay inside float64 for costs spanning 1e±600.

Small systems are solved by a dense Cholesky factorization of ``S``; large ones by conjugate
gradients with matrix-free products ``S v = Bᵀ(B v)`` and a two-level preconditioner: the
Jacobi part is the identity (unit diagonal), plus an additive coarse correction on one scale
per depth level, ``Q (Qᵀ S Q)^{-1} Qᵀ`` — the slow modes of deep networks are layer-wise scale
shifts, which the coarse space removes.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from ._logsum import segment_logsumexp

__all__ = [
    "CoarseCorrection", "CoarseSpace", "ScaledHessian", "dense_newton_step", "one_blas_thread", "pcg"
]

def one_blas_thread():
    """A context that runs BLAS on one thread.

    The BLAS calls of the general path are small (dots of ``n``-vectors, LU of at most
    ``dense_max`` variables); OpenBLAS threads spin-wait on them, which on a loaded machine
    costs far more than the work (measured: LU of 448 × 448 in 0.09 s on 2 threads, 0.012 s
    on one).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


class ScaledHessian:
    """The Jacobi-scaled Hessian ``S = BᵀB`` of ``R`` at one point, built in the log domain.

    Parameters
    ----------
    G : scipy.sparse.csr_matrix
        Edge-by-variable matrix (zero-weight edges already removed), sorted indices.
    log_d2 : ndarray
        ``log φ''_e`` per edge at the current point.
    structure : _Structure
        Index arrays of ``G`` precomputed once per problem (:func:`structure_of`).

    Attributes
    ----------
    log_d : ndarray
        ``log D_k`` (0 where a variable has no edge).
    half_log_d : ndarray
        ``h_k = (log D_k − s) / 2``: the log of ``√D'_k`` (0 where a variable has no edge).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> G = sp.csr_matrix(np.array([[1.0], [-1.0]]))
    >>> S = ScaledHessian(G, np.log([2.0, 8.0]), structure_of(G))
    >>> S.dense().tolist()
    [[1.0]]
    """

    def __init__(self, G: sp.csr_matrix, log_d2: np.ndarray, structure: _Structure):
        st = structure
        log_d = segment_logsumexp(log_d2[st.col_rows] + st.col_log_g2, st.col_indptr)
        finite = np.isfinite(log_d)
        # A variable with no non-zero edge has a flat cost; give it a harmless unit scale.
        log_d = np.where(finite, log_d, 0.0)
        self.log_d = log_d
        s = 0.5 * (log_d.max(initial=0.0) + log_d.min(initial=0.0))
        self.half_log_d = 0.5 * (log_d - s)
        data = G.data * np.exp(0.5 * (log_d2[st.csr_rows] - log_d[G.indices]))
        self.B = sp.csr_matrix((data, G.indices, G.indptr), shape=G.shape)
        # Bᵀ in csr form shares G's column structure: only its data moves.
        self._BT = sp.csr_matrix(
            (data[st.csr_to_csc], st.col_rows, st.col_indptr), shape=G.shape[::-1]
        )
        self.n = G.shape[1]

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``S v = Bᵀ (B v)``: two sparse mat-vecs, no per-edge exp."""
        return self._BT @ (self.B @ v)

    def dense(self) -> np.ndarray:
        """``S`` as a dense array (small problems)."""
        return (self._BT @ self.B).toarray()

    def galerkin(self, vals: np.ndarray, space: CoarseSpace) -> np.ndarray:
        """``Qᵀ S Q = Σ_e b_e b_eᵀ`` (``b_e = Qᵀ B_eᵀ``): three bincounts over the edges."""
        L = space.n_levels
        x = self.B.data[space.first] * vals[space.col1]
        y = np.where(space.two, self.B.data[space.second] * vals[space.col2], 0.0)
        Ac = np.bincount(space.pair, weights=x * y, minlength=L * L).reshape(L, L)
        Ac = Ac + Ac.T
        Ac[np.diag_indices(L)] += np.bincount(space.lev1, weights=x * x, minlength=L)
        Ac[np.diag_indices(L)] += np.bincount(space.lev2, weights=y * y, minlength=L)
        return Ac


class _Structure:
    """Index arrays of ``G`` that every Hessian at every iteration reuses."""

    def __init__(self, G: sp.csr_matrix):
        csc = G.tocsc()
        csc.sort_indices()
        self.col_indptr = csc.indptr
        self.col_rows = csc.indices
        self.col_log_g2 = 2.0 * np.log(np.abs(csc.data))
        self.csr_rows = np.repeat(np.arange(G.shape[0]), np.diff(G.indptr))
        # Entry order of G's csc form in terms of its csr entries (G has sorted indices).
        self.csr_to_csc = np.lexsort((self.csr_rows, G.indices))


def structure_of(G: sp.csr_matrix) -> _Structure:
    """Precompute the index arrays of ``G`` used by :class:`ScaledHessian`."""
    return _Structure(G)


def dense_newton_step(S: ScaledHessian, gamma: np.ndarray) -> np.ndarray:
    """Solve ``H d = −g`` densely in row-scaled form ``D^{-1} H d = −γ`` (``γ = g / D``).

    ``D^{-1} H = D'^{-1/2} S D'^{1/2}`` has unit diagonal and entries ``H_kl / D_k`` of order
    one, its right-hand side ``γ_k`` is a relative gradient and its solution is a step in
    log-scale: every row is equally well scaled, so the step of a unit whose costs are 1e-300
    is not drowned by rounding from units whose costs are 1e+300 (a symmetric solve with
    ``√D`` spanning 1e±150 would be). LU with partial pivoting; least squares if singular.
    """
    A = S.dense()
    h = S.half_log_d
    with np.errstate(divide="ignore"):
        M = np.sign(A) * np.exp(np.log(np.abs(A)) + (h[None, :] - h[:, None]))
    try:
        return la.lu_solve(la.lu_factor(M, check_finite=False), -gamma, check_finite=False)
    except (la.LinAlgError, ValueError):
        return la.lstsq(M, -gamma, check_finite=False)[0]


class CoarseSpace:
    """One coarse variable per depth level: the index arrays, fixed for a problem.

    Every row of ``G`` has one or two entries (the edge's two ends), so the Galerkin matrix
    ``Qᵀ S Q = Σ_e b_e b_eᵀ`` (``b_e = Qᵀ B_eᵀ``) is a sum of rank-one terms over at most two
    levels: three bincounts per Newton iteration, no sparse product.
    """

    def __init__(self, G: sp.csr_matrix, levels: np.ndarray, n_levels: int):
        cnt = np.diff(G.indptr)
        has = cnt > 0
        self.first = G.indptr[:-1][has]
        self.second = self.first + (cnt[has] == 2)
        self.two = cnt[has] == 2
        self.col1 = G.indices[self.first]
        self.col2 = G.indices[self.second]
        self.lev1 = levels[self.col1]
        self.lev2 = levels[self.col2]
        self.pair = self.lev1 * n_levels + self.lev2
        self.levels = levels
        self.n_levels = n_levels


class CoarseCorrection:
    """Additive coarse correction ``v ↦ Q (Qᵀ S Q)^{-1} Qᵀ v`` on one scale per level.

    In the unscaled variables the coarse space holds the vectors that are constant on a depth
    level (moving a whole layer's scale); in the scaled variables ``y = √D' d`` its columns are
    ``√D'_k`` on the level, normalized. The Galerkin matrix ``Qᵀ S Q`` is ``L × L`` (tridiagonal
    for a chain of layers) and is factored once per Newton iteration.
    """

    def __init__(self, S: ScaledHessian, space: CoarseSpace):
        levels, L = space.levels, space.n_levels
        h = S.half_log_d
        top = np.full(L, -np.inf)
        np.maximum.at(top, levels, h)
        vals = np.exp(h - top[levels])
        norms = np.sqrt(np.bincount(levels, weights=vals * vals, minlength=L))
        vals = vals / norms[levels]
        self.Q = sp.csr_matrix((vals, (np.arange(S.n), levels)), shape=(S.n, L))
        Ac = S.galerkin(vals, space)
        # The coarse operator only needs to be a fair approximation: a tiny ridge keeps the
        # factorization defined when two levels carry nearly parallel vectors.
        Ac[np.diag_indices(L)] += 1e-12 * max(float(np.max(np.diag(Ac))), 1e-300)
        self._factor = la.cho_factor(Ac, check_finite=False)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        return self.Q @ la.cho_solve(self._factor, self.Q.T @ v, check_finite=False)


def pcg(
    S: ScaledHessian,
    rhs: np.ndarray,
    *,
    rtol: float,
    maxiter: int,
    coarse: CoarseCorrection | None = None,
) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients on ``S y = rhs``; returns ``(y, iterations)``.

    Stops when ``‖rhs − S y‖ <= rtol ‖rhs‖`` (inexact Newton) or after ``maxiter`` steps. The
    preconditioner is ``I + coarse`` (Jacobi is the identity on the unit-diagonal ``S``).
    """
    y = np.zeros_like(rhs)
    res = rhs.copy()
    norm0 = float(np.linalg.norm(rhs))
    if norm0 == 0.0:
        return y, 0
    z = res + coarse(res) if coarse is not None else res.copy()
    p = z.copy()
    rz = float(res @ z)
    for it in range(1, maxiter + 1):
        sp_ = S.matvec(p)
        curv = float(p @ sp_)
        if not curv > 0.0:
            return y, it
        alpha = rz / curv
        y += alpha * p
        res -= alpha * sp_
        if float(np.linalg.norm(res)) <= rtol * norm0:
            return y, it
        z = res + coarse(res) if coarse is not None else res
        rz_new = float(res @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return y, maxiter
