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

__all__ = ["is_lazy", "any_lazy", "compute", "lazy_module", "DASK_HINT"]

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
