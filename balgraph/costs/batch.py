"""Stacks of equal-shape dense blocks, so that a deep net costs one batched mat-vec, not one per layer.

A :class:`Batch` holds ``nb`` blocks of one shape as ``Â`` of shape ``(nb, n_out, n_in)`` with
``|W|^p = e^{a_b} Â_b`` and ``max Â_b = 1``; no two of its blocks share an input group or an
output group, so scattering results back by fancy indexing never collides. Groups (the free
layers) get colours (no block joins two groups of one colour: Prop. 4.4's independent sets),
and a batch's blocks share the colours of their two sides, so a sweep over one colour uses
whole batches.
"""

from __future__ import annotations

import numpy as np

from ..backend import empty, to_host
from ..kernels import abs_power_into
from ..errors import RangeExceeded
from ..lazy import compute, is_lazy

__all__ = ["Batch", "make_batches", "power_", "products"]

# Largest log-range of |W|^p inside one stored block: e^575 ≈ 1e250 (float64), e^80 (float32).
_LOG_RANGE = {np.dtype(np.float64): 575.0, np.dtype(np.float32): 80.0}
# |w|^p within e^±COMFORT is stored as it is (no pass to normalize it)
_COMFORT = {np.dtype(np.float64): 300.0, np.dtype(np.float32): 40.0}


def power_(xp, a, p: float) -> None:
    """``a **= p`` in place (a plain product for ``p = 2``)."""
    if p == 2.0:
        xp.multiply(a, a, out=a)
    elif p != 1.0:
        xp.power(a, p, out=a)


