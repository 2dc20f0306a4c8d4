"""Local operations: scaling and balancing one unit or a set of units, imbalance measures.

Sections 3–6 and 8 of the paper. Scaling unit ``i`` by ``λ > 0`` (Def. 3.1, Section 6.2)
multiplies its incoming weights by ``λ`` and divides its outgoing weights by ``λ^c`` (``c`` its
degree; a self-loop gets ``λ^{1-c}``); the network function is unchanged. Balancing
(Def. 4.1) scales by the ``λ*`` that minimizes the cost of the weights it touches; coordinated
scaling/balancing (Defs 3.3, 4.5) uses one ``λ`` for a whole set.

Array-level functions take a :class:`~balgraph.problem.Problem`, an optional weight array in
its edge order (default ``problem.weight``) and unit *labels*; they return new arrays. The
``*_units`` functions take a networkx graph and return a new graph. Inputs are never mutated.

Examples
--------
>>> import networkx as nx, balgraph, balgraph.local as bl
>>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
>>> round(bl.optimal_scale(balgraph.compile_network(g), None, "h").scale, 12)  # (1/16)^(1/4)
0.5
>>> h = bl.balance_units(g, "h")
>>> round(h.edges["x", "h"]["weight"], 12), g.edges["x", "h"]["weight"]
(2.0, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .costs.line import Columns, optimal_shift
from .errors import NetworkError, NoFiniteOptimumError, name_some
from .kernels import logsumexp
from .measures import (  # noqa: F401  (public measures stay reachable from balgraph.local)
    Imbalance, balance_deficit, group_imbalance, lp_cost, require_free, unit_depth, unit_imbalance, unit_indices,
    weighted,
)
from .model import Problem, WeightSpec, compile_network, problem_graph
from .regularizers import Regularizer, as_regularizer

__all__ = [
    "LocalOptimum", "Imbalance", "scale_weights", "optimal_scale", "balance_weights",
    "favourable_scales", "unit_imbalance", "group_imbalance", "balance_deficit", "lp_cost",
    "scale_units", "balance_units", "tie_layers",
]

_EPS = np.finfo(np.float64).eps


def _set_column(problem: Problem, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero edges touched by scaling the set ``idx`` with one λ, and their exponents."""
    member = np.zeros(problem.n_nodes, dtype=bool)
    member[idx] = True
    src, dst = problem.src, problem.dst
    g = member[dst] - np.where(member[src], problem.degree[src], 0.0)
    edges = np.flatnonzero((g != 0) & (problem.weight != 0))
    return edges, g[edges]


# ---------------------------------------------------------------------------- scaling
def scale_weights(problem: Problem, weight, units, lam) -> np.ndarray:
    """Weights after scaling ``units`` (Defs 3.1, 3.3; Section 6.2 for BiPU).

    Edge ``j -> i`` becomes ``w_ij · Λ_i / Λ_j^{c_j}`` (``Λ = 1`` off the set), so a self-loop
    gets ``λ^{1−c}``. A scalar ``lam`` scales the whole set by one factor (coordinated scaling
    ``S_λ(I)``); an array gives each unit its own (``∏ S_{λ_i}(i)``, in any order: Prop. 3.2).

    Parameters
    ----------
    problem : Problem
    weight : array_like or None
        Weights in ``problem``'s edge order (default ``problem.weight``); not modified.
    units : label or iterable of labels
        Free units to scale.
    lam : float or array_like
        Positive finite factor(s).

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> scale_weights(pb, None, 1, 2.0).tolist()
    [8.0, 0.5]
    """
    pb = weighted(problem, weight)
    idx = unit_indices(pb, units)
    require_free(pb, idx, "scaling")
    lam = np.asarray(lam, dtype=np.float64)
    lam = np.broadcast_to(lam, idx.shape) if lam.ndim == 0 else lam.ravel()
    if lam.shape != idx.shape:
        raise NetworkError(f"give one scale or one per unit ({idx.size}), got {lam.size}")
    bad = np.flatnonzero(~(np.isfinite(lam) & (lam > 0)))
    if bad.size:
        raise NetworkError(
            f"scales must be finite and > 0; unit {pb.nodes[idx[bad[0]]]!r} got {lam[bad[0]]!r}"
        )
    ell = np.zeros(pb.n_nodes)
    ell[idx] = np.log(lam)
    with np.errstate(over="ignore"):
        factor = np.exp(ell[pb.dst] - pb.degree[pb.src] * ell[pb.src])
    out = np.where(pb.weight == 0, 0.0, pb.weight * factor)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise NetworkError(
            f"scaling overflows float64 on edge {pb.edge_label(int(bad[0]))!r}: use a smaller factor"
        )
    return out


