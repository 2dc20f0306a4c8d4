"""Warm-up for Newton: exact local balancing sweeps in the log domain, and depth levels.

Newton on a sum of exponentials moves log-scales by O(1) per step while far from the optimum.
A few sweeps of exact local balancing (Theorem 5.6) first move every scale close to where it
belongs, whatever the distance. For a variable whose ``G`` entries are ``+α`` (incoming) and
``−β`` (outgoing; ``β = c`` for a BiPU unit) and the L_p cost, the exact minimizer along that
variable is, from ``P = Σ_{G>0} G φ'`` and ``N = Σ_{G<0} |G| φ'`` (eqs. 5.6, 6.6),

    δ* = (log N − log P) / (p (α + β)),

i.e. ``λ* = (c·out/in)^{1/(p(c+1))}``. Variables that share no edge commute (Prop. 4.4): the
depth levels of a DAG (longest path from the inputs) are independent sets, balanced exactly all
at once; graphs with cycles use the classes of a parallel greedy colouring instead.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from . import _scaled
from ._logsum import VariableSides
from .problem import Problem

__all__ = ["colour_classes", "variable_levels", "warm_up"]


def _variable_graph(problem: Problem) -> tuple[sp.csr_matrix, int]:
    """Adjacency (source -> target) between variables over non-zero edges; node ``n_vars`` is
    the ground (every fixed unit merged). Self-loops are dropped."""
    nv = problem.n_vars
    node_of = np.where(problem.fixed, nv, problem.var)
    nz = problem.weight != 0
    a, b = node_of[problem.src[nz]], node_of[problem.dst[nz]]
    keep = a != b
    adj = sp.csr_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(nv + 1, nv + 1))
    adj.sum_duplicates()
    return adj, nv


def variable_levels(problem: Problem) -> tuple[np.ndarray, bool]:
    """Depth level of each variable and whether the variable graph is acyclic.

    For a DAG (ground as the source) the level is the longest path from the inputs, computed
    level by level (Kahn's algorithm, one vectorized step per level), so each level is an
    independent set. With cycles it is the breadth-first distance from the inputs.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.ones((2, 2)), np.ones((2, 2)), np.ones((1, 2))])
    >>> variable_levels(pb)
    (array([0, 0, 1, 1]), True)
    """
    adj, ground = _variable_graph(problem)
    nv = problem.n_vars
    inner = adj[:nv][:, :nv].tocsr()
    indeg = np.bincount(inner.indices, minlength=nv)
    level = np.full(nv, -1, dtype=np.int64)
    frontier = np.flatnonzero(indeg == 0)
    depth = 0
    while frontier.size:
        level[frontier] = depth
        hit = inner[frontier].indices
        indeg = indeg - np.bincount(hit, minlength=nv)
        frontier = np.unique(hit[indeg[hit] == 0])
        frontier = frontier[level[frontier] < 0]
        depth += 1
    if np.all(level >= 0):
        return level, True
    dist = csgraph.shortest_path(adj, indices=ground, unweighted=True, directed=True)[:nv]
    dist = np.where(np.isfinite(dist), dist, 0.0)
    return np.unique(dist.astype(np.int64), return_inverse=True)[1].astype(np.int64), False


def colour_classes(problem: Problem, seed: int = 0) -> np.ndarray:
    """A colouring of the variables: variables of one colour share no edge (Prop. 4.4).

    Parallel greedy colouring (Jones–Plassmann): each round, every uncoloured variable whose
    random priority beats all its uncoloured neighbours takes the next colour; one vectorized
    pass over the edges per colour.
    """
    adj, _ = _variable_graph(problem)
    nv = problem.n_vars
    inner = adj[:nv][:, :nv]
    sym = (inner + inner.T).tocsr()
    sym.sum_duplicates()
    prio = np.random.default_rng(seed).permutation(nv).astype(np.int64)
    colour = np.full(nv, -1, dtype=np.int64)
    has_nb = np.diff(sym.indptr) > 0
    starts = sym.indptr[:-1][has_nb]
    c = 0
    while np.any(colour < 0):
        active = np.where(colour < 0, prio, -1)
        nb_max = np.full(nv, -1, dtype=np.int64)
        if starts.size:
            nb_max[has_nb] = np.maximum.reduceat(active[sym.indices], starts)
        chosen = (colour < 0) & (prio > nb_max)
        colour[chosen] = c
        c += 1
    return colour


def _closed_form_denominator(G: sp.csr_matrix) -> np.ndarray:
    """``α_k + β_k`` for variables whose entries are one positive and one negative value,
    ``nan`` for the others (mixed entries, e.g. a BiPU self-loop ``1 − c``, or one side empty)."""
    csc = G.tocsc()
    n = G.shape[1]
    col = np.repeat(np.arange(n), np.diff(csc.indptr))
    out = np.full(n, np.nan)
    stats = []
    for mask, vals in ((csc.data > 0, csc.data), (csc.data < 0, -csc.data)):
        hi = np.full(n, -np.inf)
        lo = np.full(n, np.inf)
        np.maximum.at(hi, col[mask], vals[mask])
        np.minimum.at(lo, col[mask], vals[mask])
        stats.append((hi, lo))
    (ahi, alo), (bhi, blo) = stats
    ok = np.isfinite(ahi) & np.isfinite(bhi) & (ahi == alo) & (bhi == blo)
    out[ok] = ahi[ok] + bhi[ok]
    return out


def warm_up(
    G: sp.csr_matrix,
    law: np.ndarray,
    p: float,
    u: np.ndarray,
    classes: np.ndarray,
    max_sweeps: int,
    tol: float = 0.0,
    sides: VariableSides | None = None,
) -> tuple[np.ndarray, int]:
    """Run up to ``max_sweeps`` local balancing sweeps of the L_p cost from ``u``.

    ``classes[k]`` labels independent sets (depth levels or colours); each sweep balances the
    sets in turn, every variable of a set exactly and at once.

    Stops early when the largest log-imbalance ``|log P − log N|`` shrinks by less than 30 %
    in a sweep (local balancing has done its fast part) or falls below ``2 tol`` (the relative
    imbalance is ``tanh`` of half of it). ``sides`` is ``VariableSides(G)`` when the caller
    already has it. Returns ``(u, sweeps)``; ``u`` is a new array.
    """
    u = np.array(u, dtype=np.float64)
    denom = _closed_form_denominator(G)
    movable = np.isfinite(denom)
    if max_sweeps <= 0 or not movable.any():
        return u, 0
    sides = VariableSides(G) if sides is None else sides
    t = G @ u

    def log_gap(t):
        lp, ln = sides.log_sides(p * (law + t))
        gap = np.where(movable, ln - lp, 0.0)
        return np.where(np.isfinite(gap), gap, 0.0)

    blocks = _level_blocks(G, classes, movable)
    gap = log_gap(t)
    worst = float(np.max(np.abs(gap), initial=0.0))
    sweeps = 0
    for _ in range(max_sweeps):
        for rows, sub, cols, sub_sides in blocks:
            tr = t[rows]
            lp, ln = sub_sides.log_sides(p * (law[rows] + tr))
            step = ln - lp
            step = np.where(np.isfinite(step), step, 0.0) / (p * denom[cols])
            u[cols] += step
            t[rows] = tr + sub @ step
        sweeps += 1
        gap = log_gap(t)
        new_worst = float(np.max(np.abs(gap), initial=0.0))
        if new_worst > 0.7 * worst or new_worst <= 2.0 * tol:
            break
        worst = new_worst
    return u, sweeps


def _level_blocks(G: sp.csr_matrix, levels: np.ndarray, movable: np.ndarray) -> list:
    """Per level: touched edge rows, the sub-matrix ``G[rows, cols]``, its columns, its sides."""
    csc = G.tocsc()
    blocks = []
    order = np.argsort(levels, kind="stable")
    bounds = np.searchsorted(levels[order], np.arange(levels.max(initial=-1) + 2))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        cols = order[lo:hi]
        cols = cols[movable[cols]]
        if cols.size == 0:
            continue
        block = csc[:, cols]
        touched = np.sort(block.indices)
        rows = touched[np.concatenate([[True], touched[1:] != touched[:-1]])]
        sub = sp.csc_matrix(
            (block.data, np.searchsorted(rows, block.indices), block.indptr),
            shape=(rows.size, cols.size),
        ).tocsr()
        blocks.append((rows, sub, cols, VariableSides(sub)))
    return blocks


def warm_up_scaled(form, u: np.ndarray, classes: np.ndarray, max_sweeps: int, tol: float = 0.0):
    """:func:`warm_up` with the scaling-vector form of the costs (:mod:`balgraph._scaled`).

    A variable of class ``C`` moves by ``δ = (log(c·out) − log in) / (p (1 + c))`` (eqs. 5.6,
    6.6), its sides read from the rows of ``A`` and ``Aᵀ`` of the class: one pass over the
    weights per side and sweep, no per-edge ``exp``. Variables with edges inside themselves
    (no closed form) or an empty side stay put. Returns ``(u, sweeps, point)`` with ``point``
    the scaled point at ``u``, or ``None`` when the scales left float64's range (the caller
    continues with :func:`warm_up` from ``u``).
    """
    n = form.n
    u = np.array(u, dtype=np.float64)
    pt = form.point(u)
    movable = (np.diff(form.A.indptr)[:n] > 0) & (np.diff(form.AT.indptr)[:n] > 0)
    movable[form.odd_col] = False
    if pt is None or max_sweeps <= 0 or not movable.any():
        return u, 0, pt
    order = np.argsort(classes, kind="stable")
    bounds = np.searchsorted(classes[order], np.arange(classes.max(initial=-1) + 2))
    blocks = [c[movable[c]] for c in np.split(order, bounds[1:-1])]
    blocks = [c for c in blocks if c.size]
    subs: dict = {}

    def gap_of(pt) -> float:
        g = np.abs(pt.log_p - pt.log_n)[movable]
        return float(np.max(np.where(np.isfinite(g), g, 0.0), initial=0.0))

    worst = gap_of(pt)
    sweeps = 0
    for _ in range(max_sweeps):
        if subs.get("base") != form.base:
            subs = {"base": form.base, "in": [form.A[c] for c in blocks],
                    "out": [form.AT[c] for c in blocks]}
        d = u - form.u_b
        x = np.append(form.p * d, 0.0)
        y = np.append(form.p * form.c * d, 0.0)
        kx, ky = 0.5 * (x.max() + x.min()), -0.5 * (y.max() + y.min())
        e1, e2 = np.exp(x - kx), np.exp(-y - ky)
        room = _scaled._SAFE - form.la - form.log_m
        for cols, a_in, a_out in zip(blocks, subs["in"], subs["out"]):
            with np.errstate(divide="ignore"):
                log_in = x[cols] + ky + np.log(a_in @ e2)
                log_out = form.log_c[cols] - y[cols] + kx + np.log(a_out @ e1)
            step = (log_out - log_in) / (form.p * (1.0 + form.c[cols]))
            u[cols] += np.where(np.isfinite(step), step, 0.0)
            x[cols] = form.p * (u[cols] - form.u_b[cols])
            y[cols] = form.c[cols] * x[cols]
            if not (np.all(np.abs(x[cols] - kx) <= room) and np.all(np.abs(y[cols] + ky) <= room)):
                return u, sweeps + 1, None
            e1[cols], e2[cols] = np.exp(x[cols] - kx), np.exp(-y[cols] - ky)
        sweeps += 1
        pt = form.point(u)
        if pt is None:
            return u, sweeps, None
        new_worst = gap_of(pt)
        if new_worst > 0.7 * worst or new_worst <= 2.0 * tol:
            break
        worst = new_worst
    return u, sweeps, pt
