"""The one result type every balancing method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import networkx as nx
import numpy as np

from .problem import Problem

__all__ = ["BalanceResult", "SolverOutput"]


@dataclass
class SolverOutput:
    """What a solver hands back to :func:`balgraph.solve` (solvers never see networkx).

    ``u`` holds the potentials ``log Λ`` per variable; ``history`` maps column names
    (``"cost"``, ``"max_imbalance"``, ``"sweeps"``, ``"time"``, ...) to equal-length lists.
    """

    u: np.ndarray
    converged: bool
    iterations: int
    message: str = ""
    history: dict[str, list] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(repr=False)
class BalanceResult:
    """The balanced state of a network, like scipy's ``OptimizeResult``.

    Attributes
    ----------
    weights : dict
        Every edge ``(j, i)`` of the input -> its balanced weight (built on first access).
    scales : dict
        Every unit -> its scale ``Λ`` (1.0 for fixed units).
    weight_array : ndarray
        Balanced weights in the compiled edge order (``problem.src``, ``problem.dst``).
    scale_array : ndarray
        ``Λ`` per unit in the compiled node order.
    potentials : ndarray
        ``u = log Λ`` per free variable (a tie group is one variable).
    cost_before, cost_after : float
        The regularizer's value before and after (``inf`` if it overflows float64; the logs
        ``log_cost_before`` and ``log_cost_after`` are always finite or ``-inf``).
    converged : bool
        Whether every free variable met ``tol`` on its relative imbalance.
    iterations : int
        Newton iterations, or sweeps (steps / number of variables) for iterative methods.
    max_imbalance : float
        ``max_k |P_k − N_k| / (P_k + N_k)`` over free variables (``|in − c·out|/(in + c·out)`` for a unit).
    method : str
    message : str
    history : dict or None
        Per-iteration columns for plots (iterative methods and Newton).
    info : dict
        Method-specific extras (CG iterations, solver status, ...).
    problem : Problem
        The compiled network the result refers to.
    """

    problem: Problem
    potentials: np.ndarray
    weight_array: np.ndarray
    log_cost_before: float
    log_cost_after: float
    converged: bool
    iterations: int
    max_imbalance: float
    method: str
    message: str = ""
    history: dict[str, list] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    graph: nx.DiGraph | None = None
    weight_attr: str = "weight"

    @property
    def cost_before(self) -> float:
        return _safe_exp(self.log_cost_before)

    @property
    def cost_after(self) -> float:
        return _safe_exp(self.log_cost_after)

    @cached_property
    def scale_array(self) -> np.ndarray:
        return np.exp(self.problem.node_potentials(self.potentials))

    @cached_property
    def weights(self) -> dict:
        nodes = self.problem.nodes
        return {
            (nodes[j], nodes[i]): w
            for j, i, w in zip(
                self.problem.src.tolist(), self.problem.dst.tolist(), self.weight_array.tolist()
            )
        }

    @cached_property
    def scales(self) -> dict:
        return dict(zip(self.problem.nodes, self.scale_array.tolist()))

    @property
    def success(self) -> bool:
        """Alias of ``converged`` (scipy's name)."""
        return self.converged

    def layer_weights(self) -> list[np.ndarray]:
        """Balanced dense layer matrices, for problems built from layers (``y = W x``)."""
        return [
            self.weight_array[layer.edge_slice].reshape(layer.n_out, layer.n_in)
            for layer in self.problem.layers
        ]

    def to_graph(self, attr: str | None = None) -> nx.DiGraph:
        """A new ``DiGraph`` carrying the balanced weights; the input graph is left untouched.

        Node and edge attributes of the input graph are copied; the balanced weight is written
        to ``attr`` (default: the input's weight attribute name, or ``"weight"``).
        """
        attr = attr or self.weight_attr
        if self.graph is not None:
            out = self.graph.copy()
        else:
            out = nx.DiGraph()
            for label, role in zip(self.problem.nodes, self.problem.roles):
                out.add_node(label, role=role)
        out.add_edges_from((j, i, {attr: w}) for (j, i), w in self.weights.items())
        return out

    def __repr__(self) -> str:
        return (
            f"BalanceResult(method={self.method!r}, converged={self.converged},"
            f" iterations={self.iterations}, max_imbalance={self.max_imbalance:.3g},"
            f" cost_before={self.cost_before:.6g}, cost_after={self.cost_after:.6g})"
        )


def _safe_exp(x: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.exp(x))
