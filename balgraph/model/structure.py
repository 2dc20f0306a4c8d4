"""Diagnosis before solving: which free units have a finite balanced scale.

Merge every fixed unit into one *ground* node and every tie group into one node, and keep the
edges that carry cost. For BiLU networks (every degree 1) the minimum of the cost exists, and
is unique, iff every free variable lies in the strongly connected component of the ground —
the classical matrix-balancing condition (docs/design.md §1). A unit that reaches no output
(*dead end*) or that no input reaches (*dead start*) can have its dangling weights driven to 0
without changing the network function, so the infimum is not attained.

For BiPU degrees ``c ≠ 1`` the component test is sufficient but not necessary (a loop of gain
``∏ c > 1`` fed by an input is bounded without reaching an output). There the exact test is
run: by Stiemke's lemma, ``{v : G v ≤ 0} = {0}`` iff some strictly positive edge-cost vector
``y`` is balanced, ``Gᵀ y = 0``: one linear feasibility problem.

Layer matrices are checked without per-edge arrays: reachability travels through each dense
block by a mat-vec with ``|W|``, in topological order of the layers. Dask blocks make one task
graph of both visits (each mat-vec on the chunks, the per-unit bookkeeping in small tasks),
evaluated in one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csgraph

from ..backend import module_of, to_host
from ..checks import check_choice
from ..errors import NoFiniteOptimumError, name_some
from ..graphs import merged_adjacency, reachable
from ..kernels import nonzero_rows_cols
from ..lazy import ChunkGrid, compute, is_lazy, lazy_module
from .problem import Problem

__all__ = ["Diagnosis", "diagnose", "ensure_finite_optimum"]

_CHUNK = 1 << 22  # entries of |W| formed at once


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

    ``active`` marks the edges that carry cost (default: every edge; zero weights never do).
    Edges with a zero weight or a zero regularizer coefficient play no role.

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1, 0], [1, 3, 2], [1.0, 1.0, 1.0],
    ...                                   roles=["input", "hidden", "hidden", "output"])
    >>> [pb.nodes[k] for k in balgraph.diagnose(pb).dead_ends]
    [2]
    """
    nv = problem.n_vars
    reach = _dense_reach(problem) if (active is None or np.all(active)) else None
    if reach is None:
        if active is None:
            adj = problem.variable_graph
        else:
            node_of = np.where(problem.fixed, nv, problem.var)
            keep = (problem.weight != 0) & active
            adj = merged_adjacency(node_of[problem.src[keep]], node_of[problem.dst[keep]], nv + 1)
        # Fast path: one strongly-connected-components pass; every variable in the ground's
        # component is the common case (then nothing else is needed).
        _, comp = csgraph.connected_components(adj, directed=True, connection="strong")
        if np.all(comp[:nv] == comp[nv]):
            to_ground = from_ground = np.ones(nv, dtype=bool)
        else:
            to_ground = reachable(adj.T.tocsr(), nv)[:nv]
            from_ground = reachable(adj, nv)[:nv]
    else:
        to_ground, from_ground = reach
    bad_var = ~(to_ground & from_ground)
    if bad_var.any() and np.any(problem.degree[~problem.fixed] != 1.0):
        keep = problem.weight != 0 if active is None else (problem.weight != 0) & active
        if _balanced_costs_exist(problem, keep):
            bad_var[:] = False
    unit_var = np.where(problem.fixed, nv, problem.var)
    bad_unit = np.append(bad_var, False)[unit_var]
    to_g = np.append(to_ground, True)[unit_var]
    from_g = np.append(from_ground, True)[unit_var]
    return Diagnosis(
        dead_ends=np.flatnonzero(bad_unit & ~to_g & from_g),
        dead_starts=np.flatnonzero(bad_unit & to_g & ~from_g),
        closed=np.flatnonzero(bad_unit & ~to_g & ~from_g),
    )


