"""What :func:`balgraph.solve` reports about an answer, computed independently of the solver.

Given potentials ``u``: every variable's relative imbalance ``(P − N)/(P + N)`` (eqs. 5.8, 6.7),
the cost before and after in the log domain, and whether the balanced weights and scales stay
inside float64 (a weight that overflows, or a nonzero one that would become 0, changes the
network). Block by block and without the solver's arithmetic: a layer matrix costs ``|W|^p``
once (a temporary of one block) and two mat-vecs with shifted exponentials; edge lists are
summed edge by edge in the log domain. The balanced weights themselves are never formed here.
The reductions of Dask blocks are expressions evaluated together, in one round trip: only
per-unit vectors and scalars come back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import module_of, to_host
from .kernels import (abs_extremes, logsumexp, power_products, relative_imbalance, scatter_logsumexp,
                      segment_log_range)
from .lazy import compute, is_lazy, lazy_module
from .model import DenseBlock, Problem
from .regularizers import MaxNorm, Regularizer

__all__ = ["Evaluation", "evaluate", "imbalance", "max_sides", "channel_mask", "channel_edges"]

# log of the largest float64 and of the smallest normal one: beyond them a weight is inf or
# loses digits on its way to 0.
_LOG_MAX = float(np.log(np.finfo(np.float64).max))
_LOG_TINY = float(np.log(np.finfo(np.float64).tiny))
# a mat-vec sum below this, on a row with nonzero entries, has lost digits to underflow
_TINY_SUM = 1e-280
# Blocks up to this many edges (bias columns, mostly) are evaluated together, edge by edge:
# their per-block reductions cost about 0.1 ms of NumPy call overhead each (a 60-layer MLP's
# evaluation 12.5 -> 10.5 ms); larger blocks are cheaper by their reductions than per edge.
_SMALL_BLOCK = 256


@dataclass
class Evaluation:
    """The independent report: per-variable imbalance, costs, and range problems (or None)."""

    relative_imbalance: np.ndarray
    log_cost_before: float
    log_cost_after: float
    out_of_range: str | None = None

    @property
    def max_imbalance(self) -> float:
        return float(np.max(np.abs(self.relative_imbalance), initial=0.0))


class _Sums:
    """Per-unit log-sums of ``φ'`` into (``P`` side) and out of (``N`` side, times ``c``) each unit."""

    def __init__(self, problem: Problem):
        n = problem.n_nodes
        self.log_in, self.log_out = np.full(n, -np.inf), np.full(n, -np.inf)
        self.var_in, self.var_out = np.full(problem.n_vars, -np.inf), np.full(problem.n_vars, -np.inf)
        self.costs_after, self.costs_before = [], []
        self.range_notes: list[str] = []


def _dense_reductions(b: DenseBlock, p: float, x, y):
    """What the report needs of a layer matrix, with ``A = (|W|/top)^p``: ``(top, min nonzero
    |W|/top, A e^{y−max y}, e^{x−max x} A, row sums of A, rows and columns with a nonzero)``, or
    None for a zero block; only the first two when some ``|w|^p`` would underflow (the block
    then goes edge by edge).

    NumPy and CuPy: two reads of the block by row chunks (no block-sized temporary), its
    extremes, then ``|W|^p`` times two columns per side. Dask: expressions, nothing computed.
    """
    W = b.weight
    if not b.n_edges:
        return None
    ey, ex = np.exp(y - y.max()), np.exp(x - x.max())
    if is_lazy(W):
        da = lazy_module()
        A = da.absolute(W).astype(np.float64)
        top = A.max()
        A = A / da.where(top > 0, top, 1.0)
        mask = A > 0
        amin = da.where(mask, A, np.inf).min()
        if p != 1.0:
            A = A ** p
        return top, amin, A @ ey, ex @ A, A.sum(axis=1), mask.any(axis=1), mask.any(axis=0)
    xp = module_of(W)
    top, amin = abs_extremes(W)
    if top == 0.0:
        return None
    amin /= top
    if p * np.log(amin) < _LOG_TINY + 30.0:
        return top, amin, None, None, None, None, None
    R, C = power_products(W, p, top, right=xp.asarray(np.stack([ey, np.ones_like(y)], axis=1)),
                          left=xp.asarray(np.stack([ex, np.ones_like(x)])))
    r_in, r_before = to_host(R).T
    r_out, c_before = to_host(C)
    return top, amin, r_in, r_out, r_before, r_before > 0, c_before > 0


