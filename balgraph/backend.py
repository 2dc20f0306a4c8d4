"""The array module behind the cost models: NumPy on the CPU, CuPy on a GPU (Dask for blocks).

One code path serves both (in the spirit of ``cupy.get_array_module`` and POT's backends):
the cost models of :mod:`balgraph.costs` take the module ``xp`` and call only functions that
NumPy and CuPy share (``exp``, ``log``, ``logaddexp``, ``tanh``, ``bincount``, ``matmul``,
sparse CSR mat-vecs through :func:`sparse_module`). Scalars stay on the device as 0-d arrays;
:func:`to_host` is called only for convergence checks, so a GPU run makes one host round trip
per check. A Dask array's module is ``dask.array``: its blocks stay where their chunks live,
and the cost models keep their per-unit vectors in NumPy (:mod:`balgraph.lazy`).
"""

from __future__ import annotations

import mmap
from math import prod
from types import ModuleType

import numpy as np

from .errors import OptionError

__all__ = ["array_module", "module_of", "device_of", "sparse_module", "to_host", "spd_inverse_factor",
           "check_device", "empty"]

_CPU = (None, "cpu", "numpy")
_GPU = ("cuda", "gpu", "cupy")


def check_device(device) -> str | None:
    """``None``, ``"cpu"`` or ``"cuda"``/``"cuda:N"`` (normalized), else an :class:`OptionError`."""
    if device in _CPU:
        return None if device is None else "cpu"
    name = str(device).lower() if isinstance(device, str) else None
    if name in _GPU:
        return "cuda"
    if name is not None and name.startswith("cuda:") and name[5:].isdigit():
        return name
    raise OptionError(f"unknown device {device!r}: use None (where the arrays live), 'cpu' or 'cuda' (or 'cuda:N')")


def array_module(device) -> ModuleType:
    """``numpy`` for ``device`` in ``None``/``"cpu"``, ``cupy`` for ``"cuda"`` (``"cuda:N"``).

    Examples
    --------
    >>> array_module("cpu").__name__
    'numpy'
    """
    name = check_device(device)
    if name in (None, "cpu"):
        return np
    try:
        import cupy
    except ImportError:
        raise ImportError(f"device={device!r} needs CuPy: pip install 'balgraph[gpu]' (cupy-cuda12x)") from None
    if name.startswith("cuda:"):
        cupy.cuda.Device(int(name.split(":", 1)[1])).use()
    return cupy


# Host buffers from this size on are mapped directly (see :func:`empty`).
_MAPPED_BYTES = 64 << 20


def empty(xp: ModuleType, shape: tuple, dtype) -> np.ndarray:
    """``xp.empty(shape, dtype)``; a large NumPy buffer comes from an anonymous memory map.

    NumPy asks the kernel for transparent huge pages on large arrays; where the kernel
    compacts memory on demand to find them, touching the buffer the first time costs 5× more
    (1.0 s against 0.19 s for 400 MB, measured on a 2-core VM), and a buffer that is filled
    once and then read by BLAS mat-vecs runs them no faster on huge pages (same time measured).
    The map is released with the array.

    Examples
    --------
    >>> a = empty(np, (2, 3), np.float64)
    >>> a.shape, a.dtype.name, a.flags.writeable
    ((2, 3), 'float64', True)
    """
    nbytes = prod(shape) * np.dtype(dtype).itemsize
    if xp is not np or nbytes < _MAPPED_BYTES:
        return xp.empty(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)


def module_of(array) -> ModuleType:
    """The module that owns ``array`` (``cupy`` for a CuPy array, ``dask.array`` for a Dask
    array, else ``numpy``)."""
    top = type(array).__module__.split(".")[0]
    if top == "cupy":
        import cupy

        return cupy
    if top == "dask":
        import dask.array

        return dask.array
    return np


def device_of(array) -> str:
    """``"cuda"`` for a CuPy array, else ``"cpu"``."""
    return "cuda" if module_of(array).__name__ == "cupy" else "cpu"


def sparse_module(xp: ModuleType) -> ModuleType:
    """``scipy.sparse`` for NumPy, ``cupyx.scipy.sparse`` for CuPy."""
    if xp is np:
        import scipy.sparse

        return scipy.sparse
    import cupyx.scipy.sparse

    return cupyx.scipy.sparse


def to_host(array) -> np.ndarray:
    """A NumPy copy (or view) of ``array``, wherever it lives."""
    get = getattr(array, "get", None)
    return np.asarray(get() if callable(get) else array)


def spd_inverse_factor(xp: ModuleType, E):
    """``F`` with ``E⁻¹ = Fᵀ F`` for a small symmetric positive definite ``E`` (``F = L⁻¹``, ``E = L Lᵀ``).

    ``numpy.linalg.inv`` goes through a threaded LU that was measured 500× slower than
    Cholesky on a loaded two-core machine (0.14 s for 102 × 102).

    Examples
    --------
    >>> E = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> F = spd_inverse_factor(np, E)
    >>> bool(np.allclose(F.T @ F @ E, np.eye(2)))
    True
    """
    L = xp.linalg.cholesky(E)
    if xp is not np:
        from cupyx.scipy.linalg import solve_triangular

        return solve_triangular(L, xp.eye(E.shape[0]), lower=True)
    # Forward substitution row by row: n is the number of coarse levels, and LAPACK's small
    # solves cost milliseconds in call overhead and thread start-up here.
    n = E.shape[0]
    F = np.zeros_like(E)
    for i in range(n):
        F[i, i] = 1.0 / L[i, i]
        F[i, :i] = -(L[i, :i] @ F[:i, :i]) / L[i, i]
    return F
