"""Random networks, the workload registry W1–W6, and Problems as networkx graphs."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping

import networkx as nx
import numpy as np

from ..errors import NetworkError
from ..model import Problem, problem_graph
from .workloads import autoencoder, deep_mlp, locally_connected, recurrent, resnet_channels, wide_mlp

__all__ = ["WORKLOADS", "as_graph", "random_network", "workload"]


def random_network(
    seed: int = 0,
    *,
    kind: str = "dag",
    n_inputs: int = 3,
    n_hidden: int = 8,
    n_outputs: int = 2,
    density: float = 0.4,
    bias: bool = True,
    tanh_fraction: float = 0.0,
    bipu_fraction: float = 0.0,
    n_ties: int = 0,
    weight_spread: float = 2.0,
) -> nx.DiGraph:
    """A random network in which every free unit has a finite optimum.

    Every hidden unit gets an edge from an input (or an earlier hidden unit) and an edge to an
    output (or a later hidden unit), so each lies on an input -> output path.

    Parameters
    ----------
    seed : int
        Seed of everything random.
    kind : {"dag", "layered", "recurrent"}
        ``"dag"``: random edges between hidden units in a random order, with skip connections;
        ``"layered"``: hidden units in 2–3 layers, full connections between consecutive layers;
        ``"recurrent"``: like ``"dag"`` plus backward edges and self-loops (directed cycles).
    density : float
        Probability of each optional edge.
    bias : bool
        Add a ``"bias"`` unit feeding every hidden and output unit.
    tanh_fraction, bipu_fraction : float
        Fractions of hidden units that are ``tanh`` (fixed) or BiPU with a degree in [0.5, 2].
    n_ties : int
        Number of tie groups formed among free BiLU units (pairs of units).
    weight_spread : float
        Weights are Gaussian times ``exp(U(-spread, spread))`` per edge.

    Examples
    --------
    >>> g = random_network(1, kind="recurrent")
    >>> any(u == v for u, v in g.edges)
    True
    """
    rng = np.random.default_rng(seed)
    g = nx.DiGraph()
    inputs = [f"x{k}" for k in range(n_inputs)]
    hidden = [f"h{k}" for k in range(n_hidden)]
    outputs = [f"y{k}" for k in range(n_outputs)]
    for x in inputs:
        g.add_node(x, role="input")
    for h in hidden:
        g.add_node(h, role="hidden", activation="relu")
    for y in outputs:
        g.add_node(y, role="output", activation="linear")

    def w() -> float:
        return float(rng.normal() * np.exp(rng.uniform(-weight_spread, weight_spread)) or 1.0)

    if kind == "layered":
        n_layers = int(rng.integers(2, 4))
        cuts = np.sort(rng.choice(np.arange(1, n_hidden), size=min(n_layers - 1, n_hidden - 1), replace=False))
        layers = [inputs] + [list(part) for part in np.split(np.array(hidden), cuts)] + [outputs]
        for a, b in itertools.pairwise(layers):
            for j in a:
                for i in b:
                    g.add_edge(j, i, weight=w())
    elif kind in ("dag", "recurrent"):
        for pos, h in enumerate(hidden):
            earlier = inputs + hidden[:pos]
            later = hidden[pos + 1:] + outputs
            g.add_edge(earlier[rng.integers(len(earlier))], h, weight=w())
            g.add_edge(h, later[rng.integers(len(later))], weight=w())
            for j in earlier:
                if rng.random() < density / 2:
                    g.add_edge(j, h, weight=w())
        for x in inputs:
            for y in outputs:
                if rng.random() < density:
                    g.add_edge(x, y, weight=w())
        if kind == "recurrent":
            for pos, h in enumerate(hidden):
                if rng.random() < 0.5:
                    g.add_edge(h, h, weight=w())
                for j in hidden[pos + 1:]:
                    if rng.random() < density / 2:
                        g.add_edge(j, h, weight=w())
    else:
        raise ValueError(f"unknown kind {kind!r}: use 'dag', 'layered' or 'recurrent'")
    if bias:
        g.add_node("b", role="bias")
        for i in hidden + outputs:
            if rng.random() < 0.7:
                g.add_edge("b", i, weight=w())

    order = rng.permutation(n_hidden)
    n_tanh = round(tanh_fraction * n_hidden)
    n_bipu = round(bipu_fraction * n_hidden)
    for k in order[:n_tanh]:
        g.nodes[hidden[k]]["activation"] = "tanh"
    for k in order[n_tanh:n_tanh + n_bipu]:
        g.nodes[hidden[k]].update(activation="bipu", degree=float(rng.uniform(0.5, 2.0)))
    bilu = [hidden[k] for k in order[n_tanh + n_bipu:]]
    for t in range(min(n_ties, len(bilu) // 2)):
        g.nodes[bilu[2 * t]]["tie"] = f"t{t}"
        g.nodes[bilu[2 * t + 1]]["tie"] = f"t{t}"
    return g


# name -> (builder, full-size keyword arguments, small-size keyword arguments, hidden activation)
WORKLOADS: dict[str, tuple] = {
    "W1": (autoencoder, {}, {"sizes": (20, 10, 5, 10, 20)}, "relu"),
    "W2": (
        locally_connected, {},
        {"image": (3, 8, 8), "lc": ((4, 3), (4, 3), (4, 2)), "fc": (12, 6, 3)}, "leaky_relu",
    ),
    "W3": (deep_mlp, {}, {"depth": 10, "width": 8}, "relu"),
    "W4": (recurrent, {}, {"n_hidden": 200, "n_edges": 2000, "n_inputs": 5, "n_outputs": 3}, "relu"),
    "W5": (wide_mlp, {}, {"sizes": (64, 128, 128, 10)}, "relu"),
    "W6": (resnet_channels, {}, {"widths": (4, 8), "blocks": 1}, "relu"),
}
_ALIASES = {
    "autoencoder": "W1", "locally_connected": "W2", "deep_mlp": "W3", "recurrent": "W4",
    "wide_mlp": "W5", "resnet_channels": "W6",
}


def workload(name: str, seed: int = 0, size: str = "full") -> Problem:
    """The workload ``name`` of docs/design.md §4 as a :class:`Problem`.

    ====  =========================================================  ==========================
    name  full size                                                  ``size="small"``
    ====  =========================================================  ==========================
    W1    784-200-100-50-100-200-784 ReLU autoencoder, biases        20-10-5-10-20
    W2    LC CIFAR net (leaky ReLU), 3.74 M weights                  3×8×8 image, 4 channels
    W3    100 hidden layers of width 64, ReLU                        10 layers of width 8
    W4    recurrent, 20 000 hidden, 1 M edges, self-loops            200 hidden, 2 000 edges
    W5    1024-4096-4096-4096-4096-1000 (58.7 M weights, 470 MB)     64-128-128-10
    W6    ResNet channel graph, widths 16/32/64 × 3 blocks, ties     widths 4/8 × 1 block
    ====  =========================================================  ==========================

    Parameters
    ----------
    name : str
        ``"W1"`` … ``"W6"``, or the builder's name (``"autoencoder"``, ``"recurrent"``, ...).
    seed : int
        Seed of the weights (and of the edges of W4).
    size : {"full", "small"}

    Notes
    -----
    ``WORKLOADS[name][3]`` is the hidden activation, to pass to
    :func:`balgraph.forward.forward` or :func:`as_graph` (a Problem does not record it).

    Examples
    --------
    >>> workload("W3", size="small").n_vars
    80
    """
    key = _ALIASES.get(name, name)
    if key not in WORKLOADS:
        raise NetworkError(
            f"unknown workload {name!r}: use one of {', '.join(WORKLOADS)} or {', '.join(_ALIASES)}"
        )
    if size not in ("full", "small"):
        raise NetworkError(f"size must be 'full' or 'small', not {size!r}")
    builder, full, small, _ = WORKLOADS[key]
    return builder(seed, **(full if size == "full" else small))


def as_graph(
    problem: Problem,
    activation: str | Mapping[Hashable, str] = "relu",
    weight_array: np.ndarray | None = None,
    attr: str = "weight",
) -> nx.DiGraph:
    """A networkx network (the model of :mod:`balgraph.model.network`) equal to a Problem.

    Hidden units get ``activation`` (a mapping ``{unit: name}`` overrides single units; BiPU
    units keep ``"bipu"``); compiling the graph gives back the same problem.

    Examples
    --------
    >>> import balgraph
    >>> g = as_graph(workload("W1", size="small"))
    >>> balgraph.compile_network(g).n_vars
    25
    """
    g = problem_graph(problem, weight_array, attr)
    for k, label in enumerate(problem.nodes):
        if problem.roles[k] == "hidden" and problem.degree[k] == 1.0 and not problem.fixed[k]:
            name = activation.get(label, "relu") if isinstance(activation, Mapping) else activation
            g.nodes[label]["activation"] = name
        elif problem.roles[k] == "output":
            g.nodes[label]["activation"] = "linear"
    return g
