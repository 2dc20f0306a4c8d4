"""The cost model of layer matrices: every sum and Hessian product a BLAS mat-vec (NumPy or CuPy).

Work in ``z = x = p·u`` (``u = log Λ``). A block maps free units ``I`` (or fixed ones) to ``O``;
its costs ``φ_kj = |w_kj|^p e^{x_k − c_j x_j}`` form the matrix ``diag(e^{x_O}) A diag(e^{−c x_I})``
with ``A = |W|^p`` computed once, so no per-edge ``exp`` is evaluated per iteration
(docs/design.md §2). With ``in_k`` and ``out_k`` the incoming and outgoing costs of unit ``k``,
the gradient of ``R(x)`` is ``in − c·out`` (eqs. 5.8, 6.7) and its Hessian
``diag(in + c²·out) − K`` with the couplings ``K`` of the blocks. Blocks with a fixed side (first
and last layer, biases) reduce to row or column sums of ``A`` computed once. The free layers
are *groups*: independent sets (Prop. 4.4) for the sweeps, and the levels of Newton's coarse
space (one scale per layer).

Numerics: ``A`` is stored as ``e^{a} Â`` with ``max Â = 1``; scaling vectors are shifted by their
maximum and every sum comes back to the log domain at once, so ``in``, ``out`` and ``R`` may span
1e-300..1e300. A block spanning more than ``e^575``, or a mat-vec result that underflows on a
nonzero row, raises :class:`RangeExceeded`: the solver continues on :mod:`.sparse`.

Dask blocks (:mod:`.chunked`) stay where their chunks live: the per-unit vectors are NumPy
arrays on the driver, and the mat-vecs of one cost evaluation, one Hessian product or one sweep
phase are evaluated together in one ``dask.compute`` (:func:`~balgraph.costs.batch.products`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..backend import array_module, to_host
from ..errors import SolverError
from ..graphs import colouring, symmetric
from ..kernels import lse, power_sums, segment_logsumexp
from ..lazy import compute, is_lazy
from ..model import Problem
from ..regularizers import Regularizer
from .base import CostModel, Hessian, Point, RangeExceeded, gap_of
from .batch import make_batches, products
from .chunked import power_sums as lazy_power_sums
from .layersweeps import LayerSweeps

__all__ = ["LayeredCosts", "LayeredPlan", "plan_layers"]

# A mat-vec result below this, on a row with nonzero entries, has lost precision to underflow.
_TINY = 1e-280
# Entries per float64 temporary when float32 storage is summed exactly.
_CHUNK = {"numpy": 1 << 24, "cupy": 1 << 27}


@dataclass
class LayeredPlan:
    """Groups of model coordinates and blocks ``(W, gi, go, name, in_idx, out_idx)``."""

    sizes: list
    perm: np.ndarray
    degree: np.ndarray
    blocks: list


def plan_layers(problem: Problem, reg: Regularizer, *, fold: bool = False) -> LayeredPlan | str:
    """The dense layout of ``problem``, or a string saying why it does not qualify.

    Qualifies: every block is a :class:`DenseBlock`, the cost is ``b Σ |w|^p`` (with ``fold``
    also per-edge ``b_e``: the blocks then hold ``b_e^{1/p} |w_e|``), no units are tied, and
    each block side is all fixed or one whole group of free units (a free layer).

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.ones((3, 2)), np.ones((1, 3))], [np.ones(3), None])
    >>> plan = plan_layers(pb, balgraph.Lp(2))
    >>> plan.sizes, [(gi, go) for _, gi, go, *_ in plan.blocks]
    ([3], [(None, 0), (0, None), (None, 0)])
    """
    if not problem.dense:
        return "some edges are not in layer matrices"
    p = reg.power()
    if p is None:
        return f"the cost {reg!r} is not a single power b·|w|^p"
    coef = next(iter(reg.terms.values()))
    folded = isinstance(coef, np.ndarray) and coef.ndim
    if folded and not fold:
        return "the Lp cost has per-edge coefficients"
    if problem.n_vars and np.any(problem.var_size != 1):
        return "some units are tied"
    group_of = np.full(problem.n_nodes, -1, dtype=np.int64)
    groups: list[np.ndarray] = []
    keys: dict = {}
    sides = []
    for b in problem.blocks:
        pair = []
        for units in (b.in_units, b.out_units):
            f = problem.fixed[units]
            if f.all():
                pair.append(None)
                continue
            if f.any():
                return f"units {problem.nodes[int(units[0])]!r}.. of {b.name} are partly fixed"
            key = units.tobytes()
            if key not in keys:
                if np.any(group_of[units] >= 0):
                    return f"{b.name} shares units with another layer in a different order or grouping"
                keys[key] = len(groups)
                group_of[units] = len(groups)
                groups.append(units)
            pair.append(keys[key])
        if pair[0] is not None and pair[0] == pair[1]:
            return f"{b.name} maps units {problem.nodes[int(b.out_units[0])]!r}.. onto themselves"
        sides.append(pair)
    if np.any(group_of[~problem.fixed] < 0):
        return "some free units lie outside the layer matrices"
    order = np.argsort([int(g.min()) for g in groups], kind="stable")
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups))
    units = np.concatenate([groups[g] for g in order]) if groups else np.zeros(0, np.int64)
    pos = np.full(problem.n_nodes, -1, dtype=np.int64)
    pos[units] = np.arange(units.size)
    offsets = problem.block_offsets
    blocks = []
    for k, (b, (gi, go)) in enumerate(zip(problem.blocks, sides)):
        W = b.weight
        if folded:
            bk = coef[offsets[k]:offsets[k + 1]].reshape(b.shape)
            with np.errstate(divide="ignore"):
                W = np.exp(np.log(bk) / p) * np.abs(np.asarray(to_host(W), dtype=np.float64))
            if not np.all(np.isfinite(W)):
                return "per-edge coefficients take b^(1/p)|w| beyond float64"
        gi = None if gi is None else int(rank[gi])
        go = None if go is None else int(rank[go])
        blocks.append((W, gi, go, b.name, pos[b.in_units] if gi is not None else None,
                       pos[b.out_units] if go is not None else None))
    return LayeredPlan([int(groups[g].size) for g in order], problem.var[units], problem.degree[units], blocks)


def _log(xp, a):
    with np.errstate(divide="ignore"):
        return xp.log(a)


class LayeredPoint(Point):
    """Adds ``log in``, ``log out`` and the per-batch cross sums the Hessian's coarse space uses."""


