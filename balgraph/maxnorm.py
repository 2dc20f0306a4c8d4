"""p = ∞: max-balancing, the fixed point of cross-layer equalization (Nagel et al. 2019).

As ``p → ∞`` the L_p balance of a unit, ``Σ_IN |w|^p = Σ_OUT |w|^p`` (eq. 5.8), becomes, after
taking ``p``-th roots, the **max-balance** condition

    max_{e ∈ IN(i)} |w_e|  =  max_{e ∈ OUT(i)} |w_e|        for every free unit (or tie group) i,

self-loops and edges inside a tie group left out (no rescaling moves them). This is what
cross-layer equalization computes on a pair of layers (``s_i = sqrt(r1_i / r2_i)`` with
``r1_i = max_j |W1[i, j]|``, ``r2_i = max_k |W2[k, i]|``), and what its iteration over the pairs of
a chain converges to; it is also max-balancing in the sense of Schneider & Schneider (1991) on
the graph whose fixed units are merged into one node. Every max-balanced state has the
smallest possible largest weight ``min_u max_e |w_e| e^{(G u)_e}`` (a linear program in ``u``):
follow an edge of largest weight forwards and backwards through units whose in- and out-maxima
are equal, and it closes a cycle (through the merged fixed node) of largest weights, whose
geometric mean no rescaling changes. That is why the result reports ``max |w|`` as its cost.

Why not a convex sum of maxima. ``R_∞(u) = Σ_i (max_IN(i) + max_OUT(i))`` is convex in ``u``
and on one layer pair its minimizer is CLE's, but each edge enters the maxima of both its
ends: on a chain ``x -a-> h1 -b-> h2 -c-> y`` it equals ``a' + 2b' + c'`` and its minimizer has
``a' = 2b' = c'``, not the balanced ``a' = b' = c'`` that CLE and every L_p (``p → ∞``) give.
So balgraph solves the balance equations themselves.

Uniqueness. Unlike the L_p balance, unit-wise max-balance can hold on a continuum: free
units on a directed cycle that carry each other's largest in- and out-weights (``h1 ⇄ h2``) can
be scaled together without unbalancing anyone. Then the result is the max-balanced state that
the iteration reaches from the given weights (it is deterministic), and only ``max |w|`` is
canonical. On DAGs (every chain that CLE handles) no such cycle exists among free units; there
the result did not depend on the start in the tests (random rescalings of random DAGs).

Algorithm. Exact max-balancing of one variable sets ``u_k += (out_k − in_k) / 2`` in the log
domain (``in_k``, ``out_k`` the log-maxima; ``λ = sqrt(max_out / max_in)``). Variables that
share no edge are balanced at once (Prop. 4.4): the depth levels of a DAG (the layers of a
chain, as in CLE, which sweeps the layer pairs) or greedy colour classes otherwise, one
vectorized segment-max per class. It stops when every ``|max_in − max_out| /
(max_in + max_out) <= tol``. BiLU units only (degree 1): for a BiPU unit the two sides move
by ``λ`` and ``λ^{-c}``, and CLE has no counterpart.
"""

from __future__ import annotations

import time
import warnings

import networkx as nx
import numpy as np
import scipy.sparse as sp

from ._warmup import colour_classes, variable_levels
from .errors import ConvergenceWarning, NetworkError, name_some
from .network import WeightSpec
from .problem import Problem
from .result import BalanceResult

__all__ = ["max_balance", "max_sides"]


