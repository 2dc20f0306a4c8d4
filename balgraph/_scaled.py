"""Scaling-vector form of the L_p cost: per-edge sums as sparse mat-vecs (design.md §2).

For the L_p cost every edge ``e: j -> i`` between variables (or the ground, every fixed unit
merged, index ``n``) costs ``φ_e = a_e exp(p (u_i − c_j u_j))`` (eq. 9.6 with ``L = G u``).
Collecting ``a_e`` in the ``(n+1) × (n+1)`` matrix ``A`` (rows: target, columns: source) and
writing ``x = p u``, ``y = p c u`` (0 on the ground),

    in_i  = Σ_{e→i} φ_e = e^{x_i} (A e^{−y})_i,      out_j = Σ_{j→e} φ_e = e^{−y_j} (Aᵀ e^{x})_j,

so the sides of eqs. 5.8 and 6.7 (``P = p·in``, ``N = p c·out``), the cost ``R = Σ_i in_i`` and
a Hessian product each take one or two mat-vecs with ``A`` and no per-edge ``exp``. The scaled
Hessian ``S = D^{-1/2} H D^{-1/2}`` of :mod:`balgraph._hessian` is

    S = I − L A R − R Aᵀ L,   L = diag(p e^{x}/√D),   R = diag(p c e^{−y}/√D),

restricted to the variables. Edges inside one variable (BiPU self-loops, edges inside a tie
group: ``G_e = 1 − c``) enter only the diagonal and are summed per edge.

Products of numbers spanning 1e±300 would leave float64, so ``A`` holds the costs at a base
point ``u_b`` divided by ``e^M`` (``M`` the middle of their log-range) and every exponential is
shifted to the middle of its range; when the ranges still do not fit, the base moves to the
current point (one pass over the edges), and when even that fails the caller falls back on the
per-edge log-domain path.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._logsum import VariableSides, logsumexp

__all__ = ["ScalingForm"]

# Largest |log| of any product formed: leaves e^{~60} of headroom for sums and CG vectors.
_SAFE = 650.0


def _mid(a: np.ndarray) -> tuple[float, float]:
    """Middle and half-width of the finite values of ``a`` (0, 0 if none)."""
    f = a[np.isfinite(a)]
    if f.size == 0:
        return 0.0, 0.0
    lo, hi = float(f.min()), float(f.max())
    return 0.5 * (lo + hi), 0.5 * (hi - lo)


def _seg_logsum(values: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    """``log Σ exp`` of ``values`` per segment label ``seg`` (a few edges: no sorting)."""
    top = np.full(n, -np.inf)
    np.maximum.at(top, seg, values)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.bincount(seg, weights=np.exp(values - safe[seg]), minlength=n))


class ScalingForm:
    """The edges of an L_p problem as one sparse matrix ``A``, built once per solve.

    Use :meth:`build` (returns ``None`` when the cost is not a single power). :meth:`point`
    evaluates the sides and the cost at ``u``; :meth:`hessian` gives the scaled Hessian.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> form = ScalingForm.build(pb, np.arange(2), np.log([16.0, 1.0]), 2.0)
    >>> pt = form.point(np.array([np.log(0.5)]))
    >>> bool(abs(pt.r[0]) < 1e-15)   # in = 16/4 = 4 = out = 1·4
    True
    """

    @classmethod
    def build(cls, problem, nz: np.ndarray, log_a: np.ndarray, p: float | None):
        """The form of the edges ``nz`` with ``log a_e = log_a`` (``None`` when ``p`` is None)."""
        if p is None or not p > 0:
            return None
        return cls(problem, nz, log_a, float(p))

    def __init__(self, problem, nz: np.ndarray, log_a: np.ndarray, p: float):
        n = problem.n_vars
        self.n, self.p, self.log_p = n, p, float(np.log(p))
        vi = problem.var[problem.dst[nz]]
        vj = problem.var[problem.src[nz]]
        odd = (vi == vj) & (vi >= 0)
        self.c = problem.var_degree.astype(np.float64)
        with np.errstate(divide="ignore"):
            self.log_c = np.log(self.c)
        # Edges inside one variable: G_e = 1 − c on a single column.
        self.odd_col = vi[odd]
        self.odd_gamma = 1.0 - problem.degree[problem.src[nz][odd]]
        self.odd_log_a = log_a[odd]
        reg = ~odd
        rows = np.where(vi[reg] < 0, n, vi[reg]).astype(np.int64)
        cols = np.where(vj[reg] < 0, n, vj[reg]).astype(np.int64)
        # Edges sorted by (target, source), runs of equal pairs summed into one entry of A:
        # stable sorts are near linear on the block-ordered edges of real networks.
        order = np.argsort(rows * (n + 1) + cols, kind="stable")
        rows, cols = rows[order], cols[order]
        self.e_rows, self.e_cols, self.e_log_a = rows, cols, log_a[reg][order]
        new = np.ones(rows.size, dtype=bool)
        new[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        self.starts = np.flatnonzero(new)
        ar, ac = rows[self.starts], cols[self.starts]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(ar, minlength=n + 1))])
        self.A = sp.csr_matrix((np.zeros(ar.size), ac, indptr), shape=(n + 1, n + 1))
        self.AT = self.A.T.tocsr()
        vv = (ar < n) & (ac < n)
        self.vv, self.vv_rows, self.vv_cols = np.flatnonzero(vv), ar[vv], ac[vv]
        self.log_m = float(np.log(max(rows.size, 1)))
        self.base = -1
        # A failed rebase (costs beyond float64) is not retried before the next iteration.
        self.allow_rebase = True
        # (coarse space, level pair of each variable-variable entry of A), see galerkin.
        self._pairs = (None, None)
        self.rebase(np.zeros(n))

    def rebase(self, u: np.ndarray) -> None:
        """Store the costs at ``u`` in ``A`` (one pass over the edges)."""
        if np.any(u):
            ue, ce = np.append(u, 0.0), np.append(self.c, 0.0)
            lphi = self.e_log_a + self.p * (ue[self.e_rows] - ce[self.e_cols] * ue[self.e_cols])
        else:
            lphi = self.e_log_a
        self.M, half = _mid(lphi)
        self.u_b = np.array(u, dtype=np.float64)
        self.base += 1
        if not half + self.log_m <= _SAFE:
            # Costs spanning more than float64 holds: per-edge path until the next iteration.
            self.la, self.allow_rebase = np.inf, False
            return
        data = np.exp(lphi - self.M)
        if self.starts.size < data.size:
            data = np.add.reduceat(data, self.starts)
        self.A.data = data
        self.AT = self.A.T.tocsr()
        with np.errstate(divide="ignore"):
            logs = np.log(data[data > 0])
        self.la = float(np.max(np.abs(logs), initial=0.0))

    def point(self, u: np.ndarray, *, _retry: bool = True):
        """Sides and cost at ``u`` (:class:`ScaledPoint`), or ``None`` outside float64 range."""
        d = u - self.u_b
        x = np.append(self.p * d, 0.0)
        y = np.append(self.p * self.c * d, 0.0)
        kx, hx = _mid(x)
        ky, hy = _mid(-y)
        if not self.la + max(hx, hy) + self.log_m <= _SAFE:
            if not (_retry and self.allow_rebase and np.all(np.isfinite(u))):
                return None
            self.rebase(u)
            return self.point(u, _retry=False)
        with np.errstate(divide="ignore"):
            log_in = x + ky + self.M + np.log(self.A @ np.exp(-y - ky))
            log_out = kx - y + self.M + np.log(self.AT @ np.exp(x - kx))
        return ScaledPoint(self, u, x[:-1], y[:-1], log_in, log_out[:-1])

    def _odd_terms(self, u: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Per variable ``log Σ |γ|^k φ`` (k = 1, 2) of the edges inside it, by sign of ``γ``."""
        if self.odd_col.size == 0:
            return None
        lphi = self.odd_log_a + self.p * self.odd_gamma * u[self.odd_col]
        lg = np.log(np.abs(self.odd_gamma))
        out = []
        for side in (self.odd_gamma > 0, self.odd_gamma < 0):
            seg = self.odd_col[side]
            out += [_seg_logsum(lphi[side] + k * lg[side], seg, self.n) for k in (1, 2)]
        out.append(_seg_logsum(lphi, np.zeros(lphi.size, np.int64), 1)[0])
        return tuple(out)


