"""Iterative balancing schedules (Section 8): one loop, five ways to pick what to balance next.

Every step balances one *variable* exactly (a unit, or a tie group as one, Def. 4.5): it is
coordinate descent on the convex cost ``R(u)`` (Osborne's matrix-balancing iteration), so
the cost never increases and every schedule that keeps visiting every variable reaches the one
balanced state (Theorem 9.1).

- ``stochastic``: a uniformly random variable each step (Section 8.1); a sweep is ``n_vars`` steps.
- ``random_sweep``: a random permutation per sweep; ``cyclic``: a fixed order.
- ``parallel``: independent sets balanced at once (Prop. 4.4) — the dense layers of a problem
  built from matrices (BLAS fast path, :class:`balgraph.dense.LayerSweeps`), else the depth
  levels of a DAG, else the classes of a greedy colouring of the variable conflict graph (Luby
  rounds on scipy.sparse).
- ``alternating``: the same sets, odd-numbered ones then even-numbered ones (Section 8.2). A
  2-colouring exists only for bipartite conflict graphs, so on colourings this is a heuristic
  ordering of the colour classes; on layered nets it is the paper's odd/even layer schedule.

State: potentials ``u`` per variable and the edge log-scales ``t = G u`` (recomputed from ``u``
once per sweep, so rounding never drifts). A sequential step touches only its variable's
edges (CSC of ``G``), O(degree). Convergence is checked once per sweep on
``max |P − N|/(P + N) ≤ tol`` (:func:`balgraph.imbalance` semantics). History columns:
``sweeps``, ``cost`` (``R``), ``log_cost`` (``log R``), ``max_imbalance``, ``time`` (s).

Examples
--------
>>> import numpy as np, balgraph
>>> rng = np.random.default_rng(0)
>>> pb = balgraph.Problem.from_layers([rng.normal(size=(5, 3)), rng.normal(size=(2, 5))])
>>> res = balgraph.solve(pb, method="parallel", tol=1e-12)
>>> res.converged, res.max_imbalance <= 1e-12
(True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from ._line import _Columns, _optimal_shift, single_power
from ._logsum import VariableSides, logsumexp, segment_logsumexp
from .dense import RangeExceeded, layer_sweeps
from .errors import SolverError
from .measures import unit_depth
from .problem import Problem
from .regularizers import Regularizer
from .result import SolverOutput

__all__ = ["solve_stochastic", "solve_random_sweep", "solve_cyclic", "solve_parallel",
           "solve_alternating"]

SEQUENTIAL_MAX_SWEEPS = 10_000
PARALLEL_MAX_SWEEPS = 100_000


class _Sparse:
    """General state: ``u``, ``t = G u`` and the CSC incidence of every variable."""

    def __init__(self, problem: Problem, reg: Regularizer, u: np.ndarray | None = None):
        self.problem, self.reg = problem, reg
        self.law = problem.log_abs_weight
        self.G = problem.G.tocsr()
        self.u = np.zeros(problem.n_vars) if u is None else np.array(u, dtype=np.float64)
        self.t = self.G @ self.u
        self.sides = VariableSides(self.G)
        self.cols = _Columns.from_csc(self.G)
        self.p = single_power(reg)
        # log φ_e(0): with a single power, log φ_e(t) = base_e + p t (any coefficients)
        self.base = reg.edge_terms(self.law, np.zeros(problem.n_edges))[0]
        c = problem.var_degree
        (gp, gn), (sp_, sn) = self.cols.g, self.cols.seg
        odd = np.bincount(sp_, gp != 1.0, self.cols.n) + np.bincount(sn, gn != -c[sn], self.cols.n)
        # closed form (6.6) when every entry is +1 or -c: no self-loop or internal edge with c != 1
        self.simple = (odd == 0) & (self.p is not None)
        self.c, self.logc = c, np.log(c)

    def measure(self) -> tuple[float, float]:
        self.t = self.G @ self.u
        lphi, l1, _ = self.reg.edge_terms(self.law, self.t)
        r = self.sides.relative_imbalance(*self.sides.log_sides(l1))
        return logsumexp(lphi), float(np.max(np.abs(r), initial=0.0))

    def potentials(self) -> np.ndarray:
        return self.u


class _Sequential(_Sparse):
    """One variable at a time, in the order ``order(sweep)`` gives."""

    def __init__(self, problem, reg, order: Callable[[int], np.ndarray]):
        super().__init__(problem, reg)
        self.order = order
        self._single: dict[int, _Columns] = {}

    def sweep(self, it: int) -> None:
        rp, rn = self.cols.rows
        (ip, in_) = self.cols.indptr
        base, t, u, p, simple, c, logc = self.base, self.t, self.u, self.p, self.simple, self.c, self.logc
        for k in self.order(it).tolist():
            if simple[k]:
                a, b = rp[ip[k]:ip[k + 1]], rn[in_[k]:in_[k + 1]]
                xa, xb = base[a] + p * t[a], base[b] + p * t[b]
                ma, mb = xa.max(), xb.max()
                s = (mb + np.log(np.exp(xb - mb).sum()) + logc[k]
                     - ma - np.log(np.exp(xa - ma).sum())) / (p * (1.0 + c[k]))
                t[a] += s
                t[b] -= c[k] * s
            else:
                col = self._single.get(k)
                if col is None:
                    col = self._single[k] = _Columns.from_csc(self.G[:, [k]])
                s = _optimal_shift(self.reg, self.law, t, col)[0]
                for side in (0, 1):
                    t[col.rows[side]] += col.g[side] * s
            u[k] += s


class _Sets(_Sparse):
    """Independent sets of variables, each balanced at once by one vectorized update."""

    def __init__(self, problem, reg, sets: list[np.ndarray], u=None):
        super().__init__(problem, reg, u)
        self.sets = []
        for S in sets:
            cols = _Columns.from_csc(self.G[:, S])
            rows = np.concatenate(cols.rows)
            g = np.concatenate(cols.g)
            seg = np.concatenate(cols.seg)
            self.sets.append((S, cols, rows, g, seg, bool(self.simple[S].all())))

    def sweep(self, it: int) -> None:
        base, t, p = self.base, self.t, self.p
        for S, cols, rows, g, seg, simple in self.sets:
            if simple:
                (a, b), (ia, ib) = cols.rows, cols.indptr
                lp = segment_logsumexp(base[a] + p * t[a], ia)
                ln = segment_logsumexp(base[b] + p * t[b], ib) + self.logc[S]
                s = (ln - lp) / (p * (1.0 + self.c[S]))
            else:
                s = _optimal_shift(self.reg, self.law, t, cols)
            # rows are distinct inside an independent set (up to zero-weight edges, which
            # carry no cost and whose t is rebuilt from u at the end of the sweep)
            t[rows] += g * s[seg]
            self.u[S] += s


# ---------------------------------------------------------------------------- independent sets
def _conflicts(problem: Problem) -> sp.csr_matrix:
    """Symmetric 0/1 matrix of variables joined by a non-zero edge (no diagonal)."""
    a, b = problem.var[problem.src], problem.var[problem.dst]
    keep = (a >= 0) & (b >= 0) & (a != b) & (problem.weight != 0)
    a, b = a[keep], b[keep]
    n = problem.n_vars
    adj = sp.csr_matrix((np.ones(2 * a.size), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    adj.sum_duplicates()
    adj.data[:] = 1.0
    return adj


def _colouring(adj: sp.csr_matrix, rng: np.random.Generator) -> np.ndarray:
    """Greedy colouring by maximal independent sets, each found by Luby rounds (vectorized).

    Round: every candidate whose random priority beats all its candidate neighbours joins the
    set; it and its neighbours leave the candidates. Each colour is a maximal independent set
    of the still uncoloured variables, so the count stays near a sequential greedy colouring.
    """
    n = adj.shape[0]
    prio = rng.random(n)
    colour = np.full(n, -1, dtype=np.int64)
    indptr, nbr = adj.indptr, adj.indices
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    c = 0
    while np.any(colour < 0):
        active = colour < 0
        while active.any():
            vals = np.where(active[nbr], prio[nbr], -1.0)
            best = np.full(n, -1.0)
            if nonempty.size:
                best[nonempty] = np.maximum.reduceat(vals, indptr[nonempty])
            win = active & (prio > best)
            colour[win] = c
            active &= ~win & ~((adj @ win.astype(np.float64)) > 0)
        c += 1
    return colour


def _independent_sets(problem: Problem, rng: np.random.Generator) -> tuple[list[np.ndarray], str]:
    """Depth levels of a DAG when they separate the variables, else a colouring's classes."""
    adj = _conflicts(problem)
    depth = unit_depth(problem)
    free = ~problem.fixed
    if depth is not None and problem.n_vars:
        lo = np.full(problem.n_vars, np.iinfo(np.int64).max)
        hi = np.full(problem.n_vars, -1)
        np.minimum.at(lo, problem.var[free], depth[free])
        np.maximum.at(hi, problem.var[free], depth[free])
        coo = adj.tocoo()
        if np.array_equal(lo, hi) and not np.any(lo[coo.row] == lo[coo.col]):
            label, kind = lo, "depth levels"
        else:
            label, kind = _colouring(adj, rng), "colouring"
    else:
        label, kind = _colouring(adj, rng), "colouring"
    order = np.argsort(label, kind="stable")
    cuts = np.flatnonzero(np.diff(label[order])) + 1
    return [s for s in np.split(order, cuts) if s.size], kind


