"""The one boundary: a networkx graph with weights and node attributes becomes a :class:`Problem`.

The network model (a contract):

- a ``networkx.DiGraph``; edge ``j -> i`` carries the weight of unit ``j``'s output into unit ``i``;
- ``weights``: an edge-attribute name (default ``"weight"``), a mapping ``{(j, i): w}``, or a
  callable ``(j, i, data) -> w`` (networkx's convention); zero weights play no role (Remark 5.5);
- node attribute ``role``: ``"input"``, ``"output"``, ``"hidden"`` or ``"bias"`` (an input clamped
  to 1); if absent, in-degree 0 -> input, out-degree 0 -> output, otherwise hidden;
- node attribute ``activation`` (default ``"relu"``): ``relu``, ``leaky_relu``, ``linear``,
  ``identity``, ``bilu``, ``bipu`` are positively homogeneous and make a hidden unit free; any other
  value (``tanh``, ``sigmoid``, ...) makes it fixed, like a visible unit (Remark 5.3);
- node attribute ``degree``: the BiPU degree ``c > 0`` (default 1; Section 6.2);
- node attribute ``tie``: hidden units with equal ``tie`` share one scale (Defs 3.3, 4.5; Section 8.2).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Union

import networkx as nx
import numpy as np

from .errors import NetworkError, name_some, positive_number
from .problem import Problem

__all__ = ["compile_network", "edge_values", "HOMOGENEOUS_ACTIVATIONS", "WeightSpec"]

HOMOGENEOUS_ACTIVATIONS = frozenset({"relu", "leaky_relu", "linear", "identity", "bilu", "bipu"})

WeightSpec = Union[str, Mapping, Callable[[Hashable, Hashable, dict], Any]]


def edge_weight_getter(graph: nx.DiGraph, weights: WeightSpec) -> Callable:
    """Return ``get(j, i, data) -> raw weight`` for networkx's three ``weight=`` conventions."""
    if isinstance(weights, str):
        name = weights

        def get(j, i, data):
            if name not in data:
                raise NetworkError(
                    f"edge ({j!r}, {i!r}) has no {name!r} attribute: set it, or pass weights="
                    " a mapping or a callable"
                )
            return data[name]

        return get
    if isinstance(weights, Mapping):

        def get(j, i, data):
            try:
                return weights[(j, i)]
            except KeyError:
                raise NetworkError(
                    f"the weights mapping has no entry for edge ({j!r}, {i!r}): give every edge a weight"
                ) from None

        return get
    if callable(weights):
        return weights
    raise NetworkError(
        f"weights must be an edge-attribute name, a mapping or a callable, not {type(weights).__name__}"
    )


def compile_network(graph: nx.DiGraph, weights: WeightSpec = "weight") -> Problem:
    """Compile a networkx network into a :class:`Problem` (the only place networkx is read).

    Parameters
    ----------
    graph : networkx.DiGraph
        The network (see the module docstring for the node attributes it reads).
    weights : str, mapping or callable
        The edge weights, following networkx's ``weight=`` convention.

    Returns
    -------
    Problem

    Examples
    --------
    >>> import networkx as nx, balgraph
    >>> g = nx.DiGraph([("x", "h", {"weight": 2.0}), ("h", "y", {"weight": 0.5})])
    >>> balgraph.compile_network(g).n_vars
    1
    """
    if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
        kind = type(graph).__name__
        raise NetworkError(
            f"a network must be a networkx.DiGraph, not a {kind}: convert it with nx.DiGraph(graph)"
            " after merging parallel edges, and orient undirected edges from input to output"
        )
    nodes = tuple(graph.nodes)
    index = {label: k for k, label in enumerate(nodes)}
    get = edge_weight_getter(graph, weights)
    src, dst, raw = [], [], []
    for j, i, data in graph.edges(data=True):
        src.append(index[j])
        dst.append(index[i])
        raw.append(get(j, i, data))
    weight = _as_float_weights(raw, graph.edges)
    roles, fixed, degree, tie = [], [], [], []
    for label, data in graph.nodes(data=True):
        role = data.get("role")
        if role is None:
            role = (
                "input" if graph.in_degree(label) == 0
                else "output" if graph.out_degree(label) == 0 else "hidden"
            )
        roles.append(role)
        activation = data.get("activation", "relu")
        fixed.append(str(activation).lower() not in HOMOGENEOUS_ACTIVATIONS)
        degree.append(_as_degree(label, data.get("degree", 1.0)))
        tie.append(data.get("tie"))
    if any(t is not None for t in tie):
        _check_tie_roles(nodes, roles, fixed, tie)
    return Problem.from_arrays(
        np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64), weight,
        nodes=nodes, roles=roles, fixed=np.asarray(fixed, dtype=bool),
        degree=np.asarray(degree, dtype=np.float64),
        tie=tie if any(t is not None for t in tie) else None,
    )


def _as_float_weights(raw: list, edges) -> np.ndarray:
    try:
        return np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    for (j, i), w in zip(edges, raw):
        try:
            float(w)
        except (TypeError, ValueError):
            raise NetworkError(
                f"edge ({j!r}, {i!r}) has a non-numeric weight {w!r}: weights must be real numbers"
            ) from None
    raise NetworkError("weights must be real numbers")


def _as_degree(label, value) -> float:
    return positive_number(value, f"the BiPU degree of unit {label!r}")


def _check_tie_roles(nodes, roles, fixed, tie) -> None:
    visible = [nodes[k] for k in range(len(nodes)) if tie[k] is not None and roles[k] != "hidden"]
    if visible:
        raise NetworkError(
            f"visible unit(s) {name_some(visible)} carry a 'tie': only hidden units can be tied"
        )


def edge_values(graph: nx.DiGraph, spec: WeightSpec, problem: Problem) -> np.ndarray:
    """Per-edge numbers (in ``problem``'s edge order) from an attribute name, mapping or callable.

    Used for per-edge regularizer coefficients; an edge without the attribute gets 1.
    """
    if isinstance(spec, str):
        name = spec
        get = lambda j, i, data: data.get(name, 1.0)  # noqa: E731
    else:
        get = edge_weight_getter(graph, spec)
    nodes = problem.nodes
    raw = [
        get(nodes[j], nodes[i], graph.edges[nodes[j], nodes[i]])
        for j, i in zip(problem.src.tolist(), problem.dst.tolist())
    ]
    return _as_float_weights(raw, [problem.edge_label(e) for e in range(problem.n_edges)])