def _inside_variable(b: DenseBlock, problem: Problem) -> bool:
    """Whether an edge of ``b`` joins two units of one variable (G's entry is 1 − c: edge by edge)."""
    vo, vi = problem.var[b.out_units], problem.var[b.in_units]
    vo, vi = vo[vo >= 0], vi[vi >= 0]
    if not vo.size or not vi.size or vo.max() < vi.min() or vi.max() < vo.min():
        return False  # disjoint ranges: the usual case of consecutive layers, no sort needed
    return bool(np.intersect1d(vo, vi).size)


def _dense_block(b: DenseBlock, p: float, coef: float, x, y, reduced, problem: Problem, sums: _Sums) -> bool:
    """Add a layer matrix's sums (L_p, one coefficient) from its reductions; False when it must go
    edge by edge."""
    if reduced is None or float(reduced[0]) == 0.0:
        return True
    top, amin = float(reduced[0]), float(reduced[1])
    if p * np.log(amin) < _LOG_TINY + 30.0:  # some |w|^p would underflow: edge by edge
        return False
    r_in, r_out, r_before, nz_rows, nz_cols = (np.asarray(v) for v in reduced[2:])
    with np.errstate(divide="ignore"):
        l_in, l_out, l_before = np.log(r_in), np.log(r_out), np.log(r_before)
    # A sum that left float64's normal range lost digits (or reads as a dead side): such blocks
    # go edge by edge.
    if np.any((r_in < _TINY_SUM) & nz_rows) or np.any((r_out < _TINY_SUM) & nz_cols):
        return False
    ys, xs = float(y.max()), float(x.max())
    a = p * np.log(top) + np.log(coef)
    log_in = a + l_in + ys + x
    log_out = a + l_out + xs + y
    # the sums of φ' = p φ, as the edge lists add them
    _add(sums.log_in, b.out_range or b.out_units, np.log(p) + log_in)
    _add(sums.log_out, b.in_range or b.in_units, np.log(p) + log_out + np.log(problem.degree[b.in_units]))
    sums.costs_after.append(logsumexp(log_in))
    sums.costs_before.append(logsumexp(a + l_before))
    # the balanced weights |w| e^{(x_r + y_s)/p} lie between these bounds; the exact lowest is
    # computed only when the bound reaches below float64's normal range
    log_top = np.log(top) + (x.max() + y.max()) / p
    log_low = np.log(top * amin) + (x.min() + y.min()) / p
    if log_top > _LOG_MAX:
        sums.range_notes.append(f"{b.name}: a balanced weight reaches e^{log_top:.0f}, beyond float64")
    elif log_low < _LOG_TINY and _low_exact(module_of(b.weight), b.weight, x, y, p) < _LOG_TINY:
        sums.range_notes.append(f"{b.name}: a nonzero balanced weight falls below float64's normal range"
                                " (it would lose digits or become 0)")
    return True


def _low_exact(xp, W, x, y, p) -> float:
    """``min log |w'|`` over the nonzero entries of a block (only when the bound says it may underflow)."""
    with np.errstate(divide="ignore"):
        L = xp.log(xp.abs(xp.asarray(W)).astype(np.float64, copy=False))
    L += xp.asarray(x / p)[:, None]
    L += xp.asarray(y / p)[None, :]
    return float(to_host(xp.where(xp.isfinite(L), L, np.inf).min()))


def _add(acc, index, values):
    """``acc[index] = logaddexp(acc[index], values)`` where ``index`` (or a slice) may repeat."""
    if isinstance(index, slice):
        acc[index] = np.logaddexp(acc[index], values)
        return
    index = np.asarray(index)
    if np.unique(index).size == index.size:
        acc[index] = np.logaddexp(acc[index], values)
    else:
        n = acc.size
        acc[:] = np.logaddexp(acc, scatter_logsumexp(values, index, n))