# ---------------------------------------------------------------------------- the loop
def run_sweeps(state, *, tol: float, max_iter: int, callback, method: str, info: dict,
               fallback=None) -> SolverOutput:
    """Sweep until ``max_k |r_k| <= tol`` or ``max_iter`` sweeps; record one history row per sweep.

    ``state`` has ``sweep(it)``, ``measure() -> (log R, max |r|)`` and ``potentials()``. When a
    sweep raises :class:`~balgraph.dense.RangeExceeded` (a dense state left float64 range, back
    at the start of that sweep), ``fallback(state)`` gives the state to go on with, if given.
    """
    history: dict[str, list] = {k: [] for k in ("sweeps", "cost", "log_cost", "max_imbalance", "time")}
    start = time.perf_counter()

    def record(it: int) -> float:
        log_cost, rmax = state.measure()
        with np.errstate(over="ignore"):
            cost = float(np.exp(log_cost))
        for key, value in zip(history, (it, cost, log_cost, rmax, time.perf_counter() - start)):
            history[key].append(value)
        return rmax

    rmax, it = record(0), 0
    while rmax > tol and it < max_iter:
        try:
            state.sweep(it)
        except RangeExceeded:
            if fallback is None:
                raise
            state = fallback(state)
            continue
        it += 1
        rmax = record(it)
        if callback is not None:
            callback(it, state.potentials().copy())
    u = state.potentials().copy()
    if not np.all(np.isfinite(u)):
        raise SolverError(f"{method} produced non-finite potentials; this is a bug, please report it")
    converged = rmax <= tol
    message = (f"max relative imbalance {rmax:.3g} <= tol after {it} sweeps" if converged
               else f"stopped after max_iter={max_iter} sweeps at max relative imbalance {rmax:.3g}")
    return SolverOutput(u, converged, it, message, history, info)


