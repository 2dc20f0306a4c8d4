"""Networks to test, benchmark and demonstrate on: random graphs and the workloads W1–W6.

Everything here is generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

__all__ = ["random_network", "layer_scales"]


def layer_scales(n_layers: int, rng: np.random.Generator, spread: float = 2.0) -> np.ndarray:
    """Per-layer weight scales ``exp(U(-spread, spread))``: far from balanced (design.md §4)."""
    return np.exp(rng.uniform(-spread, spread, size=n_layers))


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
        for a, b in zip(layers[:-1], layers[1:]):
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
    n_tanh = int(round(tanh_fraction * n_hidden))
    n_bipu = int(round(bipu_fraction * n_hidden))
    for k in order[:n_tanh]:
        g.nodes[hidden[k]]["activation"] = "tanh"
    for k in order[n_tanh:n_tanh + n_bipu]:
        g.nodes[hidden[k]].update(activation="bipu", degree=float(rng.uniform(0.5, 2.0)))
    bilu = [hidden[k] for k in order[n_tanh + n_bipu:]]
    for t in range(min(n_ties, len(bilu) // 2)):
        g.nodes[bilu[2 * t]]["tie"] = f"t{t}"
        g.nodes[bilu[2 * t + 1]]["tie"] = f"t{t}"
    return g