class _Block:
    """The edges of a set of variables, split by side, for a vectorized segment max."""

    def __init__(self, G: sp.csc_matrix, cols: np.ndarray):
        sub = G[:, cols].tocsc()
        sub.sort_indices()
        col = np.repeat(np.arange(cols.size), np.diff(sub.indptr))
        self.cols = cols
        self.rows = np.unique(sub.indices)
        self.G_rows = G[self.rows].tocsr()
        local = np.searchsorted(self.rows, sub.indices)
        self.parts = []
        for mask in (sub.data > 0, sub.data < 0):
            order = np.lexsort((local[mask], col[mask]))
            seg = col[mask][order]
            self.parts.append((local[mask][order], np.searchsorted(seg, np.arange(cols.size))))

    def log_maxima(self, law: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vals = law[self.rows] + self.G_rows @ u
        return tuple(np.maximum.reduceat(vals[idx], starts) for idx, starts in self.parts)


def max_sides(problem: Problem, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``log max_IN`` and ``log max_OUT`` of every free variable (``-inf`` for an empty side).

    Edges whose both ends are in one variable (self-loops, edges inside a tie group) and zero
    weights are left out. ``weight`` defaults to ``problem.weight``.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.array([[4.0, -5.0]]), np.array([[1.0]])])
    >>> [np.exp(side).round(12).tolist() for side in max_sides(pb)]
    [[5.0], [1.0]]
    """
    w = problem.weight if weight is None else np.asarray(weight, dtype=np.float64)
    G, law = _reduced(problem, w)
    out = []
    for sign in (1.0, -1.0):
        csc = G.tocsc()
        keep = csc.data * sign > 0
        vals = np.full(problem.n_vars, -np.inf)
        col = np.repeat(np.arange(problem.n_vars), np.diff(csc.indptr))
        np.maximum.at(vals, col[keep], law[csc.indices[keep]])
        out.append(vals)
    return out[0], out[1]


def _reduced(problem: Problem, w: np.ndarray):
    full = problem.G.tocsr()
    nz = np.flatnonzero((w != 0) & (np.diff(full.indptr) > 0))
    with np.errstate(divide="ignore"):
        law = np.log(np.abs(w[nz]))
    return full[nz].tocsc(), law


def max_balance(
    network: nx.DiGraph | Problem,
    weights: WeightSpec = "weight",
    *,
    tol: float = 1e-12,
    max_iter: int | None = None,
    unreachable: str = "raise",
    share: str | None = "share",
) -> BalanceResult:
    """Max-balance a network (p = ∞): every free unit's largest incoming and outgoing |w| equal.

    Parameters
    ----------
    network, weights, unreachable
        As for :func:`balgraph.solve` (``solve(..., p=np.inf)`` calls this function).
    tol : float
        Stop when ``|max_in − max_out| / (max_in + max_out) <= tol`` for every free variable.
    max_iter : int, optional
        Sweeps over the independent classes (default 10 000).
    share : str, optional
        Shared weights are not supported at p = ∞ (raises if any edge carries the attribute).

    Returns
    -------
    BalanceResult
        ``cost_before``/``cost_after`` are ``max |w|`` over all edges (the ∞-norm, which the
        max-balanced state minimizes); ``max_imbalance`` is the largest relative gap above;
        ``history`` has per sweep ``sweeps``, ``max_imbalance`` and ``time``.

    Examples
    --------
    A layer pair: CLE's closed form ``λ_h = sqrt(r2 / r1) = sqrt(1 / 4)``.

    >>> import networkx as nx, balgraph
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> res = max_balance(g)
    >>> res.scales["h"], res.weights[("x", "h")], res.weights[("h", "y")]
    (0.5, 2.0, 2.0)
    """
    from .api import as_problem
    from .sharing import share_groups
    from .structure import ensure_finite_optimum

    if tol is None or not tol > 0:
        raise NetworkError(f"tol must be > 0, got {tol!r}")
    problem = as_problem(network, weights)
    if share_groups(network, problem, share) is not None:
        raise NetworkError(
            f"shared weights (edge attribute {share!r}) are not supported at p = inf; solve with a"
            " finite p, or pass share=None to ignore the sharing"
        )
    bipu = [problem.nodes[k] for k in np.flatnonzero(~problem.fixed & (problem.degree != 1.0))]
    if bipu:
        raise NetworkError(
            f"max-balancing (p = inf) handles BiLU units only; unit(s) {name_some(bipu)} have a"
            " BiPU degree != 1: use a finite p"
        )
    solvable = ensure_finite_optimum(problem, unreachable)
    start = time.perf_counter()
    max_iter = 10_000 if max_iter is None else int(max_iter)
    nv = solvable.n_vars
    G, law = _reduced(solvable, solvable.weight)
    if nv:
        levels, acyclic = variable_levels(solvable)
        labels = levels if acyclic else colour_classes(solvable)
        blocks = [_Block(G, np.flatnonzero(labels == c)) for c in np.unique(labels)]
    else:
        blocks = []
    u = np.zeros(nv)
    history: dict[str, list] = {"sweeps": [], "max_imbalance": [], "time": []}

    def gap() -> float:
        lin, lout = max_sides(solvable, solvable.weight * np.exp(solvable.G @ u))
        return float(np.max(np.abs(np.tanh(0.5 * (lin - lout))), initial=0.0))

    worst, sweeps = gap(), 0
    while worst > tol and sweeps < max_iter:
        sweeps += 1
        for b in blocks:
            lin, lout = b.log_maxima(law, u)
            u[b.cols] += 0.5 * (lout - lin)
        worst = gap()
        history["sweeps"].append(sweeps)
        history["max_imbalance"].append(worst)
        history["time"].append(time.perf_counter() - start)
    converged = worst <= tol
    message = (
        f"every free variable max-balanced to {worst:.3g} <= tol={tol:g}" if converged
        else f"max_iter={max_iter} sweeps reached (max relative gap {worst:.3g})"
    )
    if not converged:
        warnings.warn(f"max_balance did not reach tol={tol:g}: {message}", ConvergenceWarning,
                      stacklevel=2)
    node_u = solvable.node_potentials(u)
    weight_array = solvable.weight * np.exp(solvable.G @ u)
    with np.errstate(divide="ignore"):
        log_before = float(np.log(np.max(np.abs(problem.weight), initial=0.0)))
        log_after = float(np.log(np.max(np.abs(weight_array), initial=0.0)))
    return BalanceResult(
        problem=problem,
        potentials=problem.variable_potentials(node_u) if problem.n_vars else u[:0],
        weight_array=weight_array,
        log_cost_before=log_before,
        log_cost_after=log_after,
        converged=converged,
        iterations=sweeps,
        max_imbalance=worst,
        method="max_balance",
        message=message,
        history=history,
        info=dict(time=time.perf_counter() - start, n_classes=len(blocks)),
        graph=network if isinstance(network, nx.DiGraph) else None,
        weight_attr=weights if isinstance(weights, str) else "weight",
    )
