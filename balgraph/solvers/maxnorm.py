"""p = ∞: max-balancing, the fixed point of cross-layer equalization (Nagel et al. 2019).

As ``p → ∞`` the L_p balance of a unit, ``Σ_IN |w|^p = Σ_OUT |w|^p`` (eq. 5.8), becomes, after
taking ``p``-th roots, the **max-balance** condition

    max_{e ∈ IN(i)} |w_e|  =  max_{e ∈ OUT(i)} |w_e|        for every free unit (or tie group) i,

self-loops and edges inside a tie group left out (no rescaling moves them). This is the
*absmax* form of cross-layer equalization, AIMET's and Brevitas': on a pair of layers
``s_i = sqrt(r1_i / r2_i)`` with ``r1_i = max_j |W1[i, j]|``, ``r2_i = max_k |W2[k, i]|``, and its
iteration over the pairs of a chain converges here. It is *not* torch.ao's ``_equalize``, which
measures a channel by its range ``max − min`` (20–45 % different weights on generic layers).
It is also max-balancing in the sense of Schneider & Schneider (1991) on
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

import numpy as np
import scipy.sparse as sp

from ..graphs import classes_of, colouring, levels, symmetric
from ..kernels import relative_imbalance
from ..model import Problem
from ..regularizers import MaxNorm, Regularizer
from .base import Method, Monitor, Run, SolverOutput, register

__all__ = ["MaxBalance", "max_sides"]

DEFAULT_SWEEPS = 10_000


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


def _reduced(problem: Problem, w: np.ndarray):
    """``G`` restricted to the non-zero edges that touch a variable, and their ``log |w|``."""
    full = problem.G.tocsr()
    nz = np.flatnonzero((w != 0) & (np.diff(full.indptr) > 0))
    with np.errstate(divide="ignore"):
        law = np.log(np.abs(w[nz]))
    return full[nz].tocsc(), law


def max_sides(problem: Problem, u: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``log max_IN`` and ``log max_OUT`` of every free variable at potentials ``u`` (``-inf``
    for an empty side). Edges inside one variable and zero weights are left out.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.array([[4.0, -5.0]]), np.array([[1.0]])])
    >>> [np.exp(side).round(12).tolist() for side in max_sides(pb)]
    [[5.0], [1.0]]
    """
    G, law = _reduced(problem, problem.weight)
    if u is not None:
        law = law + G @ np.asarray(u, dtype=np.float64)
    out = []
    csc = G.tocsc()
    col = np.repeat(np.arange(problem.n_vars), np.diff(csc.indptr))
    for sign in (1.0, -1.0):
        keep = csc.data * sign > 0
        vals = np.full(problem.n_vars, -np.inf)
        np.maximum.at(vals, col[keep], law[csc.indices[keep]])
        out.append(vals)
    return out[0], out[1]


class MaxBalance(Method):
    """Max-balancing (p = ∞): every free unit's largest incoming and outgoing |w| made equal."""

    name = "max_balance"
    summary = "p=inf: max-balancing, the fixed point of absmax cross-layer equalization (default for p=inf)"

    def supports(self, problem: Problem, reg: Regularizer) -> str | None:
        if not isinstance(reg, MaxNorm):
            return "max-balancing solves p=inf only: pass p=float('inf')"
        if problem.share is not None:
            return "shared weights are not supported at p=inf; solve with a finite p, or pass share=None"
        bipu = [problem.nodes[k] for k in np.flatnonzero(~problem.fixed & (problem.degree != 1.0))]
        if bipu:
            return (f"max-balancing (p=inf) handles BiLU units only; unit(s) {bipu[:5]!r} have a BiPU"
                    " degree != 1: use a finite p")
        return None

    def solve(self, problem: Problem, reg: Regularizer, run: Run, opts) -> SolverOutput:
        budget = DEFAULT_SWEEPS if run.max_iter is None else run.max_iter
        nv = problem.n_vars
        G, law = _reduced(problem, problem.weight)
        blocks = []
        if nv:
            adj = problem.variable_graph
            lev, acyclic = levels(adj, ground=nv)
            labels = lev if acyclic else colouring(symmetric(adj[:nv, :nv]), run.seed)
            blocks = [_Block(G, c) for c in classes_of(labels)]
        u = np.zeros(nv)
        monitor = Monitor(run, unit="sweep", total=budget, desc="balgraph max_balance")

        def gap() -> float:
            return float(np.max(np.abs(relative_imbalance(*max_sides(problem, u))), initial=0.0))

        def log_max() -> float:
            return float(np.max(law + G @ u, initial=-np.inf))

        worst, sweeps = gap(), 0
        try:
            monitor.record(0, log_max(), worst, 0.0, lambda: u.copy())
            while worst > run.tol and sweeps < budget and not monitor.stopped:
                sweeps += 1
                for b in blocks:
                    lin, lout = b.log_maxima(law, u)
                    u[b.cols] += 0.5 * (lout - lin)
                worst = gap()
                monitor.record(sweeps, log_max(), worst, 2.0 * sweeps, lambda: u.copy())
        finally:
            monitor.close()
        status = "done" if worst <= run.tol else "callback" if monitor.stopped else "max_iter"
        message = (f"every free variable max-balanced to {worst:.3g} <= tol={run.tol:g}" if status == "done"
                   else f"stopped after {sweeps} sweeps (max relative gap {worst:.3g})")
        return SolverOutput(u, sweeps, message, monitor.history, {"n_classes": len(blocks)}, status)


register(MaxBalance())
