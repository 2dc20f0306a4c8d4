"""Lazy (Dask) arrays in the core, recognized without importing Dask.

A layer matrix may be a ``dask.array.Array``: its chunks live on the workers of a cluster (or
in files), and the core never gathers it. Every reduction and mat-vec over such a block is an
expression of Dask (a task graph over the chunks); :func:`compute` evaluates many of them in
one round trip, so that a cost evaluation or a Hessian product over all layers costs one
``dask.compute``, and only per-unit vectors and scalars come back to the caller's process.

Dask is an optional dependency (``pip install "balgraph[dask]"``): it is imported only when an
array of it is met.

Examples
--------
>>> import numpy as np
>>> is_lazy(np.ones(3)), compute(1.0, np.zeros(2))
(False, (1.0, array([0., 0.])))
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["is_lazy", "any_lazy", "compute", "lazy_module", "ChunkGrid", "DASK_HINT"]

DASK_HINT = 'pip install "balgraph[dask]"'


def is_lazy(value) -> bool:
    """Whether ``value`` is a Dask collection (by its type's module: Dask is not imported)."""
    return type(value).__module__.split(".", 1)[0] == "dask"


def any_lazy(values) -> bool:
    """Whether a Dask collection is among ``values`` (searched through lists, tuples and dicts)."""
    if is_lazy(values):
        return True
    if isinstance(values, Mapping):
        return any(any_lazy(v) for v in values.values())
    if isinstance(values, (list, tuple)):
        return any(any_lazy(v) for v in values)
    return False


def compute(*values) -> tuple:
    """``values`` with every Dask collection among them evaluated, all in one round trip.

    Lists, tuples and dicts are searched (as ``dask.compute`` does); anything else passes
    through. Without a Dask collection nothing is imported and ``values`` come back as given.
    The graph is not optimized (no fusion), so that a key always names the same task.
    """
    if not any_lazy(values):
        return values
    import dask

    # Unoptimized: Dask would fuse a shared intermediate (|W|^p read by two mat-vecs) in one call
    # and not in the next, sending one key with two task specs to a distributed scheduler
    # (dask/dask#9888); balgraph's graphs are small and already one task per chunk and step.
    return tuple(dask.compute(*values, optimize_graph=False))


def lazy_module():
    """``dask.array``, or an :class:`ImportError` with the install hint."""
    try:
        import dask.array
    except ImportError:  # pragma: no cover - a Dask array was met, so Dask is installed
        raise ImportError(f"Dask arrays need dask[array]: {DASK_HINT}") from None
    return dask.array


def _chunk_product(A: np.ndarray, v: np.ndarray, transpose: bool, exact: bool) -> np.ndarray:
    """``A v`` (``v A`` when ``transpose``) of one chunk, as float64 (float32 storage: summed in
    float64 when ``exact``, in float32 otherwise)."""
    if A.dtype != v.dtype:
        if exact:
            A = A.astype(np.float64)
        else:
            v = v.astype(A.dtype)
    y = v @ A if transpose else A @ v
    return y.astype(np.float64, copy=False)


def _total(*parts: np.ndarray) -> np.ndarray:
    return np.sum(parts, axis=0) if len(parts) > 1 else parts[0]


def _joined(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


class ChunkGrid:
    """A Dask matrix as its grid of chunks, for mat-vecs of few tasks.

    ``Â v``: one task per chunk (its piece of ``v`` is sent with it), one per row of chunks to add
    the pieces when the columns are cut, one to join the rows: the partial results that move
    between workers are vectors, never chunks.
    """

    def __init__(self, A):
        import dask

        self.delayed = dask.delayed
        self.grid = A.to_delayed(optimize_graph=False)  # chunk (i, j): Delayed, no computation
        self.cuts = [np.cumsum((0,) + tuple(c)) for c in A.chunks]

    def product(self, v, transpose: bool = False, exact: bool = True):
        """``Â v`` (``v Â`` when ``transpose``) as a Delayed vector; ``v`` is a NumPy vector or a
        Delayed one (sliced lazily)."""
        delayed = self.delayed
        rows, cols = self.cuts
        inner, outer = (rows, cols) if transpose else (cols, rows)
        pieces = [v[a:b] for a, b in zip(inner[:-1], inner[1:])]
        out = []
        for k in range(len(outer) - 1):
            parts = [delayed(_chunk_product, pure=True)(self.grid[(j, k) if transpose else (k, j)], piece,
                                                        transpose, exact) for j, piece in enumerate(pieces)]
            out.append(parts[0] if len(parts) == 1 else delayed(_total, pure=True)(*parts))
        return out[0] if len(out) == 1 else delayed(_joined, pure=True)(*out)
