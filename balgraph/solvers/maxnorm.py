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
domain (``in_k``, ``out_k`` the log-sizes; ``λ = sqrt(max_out / max_in)``). Variables that
share no edge are balanced at once (Prop. 4.4): the depth levels of a DAG (the layers of a
chain, as in CLE, which sweeps the layer pairs) or greedy colour classes otherwise, one
vectorized segment-max per class. Those sweeps converge linearly, as slowly as CLE's on deep
chains, so the solver takes Newton steps on ``F = log OUT − log IN`` first: while the edges that
set each size stay the same, ``F`` is smooth (``∂F_k/∂u_k = −2``; ``+1`` at the far end of each
absmax edge, so that ``F`` is linear and one sparse solve lands on its zero; ``±|w|/size`` in
the minmax form). A step is kept only if it lowers the largest gap; otherwise sweeps take over
(1, 2, 4, ... of them before the next try). It stops when every
``|max_in − max_out| / (max_in + max_out) <= tol``. BiLU units only (degree 1): for a BiPU unit the two sides move
by ``λ`` and ``λ^{-c}``, and CLE has no counterpart.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

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
                              np.empty(order.size), counts[nonempty]))
            self.sides.append((sign, parts))

    def log_sizes(self, uu: np.ndarray, active: bool = False):
        """``log size IN``, ``log size OUT`` of the variables at ``uu = [u, 0]``, and the largest
        ``log |w|`` on their channels.

        With ``active``, then also the Jacobian entries of ``F = log OUT − log IN`` off its
        diagonal (which is ``−2``) as ``rows, cols, values``, one per edge that sets a size, its value
        ``∂F_k/∂u_j = ±|w_e| / size`` (``+1`` for a lone absmax edge; in the minmax form the low
        end of a one-signed channel enters with a minus sign). ``cols == n_vars`` marks a fixed end.
        """
        out, largest, jac = [], -np.inf, []
        for sign, parts in self.sides:
            ext, ends, own = [], [], sign * uu[self.cols]
            for law, other, starts, nonempty, buf, counts in parts:
                np.take(uu, other, out=buf)
                (np.add if sign > 0 else np.subtract)(law, buf, out=buf)
                hi, lo = np.full(self.n, -np.inf), np.full(self.n, np.inf)
                if starts.size:
                    hi[nonempty] = np.maximum.reduceat(buf, starts)
                    if self.kind == "minmax":
                        lo[nonempty] = np.minimum.reduceat(buf, starts)
                largest = max(largest, float(np.max(hi - own, initial=-np.inf)))
                ext += [hi, lo]
                if active:
                    ends.append(self._arg(other, buf, hi, starts, nonempty, counts))
                    if self.kind == "minmax":
                        ends.append(self._arg(other, buf, lo, starts, nonempty, counts))
            size = ext[0] if self.kind == "absmax" else log_range(*ext)
            out.append(size - own)
            if active:
                jac.append(self._terms(ext, ends, size))
        if not active:
            return out[0], out[1], largest
        return (out[0], out[1], largest) + tuple(np.concatenate(x) for x in zip(*(t for side in jac for t in side)))

    def _arg(self, other, buf, ext, starts, nonempty, counts) -> np.ndarray:
        """The other end of an edge where each variable's segment reaches ``ext`` (-1: empty)."""
        at = np.full(self.n, -1, dtype=np.int64)
        if starts.size:
            hit = np.where(buf == np.repeat(ext[nonempty], counts), np.arange(buf.size), -1)
            at[nonempty] = other[np.maximum.reduceat(hit, starts)]
        return at

    def _terms(self, ext, ends, size):
        """``(rows, cols, values)`` of the edges that set the sizes ``size`` (see log_sizes)."""
        if self.kind == "absmax":
            terms = [(ext[0], ends[0], np.ones(self.n))]
        else:
            hi_p, lo_p, hi_n, lo_n = ext
            has_p, has_n = np.isfinite(hi_p), np.isfinite(hi_n)
            alone = np.where(has_p & has_n, 0.0, -1.0)
            terms = [(hi_p, ends[0], has_p * 1.0), (lo_p, ends[1], alone * has_p),
                     (hi_n, ends[2], has_n * 1.0), (lo_n, ends[3], alone * has_n)]
        out = []
        for log_value, at, sigma in terms:
            use = (at >= 0) & (sigma != 0) & np.isfinite(size)
            with np.errstate(over="ignore", invalid="ignore"):
                value = sigma[use] * np.exp(log_value[use] - size[use])
            out.append((self.cols[use], at[use], value))
        return out


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

        def measure(at: np.ndarray, first: bool = False, active: bool = True):
            """The largest relative gap and log-weight at ``at``; with ``active``, also ``F`` and
            the entries of its Jacobian off the diagonal, for :func:`newton_step`."""
            worst, largest = 0.0, unmoved_max
            F, jac = np.zeros(nv), []
            for b in blocks:
                lin, lout, big, *terms = b.log_sizes(at, active=active)
                if first and np.any(empty := np.isneginf(lin) != np.isneginf(lout)):
                    _refuse_empty_channels(problem, reg, b.cols[empty])
                worst = max(worst, float(np.max(np.abs(relative_imbalance(lin, lout)), initial=0.0)))
                largest = max(largest, big)
                with np.errstate(invalid="ignore"):
                    F[b.cols] = np.where(np.isfinite(lin) & np.isfinite(lout), lout - lin, 0.0)
                if terms:
                    jac.append(terms)
            linear = (F, *(np.concatenate(x) for x in zip(*jac))) if jac else None
            return worst, largest, linear

        def newton_step(F, rows, cols, vals):
            """``−J⁻¹ F``: with the edges that set every size held, F is linear in u (one step is
            exact); None where J is singular (a cycle of free units carrying their own maxima)."""
            keep = cols < nv
            J = sp.csc_matrix((np.concatenate([vals[keep], np.full(nv, -2.0)]),
                               (np.concatenate([rows[keep], np.arange(nv)]),
                                np.concatenate([cols[keep], np.arange(nv)]))), shape=(nv, nv))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    step = spsolve(J, -F)
                except RuntimeError:  # exactly singular
                    return None
            return step if np.all(np.isfinite(step)) else None

        # Newton on the piecewise-linear F = log OUT − log IN while it lowers the largest gap, else
        # exact sweeps (CLE's iteration), which always make progress; a refused step waits
        # 1, 2, 4, ... sweeps before the next try (the Jacobian is only gathered when it is used).
        worst, largest, linear = measure(uu, first=True)
        sweeps, wait, pause = 0, 0, 1
        try:
            monitor.record(0, largest, worst, 0.0, lambda: uu[:nv].copy())
            while worst > run.tol and sweeps < budget and not monitor.stopped:
                sweeps += 1
                step = newton_step(*linear) if linear is not None else None
                if step is not None:
                    trial = uu.copy()
                    trial[:nv] += step
                    tried = measure(trial)
                    if tried[0] < worst:
                        uu, (worst, largest, linear) = trial, tried
                        monitor.record(sweeps, largest, worst, 4.0 * sweeps, lambda: uu[:nv].copy())
                        continue
                    wait, pause = pause, 2 * pause
                sweep()
                wait = max(wait - 1, 0)
                worst, largest, linear = measure(uu, active=wait == 0)
                monitor.record(sweeps, largest, worst, 4.0 * sweeps, lambda: uu[:nv].copy())
        finally:
            monitor.close()
        u = uu[:nv].copy()
        status = "done" if worst <= run.tol else "callback" if monitor.stopped else "max_iter"
        message = (f"every free variable max-balanced to {worst:.3g} <= tol={run.tol:g}" if status == "done"
                   else f"stopped after {sweeps} sweeps (max relative gap {worst:.3g})")
        return SolverOutput(u, sweeps, message, monitor.history, {"n_classes": len(blocks)}, status)


register(MaxBalance())
