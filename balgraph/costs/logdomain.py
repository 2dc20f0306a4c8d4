"""The cost model that works edge by edge in the log domain: any regularizer, any ``G``, any range.

``R(z) = Σ_e φ_e((G z)_e)`` with ``φ`` from the regularizer (``reg.edge_terms``: ``log φ``,
``log φ'``, ``log φ''`` per edge), so weights may span 1e-300..1e300 and the cost may be a sum of
powers. ``G`` is the problem's edge-by-variable matrix, or ``G N`` for shared weights
(:mod:`.shared`). The gradient is ``Gᵀ φ'``, split by the sign of ``G`` into ``P`` and ``N``
(per column, segment log-sum-exp); the Hessian ``H = Gᵀ diag(φ'') G`` is scaled in the log
domain before any number is formed:

    B = diag(√φ'') G D^{-1/2},   |B_ek| <= 1,   S = Bᵀ B (unit diagonal),   H = D^{1/2} S D^{1/2}.

This is the slowest model (an ``exp`` per edge per evaluation) and the most robust one: the
others fall back on it (:class:`~balgraph.errors.RangeExceeded`). Host (NumPy) only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..graphs import classes_of, colouring, levels, symmetric
from ..kernels import logsumexp, segment_logsumexp
from ..model import Problem
from ..regularizers import Regularizer
from .base import CostModel, Hessian, Point, Sweeper, constant_cost, gap_of
from .line import Columns, optimal_shift

__all__ = ["LogDomainCosts"]


class LogDomainCosts(CostModel):
    """``R(z) = Σ_e φ_e((G z)_e)`` evaluated edge by edge (see the module docstring).

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> costs = LogDomainCosts.build(pb, balgraph.Lp(2))
    >>> round(costs.point(np.log([0.5])).worst, 15)   # in = 16/4 = out = 4
    0.0
    """

    name = "log-domain"

    @classmethod
    def build(cls, problem: Problem, reg: Regularizer, *, device=None):
        """The model of ``problem`` on its edges that carry cost."""
        if device not in (None, "cpu"):
            return "the log-domain model runs on the CPU only"
        full = problem.G
        active = reg.active(problem.n_edges) & (problem.weight != 0)
        moved = np.diff(full.indptr) > 0
        nz = np.flatnonzero(active & moved)
        G = full[nz] if nz.size < full.shape[0] else full.copy()
        costs = cls(G, problem.log_abs_weight[nz], reg.restrict(nz), problem=problem)
        costs.log_fixed = constant_cost(problem, reg, active & ~moved)
        return costs

    def __init__(self, G: sp.csr_matrix, law: np.ndarray, reg: Regularizer, *, problem: Problem | None = None,
                 basis: np.ndarray | None = None):
        G = sp.csr_matrix(G)
        G.sort_indices()
        self.G, self.law, self.reg, self.problem, self.basis = G, law, reg, problem, basis
        self.n, self.total = G.shape[1], max(G.shape[0], 1)
        self.cols = Columns.from_matrix(G)
        csc = G.tocsc()
        csc.sort_indices()
        self.col_indptr, self.col_rows = csc.indptr, csc.indices
        self.col_log_g2 = 2.0 * np.log(np.abs(csc.data))
        self.csr_rows = np.repeat(np.arange(G.shape[0]), np.diff(G.indptr))
        self.csr_to_csc = np.lexsort((self.csr_rows, G.indices))  # csc entry order in csr terms
        self._graph = None
        self.log_fixed = -np.inf  # the cost of edges no scaling moves (a constant part of R)

    # ------------------------------------------------------------------ structure
    def _levels(self):
        if self._graph is None:
            if self.problem is None or self.basis is not None:
                self._graph = (None, np.zeros(self.n, np.int64), True)
            else:
                adj = self.problem.variable_graph
                self._graph = (adj, *levels(adj, ground=self.n))
        return self._graph

    @property
    def levels(self):
        return self._levels()[1] if self.basis is None else None

    @property
    def n_levels(self) -> int:
        lev = self.levels
        return 0 if lev is None else int(lev.max(initial=-1)) + 1

    @property
    def acyclic(self) -> bool:
        return self._levels()[2]

    def start(self, u):
        u = np.asarray(u, dtype=np.float64)
        if self.basis is None:
            return u.copy()
        return np.linalg.lstsq(self.basis, u, rcond=None)[0]

    def potentials(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        return z.copy() if self.basis is None else self.basis @ z

    # ------------------------------------------------------------------ evaluation
    def point(self, z) -> Point:
        t = self.G @ z
        log_phi, log_d1, log_d2 = self.reg.edge_terms(self.law, t)
        self.work += 3 * self.total
        log_p, log_n = self.cols.log_sides(log_d1)
        pt = Point(z, log_p, log_n, np.logaddexp(logsumexp(log_phi), self.log_fixed), float(gap_of(np, log_p, log_n)))
        pt.log_d2 = log_d2
        return pt

    def hessian(self, pt: Point) -> LogDomainHessian:
        return LogDomainHessian(self, pt.log_d2)

    def sweeper(self, z, order: str = "parallel", seed=None) -> LogDomainSweeps:
        adj, lev, acyclic = self._levels()
        if adj is None:
            labels = np.zeros(self.n, np.int64)
        else:
            labels = lev if acyclic else colouring(symmetric(adj[:self.n, :self.n]), seed)
        classes = classes_of(labels)
        if order == "alternating":
            classes = classes[0::2] + classes[1::2]
        return LogDomainSweeps(self, z, classes)

    def sequential(self, z, order) -> LogDomainSweeps:
        """One variable at a time, in the order ``order()`` returns for each sweep (Section 8.1)."""
        return LogDomainSweeps(self, z, None, order)


class LogDomainHessian(Hessian):
    """The Jacobi-scaled Hessian ``S = BᵀB`` at one point, built in the log domain."""

    def __init__(self, costs: LogDomainCosts, log_d2: np.ndarray):
        self.costs, G = costs, costs.G
        log_d = segment_logsumexp(log_d2[costs.col_rows] + costs.col_log_g2, costs.col_indptr)
        # A coordinate with no edge has a flat cost; give it a harmless unit scale.
        self.log_d = np.where(np.isfinite(log_d), log_d, 0.0)
        data = G.data * np.exp(0.5 * (log_d2[costs.csr_rows] - self.log_d[G.indices]))
        self.B = sp.csr_matrix((data, G.indices, G.indptr), shape=G.shape)
        # Bᵀ in csr form shares G's column structure: only its data moves.
        self.BT = sp.csr_matrix((data[costs.csr_to_csc], costs.col_rows, costs.col_indptr), shape=G.shape[::-1])

    def matvec(self, v):
        self.costs.work += 2 * self.costs.total
        return self.BT @ (self.B @ v)

    def matrix(self) -> np.ndarray:
        return (self.BT @ self.B).toarray()

    def coarse_matrix(self, w, levels, n_levels: int):
        """``Wᵀ S W = (B W)ᵀ (B W)``: one sparse product with the ``n × L`` coarse basis."""
        W = sp.csr_matrix((w, (np.arange(w.size), levels)), shape=(w.size, n_levels))
        BW = self.B @ W
        return (BW.T @ BW).toarray()


class LogDomainSweeps(Sweeper):
    """Exact balancing of classes of coordinates (Prop. 4.4), or one coordinate at a time.

    State: ``z`` and the edge log-scales ``t = G z`` (recomputed from ``z`` once per sweep, so
    rounding never drifts). A class moves by the closed form (eq. 6.6) when its entries are
    ``+1``/``−c`` and the cost a single power, else by :func:`optimal_shift`; a sequential step
    touches only its coordinate's edges, O(degree).
    """

    def __init__(self, costs: LogDomainCosts, z, classes, order=None):
        self.costs, self.order = costs, order
        self.z = np.array(z, dtype=np.float64)
        self.t = costs.G @ self.z
        self.p = costs.reg.power()
        self.base = costs.reg.edge_terms(costs.law, np.zeros(costs.law.size))[0] if self.p is not None else None
        deg = costs.problem.var_degree if costs.problem is not None and costs.basis is None else np.ones(costs.n)
        self.c, self.logc = deg, np.log(deg)
        self.simple = costs.cols.simple(deg) & (self.p is not None)
        self.sets = []
        for S in classes or ():
            cols = Columns.from_matrix(costs.G[:, S])
            self.sets.append((S, cols, np.concatenate(cols.rows), np.concatenate(cols.g),
                              np.concatenate(cols.seg), bool(self.simple[S].all())))
        self._single: dict = {}
        self._measure()

    def _measure(self):
        costs = self.costs
        self.t = costs.G @ self.z
        lphi, l1, _ = costs.reg.edge_terms(costs.law, self.t)
        log_p, log_n = costs.cols.log_sides(l1)
        self.gap, self.log_cost = float(gap_of(np, log_p, log_n)), float(np.logaddexp(logsumexp(lphi), costs.log_fixed))
        costs.work += 2 * costs.total

    def sweep(self) -> None:
        if self.order is None:
            self._sweep_sets()
        else:
            self._sweep_sequential(self.order())
        self._measure()

    def _sweep_sets(self) -> None:
        costs, t, p = self.costs, self.t, self.p
        for S, cols, rows, g, seg, simple in self.sets:
            if simple:
                (a, b), (ia, ib) = cols.rows, cols.indptr
                lp = segment_logsumexp(self.base[a] + p * t[a], ia)
                ln = segment_logsumexp(self.base[b] + p * t[b], ib) + self.logc[S]
                s = (ln - lp) / (p * (1.0 + self.c[S]))
            else:
                s = optimal_shift(costs.reg, costs.law, t, cols)
            # rows are distinct inside an independent set: the update never collides
            t[rows] += g * s[seg]
            self.z[S] += s
            costs.work += rows.size

    def _sweep_sequential(self, order: np.ndarray) -> None:
        costs, t, z, p = self.costs, self.t, self.z, self.p
        cols = costs.cols
        rp, rn = cols.rows
        ip, in_ = cols.indptr
        base, simple, c, logc = self.base, self.simple, self.c, self.logc
        for k in order.tolist():
            if simple[k]:
                a, b = rp[ip[k]:ip[k + 1]], rn[in_[k]:in_[k + 1]]
                xa, xb = base[a] + p * t[a], base[b] + p * t[b]
                ma, mb = xa.max(), xb.max()
                s = (mb + np.log(np.exp(xb - mb).sum()) + logc[k] - ma - np.log(np.exp(xa - ma).sum())) / (p * (1.0 + c[k]))
                t[a] += s
                t[b] -= c[k] * s
            else:
                col = self._single.get(k)
                if col is None:
                    col = self._single[k] = Columns.from_matrix(costs.G[:, [k]])
                s = optimal_shift(costs.reg, costs.law, t, col)[0]
                for side in (0, 1):
                    t[col.rows[side]] += col.g[side] * s
            z[k] += s
        costs.work += costs.total

    def coordinates(self):
        return self.z