def _sequential(problem, reg, *, tol, max_iter, callback, method, order) -> SolverOutput:
    state = _Sequential(problem, reg, order)
    info = {"schedule": method, "closed_form_variables": int(state.simple.sum())}
    max_iter = SEQUENTIAL_MAX_SWEEPS if max_iter is None else int(max_iter)
    return run_sweeps(state, tol=tol, max_iter=max_iter, callback=callback, method=method, info=info)


def solve_stochastic(problem: Problem, reg: Regularizer, *, tol: float, max_iter: int | None = None,
                     seed: int | None = None, callback=None) -> SolverOutput:
    """Basic stochastic balancing (Section 8.1): balance a uniformly random variable each step.

    ``iterations`` counts sweeps of ``n_vars`` steps; convergence is checked after each sweep.
    Default ``max_iter``: ``SEQUENTIAL_MAX_SWEEPS``.
    """
    rng, n = np.random.default_rng(seed), problem.n_vars
    return _sequential(problem, reg, tol=tol, max_iter=max_iter, callback=callback,
                       method="stochastic", order=lambda it: rng.integers(n, size=n))


def solve_random_sweep(problem: Problem, reg: Regularizer, *, tol: float,
                       max_iter: int | None = None, seed: int | None = None,
                       callback=None) -> SolverOutput:
    """Balance every variable once per sweep, in a fresh random order each sweep."""
    rng, n = np.random.default_rng(seed), problem.n_vars
    return _sequential(problem, reg, tol=tol, max_iter=max_iter, callback=callback,
                       method="random_sweep", order=lambda it: rng.permutation(n))


