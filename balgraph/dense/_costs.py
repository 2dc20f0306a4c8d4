"""Scaled layer costs as dense blocks: in/out sums and Hessian products (sweeps: :mod:`._sweep`).

Work in ``x = p·u`` (``u = log Λ``). A block maps free units ``I`` (or fixed ones) to ``O``; its
costs ``φ_kj = |w_kj|^p e^{x_k − c_j x_j}`` form the matrix ``diag(e^{x_O}) A diag(e^{−c x_I})``
with ``A = |W|^p`` computed once, so every sum is a BLAS mat-vec and no per-edge ``exp`` is
evaluated per iteration (design.md §2). With ``in_k`` and ``out_k`` the incoming and outgoing
costs of unit ``k``, the gradient of ``R(x)`` is ``in − c·out`` (eqs. 5.8, 6.7) and its Hessian
is ``diag(in + c²·out) − K`` with the couplings ``K`` of the blocks.

Numerics: ``A`` is stored as ``e^{a} Â`` with ``max Â = 1``; scaling vectors are shifted by their
maximum (``exp(x − max x) <= 1``) and every sum comes back to the log domain at once, so
``in``, ``out`` and ``R`` may span 1e-300..1e300. A block whose entries span more than
``e^575`` (about 1e250), or a mat-vec result that a nonzero row lets underflow, raises
:class:`RangeExceeded`: the caller falls back on the general log-domain solver.
Blocks with a fixed side (first layer, last layer, biases) reduce to row or column sums of
``A`` computed once (with per-row shifts, so they are exact in the log domain).
"""

from __future__ import annotations

import itertools

import numpy as np

from ._batch import RangeExceeded, colour_groups, make_batches, power_
from ._xp import spd_inverse_factor, to_host

__all__ = ["LayeredCosts", "Point", "RangeExceeded"]

# A mat-vec result below this, on a row with nonzero entries, has lost precision to underflow.
_TINY = 1e-280
# Entries per float64 temporary when float32 storage is summed exactly (128 MB on the CPU,
# 1 GB on a GPU, where fewer and larger launches pay).
_CHUNK = {"numpy": 1 << 24, "cupy": 1 << 27}


def _log(xp, a):
    with np.errstate(divide="ignore"):
        return xp.log(a)


def _log_sums(xp, W, p: float, axis: int):
    """``log Σ |W|^p`` along ``axis`` with a per-row (per-column) shift: exact in the log domain."""
    A = xp.abs(W).astype(np.float64)
    m = A.max(axis=axis, keepdims=True)
    m = xp.where(m > 0, m, 1.0)
    A /= m
    power_(xp, A, p)
    return _log(xp, A.sum(axis=axis)) + p * _log(xp, m.ravel())


class Point:
    """Log-domain state at ``x``: ``log in``, ``log N = log(c·out)``, ``log R`` and their checks."""

    def __init__(self, costs: LayeredCosts, x):
        xp = costs.xp
        self.x = x
        self.log_in, self.log_out, log_fixed_out, self.log_cross = costs.sides(x)
        self.log_n = costs.logc + self.log_out
        diff = self.log_in - self.log_n
        gap = xp.abs(xp.where(xp.isfinite(diff), diff, 0.0))
        summary = xp.stack([gap.max(), _lse(xp, xp.concatenate([self.log_in, log_fixed_out]))])
        self.gap, self.log_cost = (float(v) for v in costs.check(summary))
        self.worst = float(np.tanh(0.5 * self.gap))


