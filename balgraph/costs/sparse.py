"""The cost model of a sparse graph for the L_p cost: per-edge sums as CSR mat-vecs (NumPy or CuPy).

Every edge ``e: j -> i`` between variables (or the ground: every fixed unit merged, index
``n``) costs ``φ_e = a_e exp(p (u_i − c_j u_j))`` (eq. 9.6 with ``L = G u``, ``a_e = b_e |w_e|^p``).
Collecting ``a_e`` in the ``(n+1) × (n+1)`` matrix ``A`` (rows: target, columns: source) and
writing ``x = p u``, ``y = p c u`` (0 on the ground),

    in_i  = Σ_{e→i} φ_e = e^{x_i} (A e^{−y})_i,      out_j = Σ_{j→e} φ_e = e^{−y_j} (Aᵀ e^{x})_j,

so the gradient parts ``P = p·in``, ``N = p c·out`` (eqs. 5.8, 6.7), the cost ``R = Σ_i in_i``
and a Hessian product each take one or two mat-vecs with ``A`` and no per-edge ``exp``. The
scaled Hessian is ``S = I − L A R − R Aᵀ L`` restricted to the variables, with
``L = diag(p e^{x}/√D)``, ``R = diag(p c e^{−y}/√D)``. Edges inside one variable (BiPU
self-loops, edges inside a tie group: ``G_e = 1 − c``) enter only the diagonal and are summed
per edge.

Products of numbers spanning 1e±300 would leave float64, so ``A`` holds the costs at a base
point ``u_b`` divided by ``e^M`` and every exponential is shifted to the middle of its range;
when the ranges still do not fit, the base moves to the current point (one pass over the
edges), and when even that fails :class:`RangeExceeded` hands over to :mod:`.logdomain`.
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, sparse_module, to_host
from ..graphs import classes_of, colouring, grouped_pairs, levels, symmetric
from ..kernels import lse, scatter_logsumexp
from ..model import Problem
from ..regularizers import Regularizer
from .base import CostModel, Hessian, Point, RangeExceeded, Sweeper, constant_cost, gap_of

__all__ = ["SparseCosts"]

# Largest |log| of any product formed: leaves e^{~60} of headroom for sums and CG vectors.
_SAFE = 650.0


def _mid(xp, a) -> tuple[float, float]:
    """Middle and half-width of the finite values of ``a`` (0, 0 if none): one host round trip."""
    finite = xp.isfinite(a)
    if not a.size:
        return 0.0, 0.0
    lo = xp.where(finite, a, np.inf).min()
    hi = xp.where(finite, a, -np.inf).max()
    lo, hi = (float(v) for v in to_host(xp.stack([lo, hi])))
    if not np.isfinite(lo):
        return 0.0, 0.0
    return 0.5 * (lo + hi), 0.5 * (hi - lo)


class SparseCosts(CostModel):
    """The L_p cost of a sparse problem in potentials ``u`` (see the module docstring).

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> costs = SparseCosts.build(pb, balgraph.Lp(2))
    >>> pt = costs.point(np.log([0.5]))
    >>> bool(pt.worst < 1e-15)   # in = 16/4 = 4 = out = 1·4
    True
    """

    name = "sparse"

    @classmethod
    def build(cls, problem: Problem, reg: Regularizer, *, device=None):
        """The model of ``problem``, or a string saying why it does not apply."""
        p = reg.power()
        if p is None:
            return f"the cost {reg!r} is not a single power b·|w|^p"
        xp = array_module(device)
        return cls(problem, reg, xp)

    def __init__(self, problem: Problem, reg: Regularizer, xp=np):
        self.problem, self.reg, self.xp = problem, reg, xp
        self.sp = sparse_module(xp)
        n = self.n = problem.n_vars
        p = self.p = float(reg.power())
        self.log_p = float(np.log(p))
        active = reg.active(problem.n_edges) & (problem.weight != 0)
        vi, vj = problem.var[problem.dst], problem.var[problem.src]
        # edges that scaling moves: G's row is not empty (a c = 1 self-loop's row is 0)
        moved = ((vi >= 0) | (vj >= 0)) & ~((vi == vj) & (problem.degree[problem.src] == 1.0))
        nz = np.flatnonzero(active & moved)
        self.log_fixed = constant_cost(problem, reg, active & ~moved)
        vi, vj = vi[nz], vj[nz]
        log_a = reg.restrict(nz).edge_terms(problem.log_abs_weight[nz], np.zeros(nz.size))[0]
        self.total = int(nz.size)
        c = problem.var_degree.astype(np.float64)
        with np.errstate(divide="ignore"):
            self.c_host, self.log_c_host = c, np.log(c)
        self.c, self.log_c = xp.asarray(c), xp.asarray(self.log_c_host)
        odd = (vi == vj) & (vi >= 0)
        self.odd_col = xp.asarray(vi[odd])
        self.odd_gamma = xp.asarray(1.0 - problem.degree[problem.src[nz][odd]])
        self.odd_log_a = xp.asarray(log_a[odd])
        self.has_odd = bool(odd.any())
        self.odd_vars = np.unique(vi[odd])
        reg_e = ~odd
        rows = np.where(vi[reg_e] < 0, n, vi[reg_e]).astype(np.int64)
        cols = np.where(vj[reg_e] < 0, n, vj[reg_e]).astype(np.int64)
        # The structure of A once (one sort); a rebase only sums new costs per entry.
        indptr, indices, entry = grouped_pairs(rows, cols, n + 1)
        self.e_rows, self.e_cols, self.e_entry = xp.asarray(rows), xp.asarray(cols), xp.asarray(entry)
        self.a_indptr, self.a_indices, self.nnz = xp.asarray(indptr), xp.asarray(indices), int(indices.size)
        counts = np.diff(indptr)
        row_of = np.repeat(np.arange(n + 1), counts)
        vv = (row_of < n) & (indices < n)
        self.vv = xp.asarray(np.flatnonzero(vv))
        self.vv_indptr = xp.asarray(np.concatenate([[0], np.cumsum(np.bincount(row_of[vv], minlength=n))]))
        self.vv_indices = xp.asarray(indices[vv])
        self.has_in = xp.asarray(counts[:n] > 0)
        self.has_out = xp.asarray(np.bincount(indices, minlength=n + 1)[:n] > 0)
        self.e_log_a = xp.asarray(log_a[reg_e])
        self.log_m = float(np.log(max(int(reg_e.sum()), 1)))
        self.base, self.la, self.u_b = -1, 0.0, np.zeros(n)
        self._classes = self._subs = None
        self._levels = None
        self.rebase(np.zeros(n))

    # ------------------------------------------------------------------ structure
    def _graph(self):
        if self._levels is None:
            adj = self.problem.variable_graph
            self._adj = adj
            self._levels = levels(adj, ground=self.n)
        return self._levels

    @property
    def levels(self):
        return self._graph()[0]

    @property
    def n_levels(self) -> int:
        return int(self.levels.max(initial=-1)) + 1

    @property
    def acyclic(self) -> bool:
        return self._graph()[1]

    def rebase(self, u) -> None:
        """Store the costs at ``u`` in ``A`` (one pass over the edges); RangeExceeded if they
        span more than float64 products hold."""
        xp = self.xp
        ue = xp.concatenate([xp.asarray(u, dtype=np.float64), xp.zeros(1)])
        ce = xp.concatenate([self.c, xp.zeros(1)])
        lphi = self.e_log_a + self.p * (ue[self.e_rows] - ce[self.e_cols] * ue[self.e_cols])
        M, half = _mid(xp, lphi)
        if not half + self.log_m <= _SAFE:
            raise RangeExceeded(f"edge costs span e^{2 * half:.0f}, more than float64 mat-vecs hold")
        self.M = M
        self.u_b = xp.asarray(u, dtype=np.float64).copy()
        self.base += 1
        n = self.n
        data = xp.bincount(self.e_entry, weights=xp.exp(lphi - M), minlength=self.nnz)
        self.A = self.sp.csr_matrix((data, self.a_indices, self.a_indptr), shape=(n + 1, n + 1))
        # the variable-to-variable couplings (the coarse matrix and the dense S)
        self.A_vv = self.sp.csr_matrix((data[self.vv], self.vv_indices, self.vv_indptr), shape=(n, n))
        self.work += self.total
        pos = data[data > 0]
        self.la = float(to_host(xp.abs(xp.log(pos)).max())) if pos.size else 0.0
        self._subs = None

    def start(self, u):
        return self.xp.asarray(np.asarray(u, dtype=np.float64))

    def potentials(self, z) -> np.ndarray:
        return np.array(to_host(z), dtype=np.float64)

    def fallback(self):
        from .logdomain import LogDomainCosts

        return LogDomainCosts.build(self.problem, self.reg)

    # ------------------------------------------------------------------ evaluation
    def _scalings(self, u):
        xp = self.xp
        d = u - self.u_b
        x = xp.concatenate([self.p * d, xp.zeros(1)])
        y = xp.concatenate([self.p * self.c * d, xp.zeros(1)])
        return x, y

    def point(self, z, _retry: bool = True) -> Point:
        xp = self.xp
        x, y = self._scalings(z)
        kx, hx = _mid(xp, x)
        ky, hy = _mid(xp, -y)
        if not self.la + max(hx, hy) + self.log_m <= _SAFE:
            if not _retry:
                raise RangeExceeded("scales span more than float64 mat-vecs hold")
            self.rebase(z)
            return self.point(z, _retry=False)
        with np.errstate(divide="ignore"):
            log_in = x + ky + self.M + xp.log(self.A @ xp.exp(-y - ky))
            log_out = kx - y + self.M + xp.log(self.A.T @ xp.exp(x - kx))
        self.work += 2 * self.total
        n, lp, lc = self.n, self.log_p, self.log_c
        reg_in, reg_out = log_in[:n], log_out[:n]
        log_p = lp + reg_in
        log_n = lp + lc + reg_out
        log_d = xp.logaddexp(reg_in, 2.0 * lc + reg_out)
        total = xp.logaddexp(lse(log_in), self.log_fixed)
        if self.has_odd:
            pos1, pos2, neg1, neg2, odd_total = self._odd_terms(z)
            log_p = xp.logaddexp(log_p, lp + pos1)
            log_n = xp.logaddexp(log_n, lp + neg1)
            log_d = xp.logaddexp(xp.logaddexp(log_d, pos2), neg2)
            total = xp.logaddexp(total, odd_total)
        # every variable has edges on both sides (the structure check): a side of -inf underflowed
        lost = xp.any((xp.isneginf(reg_in) & self.has_in) | (xp.isneginf(reg_out) & self.has_out))
        gap, log_cost, lost = self.host([gap_of(xp, log_p, log_n), total, lost.astype(np.float64)])
        if lost:
            raise RangeExceeded("a unit's scaled costs underflowed float64 mat-vecs")
        pt = Point(z, log_p, log_n, log_cost, gap)
        log_d = 2.0 * lp + log_d
        pt.log_d = xp.where(xp.isfinite(log_d), log_d, 0.0)
        half = 0.5 * (self.M - pt.log_d)
        with np.errstate(invalid="ignore"):
            pt.log_l = lp + x[:n] + half
            pt.log_r = lp + lc - y[:n] + half
        pt.base = self.base
        return pt

    def _odd_terms(self, u):
        """Per variable ``log Σ |γ|^k φ`` (k = 1, 2) of the edges inside it, by sign of ``γ``."""
        xp = self.xp
        lphi = self.odd_log_a + self.p * self.odd_gamma * u[self.odd_col]
        with np.errstate(divide="ignore"):
            lg = xp.log(xp.abs(self.odd_gamma))
        out = []
        for side in (self.odd_gamma > 0, self.odd_gamma < 0):
            for k in (1, 2):
                out.append(scatter_logsumexp(lphi[side] + k * lg[side], self.odd_col[side], self.n))
        out.append(lse(lphi))
        return tuple(out)

    def hessian(self, pt: Point) -> SparseHessian:
        if pt.base != self.base:
            pt = self.point(pt.z)
        return SparseHessian(self, pt)

    def sweeper(self, z, order: str = "parallel", seed=None) -> SparseSweeps:
        return SparseSweeps(self, z, order, seed)


class SparseHessian(Hessian):
    """``S = I − L A R − R Aᵀ L`` on the variables: one mat-vec with ``A`` and one with ``Aᵀ``."""

    def __init__(self, costs: SparseCosts, pt: Point):
        xp = costs.xp
        self.costs, self.n = costs, costs.n
        kl, _ = _mid(xp, pt.log_l)
        kr, _ = _mid(xp, pt.log_r)
        shift = 0.5 * (kl - kr)
        lt, rt = pt.log_l - shift, pt.log_r + shift
        span = max(float(to_host(xp.abs(xp.where(xp.isfinite(v), v, 0.0)).max())) if v.size else 0.0 for v in (lt, rt))
        if not costs.la + span + costs.log_m <= _SAFE:
            raise RangeExceeded("Hessian scalings span more than float64 mat-vecs hold")
        self.lt = xp.concatenate([xp.exp(lt), xp.zeros(1)])
        self.rt = xp.concatenate([xp.exp(rt), xp.zeros(1)])
        self.log_d = pt.log_d
        self._buf = xp.zeros(self.n + 1)

    def matvec(self, v):
        c, n, w = self.costs, self.n, self._buf
        w[:n] = v
        a = c.A @ (self.rt * w)
        b = c.A.T @ (self.lt * w)
        c.work += 2 * c.total
        return v - self.lt[:n] * a[:n] - self.rt[:n] * b[:n]

    def matrix(self) -> np.ndarray:
        import scipy.sparse as host_sp

        c, n = self.costs, self.n
        coo = c.A_vv.tocoo()
        rows, cols = to_host(coo.row), to_host(coo.col)
        vals = to_host(self.lt[coo.row] * coo.data * self.rt[coo.col])
        M = host_sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).toarray()
        S = -(M + M.T)
        S[np.diag_indices(n)] += 1.0
        return S

    def coarse_matrix(self, w, levels, n_levels: int):
        """``Wᵀ S W = diag(Σ_level w²) − C − Cᵀ`` with ``C = (L W)ᵀ A (R W)``: one sparse product."""
        c, xp, n = self.costs, self.costs.xp, self.n
        lev = xp.asarray(levels)
        indptr = xp.arange(n + 1)  # one entry per row: the level of the variable
        Wl = c.sp.csr_matrix((self.lt[:n] * w, lev, indptr), shape=(n, n_levels))
        Wr = c.sp.csr_matrix((self.rt[:n] * w, lev, indptr), shape=(n, n_levels))
        C = (Wl.T @ (c.A_vv @ Wr)).toarray()
        c.work += c.A_vv.nnz
        return xp.diag(xp.bincount(lev, weights=w * w, minlength=n_levels)) - C - C.T


class SparseSweeps(Sweeper):
    """Exact balancing of independent classes from the rows of ``A`` (eqs. 5.6, 6.6).

    A variable of class ``C`` moves by ``δ = (log(c·out) − log in) / (p (1 + c))``, its sides read
    from the rows of ``A`` and ``Aᵀ`` of the class: one pass over the weights per side and sweep,
    no per-edge ``exp``. Classes: depth levels on a DAG, colour classes otherwise. Variables with
    edges inside themselves (no closed form) stay put (``exact`` is False when there are any).
    """

    def __init__(self, costs: SparseCosts, z, order: str, seed):
        xp = costs.xp
        self.costs = costs
        self.u = xp.array(z, dtype=np.float64)
        A = costs.A
        movable = (to_host(xp.diff(A.indptr))[:costs.n] > 0) & (to_host(xp.diff(A.T.tocsr().indptr))[:costs.n] > 0)
        movable[costs.odd_vars] = False
        self.exact = bool(movable.all())
        lev, acyclic = costs._graph()
        labels = lev if acyclic else colouring(symmetric(costs._adj[:costs.n, :costs.n]), seed)
        classes = [c[movable[c]] for c in classes_of(labels)]
        classes = [c for c in classes if c.size]
        if order == "alternating":
            classes = classes[0::2] + classes[1::2]
        self.classes, self.movable = [xp.asarray(c) for c in classes], xp.asarray(movable)
        self.subs = None
        self._measure()

    def _measure(self):
        pt = self.costs.point(self.u)
        diff = pt.log_p - pt.log_n
        xp = self.costs.xp
        self.gap = float(to_host(gap_of(xp, xp.where(self.movable, diff, 0.0), xp.zeros_like(diff))))
        self.log_cost = pt.log_cost

    def sweep(self) -> None:
        costs, xp = self.costs, self.costs.xp
        if self.subs is None or self.subs[0] != costs.base:
            AT = costs.A.T.tocsr()
            self.subs = (costs.base, [costs.A[c] for c in self.classes], [AT[c] for c in self.classes])
        _, subs_in, subs_out = self.subs
        x, y = costs._scalings(self.u)
        kx = 0.5 * float(to_host(x.max() + x.min()))
        ky = -0.5 * float(to_host(y.max() + y.min()))
        e1, e2 = xp.exp(x - kx), xp.exp(-y - ky)
        room = _SAFE - costs.la - costs.log_m
        start = self.u.copy()
        try:
            self._classes_step(x, y, kx, ky, e1, e2, room, subs_in, subs_out)
        except RangeExceeded:
            self.u = start
            raise
        self._measure()

    def _classes_step(self, x, y, kx, ky, e1, e2, room, subs_in, subs_out) -> None:
        costs, xp = self.costs, self.costs.xp
        for cols, a_in, a_out in zip(self.classes, subs_in, subs_out):
            with np.errstate(divide="ignore"):
                log_in = x[cols] + ky + xp.log(a_in @ e2)
                log_out = costs.log_c[cols] - y[cols] + kx + xp.log(a_out @ e1)
            costs.work += a_in.nnz + a_out.nnz
            step = (log_out - log_in) / (costs.p * (1.0 + costs.c[cols]))
            self.u[cols] += xp.where(xp.isfinite(step), step, 0.0)
            d = self.u[cols] - costs.u_b[cols]
            x[cols] = costs.p * d
            y[cols] = costs.p * costs.c[cols] * d
            ok = bool(to_host(xp.all(xp.abs(x[cols] - kx) <= room) & xp.all(xp.abs(y[cols] + ky) <= room)))
            if not ok:
                raise RangeExceeded("sweep scales left float64 mat-vecs")
            e1[cols], e2[cols] = xp.exp(x[cols] - kx), xp.exp(-y[cols] - ky)

    def coordinates(self):
        return self.u
