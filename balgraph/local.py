"""Local operations: scaling and balancing one unit or a set of units, imbalance measures.

Sections 3–6 and 8 of the paper. Scaling unit ``i`` by ``λ > 0`` (Def. 3.1, Section 6.2)
multiplies its incoming weights by ``λ`` and divides its outgoing weights by ``λ^c`` (``c`` its
degree; a self-loop gets ``λ^{1-c}``); the network function is unchanged. Balancing
(Def. 4.1) scales by the ``λ*`` that minimizes the cost of the weights it touches; coordinated
scaling/balancing (Defs 3.3, 4.5) uses one ``λ`` for a whole set.

Array-level functions take a :class:`~balgraph.problem.Problem`, an optional weight array in
its edge order (default ``problem.weight``) and unit *labels*; they return new arrays. The
``*_units`` functions take a networkx graph and return a new graph. Inputs are never mutated.

Examples
--------
>>> import networkx as nx, balgraph, balgraph.local as bl
>>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
>>> round(bl.optimal_scale(balgraph.compile_network(g), None, "h").scale, 12)  # (1/16)^(1/4)
0.5
>>> h = bl.balance_units(g, "h")
>>> round(h.edges["x", "h"]["weight"], 12), g.edges["x", "h"]["weight"]
(2.0, 4.0)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp

from ._logsum import logsumexp, segment_logsumexp
from .errors import NetworkError, NoFiniteOptimumError, name_some
from .network import WeightSpec, compile_network
from .problem import Problem
from .regularizers import Lp, PowerSum, Regularizer, as_regularizer

__all__ = [
    "LocalOptimum", "Imbalance", "scale_weights", "optimal_scale", "balance_weights",
    "favourable_scales", "unit_imbalance", "group_imbalance", "balance_deficit", "lp_cost",
    "scale_units", "balance_units", "tie_layers",
]

_EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------- 1-D core
@dataclass(frozen=True)
class _Columns:
    """Edges of ``n`` columns of ``G`` (variables or unit sets), split by the sign of ``G_ek``.

    Side 0 holds ``G_ek > 0`` (incoming), side 1 ``G_ek < 0`` (outgoing, ``-c``); ``rows`` index
    the per-edge arrays, ``seg`` gives the column of each entry, ``indptr`` the segments.
    """

    rows: tuple
    g: tuple
    indptr: tuple
    seg: tuple
    n: int

    @classmethod
    def from_csc(cls, G: sp.spmatrix) -> _Columns:
        csc = sp.csc_matrix(G, copy=True)
        csc.sort_indices()
        n = csc.shape[1]
        col = np.repeat(np.arange(n), np.diff(csc.indptr))
        rows, g, indptr, seg = [], [], [], []
        for mask in (csc.data > 0, csc.data < 0):
            counts = np.bincount(col[mask], minlength=n)
            rows.append(csc.indices[mask].astype(np.int64))
            g.append(csc.data[mask])
            indptr.append(np.concatenate([[0], np.cumsum(counts)]))
            seg.append(col[mask])
        return cls(tuple(rows), tuple(g), tuple(indptr), tuple(seg), n)


def single_power(reg: Regularizer) -> float | None:
    """``p`` when every edge costs ``φ_e(t) = φ_e(0) e^{p t}`` (L_p, any coefficients), else None."""
    if isinstance(reg, PowerSum) and len(reg.terms) == 1:
        return next(iter(reg.terms))
    return None


def _restrict(reg: Regularizer, rows: np.ndarray) -> Regularizer:
    """The regularizer of the edges ``rows`` (per-edge coefficient arrays are sliced)."""
    if not isinstance(reg, PowerSum):
        return reg
    terms = {p: b[rows] if isinstance(b, np.ndarray) and b.ndim else b for p, b in reg.terms.items()}
    return Lp(reg.p, terms[reg.p]) if isinstance(reg, Lp) else PowerSum(terms)


def _optimal_shift(
    reg: Regularizer, law: np.ndarray, t: np.ndarray, cols: _Columns, max_iter: int = 100
) -> np.ndarray:
    """Exact 1-D minimizers ``s_k = argmin_s Σ_e φ_e(t_e + G_ek s)``, all columns at once.

    Safeguarded Newton on ``h(s) = log P(s) − log N(s)`` (``P``/``N`` the two sides of the
    derivative, :class:`~balgraph._logsum.VariableSides`), increasing in ``s`` since every
    ``φ_e`` is convex. ``h' = Σ_{+} G² φ''/P + Σ_{−} G² φ''/N``. When every entry is ``+1`` or
    ``−c`` and the cost is L_p, ``h`` is affine and the first step is the closed form (6.6);
    self-loops (``1 − c``) need a few more. A bracket of signs turns a step that leaves it into
    bisection. Raises ``NoFiniteOptimumError`` (``units`` = column indices) when one side is empty.
    """
    n = cols.n
    s, lo, hi = np.zeros(n), np.full(n, -np.inf), np.full(n, np.inf)
    lg = [np.log(np.abs(g)) for g in cols.g]
    regs = [_restrict(reg, r) for r in cols.rows]
    done = np.zeros(n, dtype=bool)
    for it in range(max_iter):
        side = []
        for k in (0, 1):
            r = cols.rows[k]
            _, l1, l2 = regs[k].edge_terms(law[r], t[r] + cols.g[k] * s[cols.seg[k]])
            side.append((segment_logsumexp(l1 + lg[k], cols.indptr[k]),
                         segment_logsumexp(l2 + 2.0 * lg[k], cols.indptr[k])))
        (lp, dp), (ln, dn) = side
        if it == 0:
            empty_p, empty_n = np.isneginf(lp), np.isneginf(ln)
            if np.any(empty_p ^ empty_n):
                raise NoFiniteOptimumError("one-sided column", units=np.flatnonzero(empty_p ^ empty_n))
            done |= empty_p & empty_n
            lp, ln = np.where(done, 0.0, lp), np.where(done, 0.0, ln)
        h = lp - ln
        done |= np.abs(h) <= 16 * _EPS * (1.0 + np.abs(lp) + np.abs(ln))
        if done.all():
            break
        lo = np.where(h < 0, np.maximum(lo, s), lo)
        hi = np.where(h > 0, np.minimum(hi, s), hi)
        with np.errstate(over="ignore", invalid="ignore"):
            hp = np.exp(dp - lp) + np.exp(dn - ln)
            new = s - h / hp
        outside = ~((new > lo) & (new < hi))
        new = np.where(outside & np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi), new)
        new = np.where(np.isfinite(new), new, s)
        stalled = np.abs(new - s) <= 4 * _EPS * (1.0 + np.abs(s))
        s = np.where(done, s, new)
        done |= stalled
    return s


# ---------------------------------------------------------------------------- helpers
def _weighted(problem: Problem, weight) -> Problem:
    return problem if weight is None else problem.with_weights(weight)


def _unit_indices(problem: Problem, units) -> np.ndarray:
    """Node indices of ``units``: one label, or an iterable of labels (a label wins)."""
    index = problem.node_index
    try:
        if units in index:
            return np.array([index[units]], dtype=np.int64)
    except TypeError:
        pass
    if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
        raise NetworkError(f"unknown unit {units!r}: it is not a node of the network")
    labels = list(units.tolist() if isinstance(units, np.ndarray) else units)
    missing = [x for x in labels if not _in(x, index)]
    if missing:
        raise NetworkError(f"unknown unit(s) {name_some(missing)}: not nodes of the network")
    idx = np.array([index[x] for x in labels], dtype=np.int64)
    if np.unique(idx).size != idx.size:
        raise NetworkError(f"units {name_some(labels)} list a unit twice: give each unit once")
    return idx


def _in(label, index) -> bool:
    try:
        return label in index
    except TypeError:
        return False


def _require_free(problem: Problem, idx: np.ndarray, action: str) -> None:
    bad = idx[problem.fixed[idx]]
    if bad.size:
        what = [f"{problem.nodes[k]!r} ({problem.roles[k]})" for k in bad]
        raise NetworkError(
            f"unit(s) {', '.join(what[:10])} have scale 1: {action} them would change the network"
            " function; only hidden units with a homogeneous activation (relu, linear, bipu, ...)"
            " can be scaled"
        )


def _set_column(problem: Problem, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero edges touched by scaling the set ``idx`` with one λ, and their exponents."""
    member = np.zeros(problem.n_nodes, dtype=bool)
    member[idx] = True
    src, dst = problem.src, problem.dst
    g = member[dst] - np.where(member[src], problem.degree[src], 0.0)
    edges = np.flatnonzero((g != 0) & (problem.weight != 0))
    return edges, g[edges]