class LayeredCosts:
    """The cost ``R(x)`` of a layered net held as dense blocks, on array module ``xp``.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    p : float
        The exponent of the L_p cost.
    sizes : sequence of int
        Units per free group (a hidden layer); variables are numbered group after group.
    degree : array
        BiPU degree ``c`` of every variable (1 for BiLU).
    blocks : sequence of (W, gi, go, name)
        ``W`` maps group ``gi`` into group ``go`` (``None`` for a fixed side: inputs, outputs,
        a bias unit as a one-column ``W``). Groups must share no block with themselves.
    storage : dtype
        Storage of ``|W|^p`` (float64; float32 halves the memory, sums stay float64).

    Examples
    --------
    >>> import numpy as np
    >>> W1, W2 = np.array([[4.0]]), np.array([[1.0]])
    >>> costs = LayeredCosts(np, 2.0, [1], np.ones(1), [(W1, None, 0, "1"), (W2, 0, None, "2")])
    >>> log_in, log_out = costs.sides(np.zeros(1))[:2]   # in = 4², out = 1²
    >>> round(float(np.exp(log_in[0])), 12), round(float(np.exp(log_out[0])), 12)
    (16.0, 1.0)
    """

    def __init__(self, xp, p, sizes, degree, blocks, storage=np.float64, chunk: int | None = None):
        self.xp, self.p = xp, float(p)
        chunk = chunk or _CHUNK.get(xp.__name__, _CHUNK["numpy"])
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.sizes, self.starts = np.diff(offsets), offsets[:-1]
        self.slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(offsets)]
        self.n, self.n_groups = int(offsets[-1]), len(self.slices)
        self.group = xp.asarray(np.repeat(np.arange(self.n_groups), self.sizes))
        self.c = xp.asarray(degree, dtype=np.float64)
        self.logc = xp.log(self.c)
        self.fin = xp.full(self.n, -np.inf)
        self.fout = xp.full(self.n, -np.inf)
        # fixed-to-fixed blocks (a bias into the outputs): a constant part of R, log Σ |w|^p
        self.log_fixed = -np.inf
        self.flags, self.work, self.total = [], 0, 0
        inner = []
        for W, gi, go, name in blocks:
            self.total += int(W.size)
            if go is not None and gi is None:
                s = self.slices[go]
                self.fin[s] = xp.logaddexp(self.fin[s], _log_sums(xp, W, self.p, 1))
            elif gi is not None and go is None:
                s = self.slices[gi]
                self.fout[s] = xp.logaddexp(self.fout[s], _log_sums(xp, W, self.p, 0))
            elif gi is not None:
                inner.append((W, gi, go, name))
            elif W.size:
                part = float(to_host(_lse(xp, _log_sums(xp, W, self.p, 1))))
                self.log_fixed = float(np.logaddexp(self.log_fixed, part))
        colour = colour_groups(self.n_groups, [(gi, go) for _, gi, go, _ in inner])
        # batches never straddle colours, so a sweep over every other layer uses whole batches
        self.batches = make_batches(xp, inner, colour, self.p, offsets, self.c, storage, chunk)

    # ------------------------------------------------------------------ sums
    def in_part(self, b, x, sel: slice = slice(None)):
        """``log Σ_j |w_kj|^p e^{−c_j x_j}`` into the output units of batch ``b``'s blocks ``sel``
        (without their own factor ``e^{x_k}``), ``(len(sel), n_out)``: one pass over those blocks."""
        xp = self.xp
        e_in = -b.c_in[sel] * x[b.in_idx[sel]]
        tau = e_in.max(axis=1, keepdims=True)
        y = b.mv(xp.exp(e_in - tau), sel=sel)
        self.work += y.size * b.A.shape[2]
        self.flags.append(xp.any((y < _TINY) & b.row_nz[sel]))
        return b.a[sel] + tau + _log(xp, y)

    def out_part(self, b, x, sel: slice = slice(None)):
        """``log Σ_k |w_kj|^p e^{x_k}`` out of the input units of batch ``b``'s blocks ``sel``
        (without their own factor ``e^{−c_j x_j}``), ``(len(sel), n_in)``."""
        xp = self.xp
        xo = x[b.out_idx[sel]]
        sigma = xo.max(axis=1, keepdims=True)
        z = b.rmv(xp.exp(xo - sigma), sel=sel)
        self.work += z.size * b.A.shape[1]
        self.flags.append(xp.any((z < _TINY) & b.col_nz[sel]))
        return b.a[sel] + sigma + _log(xp, z)

    def sides(self, x):
        """``(log in, log out, log out-to-fixed, per-batch log Σ c_j φ_kj)`` at ``x``: 2 passes."""
        xp = self.xp
        log_in = self.fin + x
        log_fixed_out = self.fout - self.c * x
        log_out = log_fixed_out.copy()
        cross = []
        for b in self.batches:
            log_in[b.out_idx] = xp.logaddexp(log_in[b.out_idx], self.in_part(b, x) + x[b.out_idx])
            part = self.out_part(b, x) - b.c_in * x[b.in_idx]
            log_out[b.in_idx] = xp.logaddexp(log_out[b.in_idx], part)
            cross.append(_lse(xp, b.logc_in(self.logc) + part, axis=1))
        return log_in, log_out, log_fixed_out, cross

    def group_lse(self, v):
        """``log Σ_{k∈g} e^{v_k}`` for every group ``g`` (each shifted by its own maximum)."""
        xp = self.xp
        if xp is not np:
            return xp.stack([_lse(xp, v[s]) for s in self.slices])
        top = np.maximum.reduceat(v, self.starts)
        safe = np.where(np.isfinite(top), top, 0.0)
        sums = np.add.reduceat(np.exp(v - np.repeat(safe, self.sizes)), self.starts)
        with np.errstate(divide="ignore"):
            return np.where(np.isfinite(top), safe + np.log(sums), top)

    def check(self, summary):
        """Host copy of ``summary`` (one round trip), after raising :class:`RangeExceeded` if a
        mat-vec underflowed on a nonzero row or a summary value is NaN or ``+inf``."""
        xp = self.xp
        flags, self.flags = self.flags, []
        parts = [xp.asarray(summary, dtype=np.float64).ravel()]
        if flags:
            parts.insert(0, xp.stack(flags).astype(np.float64))
        host = to_host(xp.concatenate(parts))
        k = len(flags)
        if np.any(host[:k]) or np.any(np.isnan(host[k:]) | (host[k:] == np.inf)):
            raise RangeExceeded("a layer's scaled costs under- or overflowed float64 mat-vecs")
        return host[k:]

    # ------------------------------------------------------------------ Hessian
    def hessian(self, pt: Point, coarse: bool = True) -> ScaledHessian:
        return ScaledHessian(self, pt, coarse)


