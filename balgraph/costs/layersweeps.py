"""Exact layer sweeps on dense blocks, in a chosen order, with the layer sums cached between steps.

Work in ``x = p·u``. For a free unit ``k`` let ``I_k = log Σ_j |w_kj|^p e^{−c_j x_j}`` (its incoming
costs without the factor ``e^{x_k}``) and ``O_k = log Σ_i |w_ik|^p e^{x_i}`` (outgoing, without
``e^{−c_k x_k}``). With every other unit held, ``R`` is ``e^{x_k} e^{I_k} + e^{−c_k x_k} e^{O_k}`` plus
constants, minimal at ``x_k = (log c_k + O_k − I_k)/(1 + c_k)`` (eqs. 5.6, 6.6). A *phase* is a set
of free groups (hidden layers) that no block joins (Prop. 4.4), all moved to that minimizer at once.

Orders (Section 8.2):

- ``"parallel"``: the groups one after the other in depth order, each with the latest values
  (Gauss–Seidel over layers).
- ``"alternating"``: groups 0, 2, 4, … then 1, 3, 5, … (odd layers, then even ones).

Consecutive groups that share no block are merged into one phase (the same arithmetic, batched).
``I``/``O`` of a group go stale when a neighbouring group moves and are recomputed only when a
phase or the end-of-sweep check needs them, by batched mat-vecs (:mod:`.batch`). The check
refreshes every stale sum, which gives the imbalance and ``log R`` at the new point and is just
what the next sweep starts from: a sweep plus its check cost 2 weight-passes in either order,
and ``log R`` costs no pass (``R = Σ_k e^{x_k + I_k}`` plus the costs into fixed units, eq. 5.4).

Examples
--------
>>> import numpy as np, balgraph
>>> from balgraph.costs import LayeredCosts
>>> pb = balgraph.Problem.from_layers([np.array([[4.0]]), np.array([[1.0]])])
>>> state = LayeredCosts.build(pb, balgraph.Lp(2)).sweeper(np.zeros(1))
>>> state.sweep()
>>> float(np.exp(state.coordinates()[0] / 2)), state.gap   # λ* = (1/16)^(1/4)
(0.5, 0.0)
"""

from __future__ import annotations

import numpy as np

from ..checks import check_choice
from ..kernels import lse
from .base import RangeExceeded, Sweeper

__all__ = ["ORDERS", "LayerSweeps"]

ORDERS = ("parallel", "alternating")


