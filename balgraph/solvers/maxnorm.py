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

from ..graphs import classes_of, colouring, levels, symmetric
from ..errors import NoFiniteOptimumError
from ..evaluate import channel_edges
from ..kernels import log_range, relative_imbalance
from ..model import Problem
from ..regularizers import MaxNorm, Regularizer
from .base import Method, Monitor, Run, SolverOutput, register

__all__ = ["MaxBalance"]

DEFAULT_SWEEPS = 10_000


class _Channels:
    """The channels of a set of variables that share no edge, sorted once by side, sign and
    variable, so that each pass is one gather and one ``reduceat`` per part.

    With BiLU units an edge into variable ``k`` from ``j`` has log-weight ``law_e + u_k − u_j``
    (``u = 0`` on fixed units): the ``u_k`` term is common to ``k``'s whole channel and is added
    after the reduction, so a part stores ``law`` and the other end's index only.
    """

    def __init__(self, law, signs, sv, dv, cols: np.ndarray, n_vars: int, kind: str):
        local = np.full(n_vars + 1, -1, dtype=np.int64)  # index n_vars: fixed units
        local[cols] = np.arange(cols.size)
        self.cols, self.kind, self.n = cols, kind, cols.size
        index = np.int32 if n_vars < 2**31 - 1 else np.int64
        self.sides = []
        for own, other, sign in ((dv, sv, -1.0), (sv, dv, 1.0)):
            mine = local[own] >= 0
            seg = local[own][mine]
            parts = []
            for sel in ([np.ones(seg.size, dtype=bool)] if kind == "absmax"
                        else [signs[mine] >= 0, signs[mine] <= 0]):  # a zero is the low end of both
                idx = np.flatnonzero(sel)
                order = idx[np.argsort(seg[idx], kind="stable")]
                counts = np.bincount(seg[order], minlength=self.n)
                nonempty = counts > 0
                starts = (np.cumsum(counts) - counts)[nonempty]
                parts.append((law[mine][order], other[mine][order].astype(index), starts, nonempty,
                              np.empty(order.size)))
            self.sides.append((sign, parts))

    def log_sizes(self, uu: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``log size IN``, ``log size OUT`` of the variables at ``uu = [u, 0]``, and the largest
        ``log |w|`` on their channels."""
        out, largest = [], -np.inf
        for sign, parts in self.sides:
            ext, own = [], sign * uu[self.cols]
            for law, other, starts, nonempty, buf in parts:
                np.take(uu, other, out=buf)
                (np.add if sign > 0 else np.subtract)(law, buf, out=buf)
                hi, lo = np.full(self.n, -np.inf), np.full(self.n, np.inf)
                if starts.size:
                    hi[nonempty] = np.maximum.reduceat(buf, starts)
                    if self.kind == "minmax":
                        lo[nonempty] = np.minimum.reduceat(buf, starts)
                largest = max(largest, float(np.max(hi - own, initial=-np.inf)))
                ext += [hi, lo]
            out.append((ext[0] if self.kind == "absmax" else log_range(*ext)) - own)
        return out[0], out[1], largest


def _refuse_empty_channels(problem: Problem, reg: MaxNorm, bad: np.ndarray) -> None:
    """Refuse variables whose one channel has size 0: no rescaling balances them."""
    units = [problem.nodes[i] for i in np.flatnonzero(np.isin(problem.var, bad[:5]))][:5]
    why = "its counted weights are all zero" + (" or all equal" if reg.range == "minmax" else "")
    why += " (bias edges are left out: biases='exclude')" if reg.biases == "exclude" else ""
    raise NoFiniteOptimumError(
        f"unit(s) {units!r} have an incoming or outgoing channel of size 0 under {reg!r}: {why}. No"
        " rescaling balances them: fix them (fixed=...), or measure channels by range='absmax'")


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
        edges, law = channel_edges(problem, reg)
        sv, dv = (np.where(problem.var[x] < 0, nv, problem.var[x]) for x in (problem.src[edges], problem.dst[edges]))
        moved = sv != dv
        unmoved_max = float(np.max(law[~moved], initial=-np.inf))  # edges no rescaling changes
        law, sv, dv, sign = law[moved], sv[moved], dv[moved], np.sign(problem.weight[edges][moved])
        blocks = []
        if nv:
            adj = problem.variable_graph
            lev, acyclic = levels(adj, ground=nv)
            labels = lev if acyclic else colouring(symmetric(adj[:nv, :nv]), run.seed)
            blocks = [_Channels(law, sign, sv, dv, c, nv, reg.range) for c in classes_of(labels)]
        uu = np.zeros(nv + 1)  # u, then 0 for the fixed units
        monitor = Monitor(run, unit="sweep", total=budget, desc="balgraph max_balance")

        def sweep() -> None:
            for b in blocks:
                lin, lout, _ = b.log_sizes(uu)
                uu[b.cols] += 0.5 * (lout - lin)

        def measure(first: bool = False) -> tuple[float, float]:
            """The largest relative gap and the largest log-weight at the current state."""
            worst, largest = 0.0, unmoved_max
            for b in blocks:
                lin, lout, big = b.log_sizes(uu)
                if first and np.any(empty := np.isneginf(lin) != np.isneginf(lout)):
                    _refuse_empty_channels(problem, reg, b.cols[empty])
                worst = max(worst, float(np.max(np.abs(relative_imbalance(lin, lout)), initial=0.0)))
                largest = max(largest, big)
            return worst, largest

        (worst, largest), sweeps = measure(first=True), 0
        try:
            monitor.record(0, largest, worst, 0.0, lambda: uu[:nv].copy())
            while worst > run.tol and sweeps < budget and not monitor.stopped:
                sweeps += 1
                sweep()
                worst, largest = measure()
                monitor.record(sweeps, largest, worst, 2.0 * sweeps, lambda: uu[:nv].copy())
        finally:
            monitor.close()
        u = uu[:nv].copy()
        status = "done" if worst <= run.tol else "callback" if monitor.stopped else "max_iter"
        message = (f"every free variable max-balanced to {worst:.3g} <= tol={run.tol:g}" if status == "done"
                   else f"stopped after {sweeps} sweeps (max relative gap {worst:.3g})")
        return SolverOutput(u, sweeps, message, monitor.history, {"n_classes": len(blocks)}, status)


register(MaxBalance())
