"""Dask layer blocks in the layered cost model: mat-vecs where the chunks live.

A :class:`DaskBatch` is a :class:`~balgraph.costs.batch.Batch` whose blocks are Dask arrays
(on the workers of a cluster, or read chunk-wise from files). It keeps the model's contract
(``|W|^p = e^{a_b} Â_b``, ``max Â_b = 1``) with ``Â_b = (|W_b| / top_b)^p`` as one task per
chunk of the caller's matrix, and its mat-vecs ``Â_b v`` and ``Â_bᵀ u`` are task graphs over
those chunks (:class:`~balgraph.lazy.ChunkGrid`: one task per chunk, with its piece of the
vector): :func:`~balgraph.costs.batch.products` evaluates those of a cost evaluation, a Hessian
product or a sweep phase together, in one ``dask.compute``. The driver sends the small vectors
and gets back one vector per block side; the weights never leave the workers.

``Â`` is either recomputed from the chunks on each pass (``persist=False``: memory is that of
the input; a file-backed chain is re-read) or computed once and persisted on the workers in the
storage dtype (``persist=True``: faster passes, the memory of ``|W|^p`` on the cluster).

Setting up costs one round trip for every block (largest and smallest nonzero ``|w|``, rows
and columns with a nonzero entry), and the range check of the layered model applies.
"""

from __future__ import annotations

import numpy as np

from ..errors import RangeExceeded
from ..lazy import ChunkGrid, compute, lazy_module
from .batch import _LOG_RANGE, Batch

__all__ = ["DaskBatch", "block_stats", "power_sums"]


def block_stats(W) -> tuple:
    """Dask expressions for ``(max |w|, min nonzero |w|, rows with a nonzero, columns with a nonzero)``."""
    da = lazy_module()
    A = da.absolute(W)
    return A.max(), da.where(A > 0, A, np.inf).min(), A.max(axis=1) > 0, A.max(axis=0) > 0


def power_sums(W, p: float, axis: int):
    """``log Σ |W|^p`` along ``axis`` of a Dask matrix, each row (column) shifted by its largest
    ``|w|``: a Dask expression (:func:`balgraph.kernels.power_sums` for whole arrays)."""
    da = lazy_module()
    A = da.absolute(W).astype(np.float64)
    m = A.max(axis=axis, keepdims=True)
    m = da.where(m > 0, m, 1.0)
    A = A / m
    A = A * A if p == 2.0 else A if p == 1.0 else A ** p
    return da.log(A.sum(axis=axis)) + p * da.log(m.ravel())


def _scaled_power(W: np.ndarray, top: float, p: float, storage) -> np.ndarray:
    """``(|W| / top)^p`` of one chunk, in float64 then ``storage``."""
    A = np.abs(W, dtype=np.float64) if W.dtype != np.float64 else np.abs(W)
    A /= top
    if p == 2.0:
        np.multiply(A, A, out=A)
    elif p != 1.0:
        np.power(A, p, out=A)
    return A.astype(storage, copy=False)


class DaskBatch(Batch):
    """Blocks of one shape held as Dask arrays (see the module docstring); build with :meth:`build_all`."""

    deferred = True

    @classmethod
    def build_all(cls, groups: list, p: float, c, storage, persist: bool) -> list:
        """One batch per list of items in ``groups``, set up in one round trip (and one persist)."""
        stats = compute(*[[block_stats(it[0]) for it in items] for items in groups])
        batches = [cls(items, p, c, storage, s, persist) for items, s in zip(groups, stats)]
        if persist:
            import dask

            flat = [A for b in batches for A in b.blocks]
            done = iter(dask.persist(*flat))
            for b in batches:
                b.blocks = [next(done) for _ in b.blocks]
        for b in batches:
            b.cells = [ChunkGrid(A) for A in b.blocks]
        return batches

    def __init__(self, items, p: float, c, storage, stats, persist: bool = False):
        da = lazy_module()
        storage = np.dtype(storage)
        a, rows, cols, blocks = np.zeros(len(items)), [], [], []
        for k, ((W, _, _, name, _, _), (top, low, row_nz, col_nz)) in enumerate(zip(items, stats)):
            top = float(top) if float(top) > 0.0 else 1.0
            low = float(low) / top
            if np.isfinite(low) and -p * np.log(low) > _LOG_RANGE[storage]:
                raise RangeExceeded(f"{name}: |w|^p spans {-p * np.log10(low):.0f} decades, more than a"
                                    f" {storage.name} block holds")
            # its own key names: a persisted Â and one recomputed per pass are different tasks
            blocks.append(da.map_blocks(_scaled_power, W, top, p, storage, dtype=storage,
                                        token="balgraph-stored-power" if persist else "balgraph-power"))
            a[k] = p * np.log(top)
            rows.append(np.asarray(row_nz, dtype=bool))
            cols.append(np.asarray(col_nz, dtype=bool))
        self.blocks, self.storage = blocks, storage
        self._index(np, items, c, a, np.stack(rows), np.stack(cols))

    def _products(self, vectors, sel: slice, transpose: bool, exact: bool) -> list:
        return [cells.product(v, transpose, exact) for cells, v in zip(self.cells[sel], vectors)]

    def mv(self, V, exact: bool = True, sel: slice = slice(None)):
        """``Â_b @ V_b`` for the blocks ``sel``: one Dask expression per block (stacked to
        ``(len(sel), n_out)`` by :func:`~balgraph.costs.batch.products` once computed).

        Float32 storage: chunks are summed in float64 when ``exact``, in float32 otherwise.
        """
        return self._products(V, sel, False, exact)

    def rmv(self, U, exact: bool = True, sel: slice = slice(None)):
        """``Â_bᵀ @ U_b`` for the blocks ``sel``, as :meth:`mv`."""
        return self._products(U, sel, True, exact)

    def dense(self) -> np.ndarray:
        """``Â`` gathered as a float64 host array (small problems only: it holds every weight)."""
        return np.stack([np.asarray(b, dtype=np.float64) for b in compute(*self.blocks)])
