"""Imbalance measures: per unit, per tied group or layer (eq. 8.1), the balance deficit, the cost.

A unit is balanced when its incoming cost equals ``c`` times its outgoing cost (eqs. 5.8, 6.7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import NetworkError, name_some
from .graphs import longest_path_levels, merged_adjacency
from .kernels import relative_imbalance, scatter_logsumexp
from .model import Problem
from .regularizers import Lp, Regularizer, as_regularizer

__all__ = ["Imbalance", "unit_imbalance", "group_imbalance", "balance_deficit", "lp_cost", "unit_depth",
           "unit_indices", "require_free", "weighted"]


def weighted(problem: Problem, weight) -> Problem:
    """``problem`` with per-edge weights ``weight`` (``None``: its own)."""
    return problem if weight is None else problem.with_weights(weight)


def unit_indices(problem: Problem, units) -> np.ndarray:
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
    missing = [x for x in labels if not _known(x, index)]
    if missing:
        raise NetworkError(f"unknown unit(s) {name_some(missing)}: not nodes of the network")
    idx = np.array([index[x] for x in labels], dtype=np.int64)
    if np.unique(idx).size != idx.size:
        raise NetworkError(f"units {name_some(labels)} list a unit twice: give each unit once")
    return idx


def _known(label, index) -> bool:
    try:
        return label in index
    except TypeError:
        return False


def require_free(problem: Problem, idx: np.ndarray, action: str) -> None:
    """Refuse fixed units: scaling them would change the network function."""
    bad = idx[problem.fixed[idx]]
    if bad.size:
        what = [f"{problem.nodes[k]!r} ({problem.roles[k]})" for k in bad]
        raise NetworkError(
            f"unit(s) {', '.join(what[:10])} have scale 1: {action} them would change the network"
            " function; only hidden units with a homogeneous activation (relu, linear, bipu, ...)"
            " can be scaled")


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


def _grouped(pb: Problem, reg: Regularizer, group: np.ndarray, labels: tuple) -> Imbalance:
    n = len(labels)
    lphi, l1, _ = reg.edge_terms(pb.log_abs_weight, np.zeros(pb.n_edges))
    logc = np.log(pb.degree[pb.src])
    gin, gout = group[pb.dst], group[pb.src]
    log_in, log_out = scatter_logsumexp(lphi, gin, n), scatter_logsumexp(lphi + logc, gout, n)
    lp, ln = scatter_logsumexp(l1, gin, n), scatter_logsumexp(l1 + logc, gout, n)
    return Imbalance(labels, log_in, log_out, relative_imbalance(lp, ln))


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
    pb = weighted(problem, weight)
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
    pb = weighted(problem, weight)
    free = ~pb.fixed
    if isinstance(groups, Mapping):
        idx = unit_indices(pb, list(groups))
        require_free(pb, idx, "grouping")
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
    """Depth of every unit (longest path from a unit without inputs; self-loops ignored), or
    ``None`` if the graph has a directed cycle other than self-loops."""
    return longest_path_levels(merged_adjacency(problem.src, problem.dst, problem.n_nodes))
