"""Log-domain reductions over edges, vectorized (no Python loop per edge or per unit)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["logsumexp", "segment_logsumexp", "VariableSides"]


def logsumexp(x: np.ndarray) -> float:
    """``log Σ exp(x)``, ``-inf`` for an empty or all ``-inf`` input."""
    if x.size == 0:
        return -np.inf
    top = np.max(x)
    if not np.isfinite(top):
        return float(top)
    return float(top + np.log(np.sum(np.exp(x - top))))


def segment_logsumexp(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """``log Σ exp`` of ``values[indptr[k]:indptr[k+1]]`` for every segment ``k``.

    Empty segments and segments of ``-inf`` give ``-inf``. Each segment is shifted by its own
    maximum, so a segment of tiny terms (1e-300) is as exact as one of large terms.
    """
    n = indptr.size - 1
    out = np.full(n, -np.inf)
    if values.size == 0:
        return out
    nonempty = indptr[1:] > indptr[:-1]
    starts = indptr[:-1][nonempty]
    top = np.maximum.reduceat(values, starts)
    finite_top = np.where(np.isfinite(top), top, 0.0)
    lengths = (indptr[1:] - indptr[:-1])[nonempty]
    shifted = np.exp(values[indptr[0]:indptr[-1]] - np.repeat(finite_top, lengths))
    sums = np.add.reduceat(shifted, starts - indptr[0])
    with np.errstate(divide="ignore"):
        out[nonempty] = np.where(np.isfinite(top), finite_top + np.log(sums), top)
    return out


class VariableSides:
    """Per-variable sums of ``G_ek · x_e`` split by the sign of ``G_ek``, in the log domain.

    For a variable ``k`` and per-edge log-values ``ℓ_e`` (for example ``log φ'_e``), returns
    ``log P_k = log Σ_{G_ek>0} G_ek e^{ℓ_e}`` and ``log N_k = log Σ_{G_ek<0} |G_ek| e^{ℓ_e}``.
    For an untied BiLU unit ``P`` is its incoming cost and ``N`` its outgoing cost; for BiPU,
    ``N = c · out`` (eq. 6.7). The gradient of the cost is ``P − N`` and the relative imbalance
    ``(P − N) / (P + N) = tanh((log P − log N) / 2)``.
    """

    def __init__(self, G: sp.spmatrix):
        csc = sp.csc_matrix(G)
        csc.sort_indices()
        n = csc.shape[1]
        col = np.repeat(np.arange(n), np.diff(csc.indptr))
        self.n_vars = n
        self._parts = []
        for mask in (csc.data > 0, csc.data < 0):
            counts = np.bincount(col[mask], minlength=n)
            indptr = np.concatenate([[0], np.cumsum(counts)])
            self._parts.append((csc.indices[mask], np.log(np.abs(csc.data[mask])), indptr))

    def log_sides(self, ell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(log P, log N)`` for per-edge log-values ``ell``."""
        return tuple(
            segment_logsumexp(ell[rows] + logc, indptr) for rows, logc, indptr in self._parts
        )

    @staticmethod
    def relative_imbalance(log_p: np.ndarray, log_n: np.ndarray) -> np.ndarray:
        """``(P − N)/(P + N)`` from the logs; 0 where both sides are empty."""
        both_empty = np.isneginf(log_p) & np.isneginf(log_n)
        with np.errstate(invalid="ignore"):
            r = np.tanh(0.5 * (log_p - log_n))
        return np.where(both_empty, 0.0, r)
