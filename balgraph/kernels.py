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
from .backend import to_host

__all__ = ["logsumexp", "lse", "segment_logsumexp", "scatter_logsumexp", "relative_imbalance", "log_abs",
           "worst_of_gap", "segment_log_range", "log_range", "power_sums", "power_products", "abs_extremes",
           "abs_power_into", "nonzero_rows_cols", "CHUNK"]


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
    # One shift for all when every value fits within e^±600 of the largest: sums come back
    # exact unless one target's terms are all far below the others (then shift per target).
    finite = xp.isfinite(values)
    if values.size and bool(finite.any()):
        top_all = float(values[finite].max())
        sums = xp.bincount(target, weights=xp.exp(values - top_all), minlength=n)
        hit = xp.bincount(target, weights=finite.astype(np.float64), minlength=n) > 0
        if not bool(xp.any(hit & (sums < 1e-280))):
            with np.errstate(divide="ignore"):
                return xp.where(hit, top_all + xp.log(sums), -np.inf)
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


def segment_log_range(log_abs, sign, seg, n: int, kind: str = "absmax") -> np.ndarray:
    """Per segment ``k``, the log of a channel's size for cross-layer equalization, from the
    values ``v_e = sign_e · exp(log_abs_e)`` with ``seg[e] = k``: ``log max |v|``
    (``kind="absmax"``: AIMET, Brevitas) or ``log(max v − min v)`` (``"minmax"``: torch.ao's
    range, where a zero entry counts as the value 0). ``-inf`` for an empty segment or a zero
    range. Exact in the log domain.

    Examples
    --------
    >>> v = np.array([3.0, -1.0, 2.0, 5.0, -2.0, 0.0])
    >>> seg = np.array([0, 0, 1, 1, 2, 2])
    >>> with np.errstate(divide="ignore"):
    ...     out = segment_log_range(np.log(np.abs(v)), np.sign(v), seg, 3, "minmax")
    >>> np.exp(out).round(12).tolist()   # 3 − (−1), 5 − 2, 0 − (−2)
    [4.0, 3.0, 2.0]
    """
    def extreme(ufunc, mask, fill):
        out = np.full(n, fill)
        ufunc.at(out, seg[mask], log_abs[mask])
        return out

    if kind == "absmax":
        return extreme(np.maximum, np.ones(seg.shape, dtype=bool), -np.inf)
    pos, neg = sign >= 0, sign <= 0  # a zero, log_abs = -inf, is the lower end of either sign
    return log_range(extreme(np.maximum, pos, -np.inf), extreme(np.minimum, pos, np.inf),
                     extreme(np.maximum, neg, -np.inf), extreme(np.minimum, neg, np.inf))


def log_range(hi_p, lo_p, hi_n, lo_n) -> np.ndarray:
    """``log(max v − min v)`` of segments from the log-extremes of their positive values
    (``hi_p``, ``lo_p``) and of the magnitudes of their negative ones (``hi_n``, ``lo_n``);
    ``-inf`` (empty) and ``+inf`` (``lo``) mark a sign that does not occur."""
    has_p, has_n = np.isfinite(hi_p), np.isfinite(hi_n)
    with np.errstate(divide="ignore", invalid="ignore"):
        both = np.logaddexp(hi_p, hi_n)
        only_p = hi_p + np.log(-np.expm1(lo_p - hi_p))
        only_n = hi_n + np.log(-np.expm1(lo_n - hi_n))
    return np.where(has_p & has_n, both, np.where(has_p, only_p, np.where(has_n, only_n, -np.inf)))


def worst_of_gap(gap: float) -> float:
    """The largest relative imbalance ``tanh(gap/2)`` from the largest log-imbalance ``gap``."""
    return float(np.tanh(0.5 * gap))


# Entries of one reusable chunk buffer (512 kB): it stays in cache between the elementwise
# steps and the mat-vec of a chunk (measured 9x faster than 8 MB chunks on a 4096² block), and
# touching fresh memory would cost more than a pass over it (page faults).
CHUNK = 1 << 16