# ---------------------------------------------------------------------------- scaling
def scale_weights(problem: Problem, weight, units, lam) -> np.ndarray:
    """Weights after scaling ``units`` (Defs 3.1, 3.3; Section 6.2 for BiPU).

    Edge ``j -> i`` becomes ``w_ij · Λ_i / Λ_j^{c_j}`` (``Λ = 1`` off the set), so a self-loop
    gets ``λ^{1−c}``. A scalar ``lam`` scales the whole set by one factor (coordinated scaling
    ``S_λ(I)``); an array gives each unit its own (``∏ S_{λ_i}(i)``, in any order: Prop. 3.2).

    Parameters
    ----------
    problem : Problem
    weight : array_like or None
        Weights in ``problem``'s edge order (default ``problem.weight``); not modified.
    units : label or iterable of labels
        Free units to scale.
    lam : float or array_like
        Positive finite factor(s).

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> scale_weights(pb, None, 1, 2.0).tolist()
    [8.0, 0.5]
    """
    pb = _weighted(problem, weight)
    idx = _unit_indices(pb, units)
    _require_free(pb, idx, "scaling")
    lam = np.asarray(lam, dtype=np.float64)
    lam = np.broadcast_to(lam, idx.shape) if lam.ndim == 0 else lam.ravel()
    if lam.shape != idx.shape:
        raise NetworkError(f"give one scale or one per unit ({idx.size}), got {lam.size}")
    bad = np.flatnonzero(~(np.isfinite(lam) & (lam > 0)))
    if bad.size:
        raise NetworkError(
            f"scales must be finite and > 0; unit {pb.nodes[idx[bad[0]]]!r} got {lam[bad[0]]!r}"
        )
    ell = np.zeros(pb.n_nodes)
    ell[idx] = np.log(lam)
    with np.errstate(over="ignore"):
        factor = np.exp(ell[pb.dst] - pb.degree[pb.src] * ell[pb.src])
    out = np.where(pb.weight == 0, 0.0, pb.weight * factor)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise NetworkError(
            f"scaling overflows float64 on edge {pb.edge_label(int(bad[0]))!r}: use a smaller factor"
        )
    return out


