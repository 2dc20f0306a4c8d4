"""Which problems the dense fast path takes, and their layout as groups and blocks.

A problem qualifies when every edge lies in one of its dense ``problem.layers`` blocks, the cost
is L_p with one coefficient for all edges, no units are tied, and each block's input and output
units are either all fixed or all free (a free side being one whole hidden layer). The free
layers become *groups*: independent sets (Prop. 4.4) balanced all at once by the sweeps and the
coarse space of the Newton–CG preconditioner.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..problem import Problem
from ..regularizers import Lp, PowerSum, Regularizer

__all__ = ["LayeredPlan", "plan_layers", "plan_problem"]


@dataclass
class LayeredPlan:
    """Groups (variable ranges) and blocks ``(W, gi, go, name)`` for :class:`LayeredCosts`."""

    sizes: list
    degree: np.ndarray
    blocks: list
    var_start: int = 0


def _coefficient_reason(reg: Regularizer) -> str | None:
    if type(reg) is not Lp:
        return f"the regularizer is {reg!r}, not Lp"
    coef = reg.coefficient
    if isinstance(coef, (str, dict)) or callable(coef) or np.ndim(coef) != 0:
        return "the Lp cost has per-edge coefficients"
    return None


def _folded(problem: Problem, reg: Regularizer) -> np.ndarray | str:
    """``b_e^{1/p} |w_e|`` for a one-term cost ``Σ b_e |w_e|^p``, or why it leaves float64."""
    p = next(iter(reg.terms))
    log_phi = reg.edge_terms(problem.log_abs_weight, np.zeros(problem.n_edges))[0]
    w = np.exp(log_phi / p)
    if np.any(np.isfinite(log_phi) & ((w == 0) | ~np.isfinite(w))):
        return "per-edge coefficients take b^(1/p)|w| beyond float64"
    return w


def plan_problem(problem: Problem, reg: Regularizer, *, coefficients: bool = False) -> LayeredPlan | str:
    """The dense layout of ``problem``, or a string saying why it does not qualify.

    With ``coefficients=True`` any one-term cost ``Σ_e b_e |w_e|^p`` qualifies: the blocks
    then hold ``b_e^{1/p} |w_e|``, whose ``p``-th powers are the edge costs.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.ones((3, 2)), np.ones((1, 3))], [np.ones(3), None])
    >>> plan = plan_problem(pb, balgraph.Lp(2))
    >>> plan.sizes, [(gi, go) for _, gi, go, _ in plan.blocks]
    ([3], [(None, 0), (0, None), (None, 0)])
    >>> plan_problem(pb, balgraph.PowerSum({1.0: 1.0, 2.0: 1.0}))
    'the regularizer is PowerSum({1.0: 1.0, 2.0: 1.0}), not Lp'
    """
    folded = None
    if coefficients and isinstance(reg, PowerSum) and len(reg.terms) == 1:
        coef = next(iter(reg.terms.values()))
        if not (isinstance(coef, float) and coef == 1.0):  # fold even a scalar: R is reported
            folded = _folded(problem, reg)
            if isinstance(folded, str):
                return folded
    else:
        reason = _coefficient_reason(reg)
        if reason:
            return reason
    layers = problem.layers
    if not layers:
        return "the problem has no dense layer blocks (build it with Problem.from_layers)"
    if problem.n_vars and np.any(problem.var_size != 1):
        return "some units are tied"
    spans = sorted((L.edge_start, L.n_in * L.n_out) for L in layers)
    ends = np.cumsum([n for _, n in spans])
    if [s for s, _ in spans] != [0, *ends[:-1].tolist()] or int(ends[-1]) != problem.n_edges:
        return "some edges lie outside the dense layer blocks"
    fixed = problem.fixed

    def side(start: int, n: int):
        f = fixed[start:start + n]
        return "fixed" if f.all() else ("free" if not f.any() else "mixed")

    free_ranges = set()
    for L in layers:
        for start, n in ((L.in_start, L.n_in), (L.out_start, L.n_out)):
            kind = side(start, n)
            if kind == "mixed":
                return f"units {problem.nodes[start]!r}.. of a layer are partly fixed"
            if kind == "free":
                free_ranges.add((start, n))
    groups = sorted(free_ranges)
    if any(a[0] + a[1] > b[0] for a, b in itertools.pairwise(groups)):
        return "layer blocks overlap in their units"
    if sum(n for _, n in groups) != problem.n_vars:
        return "some free units lie outside the layer blocks"
    index = {g: k for k, g in enumerate(groups)}
    var = problem.var
    for start, n in groups:
        if not np.array_equal(var[start:start + n], var[start] + np.arange(n)):
            return "free units are not numbered layer by layer"
    order = np.argsort([var[start] for start, _ in groups])
    if not np.array_equal(order, np.arange(len(groups))):
        return "free layers are not numbered in order"
    blocks = []
    for k, L in enumerate(layers):
        gi = index.get((L.in_start, L.n_in))
        go = index.get((L.out_start, L.n_out))
        if gi is not None and gi == go:
            return f"layer block {k} maps units {problem.nodes[L.out_start]!r}.. onto themselves"
        W = (problem.weight if folded is None else folded)[L.edge_slice].reshape(L.n_out, L.n_in)
        blocks.append((W, gi, go, f"layer block {k} (into unit {problem.nodes[L.out_start]!r}..)"))
    return LayeredPlan([n for _, n in groups], problem.var_degree.copy(), blocks)


def plan_layers(weights, biases, degrees, xp) -> LayeredPlan:
    """The layout of an MLP ``x_k = f(W_k x_{k-1} + b_k)`` given as matrices (any array module).

    Hidden layer ``k`` (``1 <= k < len(weights)``) is group ``k − 1``; inputs and outputs are fixed.
    """
    L = len(weights)
    biases = [None] * L if biases is None else list(biases)
    sizes = [int(W.shape[0]) for W in weights[:-1]]
    deg = np.broadcast_to(np.asarray(degrees, dtype=np.float64), (max(L - 1, 0),))
    degree = np.repeat(deg, sizes) if sizes else np.zeros(0)
    blocks = []
    for k, W in enumerate(weights, start=1):
        gi = k - 2 if k >= 2 else None
        go = k - 1 if k <= L - 1 else None
        blocks.append((W, gi, go, f"layer {k}"))
    for k, b in enumerate(biases, start=1):
        if b is not None:
            go = k - 1 if k <= L - 1 else None
            blocks.append((xp.asarray(b).reshape(-1, 1), None, go, f"bias {k}"))
    return LayeredPlan(sizes, degree, blocks)
