"""The one boundary: a networkx graph with weights and attributes becomes a :class:`Problem`.

Compiling reads everything once; after it nothing but :meth:`BalanceResult.to_graph` touches
networkx (and that works from the snapshot taken here, not from the caller's graph).
The network model (a contract):

- a ``networkx.DiGraph``; edge ``j -> i`` carries the weight of unit ``j``'s output into unit ``i``;
- ``weights``: an edge-attribute name (default ``"weight"``), a mapping ``{(j, i): w}``, or a
  callable ``(j, i, data) -> w`` (networkx's ``weight=`` convention); zero weights play no role
  (Remark 5.5);
- node attribute ``role``: ``"input"``, ``"output"``, ``"hidden"`` or ``"bias"`` (an input clamped
  to 1); if absent, in-degree 0 -> input, out-degree 0 -> output, otherwise hidden;
- node attribute ``activation`` (default ``"relu"``): ``relu``, ``leaky_relu``, ``linear``,
  ``identity``, ``bilu``, ``bipu`` are positively homogeneous and make a hidden unit free; any other
  value (``tanh``, ``sigmoid``, a callable, ...) makes it fixed, like a visible unit (Remark 5.3);
  ``slope`` (leaky ReLU), ``a`` and ``b`` (BiLU, BiPU) parametrize it for :func:`balgraph.forward`;
- node attribute ``degree``: the BiPU degree ``c > 0`` (default 1; Section 6.2);
- node attribute ``tie``: hidden units with equal ``tie`` share one scale (Defs 3.3, 4.5; Section 8.2);
- edge attribute ``share`` (the name is an argument): edges with equal values are one shared
  parameter (Section 8.3).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import networkx as nx
import numpy as np

from ..checks import real_weights
from ..errors import NetworkError, OptionError
from .problem import Problem

__all__ = ["as_problem", "compile_network", "GraphSnapshot", "problem_graph", "WeightSpec", "weight_getter"]

WeightSpec = Union[str, Mapping, Callable[[Hashable, Hashable, dict], Any]]

_ACTIVATION_ARGS = ("slope", "a", "b")
_IMMUTABLE = (str, int, float, bool, complex, type(None), np.floating, np.integer, np.bool_)


@dataclass(frozen=True)
class GraphSnapshot:
    """A private copy of a graph's attributes, in the problem's node and edge order."""

    graph: dict
    nodes: tuple
    edges: tuple
    weight_attr: str


def _own(data: dict, skip: str | None = None) -> dict | None:
    """A copy of an attribute dict that shares no mutable value with it (``None`` when the only
    attribute is ``skip``, the weight, which the problem holds anyway)."""
    if skip is not None and len(data) == 1 and skip in data:
        return None
    return {k: v if isinstance(v, _IMMUTABLE) else copy.deepcopy(v) for k, v in data.items()}


def weight_getter(weights: WeightSpec, what: str = "weights") -> Callable:
    """``get(j, i, data) -> raw value`` for networkx's three ``weight=`` conventions."""
    if isinstance(weights, str):
        name = weights

        def get(j, i, data):
            if name not in data:
                raise NetworkError(f"edge ({j!r}, {i!r}) has no {name!r} attribute: set it, or pass"
                                   f" {what}= the attribute that holds it (or a mapping or a callable)")
            return data[name]

        return get
    if isinstance(weights, Mapping):

        def get(j, i, data):
            try:
                return weights[(j, i)]
            except KeyError:
                raise NetworkError(f"the {what} mapping has no entry for edge ({j!r}, {i!r}): give every"
                                   " edge a value") from None

        return get
    if callable(weights):
        return weights
    raise OptionError(f"{what} must be an edge-attribute name, a mapping or a callable, not"
                      f" {type(weights).__name__}")


def _values(raw: list, edges: list, what: str) -> np.ndarray:
    """Per-edge raw values as checked real floats (errors name the edge)."""
    for e, value in enumerate(raw):
        if value is None:
            raise NetworkError(f"edge {edges[e]!r} has {what} None: give every edge a real number")
    try:
        arr = np.array(raw)
    except (ValueError, TypeError, OverflowError):
        arr = np.array(raw, dtype=object)
    return np.asarray(real_weights(arr, f"the {what}s", lambda e: f"edge {edges[e]!r}"), dtype=np.float64)


