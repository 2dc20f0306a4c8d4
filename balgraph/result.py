"""The one result type of every balancing method: :class:`BalanceResult`, scipy's protocol.

A result holds the potentials ``u = log Λ`` of the free variables and what the independent
evaluation found; the balanced weights are formed only when asked for (``weight_array``,
``weights``, ``layer_weights()``, ``to_graph()``), so a result for 59 M weights costs kilobytes.
It reads like scipy's ``OptimizeResult`` (``x``, ``fun``, ``success``, ``status``, ``message``,
``nit``, and the mapping protocol) and owns its data: nothing in it changes when the caller
edits the network afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult

from .backend import module_of
from .model import DenseBlock, Problem
from .model.network import problem_graph

__all__ = ["BalanceResult", "STATUS"]

STATUS = {
    0: "converged: every free unit is balanced to tol (independently evaluated)",
    1: "the iteration limit or the default budget ran out",
    2: "the solver stalled: tol may be below what float64 resolves",
    3: "the balanced scales or weights leave float64's range",
    4: "stopped by the callback",
}


def _safe_exp(x: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.exp(x))


class BalanceResult(Mapping):
    """The balanced state of a network (read it like scipy's ``OptimizeResult``).

    Attributes
    ----------
    x, potentials : ndarray
        ``u = log Λ`` per free variable (a tie group is one variable).
    fun, cost_after : float
        The cost after balancing (``inf`` if it overflows float64; ``log_cost_after`` is exact).
    cost_before : float
        The cost before (``log_cost_before`` is exact).
    success, converged : bool
        Whether every free variable meets ``tol``, by an evaluation independent of the solver.
    status : int
        0 converged, 1 iteration limit, 2 stalled, 3 out of float64's range, 4 stopped by the
        callback (:data:`STATUS`).
    message : str
    nit, iterations : int
        Newton iterations, or sweeps for the iterative methods.
    max_imbalance : float
        ``max_k |P_k − N_k| / (P_k + N_k)`` over free variables (``|in − c·out|/(in + c·out)`` for a unit).
    method : str
    history : dict or None
        Per-iteration columns ``iteration``, ``log_cost``, ``max_imbalance``, ``time``, ``passes``.
    info : dict
        Method-specific extras (cost model, CG iterations, solver status, ...).
    problem : Problem
        The compiled network the result refers to.

    Lazily: ``scales`` / ``scale_array`` (``Λ`` per unit), ``weights`` / ``weight_array`` (per
    edge), ``layer_weights()`` / ``layer_biases()`` (matrices on their own array module), and
    ``to_graph()``.
    """

    _KEYS = ("x", "fun", "success", "status", "message", "nit", "max_imbalance", "method",
             "cost_before", "cost_after", "log_cost_before", "log_cost_after", "history", "info")

    def __init__(self, *, problem: Problem, potentials: np.ndarray, converged: bool, status: int, message: str,
                 iterations: int, method: str, max_imbalance: float, log_cost_before: float,
                 log_cost_after: float, history: dict | None = None, info: dict | None = None):
        self.problem = problem
        self.potentials = np.asarray(potentials, dtype=np.float64)
        self.potentials.setflags(write=False)
        self.converged, self.status, self.message = bool(converged), int(status), str(message)
        self.iterations, self.method = int(iterations), method
        self.max_imbalance = float(max_imbalance)
        self.log_cost_before, self.log_cost_after = float(log_cost_before), float(log_cost_after)
        self.history, self.info = history, dict(info or {})

    # ------------------------------------------------------------------ scipy's names
    @property
    def x(self) -> np.ndarray:
        return self.potentials

    @property
    def fun(self) -> float:
        return self.cost_after

    @property
    def success(self) -> bool:
        return self.converged

    @property
    def nit(self) -> int:
        return self.iterations

    @property
    def cost_before(self) -> float:
        return _safe_exp(self.log_cost_before)

    @property
    def cost_after(self) -> float:
        return _safe_exp(self.log_cost_after)

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def to_optimize_result(self) -> OptimizeResult:
        """A ``scipy.optimize.OptimizeResult`` with the same fields."""
        return OptimizeResult({k: self[k] for k in self._KEYS})

    # ------------------------------------------------------------------ the balanced state
    @cached_property
    def node_potentials(self) -> np.ndarray:
        return self.problem.node_potentials(self.potentials)

    @cached_property
    def scale_array(self) -> np.ndarray:
        """``Λ`` per unit in the compiled node order (1 for fixed units)."""
        with np.errstate(over="ignore"):
            return np.exp(self.node_potentials)

    @cached_property
    def scales(self) -> dict:
        """Every unit -> its scale ``Λ`` (1.0 for fixed units)."""
        return dict(zip(self.problem.nodes, self.scale_array.tolist()))

    def balanced_block(self, k: int):
        """The balanced weights of block ``k``: a matrix on the block's array module and dtype for
        a :class:`DenseBlock` (``W ← diag(Λ_out) W diag(Λ_in^{−c})``), a vector for an edge list."""
        b = self.problem.blocks[k]
        un, deg = self.node_potentials, self.problem.degree
        with np.errstate(over="ignore"):
            if isinstance(b, DenseBlock):
                xp = module_of(b.weight)
                dtype = b.weight.dtype if b.weight.dtype.kind == "f" else np.float64
                rows = xp.asarray(np.exp(un[b.out_units]), dtype=dtype)
                cols = xp.asarray(np.exp(-deg[b.in_units] * un[b.in_units]), dtype=dtype)
                out = b.weight * rows[:, None]
                out *= cols[None, :]
                return out
            t = un[b.dst] - deg[b.src] * un[b.src]
            return np.where(b.weight == 0, 0.0, b.weight * np.exp(t))

    @cached_property
    def weight_array(self) -> np.ndarray:
        """Balanced weights per edge (host float64, compiled edge order)."""
        parts = []
        for k, b in enumerate(self.problem.blocks):
            w = self.balanced_block(k)
            parts.append(np.asarray(w.get() if hasattr(w, "get") else w, dtype=np.float64).reshape(-1))
        out = np.concatenate(parts) if parts else np.zeros(0)
        out.setflags(write=False)
        return out

    @cached_property
    def weights(self) -> dict:
        """Every edge ``(j, i)`` -> its balanced weight."""
        nodes = self.problem.nodes
        return {(nodes[j], nodes[i]): w for j, i, w in
                zip(self.problem.src.tolist(), self.problem.dst.tolist(), self.weight_array.tolist())}

    def _layer_blocks(self) -> tuple[list, dict]:
        roles = self.problem.roles
        weights, biases = [], {}
        for k, b in enumerate(self.problem.blocks):
            if isinstance(b, DenseBlock) and b.in_units.size == 1 and roles[int(b.in_units[0])] == "bias":
                biases[int(b.out_units[0])] = k
            elif isinstance(b, DenseBlock):
                weights.append(k)
        return weights, biases

    def layer_weights(self) -> list:
        """The balanced layer matrices ``W_k`` (``y = W x``) of a problem built from layers."""
        return [self.balanced_block(k) for k in self._layer_blocks()[0]]

    def layer_biases(self) -> list:
        """The balanced biases ``b_k`` aligned with :meth:`layer_weights` (None where a layer has none)."""
        weights, biases = self._layer_blocks()
        out = []
        for k in weights:
            first = int(self.problem.blocks[k].out_units[0])
            out.append(self.balanced_block(biases[first]).reshape(-1) if first in biases else None)
        return out

    def to_graph(self, attr: str | None = None):
        """A new ``networkx.DiGraph`` with the balanced weights; it shares nothing with the input.

        A graph input's node and edge attributes are copied from the snapshot taken when it was
        compiled; the balanced weight goes to ``attr`` (default: the input's weight attribute).
        """
        return problem_graph(self.problem, self.weight_array, attr)

    def __repr__(self) -> str:
        return (f"BalanceResult(method={self.method!r}, converged={self.converged},"
                f" iterations={self.iterations}, max_imbalance={self.max_imbalance:.3g},"
                f" cost_before={self.cost_before:.6g}, cost_after={self.cost_after:.6g})")
