"""``balgraph check``: per-unit and per-depth imbalance of a network, in the log domain.

For ``p < ∞`` the imbalance of a free unit is ``(in − c·out)/(in + c·out)`` with ``in = Σ_IN
|w|^p`` (eqs. 5.8, 6.7; :func:`balgraph.imbalance`). For ``p = ∞`` it is the max-balance gap
``(max_IN |w| − max_OUT |w|)/(max_IN |w| + max_OUT |w|)`` (the condition that ``solve(p=inf)``
stops on, self-loops and edges inside a tie group left out). Costs are summed as
``log Σ exp`` so that large ``p`` never overflows into ``inf − inf``.

Depth is the longest path from an input unit, edges out of bias units left out (a bias
unit is a constant source, not a layer): on an MLP, hidden layer ``k`` has depth ``k``. On a
graph with cycles, where longest paths do not exist, it is the shortest path. Units that no
input reaches have depth ``-1``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .api import imbalance
from .regularizers import Lp

__all__ = ["check_report", "print_check", "depths", "max_gap"]


def _segment_logsumexp(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``log Σ exp(values)`` per ``index`` (``-inf`` where empty)."""
    top = np.full(n, -np.inf)
    np.maximum.at(top, index, values)
    shift = np.where(np.isfinite(top), top, 0.0)
    total = np.bincount(index, weights=np.exp(values - shift[index]), minlength=n)
    with np.errstate(divide="ignore"):
        return np.log(total) + shift