def solve_cyclic(problem: Problem, reg: Regularizer, *, tol: float, max_iter: int | None = None,
                 seed: int | None = None, callback=None) -> SolverOutput:
    """Balance the variables in their fixed index order, sweep after sweep (Section 8.1)."""
    order = np.arange(problem.n_vars)
    return _sequential(problem, reg, tol=tol, max_iter=max_iter, callback=callback,
                       method="cyclic", order=lambda it: order)


def _by_sets(problem, reg, *, tol, max_iter, seed, callback, method, alternate, dense):
    rng = np.random.default_rng(seed)
    max_iter = PARALLEL_MAX_SWEEPS if max_iter is None else int(max_iter)

    def reorder(items: list) -> list:
        return items[0::2] + items[1::2] if alternate else items

    def sparse_sets() -> tuple[list[np.ndarray], str]:
        sets, kind = _independent_sets(problem, rng)
        return reorder(sets), kind

    info: dict = {}
    try:
        state = layer_sweeps(problem, reg, "alternating" if alternate else "parallel") if dense else None
    except RangeExceeded as exc:
        state, info["fallback"] = None, f"general path ({exc})"
    if state is not None and not isinstance(state, str):
        info = {"schedule": "dense layers", "n_sets": state.costs.n_groups}

        def fallback(s):
            info["fallback"] = "general path (dense layers left float64 range)"
            return _Sets(problem, reg, sparse_sets()[0], s.potentials())

        return run_sweeps(state, tol=tol, max_iter=max_iter, callback=callback, method=method,
                          info=info, fallback=fallback)
    sets, kind = sparse_sets()
    return run_sweeps(_Sets(problem, reg, sets), tol=tol, max_iter=max_iter, callback=callback,
                      method=method, info={"schedule": kind, "n_sets": len(sets), **info})


def solve_parallel(problem: Problem, reg: Regularizer, *, tol: float, max_iter: int | None = None,
                   seed: int | None = None, callback=None, dense: bool = True) -> SolverOutput:
    """Independent subset balancing (Prop. 4.4, Section 8.2): each independent set at once.

    Sets, in this order of preference: the free layers of ``problem.layers`` (a BLAS fast path,
    ``dense=False`` turns it off), the depth levels of a DAG, the colour classes of a greedy
    colouring (``seed`` draws its priorities). Sets are balanced in order, every sweep.
    Default ``max_iter``: ``PARALLEL_MAX_SWEEPS``.
    """
    return _by_sets(problem, reg, tol=tol, max_iter=max_iter, seed=seed, callback=callback,
                    method="parallel", alternate=False, dense=dense)


def solve_alternating(problem: Problem, reg: Regularizer, *, tol: float,
                      max_iter: int | None = None, seed: int | None = None, callback=None,
                      dense: bool = True) -> SolverOutput:
    """Alternating balancing (Section 8.2): odd-numbered sets (layers 1, 3, …), then even ones.

    On a layered net the odd layers are mutually independent, so this is the paper's scheme.
    For a colouring (non-layered graphs) colour classes ``0, 2, 4, …`` then ``1, 3, …`` are
    balanced one class at a time: an order, not a 2-colouring, which rarely exists.
    """
    return _by_sets(problem, reg, tol=tol, max_iter=max_iter, seed=seed, callback=callback,
                    method="alternating", alternate=True, dense=dense)