@dataclass(frozen=True)
class LocalOptimum:
    """The optimal coordinated scale of a set of units and what it saves.

    ``cost_before``/``cost_after`` are the cost of the weights the scaling touches;
    ``decrease = cost_before − cost_after ≥ 0`` (eqs. 5.7, 5.17).
    """

    units: tuple
    scale: float
    log_scale: float
    cost_before: float
    cost_after: float
    decrease: float


def optimal_scale(
    problem: Problem, weight, units, p: float = 2.0, *, regularizer: Regularizer | None = None
) -> LocalOptimum:
    """The balancing factor ``λ*`` of a unit, or of a set scaled as one (Defs 4.1, 4.5).

    For L_p and a unit with incoming cost ``IN = Σ_IN |w|^p`` and outgoing cost ``OUT``:
    ``λ* = (c·OUT/IN)^{1/(p(c+1))}`` (eq. 6.6; eq. 5.6 ``(OUT/IN)^{1/2p}`` when ``c = 1``) and
    ``ΔR = (√IN − √OUT)²`` for BiLU (eq. 5.7), ``ΔR = R(1) − R(λ*)`` in general (eq. 5.17). A set
    uses the sums over its members. With self-loops or internal edges and ``c ≠ 1``, or another
    regularizer, ``min_s Σ_e φ_e(G_e s)`` has no closed form and a safeguarded Newton solves it.
    Everything is computed in the log domain.

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0], degree=[1, 2, 1])
    >>> round(optimal_scale(pb, None, 1, p=2).scale ** 6, 12)   # c·OUT/IN = 2/16
    0.125
    """
    reg = as_regularizer(p, regularizer)
    pb = weighted(problem, weight)
    idx = unit_indices(pb, units)
    require_free(pb, idx, "balancing")
    edges, g = _set_column(pb, idx)
    law = pb.log_abs_weight
    cols = Columns.from_matrix(sp.csc_matrix((g, (edges, np.zeros_like(edges))), shape=(pb.n_edges, 1)))
    labels = tuple(pb.nodes[k] for k in idx)
    try:
        s = float(optimal_shift(reg, law, np.zeros(pb.n_edges), cols)[0])
    except NoFiniteOptimumError:
        has_in = bool(np.any(g > 0))
        raise NoFiniteOptimumError(
            f"unit(s) {name_some(labels)} have no non-zero {'outgoing' if has_in else 'incoming'}"
            f" weight: the cost falls to 0 as λ → {'0' if has_in else '∞'}, there is no λ*."
            " Balance them together with a unit on the other side, or remove them",
            units=labels,
        ) from None
    sub, law = reg.restrict(edges), law[edges]
    lphi0 = sub.edge_terms(law, np.zeros(edges.size))[0]
    lphi1 = sub.edge_terms(law, g * s)[0]
    before, after = logsumexp(lphi0), logsumexp(lphi1)
    with np.errstate(over="ignore"):  # costs beyond float64 read inf; the logs stay exact
        if reg.power() is not None and np.all(np.abs(g) == 1.0):
            # eq. 5.7, exact where the subtraction of 5.17 would cancel
            diff = np.exp(0.5 * logsumexp(lphi0[g > 0])) - np.exp(0.5 * logsumexp(lphi0[g < 0]))
            decrease = float(diff * diff)
        else:
            decrease = max(0.0, float(np.sum(-np.exp(lphi0) * np.expm1(lphi1 - lphi0))))
        return LocalOptimum(labels, float(np.exp(s)), s, float(np.exp(before)),
                            float(np.exp(after)), decrease)


def balance_weights(
    problem: Problem, weight, units, p: float = 2.0, *,
    regularizer: Regularizer | None = None, tied: bool = False,
) -> np.ndarray:
    """Weights after balancing ``units``.

    ``tied=False``: ``B(i)`` for each unit in the order given (Def. 4.1; for a disjoint set the
    order does not matter, Prop. 4.4, otherwise it does). ``tied=True``: coordinated balancing
    ``B(I)`` with one ``λ*`` for the whole set (Def. 4.5).

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> balance_weights(pb, None, [1]).round(12).tolist()
    [2.0, 2.0]
    """
    pb = weighted(problem, weight)
    idx = unit_indices(pb, units)
    groups = [pb.nodes[k] for k in idx]
    w = pb.weight
    for group in [groups] if tied else [[x] for x in groups]:
        opt = optimal_scale(pb.with_weights(w), None, group, p, regularizer=regularizer)
        w = scale_weights(pb, w, group, opt.scale)
    return np.array(w, dtype=np.float64)


