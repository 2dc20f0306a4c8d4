"""Exact balancing along one coordinate: the 1-D convex problem ``min_s Σ_e φ_e(t_e + G_ek s)``.

Balancing a unit, a set of units with one λ, or a tie group is this 1-D problem (eqs. 5.9–5.12):
closed form for a single power with exponents ``+1`` and ``-c`` (eqs. 5.6, 6.6), a safeguarded
Newton in the log domain otherwise (self-loops ``1 − c``, sums of powers). Many columns are
solved at once, vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import NoFiniteOptimumError
from ..kernels import segment_logsumexp
from ..regularizers import Regularizer

__all__ = ["Columns", "optimal_shift"]

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Columns:
    """Edges of ``n`` columns of ``G`` (variables or unit sets), split by the sign of ``G_ek``.

    Side 0 holds ``G_ek > 0`` (incoming), side 1 ``G_ek < 0`` (outgoing, ``-c``); ``rows`` index
    the per-edge arrays, ``seg`` gives the column of each entry, ``indptr`` the segments.
    """

    rows: tuple
    g: tuple
    indptr: tuple
    seg: tuple
    n: int

    @classmethod
    def from_matrix(cls, G: sp.spmatrix) -> Columns:
        csc = sp.csc_matrix(G, copy=True)
        csc.sort_indices()
        n = csc.shape[1]
        col = np.repeat(np.arange(n), np.diff(csc.indptr))
        rows, g, indptr, seg = [], [], [], []
        for mask in (csc.data > 0, csc.data < 0):
            counts = np.bincount(col[mask], minlength=n)
            rows.append(csc.indices[mask].astype(np.int64))
            g.append(csc.data[mask])
            indptr.append(np.concatenate([[0], np.cumsum(counts)]))
            seg.append(col[mask])
        return cls(tuple(rows), tuple(g), tuple(indptr), tuple(seg), n)

    def log_sides(self, ell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log P, log N)`` per column for per-edge log-values ``ell``: ``log Σ |G_ek| e^{ell_e}``."""
        return tuple(segment_logsumexp(ell[r] + np.log(np.abs(g)), ip)
                     for r, g, ip in zip(self.rows, self.g, self.indptr))

    def simple(self, degree: np.ndarray) -> np.ndarray:
        """Columns whose entries are all ``+1`` or ``-degree``: eq. 6.6 applies as it stands."""
        (gp, gn), (sp_, sn) = self.g, self.seg
        odd = np.bincount(sp_, gp != 1.0, self.n) + np.bincount(sn, gn != -degree[sn], self.n)
        return odd == 0


def optimal_shift(reg: Regularizer, law: np.ndarray, t: np.ndarray, cols: Columns, max_iter: int = 100) -> np.ndarray:
    """Exact 1-D minimizers ``s_k = argmin_s Σ_e φ_e(t_e + G_ek s)``, all columns at once.

    Safeguarded Newton on ``h(s) = log P(s) − log N(s)`` (``P``/``N`` the two sides of the
    derivative), increasing in ``s`` since every ``φ_e`` is convex.
    ``h' = Σ_{+} G² φ''/P + Σ_{−} G² φ''/N``. When every entry is ``+1`` or ``−c`` and the cost is
    L_p, ``h`` is affine and the first step is the closed form (6.6); self-loops (``1 − c``) need a
    few more. A bracket of signs turns a step that leaves it into bisection. Raises
    ``NoFiniteOptimumError`` (``units`` = column indices) when one side is empty.

    Examples
    --------
    >>> import balgraph
    >>> cols = Columns.from_matrix(sp.csr_matrix(np.array([[1.0], [-1.0]])))
    >>> s = optimal_shift(balgraph.Lp(2), np.log([4.0, 1.0]), np.zeros(2), cols)
    >>> round(float(np.exp(s[0])), 12)   # λ* = (1/16)^(1/4), eq. 5.6
    0.5
    """
    n = cols.n
    s, lo, hi = np.zeros(n), np.full(n, -np.inf), np.full(n, np.inf)
    lg = [np.log(np.abs(g)) for g in cols.g]
    regs = [reg.restrict(r) for r in cols.rows]
    done = np.zeros(n, dtype=bool)
    for it in range(max_iter):
        side = []
        for k in (0, 1):
            r = cols.rows[k]
            _, l1, l2 = regs[k].edge_terms(law[r], t[r] + cols.g[k] * s[cols.seg[k]])
            side.append((segment_logsumexp(l1 + lg[k], cols.indptr[k]),
                         segment_logsumexp(l2 + 2.0 * lg[k], cols.indptr[k])))
        (lp, dp), (ln, dn) = side
        if it == 0:
            empty_p, empty_n = np.isneginf(lp), np.isneginf(ln)
            if np.any(empty_p ^ empty_n):
                raise NoFiniteOptimumError("one-sided column", units=np.flatnonzero(empty_p ^ empty_n))
            done |= empty_p & empty_n
            lp, ln = np.where(done, 0.0, lp), np.where(done, 0.0, ln)
        h = lp - ln
        done |= np.abs(h) <= 16 * _EPS * (1.0 + np.abs(lp) + np.abs(ln))
        if done.all():
            break
        lo = np.where(h < 0, np.maximum(lo, s), lo)
        hi = np.where(h > 0, np.minimum(hi, s), hi)
        with np.errstate(over="ignore", invalid="ignore"):
            hp = np.exp(dp - lp) + np.exp(dn - ln)
            new = s - h / hp
        outside = ~((new > lo) & (new < hi))
        with np.errstate(invalid="ignore"):
            new = np.where(outside & np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi), new)
        new = np.where(np.isfinite(new), new, s)
        stalled = np.abs(new - s) <= 4 * _EPS * (1.0 + np.abs(s))
        s = np.where(done, s, new)
        done |= stalled
    return s