@dataclass(frozen=True)
class LocalOptimum:
    """The optimal coordinated scale of a set of units and what it saves.

    ``cost_before``/``cost_after`` are the cost of the weights the scaling touches;
    ``decrease = cost_before − cost_after ≥ 0`` (eqs. 5.7, 5.17).
    """

    units: tuple
    scale: float
    log_scale: float
    cost_before: float
    cost_after: float
    decrease: float


def optimal_scale(
    problem: Problem, weight, units, p: float = 2.0, *, regularizer: Regularizer | None = None
) -> LocalOptimum:
    """The balancing factor ``λ*`` of a unit, or of a set scaled as one (Defs 4.1, 4.5).

    For L_p and a unit with incoming cost ``IN = Σ_IN |w|^p`` and outgoing cost ``OUT``:
    ``λ* = (c·OUT/IN)^{1/(p(c+1))}`` (eq. 6.6; eq. 5.6 ``(OUT/IN)^{1/2p}`` when ``c = 1``) and
    ``ΔR = (√IN − √OUT)²`` for BiLU (eq. 5.7), ``ΔR = R(1) − R(λ*)`` in general (eq. 5.17). A set
    uses the sums over its members. With self-loops or internal edges and ``c ≠ 1``, or another
    regularizer, ``min_s Σ_e φ_e(G_e s)`` has no closed form and a safeguarded Newton solves it.
    Everything is computed in the log domain.

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0], degree=[1, 2, 1])
    >>> round(optimal_scale(pb, None, 1, p=2).scale ** 6, 12)   # c·OUT/IN = 2/16
    0.125
    """
    reg = as_regularizer(p, regularizer)
    pb = _weighted(problem, weight)
    idx = _unit_indices(pb, units)
    _require_free(pb, idx, "balancing")
    edges, g = _set_column(pb, idx)
    law = pb.log_abs_weight
    cols = _Columns.from_csc(sp.csc_matrix((g, (edges, np.zeros_like(edges))), shape=(pb.n_edges, 1)))
    labels = tuple(pb.nodes[k] for k in idx)
    try:
        s = float(_optimal_shift(reg, law, np.zeros(pb.n_edges), cols)[0])
    except NoFiniteOptimumError:
        has_in = bool(np.any(g > 0))
        raise NoFiniteOptimumError(
            f"unit(s) {name_some(labels)} have no non-zero {'outgoing' if has_in else 'incoming'}"
            f" weight: the cost falls to 0 as λ → {'0' if has_in else '∞'}, there is no λ*."
            " Balance them together with a unit on the other side, or remove them",
            units=labels,
        ) from None
    sub, law = _restrict(reg, edges), law[edges]
    lphi0 = sub.edge_terms(law, np.zeros(edges.size))[0]
    lphi1 = sub.edge_terms(law, g * s)[0]
    before, after = logsumexp(lphi0), logsumexp(lphi1)
    with np.errstate(over="ignore"):  # costs beyond float64 read inf; the logs stay exact
        if single_power(reg) is not None and np.all(np.abs(g) == 1.0):
            # eq. 5.7, exact where the subtraction of 5.17 would cancel
            diff = np.exp(0.5 * logsumexp(lphi0[g > 0])) - np.exp(0.5 * logsumexp(lphi0[g < 0]))
            decrease = float(diff * diff)
        else:
            decrease = max(0.0, float(np.sum(-np.exp(lphi0) * np.expm1(lphi1 - lphi0))))
        return LocalOptimum(labels, float(np.exp(s)), s, float(np.exp(before)),
                            float(np.exp(after)), decrease)