class LayeredCosts(CostModel):
    """The cost ``R(x)`` of dense layer blocks (see the module docstring).

    Build with :meth:`build`. ``storage="float32"`` halves the memory of ``|W|^p`` (sums stay
    float64), but rounds every ``|w|^p`` to 6e-8: the balance then holds to about 1e-7 only.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.array([[4.0]]), np.array([[1.0]])])
    >>> costs = LayeredCosts.build(pb, balgraph.Lp(2))
    >>> pt = costs.point(costs.start(np.zeros(1)))
    >>> round(float(np.exp(pt.log_p[0])), 12), round(float(np.exp(pt.log_n[0])), 12)   # in = 16, out = 1
    (16.0, 1.0)
    """

    name = "layered"
    dense_ok = False

    @classmethod
    def build(cls, problem: Problem, reg: Regularizer, *, device=None, storage=None, fold: bool = True):
        """The model of ``problem``, or a string saying why it does not apply.

        Dask blocks run where their chunks live (``device`` None or ``"cpu"``); ``storage`` None
        recomputes their ``|W|^p`` from the chunks on each pass, a dtype persists it on the workers.
        """
        plan = plan_layers(problem, reg, fold=fold)
        if isinstance(plan, str):
            return plan
        lazy = any(is_lazy(W) for W, *_ in plan.blocks)
        if lazy and device not in (None, "cpu"):
            return f"Dask blocks are reduced where their chunks live: device={device!r} needs CuPy arrays"
        xp = np if lazy else problem.xp if device is None else array_module(device)
        return cls(xp, reg.power(), plan, np.dtype(storage or np.float64), problem=problem, reg=reg,
                   persist=storage is not None)

    def __init__(self, xp, p, plan: LayeredPlan, storage=np.float64, *, problem=None, reg=None,
                 persist: bool = True):
        self.xp, self.p, self.storage = xp, float(p), np.dtype(storage)
        self.problem, self.reg, self.perm = problem, reg, plan.perm
        chunk = _CHUNK.get(xp.__name__, _CHUNK["numpy"])
        offsets = np.concatenate([[0], np.cumsum(plan.sizes)]).astype(int)
        self.sizes, self.starts, self.offsets = np.diff(offsets), offsets[:-1], offsets
        self.slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(offsets)]
        self.n, self.n_groups = int(offsets[-1]), len(self.slices)
        self.levels = np.repeat(np.arange(self.n_groups), self.sizes)
        self.n_levels = self.n_groups
        self.group = xp.asarray(self.levels)
        self.c = xp.asarray(plan.degree, dtype=np.float64)
        self.logc = xp.log(self.c)
        self.fin = xp.full(self.n, -np.inf)
        self.fout = xp.full(self.n, -np.inf)
        self.log_fixed = -np.inf  # fixed-to-fixed blocks (a bias into the outputs): a constant part of R
        self.flags, self.work, self.total = [], 0.0, 0
        self.lazy = False
        inner, fixed_sides = [], []
        for W, gi, go, name, in_idx, out_idx in plan.blocks:
            self.total += int(W.shape[0]) * int(W.shape[1])
            self.lazy |= is_lazy(W)
            # a Dask block stays where it is: its sums are expressions, computed below
            sums_of = lazy_power_sums if is_lazy(W) else lambda W, p, axis: power_sums(xp.asarray(W), p, axis)
            if go is not None and gi is None:
                fixed_sides.append((self.fin, out_idx, sums_of(W, self.p, 1)))
            elif gi is not None and go is None:
                fixed_sides.append((self.fout, in_idx, sums_of(W, self.p, 0)))
            elif gi is not None:
                inner.append((W, gi, go, name, in_idx, out_idx))
            elif W.size:
                fixed_sides.append((None, None, sums_of(W, self.p, 1)))
        # blocks with a fixed side cost their row or column sums once (Dask blocks: one round trip)
        for (acc, idx, _), sums in zip(fixed_sides, compute(*[part for *_, part in fixed_sides])):
            sums = xp.asarray(sums)
            if acc is None:
                self.log_fixed = float(np.logaddexp(self.log_fixed, float(to_host(lse(sums)))))
            else:
                idx = xp.asarray(idx)
                acc[idx] = xp.logaddexp(acc[idx], sums)
        pairs = np.array([(gi, go) for _, gi, go, *_ in inner], dtype=np.int64).reshape(-1, 2)
        adj = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(self.n_groups,) * 2)
        colour = colouring(symmetric(adj), priority=-np.arange(self.n_groups, dtype=np.float64))
        # batches never straddle colours, so a sweep over every other layer uses whole batches
        self.batches = make_batches(xp, inner, colour, self.p, self.c, storage, chunk, self._dask_batches(storage, persist))

    def _dask_batches(self, storage, persist: bool):
        """How groups of Dask blocks become batches (:mod:`.chunked`): all set up in one round trip."""

        def build(groups):
            from .chunked import DaskBatch

            return DaskBatch.build_all(groups, self.p, self.c, storage, persist)

        return build

    # ------------------------------------------------------------------ coordinates
    def start(self, u):
        return self.xp.asarray(np.asarray(u, dtype=np.float64)[self.perm] * self.p)

    def potentials(self, z) -> np.ndarray:
        out = np.zeros(self.perm.size)
        out[self.perm] = to_host(z) / self.p
        return out

    def fallback(self):
        from .sparse import SparseCosts

        if self.problem is None:
            return None
        if self.lazy:
            raise SolverError("the layered model left float64's range on Dask blocks; the models that hold"
                              " any range work edge by edge on the driver and would gather every weight there:"
                              " balance the layers as NumPy arrays if they fit in memory")
        return SparseCosts.build(self.problem, self.reg, device="cuda" if self.xp is not np else None)

    # ------------------------------------------------------------------ sums
    def parts(self, x, wanted) -> list:
        """Log-sums over the blocks ``sel`` of batch ``b``, for every ``(side, b, sel)`` of ``wanted``.

        ``side="in"``: ``log Σ_j |w_kj|^p e^{−c_j x_j}`` into each output unit ``k`` (without its own
        factor ``e^{x_k}``), ``(len(sel), n_out)``; ``"out"``: ``log Σ_k |w_kj|^p e^{x_k}`` out of each
        input unit ``j`` (without ``e^{−c_j x_j}``), ``(len(sel), n_in)``. One pass over those blocks,
        and one round trip for Dask blocks.
        """
        xp = self.xp
        jobs, shifts = [], []
        for side, b, sel in wanted:
            e = -b.c_in[sel] * x[b.in_idx[sel]] if side == "in" else x[b.out_idx[sel]]
            top = e.max(axis=1, keepdims=True)
            jobs.append((b, side == "out", xp.exp(e - top), True, sel))
            shifts.append(top)
        out = []
        for (side, b, sel), y, top in zip(wanted, products(jobs), shifts):
            y = xp.asarray(y)
            self.work += y.size * b.shape[2 if side == "in" else 1]
            self.flags.append(xp.any((y < _TINY) & (b.row_nz if side == "in" else b.col_nz)[sel]))
            out.append(b.a[sel] + top + _log(xp, y))
        return out

    def sides(self, x):
        """``(log in, log out, log out-to-fixed, per-batch log Σ c_j φ_kj)`` at ``x``: 2 passes."""
        xp = self.xp
        log_in = self.fin + x
        log_fixed_out = self.fout - self.c * x
        log_out = log_fixed_out.copy()
        cross = []
        every = self.parts(x, [(side, b, slice(None)) for b in self.batches for side in ("in", "out")])
        for k, b in enumerate(self.batches):
            log_in[b.out_idx] = xp.logaddexp(log_in[b.out_idx], every[2 * k] + x[b.out_idx])
            part = every[2 * k + 1] - b.c_in * x[b.in_idx]
            log_out[b.in_idx] = xp.logaddexp(log_out[b.in_idx], part)
            cross.append(lse(b.logc_in(self.logc) + part, axis=1))
        return log_in, log_out, log_fixed_out, cross

    def group_lse(self, v):
        """``log Σ_{k∈g} e^{v_k}`` for every group ``g`` (each shifted by its own maximum)."""
        return segment_logsumexp(v, self.offsets)

    def check(self, summary):
        """Host copy of ``summary`` (one round trip), after raising :class:`RangeExceeded` if a
        mat-vec underflowed on a nonzero row or a summary value is NaN or ``+inf``."""
        xp = self.xp
        flags, self.flags = self.flags, []
        parts = [xp.asarray(summary, dtype=np.float64).ravel()]
        if flags:
            parts.insert(0, xp.stack(flags).astype(np.float64))
        host = to_host(xp.concatenate(parts))
        k = len(flags)
        if np.any(host[:k]) or np.any(np.isnan(host[k:]) | (host[k:] == np.inf)):
            raise RangeExceeded("a layer's scaled costs under- or overflowed float64 mat-vecs")
        return host[k:]

    def point(self, z) -> LayeredPoint:
        xp = self.xp
        log_in, log_out, log_fixed_out, cross = self.sides(z)
        log_n = self.logc + log_out
        summary = xp.stack([gap_of(xp, log_in, log_n), lse(xp.concatenate([log_in, log_fixed_out]))])
        gap, log_cost = self.check(summary)
        pt = LayeredPoint(z, log_in, log_n, float(np.logaddexp(log_cost, self.log_fixed)), gap)
        pt.log_out, pt.log_cross = log_out, cross
        return pt

    def hessian(self, pt: LayeredPoint) -> LayeredHessian:
        return LayeredHessian(self, pt)

    def sweeper(self, z, order: str = "parallel", seed=None):
        return LayerSweeps(self, z, order)