class ScaledHessian:
    """``M = D^{-1/2} H D^{-1/2}`` at a point, ``D = in + c²·out``, with a coarse correction.

    ``M y = y − D^{-1/2} K D^{-1/2} y``; a block's couplings are ``e^{x_k} φ̂ e^{−c_j x_j}``, applied
    as ``u_O ∘ Â (v_I ∘ y_I)`` and ``v_I ∘ Âᵀ (u_O ∘ y_O)`` with shifted vectors (2 passes).
    The coarse space holds one scale per group (Galerkin ``PᵀHP``, tridiagonal for a chain),
    diagonally scaled so that its entries stay within [−1, 1].
    """

    def __init__(self, costs: LayeredCosts, pt: Point, coarse: bool):
        xp = costs.xp
        self.costs = costs
        log_d = xp.logaddexp(pt.log_in, 2.0 * costs.logc + pt.log_out)
        self.half = 0.5 * log_d
        self.parts = []
        for b in costs.batches:
            alpha = pt.x[b.out_idx] - self.half[b.out_idx]
            beta = -b.c_in * pt.x[b.in_idx] - self.half[b.in_idx]
            ma, mb = alpha.max(axis=1, keepdims=True), beta.max(axis=1, keepdims=True)
            scale = xp.exp(b.a + ma + mb)
            costs.flags.append(~xp.all(xp.isfinite(scale)))
            ea = xp.exp(alpha - ma)
            ebc = xp.exp(beta - mb) * b.c_in
            self.parts.append((b, ea, ebc, scale * ea, scale * ebc))
        self.factor = None
        if coarse and costs.n_groups > 1:
            half_delta = 0.5 * costs.group_lse(log_d)
            self.w = xp.exp(self.half - half_delta[costs.group])
            E = xp.eye(costs.n_groups)
            for b, cross in zip(costs.batches, pt.log_cross):
                v = xp.exp(cross - half_delta[b.gi] - half_delta[b.go])
                E[b.gi, b.go] -= v
                E[b.go, b.gi] -= v
            self.factor = spd_inverse_factor(xp, E)

    def __call__(self, y):
        out = y.copy()
        for b, ea, ebc, uo, ui in self.parts:
            out[b.out_idx] -= uo * b.mv(ebc * y[b.in_idx], exact=False)
            out[b.in_idx] -= ui * b.rmv(ea * y[b.out_idx], exact=False)
            self.costs.work += 2 * b.size
        return out

    def precondition(self, r):
        """Jacobi (the identity here) plus the additive coarse correction ``Z E⁻¹ Zᵀ r``."""
        if self.factor is None:
            return r
        xp, F = self.costs.xp, self.factor
        zeta = xp.bincount(self.costs.group, weights=self.w * r, minlength=self.costs.n_groups)
        return r + self.w * (F.T @ (F @ zeta))[self.costs.group]


def _lse(xp, v, axis=None):
    """``log Σ e^v`` (along ``axis``) on the device; ``-inf`` where every entry is ``-inf``."""
    top = v.max(axis=axis, keepdims=True)
    safe = xp.where(xp.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out = xp.where(xp.isfinite(top), safe + xp.log(xp.exp(v - safe).sum(axis=axis, keepdims=True)), top)
    return out.reshape(()) if axis is None else out.squeeze(axis)