class Batch:
    """``nb`` blocks of one shape between free groups, stacked (see the module docstring).

    ``items`` are ``(W, gi, go, name, in_idx, out_idx)``: the matrix, its input and output
    group, a name for messages, and the model coordinates of its columns and rows.
    ``deferred`` batches (Dask blocks, :mod:`.chunked`) return their products as expressions
    that :func:`products` evaluates together.
    """

    deferred = False

    def __init__(self, xp, items, p: float, c, storage, chunk: int):
        n_out, n_in = items[0][0].shape
        nb = len(items)
        A = empty(xp, (nb, n_out, n_in), storage)
        a = np.zeros(nb)
        zeros = False
        for k, (W, _, _, name, _, _) in enumerate(items):
            top, low, zero = abs_power_into(W, A[k], p) if A[k].size else (0.0, np.inf, False)
            zeros |= zero  # zeros play no role (Remark 5.5): the range is over nonzero entries
            top = top if top > 0.0 else 1.0
            if np.isfinite(low) and -p * np.log(low / top) > _LOG_RANGE[np.dtype(storage)]:
                raise RangeExceeded(f"{name}: |w|^p spans {-p * np.log10(low / top):.0f} decades, more"
                                    f" than a {np.dtype(storage).name} block holds")
            # |w|^p as it is when it fits comfortably, else normalized by max |w|^p = e^a
            if p * np.log(top) > _COMFORT[np.dtype(storage)] or (np.isfinite(low) and p * np.log(low) < -_COMFORT[np.dtype(storage)]):
                xp.abs(xp.asarray(W), out=A[k])
                A[k] /= top
                power_(xp, A[k], p)
                a[k] = p * np.log(top)
        self.A, self.chunk = A, chunk
        row_nz = col_nz = None
        if zeros:
            row_nz, col_nz = A.max(axis=2) > 0, A.max(axis=1) > 0
        self._index(xp, items, c, a, row_nz, col_nz)

    def _index(self, xp, items, c, a, row_nz, col_nz) -> None:
        """The blocks' groups, coordinates, ``log`` scale ``a`` and nonzero rows and columns
        (``None``: all nonzero), as arrays of ``xp``."""
        nb = len(items)
        n_out, n_in = (int(n) for n in items[0][0].shape)
        self.xp, self.shape, self.size = xp, (nb, n_out, n_in), nb * n_out * n_in
        self.a = xp.asarray(a)[:, None]
        self.gi_host = [it[1] for it in items]
        self.go_host = [it[2] for it in items]
        self.gi, self.go = xp.asarray(self.gi_host), xp.asarray(self.go_host)
        self.in_idx = xp.asarray(np.stack([it[4] for it in items]))
        self.out_idx = xp.asarray(np.stack([it[5] for it in items]))
        self.c_in = c[self.in_idx]
        self._logc_in = None
        self.row_nz = xp.ones((nb, n_out), dtype=bool) if row_nz is None else xp.asarray(row_nz)
        self.col_nz = xp.ones((nb, n_in), dtype=bool) if col_nz is None else xp.asarray(col_nz)

    def logc_in(self, logc):
        """``log c`` of the input units, ``(nb, n_in)`` (cached)."""
        if self._logc_in is None:
            self._logc_in = logc[self.in_idx]
        return self._logc_in

    def mv(self, V, exact: bool = True, sel: slice = slice(None)):
        """``Â_b @ V_b`` for every block ``b`` of ``sel`` (``V`` is ``(len(sel), n_in)``).

        Float32 storage: float64 sums by row chunks when ``exact``, float32 ones otherwise.
        """
        A, xp = self.A[sel], self.xp
        if A.dtype == V.dtype:
            if A.shape[0] == 1:  # one block (a layer-by-layer sweep): a plain mat-vec, 10x less overhead
                return (A[0] @ V[0])[None]
            return xp.matmul(A, V[:, :, None])[:, :, 0]
        if not exact:
            return xp.matmul(A, V.astype(A.dtype)[:, :, None])[:, :, 0].astype(np.float64)
        nb, n_out, n_in = A.shape
        out = xp.empty((nb, n_out))
        step = max(1, self.chunk // max(nb * n_in, 1))
        for r in range(0, n_out, step):
            out[:, r:r + step] = xp.matmul(A[:, r:r + step].astype(np.float64), V[:, :, None])[:, :, 0]
        return out

    def rmv(self, U, exact: bool = True, sel: slice = slice(None)):
        """``Â_bᵀ @ U_b`` for every block ``b`` of ``sel`` (``U``: ``(len(sel), n_out)``), as :meth:`mv`."""
        A, xp = self.A[sel], self.xp
        if A.dtype == U.dtype:
            if A.shape[0] == 1:
                return (U[0] @ A[0])[None]
            return xp.matmul(U[:, None, :], A)[:, 0, :]
        if not exact:
            return xp.matmul(U.astype(A.dtype)[:, None, :], A)[:, 0, :].astype(np.float64)
        nb, n_out, n_in = A.shape
        out = xp.zeros((nb, n_in))
        step = max(1, self.chunk // max(nb * n_in, 1))
        for r in range(0, n_out, step):
            out += xp.matmul(U[:, None, r:r + step], A[:, r:r + step].astype(np.float64))[:, 0, :]
        return out


    def dense(self) -> np.ndarray:
        """``Â`` as a float64 host array ``(nb, n_out, n_in)`` (for small problems)."""
        return to_host(self.A).astype(np.float64)


def products(jobs) -> list:
    """``Â_b V_b`` (or ``Â_bᵀ V_b``) for every ``(batch, transpose, V, exact, sel)`` of ``jobs``.

    The products of deferred batches (Dask blocks) are evaluated together, in one round trip.
    """
    out = [(b.rmv if t else b.mv)(V, exact, sel) for b, t, V, exact, sel in jobs]
    if any(job[0].deferred for job in jobs):  # a deferred batch gives one expression per block
        out = [np.stack(v) if isinstance(v, (list, tuple)) else v for v in compute(*out)]
    return out


def make_batches(xp, blocks, colour, p, c, storage, chunk, lazy_batches=None) -> list:
    """Stack free-to-free blocks by (shape, colours, kind), each group at most once per side.

    Groups of Dask blocks go to ``lazy_batches(groups)`` (the layered model passes
    :meth:`~balgraph.costs.chunked.DaskBatch.build_all`), all of them at once.
    """
    pending: list[tuple[tuple, list]] = []
    for item in blocks:
        W, gi, go = item[0], item[1], item[2]
        key = (tuple(W.shape), int(colour[gi]), int(colour[go]), is_lazy(W))
        for k, members in pending:
            if k == key and all(gi != m[1] and go != m[2] for m in members):
                members.append(item)
                break
        else:
            pending.append((key, [item]))
    lazy = [members for key, members in pending if key[3]]
    made = iter(lazy_batches(lazy) if lazy else ())
    return [next(made) if key[3] else Batch(xp, members, p, c, storage, chunk) for key, members in pending]