class LayeredHessian(Hessian):
    """``S = D^{-1/2} H D^{-1/2}``, ``D = in + c²·out``: ``S y = y − D^{-1/2} K D^{-1/2} y``.

    A block's couplings are ``e^{x_k} φ̂ e^{−c_j x_j}``, applied as ``u_O ∘ Â (v_I ∘ y_I)`` and
    ``v_I ∘ Âᵀ (u_O ∘ y_O)`` with shifted vectors (2 passes). The coarse matrix of one scale per
    group (tridiagonal for a chain) comes from the point's cross sums, for the canonical coarse
    vectors ``w_k = sqrt(D_k / Σ_{group} D)``.
    """

    def __init__(self, costs: LayeredCosts, pt: LayeredPoint):
        xp = costs.xp
        self.costs, self.pt = costs, pt
        self.log_d = xp.logaddexp(pt.log_p, 2.0 * costs.logc + pt.log_out)
        half = 0.5 * self.log_d
        self.parts = []
        for b in costs.batches:
            alpha = pt.z[b.out_idx] - half[b.out_idx]
            beta = -b.c_in * pt.z[b.in_idx] - half[b.in_idx]
            ma, mb = alpha.max(axis=1, keepdims=True), beta.max(axis=1, keepdims=True)
            scale = xp.exp(b.a + ma + mb)
            costs.flags.append(~xp.all(xp.isfinite(scale)))
            ea = xp.exp(alpha - ma)
            ebc = xp.exp(beta - mb) * b.c_in
            self.parts.append((b, ea, ebc, scale * ea, scale * ebc))

    def matvec(self, y):
        jobs = []
        for b, ea, ebc, _, _ in self.parts:
            jobs += [(b, False, ebc * y[b.in_idx], False, slice(None)), (b, True, ea * y[b.out_idx], False, slice(None))]
        done = products(jobs)  # Dask blocks: one round trip
        out = y.copy()
        xp = self.costs.xp
        for k, (b, _, _, uo, ui) in enumerate(self.parts):
            out[b.out_idx] -= uo * xp.asarray(done[2 * k])
            out[b.in_idx] -= ui * xp.asarray(done[2 * k + 1])
            self.costs.work += 2 * b.size
        return out

    def matrix(self) -> np.ndarray:
        """``S`` as a dense host array: the couplings of every block, mirrored (small nets)."""
        S = np.eye(self.costs.n)
        for b, ea, ebc, uo, _ in self.parts:
            M = to_host(uo[:, :, None] * self.costs.xp.asarray(b.dense()) * ebc[:, None, :])
            out_idx, in_idx = to_host(b.out_idx), to_host(b.in_idx)
            for k in range(M.shape[0]):
                S[np.ix_(out_idx[k], in_idx[k])] -= M[k]
                S[np.ix_(in_idx[k], out_idx[k])] -= M[k].T
        return S

    def coarse_matrix(self, w, levels, n_levels):
        costs, xp = self.costs, self.costs.xp
        half_delta = 0.5 * costs.group_lse(self.log_d)
        E = xp.eye(costs.n_groups)
        for b, cross in zip(costs.batches, self.pt.log_cross):
            v = xp.exp(cross - half_delta[b.gi] - half_delta[b.go])
            E[b.gi, b.go] -= v
            E[b.go, b.gi] -= v
        return E