def balance_weights(
    problem: Problem, weight, units, p: float = 2.0, *,
    regularizer: Regularizer | None = None, tied: bool = False,
) -> np.ndarray:
    """Weights after balancing ``units``.

    ``tied=False``: ``B(i)`` for each unit in the order given (Def. 4.1; for a disjoint set the
    order does not matter, Prop. 4.4, otherwise it does). ``tied=True``: coordinated balancing
    ``B(I)`` with one ``λ*`` for the whole set (Def. 4.5).

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> balance_weights(pb, None, [1]).round(12).tolist()
    [2.0, 2.0]
    """
    pb = _weighted(problem, weight)
    idx = _unit_indices(pb, units)
    groups = [pb.nodes[k] for k in idx]
    w = pb.weight
    for group in [groups] if tied else [[x] for x in groups]:
        opt = optimal_scale(pb.with_weights(w), None, group, p, regularizer=regularizer)
        w = scale_weights(pb, w, group, opt.scale)
    return np.array(w, dtype=np.float64)


def favourable_scales(
    problem: Problem, weight, units, p: float = 2.0, *, regularizer: Regularizer | None = None
) -> tuple[float, float]:
    """The interval of coordinated scales that do not increase the cost (Remark 4.6).

    The cost of the touched weights is convex in ``s = log λ`` and minimal at ``log λ*``, so
    ``{λ : R(λ) ≤ R(1)}`` is the interval between 1 and the other root ``λ₁`` of
    ``R(λ) = R(1)``; every λ strictly inside decreases the cost. For L_p BiLU,
    ``IN y + OUT/y ≤ IN + OUT`` with ``y = λ^p`` factors as ``(y − 1)(IN·y − OUT) ≤ 0``: ``λ``
    between 1 and ``(OUT/IN)^{1/p} = λ*²``. Otherwise ``λ₁`` is found by Brent's method.

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> [round(x, 12) for x in favourable_scales(pb, None, 1)]   # λ* = 1/2
    [0.25, 1.0]
    """
    from scipy.optimize import brentq

    reg = as_regularizer(p, regularizer)
    opt = optimal_scale(problem, weight, units, p, regularizer=reg)
    s = opt.log_scale
    if s == 0.0:
        return (1.0, 1.0)
    pb = _weighted(problem, weight)
    edges, g = _set_column(pb, _unit_indices(pb, units))
    law, sub = pb.log_abs_weight[edges], _restrict(reg, edges)
    if single_power(reg) is not None and np.all(np.abs(g) == 1.0):
        s1 = 2.0 * s
    else:
        base = logsumexp(sub.edge_terms(law, np.zeros(edges.size))[0])

        def excess(x: float) -> float:
            return float(np.expm1(logsumexp(sub.edge_terms(law, g * x)[0]) - base))

        far = 2.0 * s
        while excess(far) <= 0.0:
            far *= 2.0
        s1 = brentq(excess, s, far, xtol=4 * _EPS * abs(far), rtol=4 * _EPS)
    lo, hi = sorted((0.0, s1))
    return (float(np.exp(lo)), float(np.exp(hi)))