def _block_edges(problem: Problem, block, start: int, stop: int):
    """``(positions, src, dst, log |w|)`` of a block's edges, for :func:`_edges`."""
    src, dst = block.edge_ends()
    if len(problem.blocks) == 1:
        law = problem.log_abs_weight  # cached on the problem
    else:
        with np.errstate(divide="ignore"):
            law = np.log(np.abs(block.host_weights()))
    return np.arange(start, stop), src, dst, law


def _edges(problem: Problem, reg: Regularizer, un, sums: _Sums, edges) -> None:
    """Add edges ``(positions, src, dst, log |w|)`` (:func:`_block_edges`, or several blocks'
    concatenated), edge by edge in the log domain."""
    index, src, dst, law = edges
    c_src = problem.degree[src]
    t = un[dst] - c_src * un[src]
    p, coef = reg.power(), reg.uniform_coefficient()
    if p is not None and coef is not None:  # L_p, one coefficient: the three terms directly
        lphi0 = p * law + np.log(coef) if coef > 0 else np.full(law.shape, -np.inf)
        lphi = lphi0 + p * t
        l1 = lphi + np.log(p)
    else:
        sub = reg.restrict(index)
        lphi, l1, _ = sub.edge_terms(law, t)
        lphi0 = sub.edge_terms(law, np.zeros_like(t))[0]
    sums.costs_after.append(logsumexp(lphi))
    sums.costs_before.append(logsumexp(lphi0))
    var = problem.var
    vi, vj = var[dst], var[src]
    inside = (vi == vj) & (vi >= 0)
    if not inside.any():
        sums.log_in = np.logaddexp(sums.log_in, scatter_logsumexp(l1, dst, problem.n_nodes))
        l1c = l1 if np.all(problem.degree == 1.0) else l1 + np.log(c_src)
        sums.log_out = np.logaddexp(sums.log_out, scatter_logsumexp(l1c, src, problem.n_nodes))
    else:
        gamma = 1.0 - c_src[inside]
        lg = np.log(np.abs(np.where(gamma == 0, 1.0, gamma)))
        vals = np.where(gamma == 0, -np.inf, l1[inside] + lg)
        pos, neg = gamma > 0, gamma < 0
        sums.var_in = np.logaddexp(sums.var_in, scatter_logsumexp(vals[pos], vi[inside][pos], problem.n_vars))
        sums.var_out = np.logaddexp(sums.var_out, scatter_logsumexp(vals[neg], vi[inside][neg], problem.n_vars))
        keep = ~inside
        sums.log_in = np.logaddexp(sums.log_in, scatter_logsumexp(l1[keep], dst[keep], problem.n_nodes))
        sums.log_out = np.logaddexp(sums.log_out, scatter_logsumexp(l1[keep] + np.log(c_src[keep]), src[keep],
                                                                    problem.n_nodes))
    logw = law + t
    if not (float(logw.max(initial=-np.inf)) > _LOG_MAX or float(np.min(logw, where=np.isfinite(law),
                                                                        initial=np.inf)) < _LOG_TINY):
        return
    nzw = np.isfinite(law)
    if np.any(logw[nzw] > _LOG_MAX):
        e = int(np.flatnonzero(nzw & (logw > _LOG_MAX))[0])
        sums.range_notes.append(f"the balanced weight of {problem.describe_edge(int(index[e]))} reaches e^{logw[e]:.0f},"
                                " beyond float64")
    if np.any(logw[nzw] < _LOG_TINY):
        e = int(np.flatnonzero(nzw & (logw < _LOG_TINY))[0])
        sums.range_notes.append(f"the balanced weight of {problem.describe_edge(int(index[e]))} falls to e^{logw[e]:.0f},"
                                " below float64's normal range (it would lose digits or become 0)")


