"""Evaluate a network, to check that balancing leaves its function unchanged.

Scaling a free unit ``i`` by ``λ > 0`` multiplies its incoming weights by ``λ`` and divides its
outgoing weights by ``λ^c``; because ``f(λx) = λ^c f(x)`` (BiLU, Proposition 2.11: the
homogeneous units with ``c = 1``; BiPU, eq. 6.3) the unit's output is multiplied by exactly
``λ^c`` and the next layer sees the same input (Sections 3 and 6.2). :func:`forward` computes the function so that this can be checked
numerically: ``forward(g, X)`` and ``forward(solve(g).to_graph(), X)`` agree to rounding.

Activations (node attribute ``activation``, or the ``activations=`` argument):

=================  ==========================================================================
``relu``           ``max(x, 0)``
``leaky_relu``     ``x`` for ``x >= 0``, ``slope·x`` otherwise (node attribute ``slope``, 0.01)
``linear``         ``x`` (also ``identity``)
``bilu``           ``b·x`` for ``x >= 0``, ``a·x`` otherwise (node attributes ``a`` = 0.5, ``b`` = 1)
``bipu``           ``b·x^c`` for ``x >= 0``, ``-a·|x|^c`` otherwise (``a = b = 1``: ``sign(x)|x|^c``),
                   with ``c`` the node's ``degree``; this is eq. 6.4 with ``C = b``, ``D = -a``,
                   homogeneous of degree ``c``: ``f(λx) = λ^c f(x)`` for ``λ > 0`` (eq. 6.3)
``tanh``           ``tanh(x)`` (not homogeneous: such units are fixed)
``sigmoid``        ``1/(1 + e^{-x})`` (also ``logistic``; fixed)
a callable         applied elementwise to an array of pre-activations
=================  ==========================================================================

Hidden units default to ``relu`` (as in :func:`balgraph.compile_network`); output units default
to ``linear`` unless they carry an ``activation`` attribute. Input units take the columns of
``inputs``; bias units are clamped to 1; edges into input or bias units are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .backend import to_host
from .errors import NetworkError, name_some
from .graphs import classes_of, longest_path_levels
from .model import Problem, WeightSpec, compile_network
from .result import BalanceResult

__all__ = ["forward"]

ActivationSpec = str | Callable[[np.ndarray], np.ndarray]

# name -> (a, b) of the BiLU form f(x) = b x (x >= 0), a x (x < 0); None marks a BiPU
_BILU = {"relu": (0.0, 1.0), "linear": (1.0, 1.0), "identity": (1.0, 1.0)}
_FIXED = {"tanh": np.tanh, "sigmoid": lambda z: 0.5 * (1.0 + np.tanh(0.5 * z))}
_FIXED["logistic"] = _FIXED["sigmoid"]


def forward(
    network: nx.DiGraph | Problem | BalanceResult,
    inputs: np.ndarray,
    weights: WeightSpec | np.ndarray = "weight",
    *,
    steps: int | None = None,
    activations: ActivationSpec | Mapping[Hashable, ActivationSpec] | None = None,
) -> np.ndarray:
    """Compute the outputs of a network on a batch of inputs.

    Parameters
    ----------
    network : networkx.DiGraph, Problem or BalanceResult
        The network (node attributes as in :mod:`balgraph.network`, plus ``slope``, ``a``, ``b``
        for the activations above), a compiled :class:`Problem` (e.g. from
        :meth:`Problem.from_layers`), or a result of :func:`balgraph.solve`, which evaluates the
        balanced weights with the activations of the graph it was solved from.
    inputs : array_like, shape (n_samples, n_inputs) or (n_inputs,)
        Values of the input units, in the order in which units with ``role == "input"`` appear
        in the graph's node order (``problem.nodes`` for a Problem; ``(0, r)`` for layer problems).
    weights : str, mapping, callable or array
        For a graph, networkx's ``weight=`` convention, exactly as in :func:`balgraph.solve`
        (so ``forward(result.to_graph(), X)`` evaluates a balanced network). For a Problem,
        ``"weight"`` (its own weights) or an array in the compiled edge order, such as
        ``result.weight_array``.
    steps : int, optional
        For recurrent networks (directed cycles, self-loops included): the number ``T`` of
        synchronous updates ``s_{t+1} = f(W s_t)`` from the zero state, inputs and biases held
        fixed; the outputs are ``s_T``. Required when the graph has a cycle. When given for an
        acyclic graph the same ``T``-step dynamics are used, which equal the feed-forward
        result once ``T`` reaches the depth of the graph.
    activations : str, callable or mapping, optional
        A str or callable replaces every hidden unit's activation; a mapping
        ``{unit: str or callable}`` replaces those units' activations only (outputs included).
        A Problem carries no activation names: its free hidden units default to ``relu``
        (``bipu`` where its degree is not 1) and fixed hidden units must be named here.

    Returns
    -------
    ndarray, shape (n_samples, n_outputs) or (n_outputs,)
        The output units' values, in graph node order of the ``role == "output"`` units.

    Examples
    --------
    >>> import networkx as nx, numpy as np, balgraph
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> forward(g, np.array([[1.0], [-1.0]]))
    array([[4.],
           [0.]])
    >>> res = balgraph.solve(g)                                       # doctest: +SKIP
    >>> forward(res.to_graph(), np.array([[1.0], [-1.0]]))             # doctest: +SKIP
    array([[4.],
           [0.]])
    """
    problem, blocks = _resolve(network, weights)
    units = _Units(problem, activations)
    x = np.asarray(inputs, dtype=np.float64)
    single = x.ndim == 1
    x2 = x.reshape(1, -1) if single else x
    n_in = units.inputs.size
    if x2.ndim != 2 or x2.shape[1] != n_in:
        raise NetworkError(
            f"inputs must have shape (n_samples, {n_in}) for the {n_in} input unit(s)"
            f" {name_some([problem.nodes[k] for k in units.inputs])}, got {x.shape}"
        )
    state = np.zeros((problem.n_nodes, x2.shape[0]))
    state[units.inputs] = x2.T
    state[units.biases] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        if steps is not None:
            if not isinstance(steps, (int, np.integer)) or steps < 0:
                raise NetworkError(f"steps must be a whole number >= 0, got {steps!r}")
            _run_steps(units, units.adjacency(blocks), state, int(steps))
        elif not _run_layers(units, blocks, state):
            adj = units.adjacency(blocks)
            levels = _levels(units, adj)
            if levels is None:
                raise NetworkError(
                    "the network has directed cycles (recurrent connections or self-loops):"
                    " pass steps=T to evaluate T synchronous updates from the zero state"
                )
            for idx in levels:
                state[idx] = units.apply(idx, adj[idx] @ state)
    out = state[units.outputs].T
    return out[0] if single else out


def _resolve(network, weights):
    """``(problem, blocks)``: the network and its weight blocks (balanced ones for a result)."""
    if isinstance(network, BalanceResult):
        pb = network.problem
        return pb, [network.balanced_block(k) for k in range(len(pb.blocks))]
    if isinstance(network, Problem):
        if isinstance(weights, str) and weights == "weight":
            return network, [b.weight for b in network.blocks]
        w = np.asarray(weights) if isinstance(weights, (np.ndarray, list, tuple)) else None
        if w is None or w.shape != (network.n_edges,):
            raise NetworkError(
                f"for a Problem, weights must be 'weight' or an array of its {network.n_edges}"
                " edge weights in compiled order (e.g. result.weight_array)"
            )
        pb = network.with_weights(w)
        return pb, [b.weight for b in pb.blocks]
    if isinstance(network, nx.DiGraph):
        pb = compile_network(network, weights, share=None)
        return pb, [b.weight for b in pb.blocks]
    raise NetworkError(
        f"cannot evaluate a {type(network).__name__}: pass a networkx.DiGraph, a balgraph.Problem"
        " or a BalanceResult"
    )


class _Units:
    """Per-unit activation parameters, resolved once, applied to blocks of units at a time."""

    def __init__(self, problem: Problem, activations):
        self.problem = problem
        roles = np.array(problem.roles)
        self.inputs = np.flatnonzero(roles == "input")
        self.biases = np.flatnonzero(roles == "bias")
        self.outputs = np.flatnonzero(roles == "output")
        self.clamped = np.isin(roles, ("input", "bias"))
        n = problem.n_nodes
        self.a, self.b, self.c = np.zeros(n), np.ones(n), np.ones(n)
        self.special: dict[int, Callable] = {}
        for k in np.flatnonzero(~self.clamped).tolist():
            label = problem.nodes[k]
            self._set(k, label, problem.activation_args.get(k, {}), self._spec(k, label, activations))
        self.is_special = np.zeros(n, dtype=bool)
        self.is_special[sorted(self.special)] = True
        self.unit_c = self.c != 1.0

    def _spec(self, k, label, activations):
        output = self.problem.roles[k] == "output"
        if isinstance(activations, Mapping) and label in activations:
            return activations[label]
        if activations is not None and not isinstance(activations, Mapping) and not output:
            return activations
        compiled = self.problem.activation[k] if self.problem.activation is not None else None
        if compiled is not None:
            return compiled
        if output:
            return "linear"
        if self.problem.fixed[k]:
            raise NetworkError(
                f"unit {label!r} is fixed but its activation is not recorded: pass"
                f" activations={{{label!r}: 'tanh'}} (or a callable), or a str for every hidden unit"
            )
        return "relu" if self.problem.degree[k] == 1.0 else "bipu"

    def _set(self, k, label, data, spec) -> None:
        self.c[k] = 1.0
        if callable(spec):
            self.special[k] = spec
            return
        name = str(spec).lower()
        if name in _BILU:
            self.a[k], self.b[k] = _BILU[name]
        elif name == "leaky_relu":
            self.a[k] = _param(label, data, "slope", 0.01)
        elif name == "bilu":
            self.a[k], self.b[k] = _param(label, data, "a", 0.5), _param(label, data, "b", 1.0)
        elif name == "bipu":
            self.c[k] = self.problem.degree[k]
            self.a[k], self.b[k] = _param(label, data, "a", 1.0), _param(label, data, "b", 1.0)
        elif name in _FIXED:
            self.special[k] = _FIXED[name]
        else:
            raise NetworkError(
                f"unit {label!r} has activation {spec!r}, which forward() does not know: use one of"
                f" {', '.join(sorted([*_BILU, 'leaky_relu', 'bilu', 'bipu', *_FIXED]))}, or pass"
                f" activations={{{label!r}: a_callable}}"
            )

    def adjacency(self, blocks) -> sp.csr_matrix:
        """``A[i, j] = Σ w`` over edges ``j -> i`` into non-clamped units (zeros kept as structure)."""
        pb = self.problem
        weight = np.concatenate([np.asarray(to_host(w), dtype=np.float64).reshape(-1) for w in blocks]) \
            if blocks else np.zeros(0)
        keep = ~self.clamped[pb.dst]
        adj = sp.csr_matrix((weight[keep], (pb.dst[keep], pb.src[keep])), shape=(pb.n_nodes, pb.n_nodes))
        adj.sum_duplicates()
        return adj

    def apply(self, idx: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Activations of units ``idx`` (rows of ``z``: their pre-activations over samples)."""
        a, b = self.a[idx, None], self.b[idx, None]
        pos = z >= 0
        if self.unit_c[idx].any():
            c = self.c[idx, None]
            out = np.where(pos, b, -a) * np.abs(z) ** c
        else:
            out = np.where(pos, b, a) * z
        special = self.is_special[idx]
        if special.any():
            for r in np.flatnonzero(special).tolist():
                out[r] = self.special[int(idx[r])](z[r])
        return out