def favourable_scales(
    problem: Problem, weight, units, p: float = 2.0, *, regularizer: Regularizer | None = None
) -> tuple[float, float]:
    """The interval of coordinated scales that do not increase the cost (Remark 4.6).

    The cost of the touched weights is convex in ``s = log λ`` and minimal at ``log λ*``, so
    ``{λ : R(λ) ≤ R(1)}`` is the interval between 1 and the other root ``λ₁`` of
    ``R(λ) = R(1)``; every λ strictly inside decreases the cost. For L_p BiLU,
    ``IN y + OUT/y ≤ IN + OUT`` with ``y = λ^p`` factors as ``(y − 1)(IN·y − OUT) ≤ 0``: ``λ``
    between 1 and ``(OUT/IN)^{1/p} = λ*²``. Otherwise ``λ₁`` is found by Brent's method.

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> [round(x, 12) for x in favourable_scales(pb, None, 1)]   # λ* = 1/2
    [0.25, 1.0]
    """
    from scipy.optimize import brentq

    reg = as_regularizer(p, regularizer)
    opt = optimal_scale(problem, weight, units, p, regularizer=reg)
    s = opt.log_scale
    if s == 0.0:
        return (1.0, 1.0)
    pb = weighted(problem, weight)
    edges, g = _set_column(pb, unit_indices(pb, units))
    law, sub = pb.log_abs_weight[edges], reg.restrict(edges)
    if reg.power() is not None and np.all(np.abs(g) == 1.0):
        s1 = 2.0 * s
    else:
        base = logsumexp(sub.edge_terms(law, np.zeros(edges.size))[0])

        def excess(x: float) -> float:
            return float(np.expm1(logsumexp(sub.edge_terms(law, g * x)[0]) - base))

        far = 2.0 * s
        while excess(far) <= 0.0:
            far *= 2.0
        s1 = brentq(excess, s, far, xtol=4 * _EPS * abs(far), rtol=4 * _EPS)
    lo, hi = sorted((0.0, s1))
    return (float(np.exp(lo)), float(np.exp(hi)))


# ---------------------------------------------------------------------------- measures
# ---------------------------------------------------------------------------- networkx
def scale_units(graph: nx.DiGraph, units, lam, *, weights: WeightSpec = "weight") -> nx.DiGraph:
    """A new graph with ``units`` scaled by ``lam`` (see :func:`scale_weights`).

    The balanced weights go to the ``weights`` attribute (``"weight"`` when ``weights`` is a
    mapping or a callable); ``graph`` is not modified.

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> sorted(scale_units(g, "h", 2.0).edges(data="weight"))
    [('h', 'y', 0.5), ('x', 'h', 8.0)]
    """
    pb = compile_network(graph, weights)
    return problem_graph(pb, scale_weights(pb, None, units, lam))


def balance_units(
    graph: nx.DiGraph, units, p: float = 2.0, *, weights: WeightSpec = "weight",
    regularizer: Regularizer | None = None, tied: bool = False,
) -> nx.DiGraph:
    """A new graph with ``units`` balanced (see :func:`balance_weights`); ``graph`` is kept.

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> [round(w, 12) for *_, w in sorted(balance_units(g, ["h"], p=1).edges(data="weight"))]
    [2.0, 2.0]
    """
    reg = as_regularizer(p, regularizer)
    pb = compile_network(graph, weights, coefficients=reg.coefficient_specs())
    reg = reg.bind(pb.edge_data)
    w = balance_weights(pb, None, units, p, regularizer=reg, tied=tied)
    return problem_graph(pb, w)


def tie_layers(graph: nx.DiGraph, *, weights: WeightSpec = "weight") -> nx.DiGraph:
    """A new graph whose free hidden units of equal depth share a ``tie`` (Section 8.2, App. B).

    Depth is the longest path from the inputs, so a layered net's layers become tie groups
    (``tie = "layer<depth>"``) and any solver then does tied layer-wise balancing, reaching
    layer balance (eq. 8.1). Existing ties are replaced; the graph must be acyclic apart from
    self-loops, and units at one depth must share their degree.

    Examples
    --------
    >>> import balgraph.gallery
    >>> g = tie_layers(balgraph.gallery.random_network(0, kind="layered"))
    >>> sorted({t for _, t in g.nodes(data="tie") if t})
    ['layer1', 'layer2', 'layer3']
    """
    pb = compile_network(graph, weights)
    depth = unit_depth(pb)
    if depth is None:
        raise NetworkError(
            "tie_layers needs a network without directed cycles (self-loops are fine): layers"
            " of a recurrent network are not defined; set the 'tie' node attribute yourself"
        )
    out = problem_graph(pb)
    free = np.flatnonzero(~pb.fixed)
    for d in np.unique(depth[free]).tolist():
        units = free[depth[free] == d]
        if np.unique(pb.degree[units]).size > 1:
            raise NetworkError(
                f"units {name_some([pb.nodes[k] for k in units])} at depth {d} have different"
                " degrees: tied units must share one degree; tie them yourself"
            )
    for k in range(pb.n_nodes):
        label = pb.nodes[k]
        if pb.fixed[k]:
            out.nodes[label].pop("tie", None)
        else:
            out.nodes[label]["tie"] = f"layer{int(depth[k])}"
    return out
