"""Diagnosis before solving: which free units have a finite balanced scale.

Merge every fixed unit into one *ground* node and every tie group into one node, and keep the
non-zero edges only. For BiLU networks (every degree 1) the minimum of the cost exists, and is
unique, iff every free variable lies in the strongly connected component of the ground — the
classical matrix-balancing condition (design.md §1). A unit that reaches no output (*dead end*)
or that no input reaches (*dead start*) can have its dangling weights driven to 0 without changing
the network function, so the infimum is not attained.

For BiPU degrees ``c ≠ 1`` the component test is sufficient but not necessary (a loop of gain
``∏ c > 1`` fed by an input is bounded without reaching an output). There the exact test is
run: by Stiemke's lemma, ``{v : G v ≤ 0} = {0}`` iff some strictly positive edge-cost vector
``y`` is balanced, ``Gᵀ y = 0``: one linear feasibility problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .errors import NetworkError, NoFiniteOptimumError, name_some
from .problem import Problem

__all__ = ["Diagnosis", "diagnose", "ensure_finite_optimum"]


@dataclass(frozen=True)
class Diagnosis:
    """Free units without a finite optimum, by kind (arrays of unit indices).

    ``dead_ends`` reach no output, ``dead_starts`` are reached from no input, ``closed`` are
    both. ``ok`` is True when every free unit has a finite optimum.
    """

    dead_ends: np.ndarray
    dead_starts: np.ndarray
    closed: np.ndarray

    @property
    def units(self) -> np.ndarray:
        return np.union1d(np.union1d(self.dead_ends, self.dead_starts), self.closed)

    @property
    def ok(self) -> bool:
        return self.units.size == 0


def diagnose(problem: Problem, active: np.ndarray | None = None) -> Diagnosis:
    """Find the free units with no finite optimum, in O(edges).

    ``active`` marks the edges that carry cost (default: the non-zero weights); edges with a
    zero weight or a zero regularizer coefficient play no role.

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1, 0], [1, 3, 2], [1.0, 1.0, 1.0],
    ...                                   roles=["input", "hidden", "hidden", "output"])
    >>> [pb.nodes[k] for k in balgraph.diagnose(pb).dead_ends]
    [2]
    """
    nv = problem.n_vars
    ground = nv
    reach = _layer_reach(problem, active)
    if reach is None:
        node_of = np.where(problem.fixed, ground, problem.var)
        nz = problem.weight != 0 if active is None else (problem.weight != 0) & active
        a, b = node_of[problem.src[nz]], node_of[problem.dst[nz]]
        keep = a != b
        adj = sp.csr_matrix(
            (np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(nv + 1, nv + 1)
        )
        reaches_ground = _reachable(adj.T.tocsr(), ground, nv + 1)
        reached_from_ground = _reachable(adj, ground, nv + 1)
    else:
        reaches_ground, reached_from_ground = reach
    bad_var = ~(reaches_ground & reached_from_ground)[:nv]
    if bad_var.any() and np.any(problem.degree[~problem.fixed] != 1.0):
        nz = problem.weight != 0 if active is None else (problem.weight != 0) & active
        if _balanced_costs_exist(problem, nz):
            bad_var[:] = False
    unit_var = np.where(problem.fixed, nv, problem.var)
    bad_unit = np.concatenate([bad_var, [False]])[unit_var]
    to_ground = np.concatenate([reaches_ground[:nv], [True]])[unit_var]
    from_ground = np.concatenate([reached_from_ground[:nv], [True]])[unit_var]
    return Diagnosis(
        dead_ends=np.flatnonzero(bad_unit & ~to_ground & from_ground),
        dead_starts=np.flatnonzero(bad_unit & to_ground & ~from_ground),
        closed=np.flatnonzero(bad_unit & ~(to_ground & from_ground) & ~(to_ground ^ from_ground)),
    )


def _layer_reach(problem: Problem, active: np.ndarray | None):
    """Reachability to and from the ground on dense layers, by mat-vecs with ``|W|``.

    The same answer as the breadth-first search, without building a sparse matrix of all the
    edges (59 M on W5). Returns ``None`` where it does not apply (edges outside dense layers,
    ties, or zero regularizer coefficients).
    """
    if not problem.is_layered or (problem.n_vars and np.any(problem.var_size != 1)):
        return None
    if active is not None and not np.all(active):
        return None
    blocks = sorted(problem.layers, key=lambda L: L.out_start)
    mats = [np.abs(problem.weight[L.edge_slice].reshape(L.n_out, L.n_in)) for L in blocks]
    rows = [slice(L.out_start, L.out_start + L.n_out) for L in blocks]
    cols = [slice(L.in_start, L.in_start + L.n_in) for L in blocks]
    from_ground, to_ground = problem.fixed.copy(), problem.fixed.copy()
    for _ in range(len(blocks) + 1):
        before = (from_ground.sum(), to_ground.sum())
        for A, r, c in zip(mats, rows, cols):
            from_ground[r] |= A @ from_ground[c].astype(np.float64) > 0
        for A, r, c in zip(mats[::-1], rows[::-1], cols[::-1]):
            to_ground[c] |= to_ground[r].astype(np.float64) @ A > 0
        if (from_ground.sum(), to_ground.sum()) == before:
            break
    nv = problem.n_vars
    free = np.flatnonzero(~problem.fixed)
    out = []
    for seen in (to_ground, from_ground):
        per_var = np.ones(nv + 1, dtype=bool)
        per_var[problem.var[free]] = seen[free]
        out.append(per_var)
    return out[0], out[1]


def _reachable(adj: sp.csr_matrix, start: int, n: int) -> np.ndarray:
    order = csgraph.breadth_first_order(adj, start, directed=True, return_predecessors=False)
    seen = np.zeros(n, dtype=bool)
    seen[order] = True
    return seen


def _balanced_costs_exist(problem: Problem, nz: np.ndarray) -> bool:
    from scipy.optimize import linprog

    g = problem.G[np.flatnonzero(nz)]
    res = linprog(
        np.zeros(g.shape[0]), A_eq=g.T.tocsr(), b_eq=np.zeros(g.shape[1]),
        bounds=(1.0, None), method="highs",
    )
    return res.status == 0


def ensure_finite_optimum(
    problem: Problem, unreachable: str = "raise", active: np.ndarray | None = None
) -> Problem:
    """Return a problem in which every free unit has a finite optimum.

    ``unreachable="raise"`` raises :class:`NoFiniteOptimumError` naming the units;
    ``"fix"`` keeps them at scale 1; ``"prune"`` also sets their weights to 0, which is the
    infimum of the cost and leaves the network function unchanged (such units never influence
    an output: what they send reaches no output, or what they get is always 0).
    """
    if unreachable not in ("raise", "fix", "prune"):
        raise NetworkError(f"unreachable must be 'raise', 'fix' or 'prune', not {unreachable!r}")
    diag = diagnose(problem, active)
    if diag.ok:
        return problem
    units = diag.units
    if unreachable == "raise":
        labels = [problem.nodes[k] for k in units]
        parts = []
        for name, idx, why in (
            ("dead ends", diag.dead_ends, "reach no output"),
            ("dead starts", diag.dead_starts, "are reached from no input"),
            ("closed", diag.closed, "neither reach an output nor are reached from an input"),
        ):
            if idx.size:
                parts.append(f"{idx.size} {name} ({why}): {name_some([problem.nodes[k] for k in idx])}")
        raise NoFiniteOptimumError(
            f"{units.size} free unit(s) have no finite balanced scale — " + "; ".join(parts)
            + ". Their weights can shrink to 0 without changing the network function, so the"
            " cost has no minimum. Remove them, give them a path from an input to an output,"
            " or call solve(..., unreachable='fix') to keep them at scale 1 or"
            " unreachable='prune' to zero their weights.",
            units=labels,
        )
    if unreachable == "prune":
        touched = np.isin(problem.src, units) | np.isin(problem.dst, units)
        problem = problem.with_weights(np.where(touched, 0.0, problem.weight))
    return problem.with_fixed(units)
