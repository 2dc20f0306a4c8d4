"""Edge blocks: how a :class:`~balgraph.Problem` stores its weights.

A network's edges come in blocks. A :class:`DenseBlock` is a layer: the edge
``in_units[s] -> out_units[r]`` carries ``weight[r, s]`` of the caller's matrix, which is kept
as it is (no copy; NumPy, CuPy or Dask). An :class:`EdgeBlock` is a list of edges
``src[e] -> dst[e]`` with weights ``weight[e]``. The problem's edges are the blocks' edges in
block order, a dense block's in row-major order; per-edge arrays are built only on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..backend import module_of, to_host

__all__ = ["DenseBlock", "EdgeBlock", "Block"]


def _as_range(units: np.ndarray) -> slice | None:
    """``slice(a, b)`` when ``units`` is ``a, a+1, ..., b-1``, else None."""
    if units.size and units[-1] - units[0] == units.size - 1 and np.all(np.diff(units) == 1):
        return slice(int(units[0]), int(units[-1]) + 1)
    return None


@dataclass(frozen=True, eq=False)
class DenseBlock:
    """A dense layer of edges: ``in_units[s] -> out_units[r]`` with weight ``weight[r, s]``.

    Attributes
    ----------
    weight : array, shape (n_out, n_in)
        The caller's matrix (``y = W x`` convention), any array module; never copied or written.
    out_units, in_units : ndarray of int64
        Node indices of the rows and columns.
    name : str
        How messages name the block (``"layer 2"``, ``"bias 3"``, a module name).
    """

    weight: Any
    out_units: np.ndarray
    in_units: np.ndarray
    name: str = "dense block"

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.weight.shape[0]), int(self.weight.shape[1])

    @property
    def n_edges(self) -> int:
        n_out, n_in = self.shape
        return n_out * n_in

    @property
    def xp(self):
        return module_of(self.weight)

    @cached_property
    def out_range(self) -> slice | None:
        """The rows' units as a slice when they are consecutive."""
        return _as_range(self.out_units)

    @cached_property
    def in_range(self) -> slice | None:
        """The columns' units as a slice when they are consecutive."""
        return _as_range(self.in_units)

    def edge_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-edge ``(src, dst)`` node indices in row-major order."""
        n_out, n_in = self.shape
        return np.tile(self.in_units, n_out), np.repeat(self.out_units, n_in)

    def host_weights(self) -> np.ndarray:
        """The weights as a float64 NumPy vector in row-major order."""
        return np.asarray(to_host(self.weight), dtype=np.float64).reshape(-1)

    def describe(self, k: int) -> str:
        """``"layer 2 [r, s]"``: where edge ``k`` of the block (row-major) sits."""
        r, s = divmod(int(k), self.shape[1])
        return f"{self.name} [{r}, {s}]"


@dataclass(frozen=True, eq=False)
class EdgeBlock:
    """A list of edges ``src[e] -> dst[e]`` with weights ``weight[e]`` (host arrays)."""

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    name: str = "edges"
    labels: tuple | None = field(default=None, repr=False)

    @property
    def n_edges(self) -> int:
        return int(self.src.size)

    @property
    def xp(self):
        return np

    def edge_ends(self) -> tuple[np.ndarray, np.ndarray]:
        return self.src, self.dst

    def host_weights(self) -> np.ndarray:
        return self.weight

    def describe(self, k: int) -> str:
        return f"edge {k}"


Block = DenseBlock | EdgeBlock