class ScaledPoint:
    """Costs and sides at one ``u`` from mat-vecs; the attributes of ``newton._Point``."""

    def __init__(self, form: ScalingForm, u, x, y, log_in, log_out):
        self.u, self.base = u, form.base
        lp, lc = form.log_p, form.log_c
        reg_in, reg_out = log_in[:-1], log_out
        total = logsumexp(log_in)
        log_p = lp + reg_in
        log_n = lp + lc + reg_out
        log_d = np.logaddexp(reg_in, 2.0 * lc + reg_out)
        odd = form._odd_terms(u)
        if odd is not None:
            pos1, pos2, neg1, neg2, odd_total = odd
            log_p = np.logaddexp(log_p, lp + pos1)
            log_n = np.logaddexp(log_n, lp + neg1)
            log_d = np.logaddexp(np.logaddexp(log_d, pos2), neg2)
            total = np.logaddexp(total, odd_total)
        self.log_cost = float(total)
        self.log_p, self.log_n = log_p, log_n
        self.r = VariableSides.relative_imbalance(log_p, log_n)
        self.worst = float(np.max(np.abs(self.r), initial=0.0))
        with np.errstate(invalid="ignore"):
            gap = np.abs(log_p - log_n)
        self.gap = float(np.max(np.where(np.isnan(gap), 0.0, gap), initial=0.0))
        log_d = 2.0 * lp + log_d
        self.log_d = np.where(np.isfinite(log_d), log_d, 0.0)
        half = 0.5 * (form.M - self.log_d)
        with np.errstate(invalid="ignore"):
            self.log_l = lp + x + half
            self.log_r = lp + lc - y + half

    def gradient_over(self, log_scale: np.ndarray | float) -> np.ndarray:
        """``g_k / e^{log_scale_k} = (P_k − N_k) / e^{log_scale_k}`` without forming ``g``."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_p - log_scale) - np.exp(self.log_n - log_scale)


class ScaledOperator:
    """``S = I − L A R − R Aᵀ L`` on the variables: the interface of ``ScaledHessian``.

    Build with :meth:`at`, which returns ``None`` when the scalings do not fit float64.
    """

    @classmethod
    def at(cls, form: ScalingForm, pt: ScaledPoint):
        """The operator at ``pt``; ``None`` if ``A`` moved base since or the scalings
        ``L``, ``R`` (shifted by reciprocal constants to a common middle) do not fit."""
        if pt.base != form.base:
            return None
        kl, _ = _mid(pt.log_l)
        kr, _ = _mid(pt.log_r)
        shift = 0.5 * (kl - kr)
        lt, rt = pt.log_l - shift, pt.log_r + shift
        span = max(float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0)) for v in (lt, rt))
        if not form.la + span + form.log_m <= _SAFE:
            return None
        return cls(form, pt, np.exp(lt), np.exp(rt))

    def __init__(self, form: ScalingForm, pt: ScaledPoint, lt: np.ndarray, rt: np.ndarray):
        self.form, self.n = form, form.n
        self.lt, self.rt = np.append(lt, 0.0), np.append(rt, 0.0)
        self.log_d = pt.log_d
        s = 0.5 * (pt.log_d.max(initial=0.0) + pt.log_d.min(initial=0.0))
        self.half_log_d = 0.5 * (pt.log_d - s)
        self._buf = np.zeros(self.n + 1)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``S v``: one mat-vec with ``A`` and one with ``Aᵀ``."""
        f, n, w = self.form, self.n, self._buf
        w[:n] = v
        a = f.A @ (self.rt * w)
        b = f.AT @ (self.lt * w)
        return v - self.lt[:n] * a[:n] - self.rt[:n] * b[:n]

    def _offdiag(self) -> np.ndarray:
        f = self.form
        return self.lt[f.vv_rows] * f.A.data[f.vv] * self.rt[f.vv_cols]

    def dense(self) -> np.ndarray:
        """``S`` as a dense array (small problems)."""
        f, n = self.form, self.n
        M = sp.coo_matrix((self._offdiag(), (f.vv_rows, f.vv_cols)), shape=(n, n)).toarray()
        S = -(M + M.T)
        S[np.diag_indices(n)] += 1.0
        return S

    def galerkin(self, vals: np.ndarray, space) -> np.ndarray:
        """``Qᵀ S Q`` for ``Q`` with column ``ℓ`` equal to ``vals`` on level ``ℓ``."""
        f, levels, L = self.form, space.levels, space.n_levels
        rows, cols = f.vv_rows, f.vv_cols
        if f._pairs[0] is not space:
            f._pairs = (space, levels[rows] * L + levels[cols])
        w = vals[rows] * self._offdiag() * vals[cols]
        C = np.bincount(f._pairs[1], weights=w, minlength=L * L).reshape(L, L)
        return np.diag(np.bincount(levels, weights=vals * vals, minlength=L)) - C - C.T