# ---------------------------------------------------------------------------- measures
@dataclass(frozen=True)
class Imbalance:
    """Incoming against outgoing cost of units or groups of units.

    Attributes
    ----------
    labels : tuple
        The unit (or group) of each entry.
    log_in : ndarray
        ``log Σ_IN φ`` (``log Σ_IN |w|^p`` for L_p).
    log_out : ndarray
        ``log (c · Σ_OUT φ)``: the outgoing side of the balance equation 6.7 (``c = 1``: 5.8).
    relative : ndarray
        ``(P − N)/(P + N)`` with ``P``, ``N`` the two sides built from ``φ'`` (eq. 5.5); for L_p
        this is ``(IN − c·OUT)/(IN + c·OUT)``. A self-loop counts on both sides, as in the paper.
    """

    labels: tuple
    log_in: np.ndarray
    log_out: np.ndarray
    relative: np.ndarray

    @property
    def incoming(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.exp(self.log_in)

    @property
    def outgoing(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.exp(self.log_out)

    @property
    def absolute(self) -> np.ndarray:
        """``IN − c·OUT`` (``inf − inf`` cannot occur below float64's range)."""
        return self.incoming - self.outgoing

    @property
    def max_relative(self) -> float:
        return float(np.max(np.abs(self.relative), initial=0.0))


def _segment_lse(values: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    keep = seg >= 0
    order = np.argsort(seg[keep], kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(seg[keep], minlength=n))])
    return segment_logsumexp(values[keep][order], indptr)


def _grouped(pb: Problem, reg: Regularizer, group: np.ndarray, labels: tuple) -> Imbalance:
    n = len(labels)
    lphi, l1, _ = reg.edge_terms(pb.log_abs_weight, np.zeros(pb.n_edges))
    logc = np.log(pb.degree[pb.src])
    gin, gout = group[pb.dst], group[pb.src]
    log_in, log_out = _segment_lse(lphi, gin, n), _segment_lse(lphi + logc, gout, n)
    lp, ln = _segment_lse(l1, gin, n), _segment_lse(l1 + logc, gout, n)
    both_empty = np.isneginf(lp) & np.isneginf(ln)
    with np.errstate(invalid="ignore"):
        rel = np.where(both_empty, 0.0, np.tanh(0.5 * (lp - ln)))
    return Imbalance(labels, log_in, log_out, rel)


def unit_imbalance(
    problem: Problem, weight=None, p: float = 2.0, *, regularizer: Regularizer | None = None
) -> Imbalance:
    """Per free unit: ``IN = Σ_IN |w|^p`` against ``c · OUT`` (eqs. 5.8, 6.7).

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> im = unit_imbalance(pb)
    >>> im.labels, im.absolute.round(9).tolist(), im.relative.round(4).tolist()
    ((1,), [15.0], [0.8824])
    """
    reg = as_regularizer(p, regularizer)
    pb = _weighted(problem, weight)
    free = np.flatnonzero(~pb.fixed)
    group = np.full(pb.n_nodes, -1, dtype=np.int64)
    group[free] = np.arange(free.size)
    return _grouped(pb, reg, group, tuple(pb.nodes[k] for k in free))


def group_imbalance(
    problem: Problem, weight=None, groups: str | Mapping = "depth", p: float = 2.0, *,
    regularizer: Regularizer | None = None,
) -> Imbalance:
    """Summed incoming against summed outgoing cost of groups of free units (eq. 8.1).

    Parameters
    ----------
    groups : "depth", "tie" or mapping
        ``"depth"``: free units at the same depth (longest path from the inputs; a layer of a
        layered net), the layer balance of eq. 8.1; ``"tie"``: the tie groups (one group per
        untied unit); or a mapping ``{unit label: group label}`` over free units.

    Notes
    -----
    ``IN − c·OUT`` of a group is the sum over its members, and equals ``P − N`` of
    :func:`balgraph.imbalance` for a tie group; the relative value differs there because an
    internal edge counts on both sides here and cancels in ``G``. Both vanish together.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.ones((2, 1)), np.ones((1, 2))])
    >>> group_imbalance(pb).labels, group_imbalance(pb).absolute.tolist()
    ((1,), [0.0])
    """
    reg = as_regularizer(p, regularizer)
    pb = _weighted(problem, weight)
    free = ~pb.fixed
    if isinstance(groups, Mapping):
        idx = _unit_indices(pb, list(groups))
        _require_free(pb, idx, "grouping")
        keys = [groups[pb.nodes[k]] for k in idx]
        labels = tuple(dict.fromkeys(keys))
        code = {lab: n for n, lab in enumerate(labels)}
        group = np.full(pb.n_nodes, -1, dtype=np.int64)
        group[idx] = [code[x] for x in keys]
        return _grouped(pb, reg, group, labels)
    if groups == "tie":
        members = [[] for _ in range(pb.n_vars)]
        for k in np.flatnonzero(free).tolist():
            members[pb.var[k]].append(pb.nodes[k])
        return _grouped(pb, reg, np.where(free, pb.var, -1), tuple(tuple(m) for m in members))
    if groups != "depth":
        raise NetworkError(f"groups must be 'depth', 'tie' or a mapping, not {groups!r}")
    depth = unit_depth(pb)
    levels = np.unique(depth[free])
    group = np.where(free, np.searchsorted(levels, depth), -1)
    return _grouped(pb, reg, group, tuple(levels.tolist()))


def balance_deficit(problem: Problem, weight=None, p: float = 2.0) -> float:
    """The overall balance deficit ``Σ_i (Σ_IN |w|^p − c_i Σ_OUT |w|^p)²`` over free units.

    Section 10 (Figs 7–9) with ``p = 2`` and ``c = 1``; zero iff every free unit is balanced.

    Examples
    --------
    >>> import balgraph
    >>> round(balance_deficit(balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])), 9)
    225.0
    """
    return float(np.sum(unit_imbalance(problem, weight, p).absolute ** 2))


def lp_cost(weight, p: float = 2.0, *, log: bool = False) -> float:
    """``R = Σ |w|^p`` for any ``p > 0``, or ``log R`` (``-inf`` if every weight is 0).

    Examples
    --------
    >>> lp_cost([3.0, -4.0]), lp_cost([3.0, -4.0], 1)
    (25.0, 7.0)
    """
    p = Lp(p).p
    w = np.abs(np.asarray(weight, dtype=np.float64).ravel())
    if not np.all(np.isfinite(w)):
        raise NetworkError("weights must be finite numbers (found NaN or infinity)")
    top = float(np.max(w, initial=0.0))
    if top == 0.0:
        return -np.inf if log else 0.0
    # factor out the largest weight: exact on small integers, no overflow before the last step
    total = float(np.sum((w / top) ** p))
    if log:
        return p * np.log(top) + np.log(total)
    with np.errstate(over="ignore"):
        return float(top**p * total) if p * np.log(top) < 700 else float(np.exp(p * np.log(top) + np.log(total)))


def unit_depth(problem: Problem) -> np.ndarray | None:
    """Depth of every unit (longest path from a unit without inputs; self-loops ignored).

    Kahn's algorithm by rounds, vectorized: each round peels the units whose predecessors are
    all placed. Returns ``None`` if the graph has a directed cycle other than self-loops.
    """
    n = problem.n_nodes
    keep = problem.src != problem.dst
    src, dst = problem.src[keep], problem.dst[keep]
    order = np.argsort(src, kind="stable")
    targets = dst[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    indeg = np.bincount(dst, minlength=n)
    depth = np.full(n, -1, dtype=np.int64)
    frontier, level = np.flatnonzero(indeg == 0), 0
    while frontier.size:
        depth[frontier] = level
        starts, lens = indptr[frontier], indptr[frontier + 1] - indptr[frontier]
        offsets = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        hit = targets[offsets]
        indeg = indeg - np.bincount(hit, minlength=n)
        frontier = np.unique(hit[indeg[hit] == 0])
        level += 1
    return None if np.any(depth < 0) else depth


# ---------------------------------------------------------------------------- networkx
def _with_weights(graph: nx.DiGraph, pb: Problem, w: np.ndarray, weights: WeightSpec) -> nx.DiGraph:
    attr = weights if isinstance(weights, str) else "weight"
    out = graph.copy()
    for (j, i), value in zip(zip(pb.src.tolist(), pb.dst.tolist()), w.tolist()):
        out.edges[pb.nodes[j], pb.nodes[i]][attr] = value
    return out


def scale_units(graph: nx.DiGraph, units, lam, *, weights: WeightSpec = "weight") -> nx.DiGraph:
    """A new graph with ``units`` scaled by ``lam`` (see :func:`scale_weights`).

    The balanced weights go to the ``weights`` attribute (``"weight"`` when ``weights`` is a
    mapping or a callable); ``graph`` is not modified.

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> sorted(scale_units(g, "h", 2.0).edges(data="weight"))
    [('h', 'y', 0.5), ('x', 'h', 8.0)]
    """
    pb = compile_network(graph, weights)
    return _with_weights(graph, pb, scale_weights(pb, None, units, lam), weights)


def balance_units(
    graph: nx.DiGraph, units, p: float = 2.0, *, weights: WeightSpec = "weight",
    regularizer: Regularizer | None = None, tied: bool = False,
) -> nx.DiGraph:
    """A new graph with ``units`` balanced (see :func:`balance_weights`); ``graph`` is kept.

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> [round(w, 12) for *_, w in sorted(balance_units(g, ["h"], p=1).edges(data="weight"))]
    [2.0, 2.0]
    """
    from .api import _bind_coefficients

    pb = compile_network(graph, weights)
    reg = _bind_coefficients(as_regularizer(p, regularizer), graph, pb)
    w = balance_weights(pb, None, units, p, regularizer=reg, tied=tied)
    return _with_weights(graph, pb, w, weights)


def tie_layers(graph: nx.DiGraph, *, weights: WeightSpec = "weight") -> nx.DiGraph:
    """A new graph whose free hidden units of equal depth share a ``tie`` (Section 8.2, App. B).

    Depth is the longest path from the inputs, so a layered net's layers become tie groups
    (``tie = "layer<depth>"``) and any solver then does tied layer-wise balancing, reaching
    layer balance (eq. 8.1). Existing ties are replaced; the graph must be acyclic apart from
    self-loops, and units at one depth must share their degree.

    Examples
    --------
    >>> import balgraph.gallery
    >>> g = tie_layers(balgraph.gallery.random_network(0, kind="layered"))
    >>> sorted({t for _, t in g.nodes(data="tie") if t})
    ['layer1', 'layer2', 'layer3']
    """
    pb = compile_network(graph, weights)
    depth = unit_depth(pb)
    if depth is None:
        raise NetworkError(
            "tie_layers needs a network without directed cycles (self-loops are fine): layers"
            " of a recurrent network are not defined; set the 'tie' node attribute yourself"
        )
    out = graph.copy()
    free = np.flatnonzero(~pb.fixed)
    for d in np.unique(depth[free]).tolist():
        units = free[depth[free] == d]
        if np.unique(pb.degree[units]).size > 1:
            raise NetworkError(
                f"units {name_some([pb.nodes[k] for k in units])} at depth {d} have different"
                " degrees: tied units must share one degree; tie them yourself"
            )
    for k in range(pb.n_nodes):
        label = pb.nodes[k]
        if pb.fixed[k]:
            out.nodes[label].pop("tie", None)
        else:
            out.nodes[label]["tie"] = f"layer{int(depth[k])}"
    return out
