"""The cost-model protocol that every solver works against (docs/design.md §2).

A cost model is the convex cost ``R`` of one problem in the model's own coordinates ``z``
(potentials ``u``, ``p·u``, or coordinates of an admissible subspace), written against an
array module ``xp`` (NumPy or CuPy). It offers:

- :meth:`CostModel.point`: at ``z``, the two parts ``P`` and ``N`` of the gradient
  ``∇R = P − N`` per coordinate as logs (for an untied unit and the L_p cost, ``P`` is ``p``
  times its incoming cost and ``N`` ``p c`` times its outgoing cost, eqs. 5.8 and 6.7), the
  log-cost, and the largest log-imbalance ``gap`` (``worst = tanh(gap/2)``, the largest
  relative imbalance);
- :meth:`CostModel.hessian`: the Jacobi-scaled Hessian ``S = D^{-1/2} H D^{-1/2}`` (unit
  diagonal) as a mat-vec, its diagonal ``log D``, the Galerkin matrix of a coarse space of one
  scale per *level* (a layer, a depth level), and, for small problems, the dense matrix;
- :meth:`CostModel.sweeper`: exact balancing of independent classes of coordinates, all of a
  class at once (Prop. 4.4): the paper's parallel schedules and Newton's warm-up.

Models raise :class:`~balgraph.errors.RangeExceeded` where float64 mat-vecs cannot hold the
costs; :meth:`CostModel.fallback` names the model to continue with.
"""

from __future__ import annotations

import abc
from types import ModuleType

import numpy as np

from ..backend import to_host
from ..errors import RangeExceeded
from ..kernels import lse, worst_of_gap
from ..model import Problem

__all__ = ["CostModel", "Hessian", "Point", "Sweeper", "RangeExceeded", "constant_cost", "gap_of"]


def constant_cost(problem: Problem, reg, edges: np.ndarray) -> float:
    """``log Σ φ_e`` over the (boolean) ``edges``: costs no scaling moves, a constant part of ``R``."""
    idx = np.flatnonzero(edges)
    if not idx.size:
        return -np.inf
    return float(lse(reg.restrict(idx).edge_terms(problem.log_abs_weight[idx], np.zeros(idx.size))[0]))


def gap_of(xp: ModuleType, log_p, log_n):
    """``max_k |log P_k − log N_k|`` on the device (0 where both sides are empty, ``inf`` where one is)."""
    with np.errstate(invalid="ignore"):
        diff = xp.abs(log_p - log_n)
    diff = xp.where(xp.isnan(diff), 0.0, diff)
    return diff.max() if diff.size else xp.zeros(())


class Point:
    """The state at coordinates ``z``: ``log P``, ``log N`` (device arrays), ``log_cost``,
    ``gap`` and ``worst`` (host floats). Models may attach what their Hessian reuses."""

    def __init__(self, z, log_p, log_n, log_cost: float, gap: float):
        self.z, self.log_p, self.log_n = z, log_p, log_n
        self.log_cost, self.gap = float(log_cost), float(gap)
        self.worst = worst_of_gap(self.gap)


class Hessian(abc.ABC):
    """``S = D^{-1/2} H D^{-1/2}`` at a point; ``log_d`` holds ``log D`` (finite)."""

    log_d = None

    @abc.abstractmethod
    def matvec(self, y):
        """``S y``."""

    def coarse_matrix(self, w, levels, n_levels: int):
        """``Wᵀ S W`` for ``W[k, levels[k]] = w_k`` (``w`` normalized per level), ``(L, L)``."""
        raise NotImplementedError

    def matrix(self) -> np.ndarray:
        """``S`` as a dense host array (small problems)."""
        raise NotImplementedError


class Sweeper(abc.ABC):
    """Exact balancing sweeps over independent classes; ``gap`` and ``log_cost`` after each."""

    exact = True
    gap = np.inf
    log_cost = np.nan

    @property
    def worst(self) -> float:
        """The largest relative imbalance after the last sweep."""
        return worst_of_gap(self.gap)

    @abc.abstractmethod
    def sweep(self) -> None:
        """Balance every class once, in order."""

    @abc.abstractmethod
    def coordinates(self):
        """The current coordinates ``z``."""


class CostModel(abc.ABC):
    """A problem's cost in model coordinates (see the module docstring).

    Attributes
    ----------
    name : str
        ``"layered"``, ``"sparse"``, ``"log-domain"`` or ``"shared"``.
    xp : module
        The array module of every device array it returns.
    n : int
        Number of coordinates.
    levels : ndarray or None
        Coarse level of each coordinate (host ints ``0..n_levels-1``), ``None`` for no coarse space.
    dense_ok : bool
        Whether a dense Newton step (:meth:`Hessian.matrix`) suits small instances.
    work, total : float
        Edges touched so far and edges in all (``work / total`` = weight-passes).
    """

    name = "model"
    xp: ModuleType = np
    n = 0
    levels: np.ndarray | None = None
    n_levels = 0
    dense_ok = True
    work = 0.0
    total = 1

    @abc.abstractmethod
    def start(self, u: np.ndarray):
        """Model coordinates of per-variable potentials ``u`` (host)."""

    @abc.abstractmethod
    def potentials(self, z) -> np.ndarray:
        """Per-variable potentials ``u`` (host) of model coordinates ``z``."""

    @abc.abstractmethod
    def point(self, z) -> Point:
        """The state at ``z`` (raises :class:`RangeExceeded` beyond float64 mat-vecs)."""

    @abc.abstractmethod
    def hessian(self, pt: Point) -> Hessian:
        """The Jacobi-scaled Hessian at ``pt``."""

    @abc.abstractmethod
    def sweeper(self, z, order: str = "parallel", seed: int | None = None) -> Sweeper:
        """Exact sweeps from ``z``; ``order`` is ``"parallel"`` or ``"alternating"``."""

    def fallback(self) -> CostModel | None:
        """The model to continue with after :class:`RangeExceeded` (None: none)."""
        return None

    @property
    def passes(self) -> float:
        return self.work / max(self.total, 1)

    def host(self, values) -> np.ndarray:
        """One host round trip for a stack of device scalars."""
        return to_host(self.xp.stack(values)) if self.xp is not np else np.array([float(v) for v in values])