def _param(label, data, key, default) -> float:
    value = data.get(key, default)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise NetworkError(f"unit {label!r} has a non-numeric {key!r} attribute {value!r}") from None
    if not np.isfinite(v):
        raise NetworkError(f"unit {label!r} has {key}={value!r}: give a finite number")
    return v


def _run_steps(units: _Units, adj: sp.csr_matrix, state: np.ndarray, steps: int) -> None:
    free = np.flatnonzero(~units.clamped)
    rows = adj[free]
    for _ in range(steps):
        state[free] = units.apply(free, rows @ state)


def _levels(units: _Units, adj: sp.csr_matrix) -> list[np.ndarray] | None:
    """Free units grouped by longest-path depth among themselves; None if there is a cycle."""
    free = np.flatnonzero(~units.clamped)
    sub = adj[free][:, free].tocsr()  # only free -> free edges order the evaluation
    structure = sp.csr_matrix((np.ones(sub.nnz), sub.indices, sub.indptr), shape=sub.shape).T.tocsr()
    depth = longest_path_levels(structure) if free.size else np.zeros(0, np.int64)
    if depth is None:
        return None
    return [free[c] for c in classes_of(depth)]


def _run_layers(units: _Units, blocks: list, state: np.ndarray) -> bool:
    """Evaluate a problem of layer matrices block by block with BLAS mat-muls, in the order of
    their target units. Returns False (nothing written) when some edge is not in a layer
    matrix or the layers do not form a chain that can be evaluated in that order."""
    pb = units.problem
    if not pb.dense:
        return False
    targets: dict[bytes, list] = {}
    for k, blk in enumerate(pb.blocks):
        targets.setdefault(blk.out_units.tobytes(), []).append(k)
    ready = units.clamped.copy()
    order = sorted(targets.values(), key=lambda ks: int(pb.blocks[ks[0]].out_units.min()))
    for ks in order:
        out = pb.blocks[ks[0]].out_units
        if ready[out].any() or not all(ready[pb.blocks[k].in_units].all() for k in ks):
            return False
        ready[out] = True
    if not ready.all():
        return False
    for ks in order:
        out = pb.blocks[ks[0]].out_units
        z = np.zeros((out.size, state.shape[1]))
        for k in ks:
            z += np.asarray(to_host(blocks[k]), dtype=np.float64) @ state[pb.blocks[k].in_units]
        state[out] = units.apply(out, z)
    return True