class LayerSweeps(Sweeper):
    """Sweep state at ``x`` (a copy is kept) on ``costs``.

    ``sweep()`` runs one sweep and its check, after which ``gap`` (the largest log-imbalance)
    and ``log_cost`` (``R`` including fixed-to-fixed blocks) describe the new point;
    construction measures the start point. :class:`RangeExceeded` (a mat-vec that lost float64
    range) leaves the state at the start of the failed sweep, for a caller to continue elsewhere.
    """

    def __init__(self, costs, x, order: str = "parallel"):
        check_choice(order, "order", ORDERS)
        xp, G = costs.xp, costs.n_groups
        self.costs, self.xp = costs, xp
        self.x = xp.array(x, dtype=np.float64)
        self.succ = np.zeros((G, G), dtype=bool)  # succ[g, h]: a block maps group g into h
        for b in costs.batches:
            self.succ[b.gi_host, b.go_host] = True
        joined = self.succ | self.succ.T
        seq = list(range(G)) if order == "parallel" else [*range(0, G, 2), *range(1, G, 2)]
        groups: list[list[int]] = []
        for g in seq:
            if not groups or joined[g, groups[-1]].any():
                groups.append([])
            groups[-1].append(g)
        self._memo: dict = {}
        self.phases = []
        for members in groups:
            mask = np.zeros(G, dtype=bool)
            mask[members] = True
            units = self._units(mask)
            c = costs.c[units]
            self.phases.append((mask, units, costs.logc[units], 1.0 + c,
                                self.succ[mask].any(axis=0), self.succ[:, mask].any(axis=1)))
        self.I, self.O = xp.full(costs.n, -np.inf), xp.full(costs.n, -np.inf)
        self.stale_in, self.stale_out = np.ones(G, dtype=bool), np.ones(G, dtype=bool)
        self.log_cost = self.gap = np.nan
        self._check()

    def _units(self, mask: np.ndarray):
        """The units of the groups in ``mask``: a slice when they are contiguous."""
        groups = np.flatnonzero(mask)
        starts = self.costs.starts[groups]
        stops = starts + self.costs.sizes[groups]
        if groups.size and np.array_equal(starts[1:], stops[:-1]):
            return slice(int(starts[0]), int(stops[-1]))
        idx = [np.arange(a, b) for a, b in zip(starts, stops)]
        return self.xp.asarray(np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64))

    def _refresh(self, side: str, mask: np.ndarray) -> None:
        """Recompute ``I`` (``side="in"``) or ``O`` of the groups in ``mask`` at the current ``x``."""
        key = (side, mask.tobytes())
        plan = self._memo.get(key)
        if plan is None:
            runs = []
            for b in self.costs.batches:
                hit = mask[b.go_host if side == "in" else b.gi_host].astype(np.int8)
                cuts = np.flatnonzero(np.diff(np.r_[np.int8(0), hit, np.int8(0)]))
                runs += [(b, slice(int(s), int(e))) for s, e in zip(cuts[::2], cuts[1::2])]
            # one group fed by one block (layer-by-layer sweeps): no gather or scatter needed
            single = mask.sum() == 1 and len(runs) == 1 and runs[0][1].stop - runs[0][1].start == 1
            plan = self._memo[key] = (self._units(mask), runs, single)
        units, runs, single = plan
        xp, costs, x = self.xp, self.costs, self.x
        if side == "in":
            acc, stale, where, base = self.I, self.stale_in, "out_idx", costs.fin
        else:
            acc, stale, where, base = self.O, self.stale_out, "in_idx", costs.fout
        parts = costs.parts(x, [(side, b, sel) for b, sel in runs])  # Dask blocks: one round trip
        if single:
            acc[units] = xp.logaddexp(base[units], parts[0][0])
        else:
            acc[units] = base[units]
            for (b, sel), part in zip(runs, parts):
                # a batch holds each group at most once per side: the scatter never collides
                idx = getattr(b, where)[sel]
                acc[idx] = xp.logaddexp(acc[idx], part)
        stale &= ~mask

    def sweep(self) -> None:
        """One sweep of every phase in order, then the check."""
        start = self.x.copy()
        try:
            for mask, units, logc, one_c, succ, pred in self.phases:
                if self.stale_in[mask].any():
                    self._refresh("in", mask)
                if self.stale_out[mask].any():
                    self._refresh("out", mask)
                self.x[units] = (logc + self.O[units] - self.I[units]) / one_c
                self.stale_in |= succ
                self.stale_out |= pred
            self._check()
        except RangeExceeded:
            self.x = start
            self.stale_in[:] = True
            self.stale_out[:] = True
            raise

    def _check(self) -> None:
        for side, stale in (("in", self.stale_in), ("out", self.stale_out)):
            if stale.any():
                self._refresh(side, stale.copy())
        xp, costs, x = self.xp, self.costs, self.x
        log_p = self.I + x
        with np.errstate(invalid="ignore"):  # a unit with no edge on one side has no balance
            diff = log_p - (costs.logc + self.O - costs.c * x)
        diff = xp.where(xp.isfinite(diff), diff, 0.0)
        costs.flags.append(~xp.all(xp.isfinite(x)))
        summary = xp.stack([xp.abs(xp.concatenate([diff, xp.zeros(1)])).max(),
                            lse(xp.concatenate([log_p, costs.fout - costs.c * x]))])
        self.gap, log_cost = (float(v) for v in costs.check(summary))
        self.log_cost = float(np.logaddexp(log_cost, costs.log_fixed))

    def coordinates(self):
        return self.x