def evaluate(problem: Problem, reg: Regularizer, u: np.ndarray, reference: Problem | None = None) -> Evaluation:
    """The imbalance of every variable at ``u``, the costs, and range problems.

    ``reference`` is the caller's problem when units were pruned or fixed (its cost is the cost
    before). With shared weights (``problem.share``) each parameter costs once and the imbalance
    is that of each admissible direction ``u = N z`` (Section 8.3): the relative gradient
    ``(P − N)/(P + N)`` along the columns of ``N``.
    """
    reference = problem if reference is None else reference
    if isinstance(reg, MaxNorm):
        return _evaluate_max(problem, reg, u, reference)
    u = np.asarray(u, dtype=np.float64)
    un = problem.node_potentials(u)
    if problem.share is not None:
        from .costs.shared import shared_basis, shared_regularizer

        basis = shared_basis(problem, problem.share, None)
        before = shared_regularizer(reference, reg, reference.share).log_cost(reference.log_abs_weight)
        return _evaluate_directions(problem, shared_regularizer(problem, reg, problem.share), u, basis, before)
    sums = _Sums(problem)
    p, coef = reg.power(), reg.uniform_coefficient()
    dense = p is not None and coef is not None and coef > 0
    blocks = list(zip(problem.blocks, problem.block_offsets[:-1], problem.block_offsets[1:]))
    # small host blocks go edge by edge, all together (see _SMALL_BLOCK)
    is_small = [len(blocks) > 1 and b.n_edges <= _SMALL_BLOCK and not is_lazy(b.weight) for b, _, _ in blocks]
    if any(is_small):
        parts = [_block_edges(problem, *blk) for blk, small in zip(blocks, is_small) if small]
        _edges(problem, reg, un, sums, tuple(np.concatenate(x) for x in zip(*parts)))
        blocks = [blk for blk, small in zip(blocks, is_small) if not small]
    plans: list = [None] * len(blocks)
    for k, (b, _, _) in enumerate(blocks):
        if dense and isinstance(b, DenseBlock) and not _inside_variable(b, problem):
            x = p * un[b.out_units]
            y = -p * problem.degree[b.in_units] * un[b.in_units]
            plans[k] = (x, y, _dense_reductions(b, p, x, y))
    # the Dask blocks' reductions, all in one round trip
    reduced = compute(*[plan[2] if plan is not None else None for plan in plans])
    for (b, start, stop), plan, red in zip(blocks, plans, reduced):
        if plan is not None and _dense_block(b, p, coef, plan[0], plan[1], red, problem, sums):
            continue
        _edges(problem, reg, un, sums, _block_edges(problem, b, int(start), int(stop)))
    free = ~problem.fixed
    var_in, var_out = sums.var_in.copy(), sums.var_out.copy()
    if free.any():
        v = problem.var[free]
        var_in = np.logaddexp(var_in, scatter_logsumexp(sums.log_in[free], v, problem.n_vars))
        var_out = np.logaddexp(var_out, scatter_logsumexp(sums.log_out[free], v, problem.n_vars))
    r = relative_imbalance(var_in, var_out)
    note = None
    big = np.flatnonzero(np.abs(un) > _LOG_MAX)
    if big.size:
        note = (f"the scale of unit {problem.nodes[big[0]]!r} is e^{un[big[0]]:.0f}, beyond float64"
                f" ({big.size} unit(s))")
    elif sums.range_notes:
        note = sums.range_notes[0] + (f" (and {len(sums.range_notes) - 1} more)" if len(sums.range_notes) > 1 else "")
    before = logsumexp(np.array(sums.costs_before)) if reference is problem else _cost_before(reference, reg)
    return Evaluation(r, before, logsumexp(np.array(sums.costs_after)), note)


def _cost_before(problem: Problem, reg: Regularizer) -> float:
    return evaluate(problem, reg, np.zeros(problem.n_vars)).log_cost_after