def _reach_through(W, reached_in, reached_out, forward: bool, nonzero=None):
    """The units on the far side of a block that a nonzero entry joins to ``reached`` ones.

    Forward: the rows with a nonzero entry in a reached column; backward: the columns with a
    nonzero entry in a reached row. When every unit on the near side is reached (the common
    case) that is just "the row (column) has a nonzero", one pass over the block, whose
    ``(rows, cols)`` answer ``nonzero()`` may hold from the other direction's visit.
    """
    xp = module_of(W)
    near = reached_in if forward else reached_out
    if near.all():
        return (nonzero_rows_cols(W) if nonzero is None else nonzero())[0 if forward else 1]
    n_out, n_in = W.shape
    step = max(1, _CHUNK // max(n_in, 1))
    v = xp.asarray(near, dtype=np.float64)
    if forward:
        out = np.zeros(n_out, dtype=bool)
        for r in range(0, n_out, step):
            out[r:r + step] = to_host((xp.abs(W[r:r + step]) @ v) > 0)
        return out
    acc = xp.zeros(n_in)
    for r in range(0, n_out, step):
        acc += v[r:r + step] @ xp.abs(W[r:r + step])
    return to_host(acc > 0)


def _take(state: np.ndarray, units: np.ndarray) -> np.ndarray:
    return state[units].astype(np.float64)


def _or_at(state: np.ndarray, units: np.ndarray, sums) -> np.ndarray:
    out = state.copy()
    out[units] |= np.asarray(sums) > 0
    return out


def _abs_product(W: np.ndarray, v: np.ndarray, transpose: bool) -> np.ndarray:
    return v @ np.abs(W) if transpose else np.abs(W) @ v


class _Visit:
    """One block step of a reachability visit: ``state[dst] |= (|W| v > 0)`` with ``v = state[src]``
    (``v |W|`` when ``transpose``: the backward visit)."""

    def __init__(self, problem: Problem):
        self._nonzero: dict = {}  # id(W) -> its nonzero rows and columns, for this visit only

    def start(self, state: np.ndarray):
        return state

    def step(self, state, W, src, dst, transpose: bool):
        near = state[src]

        def nonzero():
            if id(W) not in self._nonzero:
                self._nonzero[id(W)] = nonzero_rows_cols(W)
            return self._nonzero[id(W)]

        state[dst] |= (_reach_through(W, None, near, False, nonzero) if transpose
                       else _reach_through(W, near, None, True, nonzero))
        return state


class _LazyVisit(_Visit):
    """The same steps as one Dask graph: mat-vecs on the chunks, the bookkeeping in small tasks."""

    def __init__(self, problem: Problem):
        import dask

        self.delayed, self.da = dask.delayed, lazy_module()

    def start(self, state: np.ndarray):
        return self.delayed(state.copy())

    def step(self, state, W, src, dst, transpose: bool):
        v = self.delayed(_take)(state, src)
        if is_lazy(W):
            sums = ChunkGrid(self.da.absolute(W)).product(v, transpose)
        else:
            sums = self.delayed(_abs_product)(W, v, transpose)
        return self.delayed(_or_at)(state, dst, sums)


def _dense_reach(problem: Problem):
    """Reachability to and from the ground on dense blocks without ties, or ``None``.

    Blocks are visited in topological order of their unit groups (a chain: layer by layer),
    so one forward and one backward visit reach the fixed point; a block graph with a cycle
    (or ties, or edge lists) returns ``None`` and the caller runs the per-edge search.
    """
    if not problem.dense or (problem.n_vars and np.any(problem.var_size != 1)):
        return None
    blocks = problem.blocks
    first = np.array([int(b.out_units.min()) if b.out_units.size else 0 for b in blocks])
    order = np.argsort(first, kind="stable")
    # Topological: every block's inputs come from units that are inputs or outputs of blocks before it.
    made = problem.fixed.copy()
    for k in order:
        b = blocks[k]
        if not made[b.in_units].all():
            return None
        made[b.out_units] = True
    visit = _LazyVisit(problem) if any(is_lazy(b.weight) for b in blocks) else _Visit(problem)
    from_ground, to_ground = visit.start(problem.fixed.copy()), visit.start(problem.fixed.copy())
    for k in order:
        b = blocks[k]
        from_ground = visit.step(from_ground, b.weight, b.in_units, b.out_units, False)
    for k in order[::-1]:
        b = blocks[k]
        to_ground = visit.step(to_ground, b.weight, b.out_units, b.in_units, True)
    from_ground, to_ground = compute(from_ground, to_ground)  # Dask: both visits in one round trip
    nv = problem.n_vars
    free = np.flatnonzero(~problem.fixed)
    out = []
    for seen in (to_ground, from_ground):
        per_var = np.ones(nv, dtype=bool)
        per_var[problem.var[free]] = seen[free]
        out.append(per_var)
    return out[0], out[1]


def _balanced_costs_exist(problem: Problem, keep: np.ndarray) -> bool:
    from scipy.optimize import linprog

    g = problem.G[np.flatnonzero(keep)]
    res = linprog(np.zeros(g.shape[0]), A_eq=g.T.tocsr(), b_eq=np.zeros(g.shape[1]),
                  bounds=(1.0, None), method="highs")
    return res.status == 0


def ensure_finite_optimum(problem: Problem, unreachable: str = "raise", active: np.ndarray | None = None) -> Problem:
    """Return a problem in which every free unit has a finite optimum.

    ``unreachable="raise"`` raises :class:`NoFiniteOptimumError` naming the units;
    ``"fix"`` keeps them at scale 1; ``"prune"`` also sets their weights to 0, which is the
    infimum of the cost and leaves the network function unchanged (such units never influence
    an output: what they send reaches no output, or what they get is always 0).
    """
    check_choice(unreachable, "unreachable", ("raise", "fix", "prune"))
    diag = diagnose(problem, active)
    if diag.ok:
        return problem
    units = diag.units
    if unreachable == "raise":
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
            units=[problem.nodes[k] for k in units],
        )
    if unreachable == "prune":
        touched = np.isin(problem.src, units) | np.isin(problem.dst, units)
        problem = problem.with_weights(np.where(touched, 0.0, problem.weight))
    return problem.with_fixed(units)

