"""The one-variable core of local balancing and unit-label helpers shared by local and measures.

Balancing a unit or a set with one λ is the 1-D convex problem ``min_t Σ_e φ_e(t·g_e)``
(eqs. 5.9–5.12): closed form for a single power with exponents ``+1`` and ``-c`` (eqs. 5.6, 6.6),
a safeguarded Newton in the log domain otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._logsum import segment_logsumexp
from .errors import NetworkError, NoFiniteOptimumError, name_some
from .problem import Problem
from .regularizers import Lp, PowerSum, Regularizer

_EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------- 1-D core
@dataclass(frozen=True)
class _Columns:
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
    def from_csc(cls, G: sp.spmatrix) -> _Columns:
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


def single_power(reg: Regularizer) -> float | None:
    """``p`` when every edge costs ``φ_e(t) = φ_e(0) e^{p t}`` (L_p, any coefficients), else None."""
    if isinstance(reg, PowerSum) and len(reg.terms) == 1:
        return next(iter(reg.terms))
    return None


def _restrict(reg: Regularizer, rows: np.ndarray) -> Regularizer:
    """The regularizer of the edges ``rows`` (per-edge coefficient arrays are sliced)."""
    if not isinstance(reg, PowerSum):
        return reg
    terms = {p: b[rows] if isinstance(b, np.ndarray) and b.ndim else b for p, b in reg.terms.items()}
    return Lp(reg.p, terms[reg.p]) if isinstance(reg, Lp) else PowerSum(terms)


def _optimal_shift(
    reg: Regularizer, law: np.ndarray, t: np.ndarray, cols: _Columns, max_iter: int = 100
) -> np.ndarray:
    """Exact 1-D minimizers ``s_k = argmin_s Σ_e φ_e(t_e + G_ek s)``, all columns at once.

    Safeguarded Newton on ``h(s) = log P(s) − log N(s)`` (``P``/``N`` the two sides of the
    derivative, :class:`~balgraph._logsum.VariableSides`), increasing in ``s`` since every
    ``φ_e`` is convex. ``h' = Σ_{+} G² φ''/P + Σ_{−} G² φ''/N``. When every entry is ``+1`` or
    ``−c`` and the cost is L_p, ``h`` is affine and the first step is the closed form (6.6);
    self-loops (``1 − c``) need a few more. A bracket of signs turns a step that leaves it into
    bisection. Raises ``NoFiniteOptimumError`` (``units`` = column indices) when one side is empty.
    """
    n = cols.n
    s, lo, hi = np.zeros(n), np.full(n, -np.inf), np.full(n, np.inf)
    lg = [np.log(np.abs(g)) for g in cols.g]
    regs = [_restrict(reg, r) for r in cols.rows]
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
        new = np.where(outside & np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi), new)
        new = np.where(np.isfinite(new), new, s)
        stalled = np.abs(new - s) <= 4 * _EPS * (1.0 + np.abs(s))
        s = np.where(done, s, new)
        done |= stalled
    return s


# ---------------------------------------------------------------------------- helpers
def _weighted(problem: Problem, weight) -> Problem:
    return problem if weight is None else problem.with_weights(weight)


def _unit_indices(problem: Problem, units) -> np.ndarray:
    """Node indices of ``units``: one label, or an iterable of labels (a label wins)."""
    index = problem.node_index
    try:
        if units in index:
            return np.array([index[units]], dtype=np.int64)
    except TypeError:
        pass
    if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
        raise NetworkError(f"unknown unit {units!r}: it is not a node of the network")
    labels = list(units.tolist() if isinstance(units, np.ndarray) else units)
    missing = [x for x in labels if not _in(x, index)]
    if missing:
        raise NetworkError(f"unknown unit(s) {name_some(missing)}: not nodes of the network")
    idx = np.array([index[x] for x in labels], dtype=np.int64)
    if np.unique(idx).size != idx.size:
        raise NetworkError(f"units {name_some(labels)} list a unit twice: give each unit once")
    return idx


def _in(label, index) -> bool:
    try:
        return label in index
    except TypeError:
        return False


def _require_free(problem: Problem, idx: np.ndarray, action: str) -> None:
    bad = idx[problem.fixed[idx]]
    if bad.size:
        what = [f"{problem.nodes[k]!r} ({problem.roles[k]})" for k in bad]
        raise NetworkError(
            f"unit(s) {', '.join(what[:10])} have scale 1: {action} them would change the network"
            " function; only hidden units with a homogeneous activation (relu, linear, bipu, ...)"
            " can be scaled"
        )


