"""Log-domain reductions, written once: log-sum-exp, segmented and scattered, and the imbalance.

Costs are kept as logs so that weights spanning 1e-300..1e300 neither overflow nor underflow
(docs/design.md §2). Every reduction shifts by the maximum of what it sums (per segment or per
target), so a sum of tiny terms is as exact as a sum of large ones. :func:`lse` and
:func:`relative_imbalance` take arrays of any module (NumPy or CuPy); the segmented and
scattered forms are NumPy-only (they use ``ufunc.reduceat`` and ``ufunc.at``).
"""

from __future__ import annotations

import numpy as np

from .backend import module_of as _module

__all__ = ["logsumexp", "lse", "segment_logsumexp", "scatter_logsumexp", "relative_imbalance", "log_abs",
           "worst_of_gap", "power_sums"]


def logsumexp(x) -> float:
    """``log Σ exp(x)`` as a host float, ``-inf`` for an empty or all ``-inf`` input.

    Examples
    --------
    >>> round(logsumexp(np.log([1.0, 2.0, 3.0])), 12), round(float(np.log(6.0)), 12)
    (1.791759469228, 1.791759469228)
    """
    x = np.asarray(x) if isinstance(x, (list, tuple)) else x
    if x.size == 0:
        return -np.inf
    return float(lse(x))


def lse(v, axis=None):
    """``log Σ e^v`` (along ``axis``) on ``v``'s device; ``-inf`` where every entry is ``-inf``."""
    xp = _module(v)
    top = v.max(axis=axis, keepdims=True)
    safe = xp.where(xp.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out = xp.where(xp.isfinite(top), safe + xp.log(xp.exp(v - safe).sum(axis=axis, keepdims=True)), top)
    return out.reshape(()) if axis is None else out.squeeze(axis)


def segment_logsumexp(values, indptr) -> np.ndarray:
    """``log Σ exp`` of ``values[indptr[k]:indptr[k+1]]`` for every segment ``k``.

    Empty segments and segments of ``-inf`` give ``-inf``. Each segment is shifted by its own
    maximum, so a segment of tiny terms (1e-300) is as exact as one of large terms. CuPy arrays
    go segment by segment (for a few segments: the layers of a network).

    Examples
    --------
    >>> segment_logsumexp(np.log([1.0, 3.0, 5.0]), np.array([0, 2, 2, 3])).round(6).tolist()
    [1.386294, -inf, 1.609438]
    """
    xp = _module(values)
    if xp is not np:
        bounds = np.asarray(indptr).tolist()
        return xp.stack([lse(values[a:b]) if b > a else xp.asarray(-np.inf) for a, b in zip(bounds[:-1], bounds[1:])])
    n = indptr.size - 1
    out = np.full(n, -np.inf)
    if values.size == 0 or n == 0:
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


def scatter_logsumexp(values, target, n: int):
    """``out[k] = log Σ_{target[e] = k} exp(values[e])`` without sorting (two passes).

    Each target is shifted by its own maximum (``np.maximum.at``; ``cupyx.scatter_max`` on a
    GPU), then the shifted terms are summed. ``target`` may hold ``-1`` for entries to leave out.

    Examples
    --------
    >>> scatter_logsumexp(np.log([1.0, 3.0, 5.0]), np.array([0, 0, 2]), 3).round(6).tolist()
    [1.386294, -inf, 1.609438]
    """
    xp = _module(values)
    keep = target >= 0
    if not bool(keep.all()):
        values, target = values[keep], target[keep]
    top = xp.full(n, -np.inf)
    if xp is np:
        np.maximum.at(top, target, values)
    else:
        import cupyx

        cupyx.scatter_max(top, target, values)
    safe = xp.where(xp.isfinite(top), top, 0.0)
    sums = xp.bincount(target, weights=xp.exp(values - safe[target]), minlength=n)
    with np.errstate(divide="ignore"):
        return xp.where(xp.isfinite(top), safe + xp.log(sums), top)


def worst_of_gap(gap: float) -> float:
    """The largest relative imbalance ``tanh(gap/2)`` from the largest log-imbalance ``gap``."""
    return float(np.tanh(0.5 * gap))


def power_sums(W, p: float, axis: int):
    """``log Σ |W|^p`` along ``axis`` with a per-row (per-column) shift: exact in the log domain.

    Examples
    --------
    >>> np.exp(power_sums(np.array([[3.0, 4.0]]), 2.0, 1)).round(12).tolist()
    [25.0]
    """
    xp = _module(W)
    A = xp.abs(xp.asarray(W)).astype(np.float64)
    m = A.max(axis=axis, keepdims=True)
    m = xp.where(m > 0, m, 1.0)
    A /= m
    if p != 1.0:
        A **= p
    with np.errstate(divide="ignore"):
        return xp.log(A.sum(axis=axis)) + p * xp.log(m.ravel())


def relative_imbalance(log_p, log_n):
    """``(P − N)/(P + N) = tanh((log P − log N)/2)`` from the logs; 0 where both sides are empty.

    For a unit with the L_p cost ``P`` is its incoming cost and ``N`` ``c`` times its outgoing
    cost (eqs. 5.8, 6.7): 0 means balanced, ±1 that one side is empty.

    Examples
    --------
    >>> relative_imbalance(np.log([3.0, 1.0]), np.log([1.0, 1.0])).tolist()
    [0.5, 0.0]
    """
    xp = _module(log_p)
    both_empty = xp.isneginf(log_p) & xp.isneginf(log_n)
    with np.errstate(invalid="ignore"):
        r = xp.tanh(0.5 * (log_p - log_n))
    return xp.where(both_empty, 0.0, r)


def log_abs(w):
    """``log |w|`` with ``-inf`` for zeros, on ``w``'s device."""
    xp = _module(w)
    with np.errstate(divide="ignore"):
        return xp.log(xp.abs(w))