def _chunks(W, chunk: int = CHUNK):
    n_out, n_in = int(W.shape[0]), int(W.shape[1])
    step = max(1, chunk // max(n_in, 1))
    for r in range(0, n_out, step):
        yield slice(r, min(n_out, r + step))


def _extremes(xp, a) -> tuple[float, float, bool]:
    """``(max, min nonzero, any zero)`` of a non-negative chunk ``a`` (not empty)."""
    top, least = float(a.max()), float(a.min())
    if least > 0.0:
        return top, least, False
    nz = a > 0
    return top, float(a.min(where=nz, initial=np.inf) if xp is np else xp.where(nz, a, np.inf).min()), True


def abs_extremes(W, chunk: int = CHUNK) -> tuple[float, float]:
    """``(max |w|, min nonzero |w|)`` of a matrix (``(0, inf)`` if all zero), by row chunks.

    Examples
    --------
    >>> abs_extremes(np.array([[0.0, -3.0], [0.5, 2.0]]))
    (3.0, 0.5)
    """
    xp = _module(W)
    top, low = 0.0, np.inf
    for rows in _chunks(W, chunk):
        a = xp.abs(xp.asarray(W[rows]))
        if a.size:
            hi, lo, _ = _extremes(xp, a)
            top, low = max(top, hi), min(low, lo)
    return top, low


def abs_power_into(W, out, p: float, chunk: int = CHUNK) -> tuple[float, float, bool]:
    """``out[...] = |W|^p`` and ``(max |w|, min nonzero |w|, any zero)``, in one pass by row
    chunks on NumPy (the extremes read each chunk while it is in cache); whole-array on CuPy.

    Examples
    --------
    >>> out = np.empty((2, 2))
    >>> abs_power_into(np.array([[0.0, -3.0], [0.5, 2.0]]), out, 2.0), out.tolist()
    ((3.0, 0.5, True), [[0.0, 9.0], [0.25, 4.0]])
    """
    xp = _module(W)
    top, low, zero = 0.0, np.inf, False
    for rows in (_chunks(W, chunk) if xp is np else [slice(None)]):
        a = out[rows]
        xp.abs(xp.asarray(W[rows]), out=a)
        if not a.size:
            continue
        hi, lo, has_zero = _extremes(xp, a)
        top, low, zero = max(top, hi), min(low, lo), zero or has_zero
        with np.errstate(over="ignore", under="ignore"):  # out of comfort: the caller redoes it scaled
            if p == 2.0:
                xp.multiply(a, a, out=a)
            elif p != 1.0:
                xp.power(a, p, out=a)
    return top, low, zero


def power_products(W, p: float, scale: float, right=None, left=None, chunk: int = CHUNK):
    """``(|W|/scale)^p @ right`` and ``left @ (|W|/scale)^p`` (either may be None), by row chunks
    of one reused buffer: no block-sized temporary. ``right`` is ``(n_in, k)``, ``left`` ``(k, n_out)``.

    Examples
    --------
    >>> R, L = power_products(np.array([[1.0, -2.0]]), 2.0, 1.0, np.ones((2, 1)), np.ones((1, 1)))
    >>> R.ravel().tolist(), L.ravel().tolist()
    ([5.0], [1.0, 4.0])
    """
    xp = _module(W)
    n_out, n_in = int(W.shape[0]), int(W.shape[1])
    R = None if right is None else xp.empty((n_out, right.shape[1]))
    Lacc = None if left is None else xp.zeros((left.shape[0], n_in))
    buf = None
    for rows in _chunks(W, chunk):
        block = xp.asarray(W[rows])
        if buf is None or buf.shape != block.shape:
            buf = xp.empty(block.shape)
        xp.abs(block, out=buf)
        if scale != 1.0:
            buf /= scale
        if p == 2.0:
            xp.multiply(buf, buf, out=buf)
        elif p != 1.0:
            xp.power(buf, p, out=buf)
        if R is not None:
            R[rows] = buf @ right
        if Lacc is not None:
            Lacc += left[:, rows] @ buf
    return R, Lacc


def power_sums(W, p: float, axis: int, chunk: int = CHUNK):
    """``log Σ |W|^p`` along ``axis`` with a per-row (per-column) shift: exact in the log domain,
    by row chunks (per-column shifts take one more read of the matrix).

    Examples
    --------
    >>> np.exp(power_sums(np.array([[3.0, 4.0]]), 2.0, 1)).round(12).tolist()
    [25.0]
    """
    xp = _module(W)
    n_out, n_in = int(W.shape[0]), int(W.shape[1])
    if axis == 0:
        m = xp.zeros(n_in)
        for rows in _chunks(W, chunk):
            m = xp.maximum(m, xp.abs(xp.asarray(W[rows])).max(axis=0)) if rows.stop > rows.start else m
        m = xp.where(m > 0, m, 1.0)
        acc = xp.zeros(n_in)
        for rows in _chunks(W, chunk):
            a = xp.abs(xp.asarray(W[rows])) / m
            acc += (a * a if p == 2.0 else a ** p).sum(axis=0)
        with np.errstate(divide="ignore"):
            return xp.log(acc) + p * xp.log(m)
    out = xp.empty(n_out)
    for rows in _chunks(W, chunk):
        a = xp.abs(xp.asarray(W[rows])).astype(np.float64, copy=False)
        m = a.max(axis=1, keepdims=True) if a.shape[1] else xp.ones((a.shape[0], 1))
        m = xp.where(m > 0, m, 1.0)
        a = a / m
        with np.errstate(divide="ignore"):
            out[rows] = xp.log((a * a if p == 2.0 else a ** p).sum(axis=1)) + p * xp.log(m.ravel())
    return out


def nonzero_rows_cols(W, chunk: int = CHUNK):
    """Which rows and which columns of a matrix hold a nonzero entry (host bool arrays)."""
    xp = _module(W)
    rows_nz = np.zeros(int(W.shape[0]), dtype=bool)
    cols_nz = xp.zeros(int(W.shape[1]), dtype=bool)
    for rows in _chunks(W, chunk):
        nz = xp.asarray(W[rows]) != 0
        rows_nz[rows] = to_host(nz.any(axis=1))
        cols_nz |= nz.any(axis=0)
    return rows_nz, to_host(cols_nz)