def _segment_max(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    top = np.full(n, -np.inf)
    np.maximum.at(top, index, values)
    return top


def _signed_gap(log_a: np.ndarray, log_b: np.ndarray) -> np.ndarray:
    """``(a − b)/(a + b)`` from logs; 0 where both sides are empty."""
    with np.errstate(invalid="ignore"):
        r = np.tanh((log_a - log_b) / 2)
    return np.where(np.isneginf(log_a) & np.isneginf(log_b), 0.0, r)


def max_gap(problem) -> np.ndarray:
    """Per-variable max-balance gap ``(max_IN − max_OUT)/(max_IN + max_OUT)`` of |w|."""
    law, keep = _log_abs(problem)
    vs, vd = problem.var[problem.src], problem.var[problem.dst]
    keep = keep & ~((vs == vd) & (vs >= 0))
    into, out = keep & (vd >= 0), keep & (vs >= 0)
    log_in = _segment_max(vd[into], law[into], problem.n_vars)
    log_out = _segment_max(vs[out], law[out], problem.n_vars)
    return _signed_gap(log_in, log_out)


def _log_abs(problem):
    w = np.asarray(problem.weight, dtype=np.float64)
    keep = w != 0
    with np.errstate(divide="ignore"):
        return np.log(np.abs(w)), keep


def depths(problem) -> tuple[np.ndarray, str]:
    """``(depth per unit, rule)``: longest path from an input without bias edges, see the module.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.ones((2, 3)), np.ones((2, 2)), np.ones((1, 2))],
    ...                                   [np.ones(2), np.ones(2), None])
    >>> depth, rule = depths(pb)
    >>> sorted({str(x[0]): int(d) for x, d in zip(pb.nodes, depth)}.items())
    [('0', 0), ('1', 1), ('2', 2), ('3', 3), ('bias', -1)]
    """
    n = problem.n_nodes
    roles = np.asarray(problem.roles)
    keep = (roles[problem.src] != "bias") & (roles[problem.dst] != "input")
    src, dst = problem.src[keep], problem.dst[keep]
    inputs = np.flatnonzero(roles == "input")
    adj = sp.csr_matrix((np.ones(src.size), (src, dst)), shape=(n + 1, n + 1))
    adj = adj + sp.csr_matrix((np.ones(inputs.size), (np.full(inputs.size, n), inputs)), shape=(n + 1, n + 1))
    dist = csgraph.shortest_path(adj, unweighted=True, indices=n)[:n] - 1
    reached = np.isfinite(dist)
    # longest path: peel the reached subgraph level by level (Kahn); a cycle leaves units unpeeled
    sub = reached[src] & reached[dst]
    s, d = src[sub], dst[sub]
    order = np.argsort(s, kind="stable")
    s, d = s[order], d[order]
    starts = np.searchsorted(s, np.arange(n + 1))
    indeg = np.bincount(d, minlength=n)
    depth = np.full(n, -1, dtype=np.int64)
    level, current = 0, np.flatnonzero(reached & (indeg == 0))
    while current.size:
        depth[current] = level
        lo, hi = starts[current], starts[current + 1]
        counts = hi - lo
        if not counts.sum():
            break
        idx = np.repeat(lo - np.cumsum(np.concatenate([[0], counts[:-1]])), counts) + np.arange(counts.sum())
        targets = d[idx]
        np.subtract.at(indeg, targets, 1)
        current = np.unique(targets[indeg[targets] == 0])
        level += 1
    if np.any(reached & (depth < 0)):
        return np.where(reached, dist, -1).astype(np.int64), "shortest path from an input (the graph has cycles)"
    return depth, "longest path from an input, bias edges left out"


def check_report(problem, p: float, top: int) -> dict:
    """The report ``balgraph check`` prints (``_imbalance``: per-variable values for the plot)."""
    n = problem.n_nodes
    law, keep = _log_abs(problem)
    src, dst = problem.src[keep], problem.dst[keep]
    infinite = math.isinf(p)
    if infinite:
        r_var = max_gap(problem)
        log_in = _segment_max(dst, law[keep], n)
        log_out = _segment_max(src, law[keep], n)
    else:
        r_var = imbalance(problem, Lp(p), np.zeros(problem.n_vars)) if problem.n_vars else np.zeros(0)
        log_in = _segment_logsumexp(dst, p * law[keep], n)
        log_out = np.log(problem.degree) + _segment_logsumexp(src, p * law[keep], n)
    r_var = np.asarray(r_var, dtype=np.float64)
    free = np.flatnonzero(~problem.fixed)
    r_unit = r_var[problem.var[free]] if free.size else np.zeros(0)
    order = free[np.argsort(-np.abs(r_unit), kind="stable")][:top]
    depth, rule = depths(problem)
    per_depth = []
    for d in np.unique(depth[free]).tolist():
        units = free[depth[free] == d]
        if infinite:
            a, b = float(np.max(log_in[units])), float(np.max(log_out[units]))
        else:
            a, b = float(np.logaddexp.reduce(log_in[units])), float(np.logaddexp.reduce(log_out[units]))
        per_depth.append({
            "depth": d, "units": int(units.size), "in_cost": _exp(a), "out_cost": _exp(b),
            "log10_in_cost": a / math.log(10), "log10_out_cost": b / math.log(10),
            "relative": float(_signed_gap(np.array(a), np.array(b))),
            "max_unit": float(np.max(np.abs(r_var[problem.var[units]]))),
        })
    worst = [{"unit": str(problem.nodes[k]), "imbalance": float(r_var[problem.var[k]]),
              "in_cost": _exp(log_in[k]), "out_cost": _exp(log_out[k]),
              "log10_in_cost": float(log_in[k]) / math.log(10),
              "log10_out_cost": float(log_out[k]) / math.log(10)} for k in order.tolist()]
    return {"p": p, "free_units": int(free.size),
            "max_imbalance": float(np.max(np.abs(r_var), initial=0.0)),
            "median_imbalance": float(np.median(np.abs(r_var))) if r_var.size else 0.0,
            "top": worst, "depth_rule": rule, "depths": per_depth, "_imbalance": r_var}


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.78 else math.inf


def print_check(report: dict, p: float) -> None:
    inf = math.isinf(p)
    name = "max-balance gap (L∞)" if inf else f"L{p:g}"
    side_in, side_out = ("max in |w|", "max out |w|") if inf else ("in cost", "c*out cost")
    print(f"{report['network']}: {report['free_units']} free units, max |imbalance| {report['max_imbalance']:.3g},"
          f" median {report['median_imbalance']:.3g} ({name}; 0 = balanced)")
    if report["top"]:
        print(f"worst units:\n  {'unit':<24} {'imbalance':>10} {side_in:>12} {side_out:>12}")
        for t in report["top"]:
            print(f"  {t['unit']:<24} {t['imbalance']:>10.3g} {t['in_cost']:>12.5g} {t['out_cost']:>12.5g}")
    if report["depths"]:
        print(f"per depth ({report['depth_rule']}; eq. 8.1: layer in-cost vs out-cost):\n"
              f"  {'depth':>5} {'units':>6} {side_in:>12} {side_out:>12} {'relative':>9} {'max unit':>9}")
        for d in report["depths"]:
            label = "none" if d["depth"] < 0 else d["depth"]
            print(f"  {label:>5} {d['units']:>6} {d['in_cost']:>12.5g} {d['out_cost']:>12.5g}"
                  f" {d['relative']:>9.3g} {d['max_unit']:>9.3g}")
