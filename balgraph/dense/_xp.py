"""The array module behind the dense fast path: NumPy on the CPU, CuPy on a GPU.

One code path serves both (in the spirit of ``cupy.get_array_module`` and POT's backends):
every routine of :mod:`balgraph.dense` takes the module ``xp`` and calls only functions that
NumPy and CuPy share (``exp``, ``log``, ``logaddexp``, ``tanh``, ``bincount``, ``matmul``,
``linalg.inv``). Scalars stay on the device as 0-d arrays; :func:`to_host` is called only for
the convergence checks, so a GPU run makes one host round trip per check.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ..errors import NetworkError

__all__ = ["array_module", "module_of", "spd_inverse_factor", "to_host"]

_CPU = (None, "cpu", "numpy")
_GPU = ("cuda", "gpu", "cupy")


def array_module(device: str | None) -> ModuleType:
    """``numpy`` for ``device`` in ``None``/``"cpu"``/``"numpy"``, ``cupy`` for ``"cuda"`` (``"cuda:N"``).

    Examples
    --------
    >>> array_module("cpu").__name__
    'numpy'
    """
    if device in _CPU:
        return np
    name = str(device).lower()
    if name in _GPU or name.startswith("cuda:"):
        try:
            import cupy
        except ImportError:
            raise ImportError(
                f"device={device!r} needs CuPy: pip install 'balgraph[gpu]' (cupy-cuda12x)"
            ) from None
        if name.startswith("cuda:"):
            cupy.cuda.Device(int(name.split(":", 1)[1])).use()
        return cupy
    raise NetworkError(f"unknown device {device!r}: use 'cpu' or 'cuda' (or 'cuda:N')")


def module_of(array) -> ModuleType:
    """The module that owns ``array`` (``cupy`` for a CuPy array, else ``numpy``)."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def to_host(array) -> np.ndarray:
    """A NumPy copy (or view) of ``array``, wherever it lives."""
    get = getattr(array, "get", None)
    return np.asarray(get() if callable(get) else array)


def spd_inverse_factor(xp, E):
    """``F`` with ``E⁻¹ = Fᵀ F`` for a small symmetric positive definite ``E`` (``F = L⁻¹``, ``E = L Lᵀ``).

    ``numpy.linalg.inv`` goes through a threaded LU that was measured 500× slower than
    Cholesky on a loaded two-core machine (0.14 s for 102 × 102).
    """
    L = xp.linalg.cholesky(E)
    if xp is not np:
        from cupyx.scipy.linalg import solve_triangular

        return solve_triangular(L, xp.eye(E.shape[0]), lower=True)
    # Forward substitution row by row: n is the number of layers, and LAPACK's small solves
    # cost milliseconds in call overhead and thread start-up here.
    n = E.shape[0]
    F = np.zeros_like(E)
    for i in range(n):
        F[i, i] = 1.0 / L[i, i]
        F[i, :i] = -(L[i, :i] @ F[:i, :i]) / L[i, i]
    return F