def compile_network(graph: nx.DiGraph, weights: WeightSpec = "weight", *, coefficients: Mapping | None = None,
                    share: str | None = "share") -> Problem:
    """Compile a networkx network into a :class:`Problem` (the only place networkx is read).

    Parameters
    ----------
    graph : networkx.DiGraph
        The network (see the module docstring for the attributes it reads).
    weights : str, mapping or callable
        The edge weights, following networkx's ``weight=`` convention.
    coefficients : mapping, optional
        ``{key: spec}`` of per-edge values to read as well (regularizer coefficients): an
        attribute name (edges without it get 1), a mapping or a callable. Stored in
        ``problem.edge_data[key]``.
    share : str or None
        The edge attribute that marks shared weights (``None``: ignore sharing).

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
        raise NetworkError(f"a network must be a networkx.DiGraph, not a {kind}: convert it with nx.DiGraph(graph)"
                           " after merging parallel edges, and orient undirected edges from input to output")
    nodes = tuple(graph.nodes)
    index = {label: k for k, label in enumerate(nodes)}
    get = weight_getter(weights)
    edge_list = list(graph.edges(data=True))
    edges = [(j, i) for j, i, _ in edge_list]
    src = np.fromiter((index[j] for j, _ in edges), dtype=np.int64, count=len(edges))
    dst = np.fromiter((index[i] for _, i in edges), dtype=np.int64, count=len(edges))
    weight = _values([get(j, i, data) for j, i, data in edge_list], edges, "weight")
    edge_data = {}
    for key, spec in dict(coefficients or {}).items():
        if isinstance(spec, str):
            raw = [data.get(spec, 1.0) for _, _, data in edge_list]
        else:
            g = weight_getter(spec, "coefficients")
            raw = [g(j, i, data) for j, i, data in edge_list]
        edge_data[key] = _values(raw, edges, f"coefficient {spec!r}" if isinstance(spec, str) else "coefficient")
    labels = None
    if share is not None:
        labels = [data.get(share) for _, _, data in edge_list]
        if all(x is None for x in labels):
            labels = None
    roles, activation, degree, tie, args = [], [], [], [], {}
    for k, (label, data) in enumerate(graph.nodes(data=True)):
        role = data.get("role")
        if role is None:
            role = ("input" if graph.in_degree(label) == 0
                    else "output" if graph.out_degree(label) == 0 else "hidden")
        roles.append(role)
        activation.append(data.get("activation"))
        degree.append(data.get("degree", 1.0))
        tie.append(data.get("tie"))
        params = {key: data[key] for key in _ACTIVATION_ARGS if key in data}
        if params:
            args[k] = params
    weight_attr = weights if isinstance(weights, str) else "weight"
    snapshot = GraphSnapshot(_own(graph.graph), tuple(_own(d) for _, d in graph.nodes(data=True)),
                             tuple(_own(d, weight_attr) for *_, d in edge_list), weight_attr)
    return Problem.from_arrays(
        src, dst, weight, nodes=nodes, roles=roles, degree=degree,
        tie=tie if any(t is not None for t in tie) else None,
        activation=[a if a is None or callable(a) else str(a) for a in activation], activation_args=args,
        share=labels, edge_data=edge_data, source=snapshot,
    )


def as_problem(network, weights: WeightSpec = "weight", **kwargs) -> Problem:
    """``network`` compiled (:func:`compile_network`) unless it already is a :class:`Problem`."""
    if isinstance(network, Problem):
        return network
    if isinstance(network, nx.Graph):
        return compile_network(network, weights, **kwargs)
    raise NetworkError(f"expected a networkx.DiGraph or a balgraph.Problem, got a {type(network).__name__}:"
                       " build a Problem with Problem.from_layers or Problem.from_arrays")


def problem_graph(problem: Problem, weight: np.ndarray | None = None, attr: str | None = None) -> nx.DiGraph:
    """A new ``DiGraph`` of ``problem`` with per-edge ``weight`` (default: its own weights).

    A problem compiled from a graph gets that graph back (its attributes copied from the
    snapshot, so nothing is shared with the caller's graph); other problems get the attributes
    of the network model: ``role``, ``activation``, ``degree`` (BiPU) and ``tie``.
    """
    weight = problem.weight if weight is None else np.asarray(weight)
    snap = problem.source if isinstance(problem.source, GraphSnapshot) else None
    attr = attr or (snap.weight_attr if snap is not None else "weight")
    g = nx.DiGraph()
    nodes = problem.nodes
    if snap is not None:
        g.graph.update(copy.deepcopy(snap.graph))
        g.add_nodes_from((label, copy.deepcopy(data)) for label, data in zip(nodes, snap.nodes))
        edge_attrs = snap.edges
    else:
        tied = problem.var_size[np.maximum(problem.var, 0)] > 1
        for k, label in enumerate(nodes):
            data = {"role": problem.roles[k]}
            if problem.roles[k] == "hidden":
                act = problem.activation[k] if problem.activation is not None else None
                data["activation"] = (act if isinstance(act, str) else "opaque" if problem.fixed[k]
                                      else "bipu" if problem.degree[k] != 1.0 else "relu")
                if problem.degree[k] != 1.0:
                    data["degree"] = float(problem.degree[k])
                if not problem.fixed[k] and tied[k]:
                    data["tie"] = int(problem.var[k])
            g.add_node(label, **data)
        edge_attrs = None
    src, dst, w = problem.src.tolist(), problem.dst.tolist(), weight.tolist()
    if edge_attrs is None:
        g.add_edges_from((nodes[j], nodes[i], {attr: x}) for j, i, x in zip(src, dst, w))
    else:
        g.add_edges_from((nodes[j], nodes[i], {**(copy.deepcopy(d) if d else {}), attr: x})
                         for j, i, x, d in zip(src, dst, w, edge_attrs))
    return g