def _evaluate_directions(problem, reg, u, basis, before: float) -> Evaluation:
    import scipy.sparse as sp

    G = problem.G.tocsr()
    t = G @ u
    lphi, l1, _ = reg.edge_terms(problem.log_abs_weight, t)
    GN = sp.csc_matrix(G @ basis)
    lp, ln = np.full(GN.shape[1], -np.inf), np.full(GN.shape[1], -np.inf)
    col = np.repeat(np.arange(GN.shape[1]), np.diff(GN.indptr))
    for sign, acc in ((1, "p"), (-1, "n")):
        keep = GN.data * sign > 1e-12
        vals = l1[GN.indices[keep]] + np.log(np.abs(GN.data[keep]))
        out = scatter_logsumexp(vals, col[keep], GN.shape[1])
        if acc == "p":
            lp = out
        else:
            ln = out
    return Evaluation(relative_imbalance(lp, ln), before, logsumexp(lphi))


def channel_mask(problem: Problem, reg: MaxNorm) -> np.ndarray:
    """The edges that count in a channel's size at ``p = ∞`` (a boolean mask over edges).

    Zero weights are left out of ``max |w|`` but count as the value 0 in ``max w − min w``
    (torch.ao's range of a tensor's channel); with ``biases="exclude"`` edges out of bias units
    are left out.
    """
    keep = problem.weight != 0 if reg.range == "absmax" else np.ones(problem.n_edges, dtype=bool)
    if reg.biases == "exclude":
        keep &= ~(np.asarray(problem.roles) == "bias")[problem.src]
    return keep


def channel_edges(problem: Problem, reg: MaxNorm) -> tuple[np.ndarray, np.ndarray]:
    """The indices of :func:`channel_mask`'s edges and their ``log |w|``."""
    edges = np.flatnonzero(channel_mask(problem, reg))
    with np.errstate(divide="ignore"):
        return edges, np.log(np.abs(problem.weight[edges]))


def max_sides(problem: Problem, reg: MaxNorm | None = None, u=None) -> tuple[np.ndarray, np.ndarray]:
    """Log-size of every free variable's incoming and outgoing channel at potentials ``u``.

    The size is ``max |w|`` or ``max w − min w`` over the side's edges (``reg.range``), weights
    rescaled by ``u``; ``-inf`` for an empty side. Edges inside one variable, zero weights and,
    with ``biases="exclude"``, bias edges are left out.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.array([[4.0, -5.0]]), np.array([[1.0], [3.0]])])
    >>> [np.exp(side).round(12).tolist() for side in max_sides(pb)]
    [[5.0], [3.0]]
    >>> [np.exp(side).round(12).tolist() for side in max_sides(pb, balgraph.MaxNorm("minmax"))]
    [[9.0], [2.0]]
    """
    reg = MaxNorm() if reg is None else reg
    edges, law = channel_edges(problem, reg)
    src, dst = problem.src[edges], problem.dst[edges]
    if u is not None:
        law = law + problem.edge_log_scale(u)[edges]
    sign = np.sign(problem.weight[edges])
    sv, dv = problem.var[src], problem.var[dst]
    moved = sv != dv
    return tuple(segment_log_range(law[side], sign[side], seg[side], problem.n_vars, reg.range)
                 for seg, side in ((dv, moved & (dv >= 0)), (sv, moved & (sv >= 0))))


def _evaluate_max(problem: Problem, reg: MaxNorm, u, reference: Problem) -> Evaluation:
    r = relative_imbalance(*max_sides(problem, reg, u))
    edges, law = channel_edges(problem, reg)
    after = float(np.max(law + problem.edge_log_scale(u)[edges], initial=-np.inf))
    _, law_before = channel_edges(reference, reg)
    before = float(np.max(law_before, initial=-np.inf))
    return Evaluation(r, before, after)


def imbalance(problem: Problem, regularizer: Regularizer, u: np.ndarray) -> np.ndarray:
    """Relative imbalance ``(P_k − N_k)/(P_k + N_k)`` of every variable at potentials ``u``.

    For an untied unit with the L_p cost this is ``(in − c·out)/(in + c·out)`` with
    ``in = Σ_IN |w|^p`` and ``out = Σ_OUT |w|^p`` (eqs. 5.8 and 6.7); 0 means balanced. For
    ``MaxNorm`` it is ``(max_in − max_out)/(max_in + max_out)``.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> balgraph.imbalance(pb, balgraph.Lp(2), np.log([0.5])).tolist()
    [0.0]
    """
    return evaluate(problem, regularizer, u).relative_imbalance
