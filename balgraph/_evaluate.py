"""What :func:`balgraph.solve` reports about an answer, computed independently of the solver.

Given potentials ``u``: the balanced weights ``w_e exp((G u)_e)``, every variable's relative
imbalance ``(P − N)/(P + N)`` (eqs. 5.8, 6.7) and the cost before and after, in the log domain.
Dense layered problems (``Problem.from_layers``) take a path without ``G`` or any per-edge
temporary: per layer, ``|W|^p`` once and two mat-vecs with shifted exponentials, so reporting on
W5 (59 M weights) costs a few weight-passes instead of building a 59 M-row sparse matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._logsum import logsumexp
from .problem import Problem
from .regularizers import Lp, Regularizer

__all__ = ["Evaluation", "evaluate"]


@dataclass
class Evaluation:
    weight_array: np.ndarray
    relative_imbalance: np.ndarray
    log_cost_before: float
    log_cost_after: float


def evaluate(problem: Problem, reg: Regularizer, u: np.ndarray, reference: Problem | None = None) -> Evaluation:
    """Balanced weights, imbalance and costs at ``u``; ``reference`` gives the cost before
    (the caller's problem, when units were pruned or fixed), default ``problem``."""
    reference = problem if reference is None else reference
    layered = _layered(problem, reg, u)
    if layered is not None:
        if reference is problem:
            return layered
        layered.log_cost_before = reg.log_cost(reference.log_abs_weight)
        return layered
    from .api import imbalance

    t = problem.edge_log_scale(u)
    return Evaluation(
        weight_array=problem.weight * np.exp(t),
        relative_imbalance=imbalance(problem, reg, u),
        log_cost_before=reg.log_cost(reference.log_abs_weight),
        log_cost_after=logsumexp(reg.edge_terms(problem.log_abs_weight, t)[0]),
    )


def _layered(problem: Problem, reg: Regularizer, u: np.ndarray) -> Evaluation | None:
    """The dense-layer evaluation, or ``None`` when it does not apply or would lose range."""
    if type(reg) is not Lp or np.ndim(reg.coefficient) != 0 or isinstance(reg.coefficient, str):
        return None
    if not problem.is_layered or (problem.n_vars and np.any(problem.var_size != 1)):
        return None
    p, coef = reg.p, float(reg.coefficient)
    if coef <= 0:
        return None
    x = p * problem.node_potentials(u)  # log-scale of each unit's incoming costs
    y = -problem.degree * x             # ... and of its outgoing costs
    n = problem.n_nodes
    log_in = np.full(n, -np.inf)
    log_out = np.full(n, -np.inf)
    log_before = np.full(n, -np.inf)
    weight_array = np.empty_like(problem.weight)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        lam_in, lam_out = np.exp(x / p), np.exp(y / p)
        for L in problem.layers:
            W = problem.weight[L.edge_slice].reshape(L.n_out, L.n_in)
            rows = slice(L.out_start, L.out_start + L.n_out)
            cols = slice(L.in_start, L.in_start + L.n_in)
            A = np.abs(W) ** p
            top = float(A.max(initial=0.0))
            if not np.isfinite(top) or top == 0.0 and np.any(W):
                return None
            out = weight_array[L.edge_slice].reshape(L.n_out, L.n_in)
            np.multiply(W, lam_in[rows, None], out=out)
            out *= lam_out[None, cols]
            if top == 0.0:
                continue
            yc, xr = y[cols], x[rows]
            ys, xs = yc.max(), xr.max()
            r_in = A @ np.exp(yc - ys)
            r_out = np.exp(xr - xs) @ A
            r_before = A.sum(axis=1)
            log_in[rows] = np.logaddexp(log_in[rows], np.log(r_in) + ys + xr)
            log_out[cols] = np.logaddexp(log_out[cols], np.log(r_out) + xs + yc)
            log_before[rows] = np.logaddexp(log_before[rows], np.log(r_before))
    free = np.flatnonzero(~problem.fixed)
    # A sum that underflowed would read as a dead side: leave such cases to the per-edge path.
    if not (np.all(np.isfinite(weight_array)) and np.all(np.isfinite(log_in[log_before > -np.inf]))
            and np.all(np.isfinite(log_out[free]))):
        return None
    order = np.argsort(problem.var[free])
    units = free[order]
    lp, ln = log_in[units], np.log(problem.degree[units]) + log_out[units]
    both_empty = np.isneginf(lp) & np.isneginf(ln)
    with np.errstate(invalid="ignore"):
        r = np.where(both_empty, 0.0, np.tanh(0.5 * (lp - ln)))
    log_coef = np.log(coef)
    return Evaluation(
        weight_array=weight_array,
        relative_imbalance=r,
        log_cost_before=log_coef + logsumexp(log_before),
        log_cost_after=log_coef + logsumexp(log_in),
    )
