"""The compiled form of a network: frozen arrays that every solver works on.

A :class:`Problem` is what lies past the one boundary where a networkx graph (or a set of edge
arrays, or a list of layer matrices) becomes arrays. Nothing downstream touches networkx.

Notation (design.md §1). Nodes ``0..n-1``; edges ``e = j -> i`` with ``src[e] = j`` and
``dst[e] = i``. Free (scalable) nodes are grouped into *variables* (a tie group is one variable;
an untied free node is its own). With potentials ``u`` per variable (``u = log Λ``), edge ``e``
becomes ``w_e · exp((G u)_e)`` where row ``e`` of the sparse matrix ``G`` holds ``+1`` at the
variable of ``i`` and ``-c_j`` at the variable of ``j`` (nothing for fixed nodes; entries add
up for self-loops and edges inside a tie group). The paper's ``L_ij`` (Section 9) are ``G u``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from .errors import NetworkError, name_some

__all__ = ["Problem", "Layer"]

ROLES = ("input", "output", "hidden", "bias")


@dataclass(frozen=True)
class Layer:
    """A dense block of edges: unit ``out_start + r`` receives from ``in_start + s``.

    Its ``n_out * n_in`` edges are stored contiguously from ``edge_start`` in row-major order,
    so ``problem.weight[edge_start:edge_start + n_out * n_in].reshape(n_out, n_in)`` is the
    layer's matrix ``W`` (``y = W x`` convention).
    """

    in_start: int
    n_in: int
    out_start: int
    n_out: int
    edge_start: int

    @property
    def edge_slice(self) -> slice:
        return slice(self.edge_start, self.edge_start + self.n_in * self.n_out)


@dataclass(frozen=True, eq=False)
class Problem:
    """A network compiled to arrays.

    Attributes
    ----------
    nodes : tuple
        Node labels; node ``k`` of the arrays is ``nodes[k]``.
    src, dst : ndarray of int64, shape (m,)
        Edge ``e`` goes from unit ``src[e]`` into unit ``dst[e]``.
    weight : ndarray of float64, shape (m,)
        The signed weights (zeros allowed: they stay zero and play no role, Remark 5.5).
    fixed : ndarray of bool, shape (n,)
        Units whose scale is 1 (visible units, bias units, non-homogeneous activations).
    degree : ndarray of float64, shape (n,)
        The homogeneity degree ``c`` of each unit (1 for BiLU and for fixed units).
    var : ndarray of int64, shape (n,)
        Variable index of each free unit (tied units share one), ``-1`` for fixed units.
    roles : tuple of str
        ``"input"``, ``"output"``, ``"hidden"`` or ``"bias"`` per node.
    layers : tuple of Layer
        Dense blocks of edges, when the problem was built from layer matrices (fast paths);
        empty otherwise.
    """

    nodes: tuple
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    fixed: np.ndarray
    degree: np.ndarray
    var: np.ndarray
    roles: tuple
    layers: tuple = field(default=())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        src: Sequence[int] | np.ndarray,
        dst: Sequence[int] | np.ndarray,
        weight: Sequence[float] | np.ndarray,
        *,
        nodes: Sequence[Hashable] | None = None,
        n_nodes: int | None = None,
        roles: Sequence[str] | None = None,
        fixed: Sequence[bool] | np.ndarray | None = None,
        degree: Sequence[float] | np.ndarray | None = None,
        tie: Sequence[Hashable | None] | None = None,
        layers: Sequence[Layer] = (),
    ) -> Problem:
        """Build a problem from edge arrays, without networkx.

        Parameters
        ----------
        src, dst : array_like of int
            Edge ``e`` goes from unit ``src[e]`` into unit ``dst[e]`` (``j -> i``).
        weight : array_like of float
            Finite weights; zeros are allowed.
        nodes : sequence, optional
            Labels of the units (default ``range(n_nodes)``).
        n_nodes : int, optional
            Number of units (default: inferred from ``nodes`` or the largest index + 1).
        roles : sequence of str, optional
            Per-unit role; default: in-degree 0 -> ``"input"``, out-degree 0 -> ``"output"``,
            otherwise ``"hidden"`` (edges of weight 0 count here).
        fixed : sequence of bool, optional
            Hidden units that keep scale 1 (non-homogeneous activation). Visible and bias
            units are always fixed.
        degree : sequence of float, optional
            BiPU degree ``c > 0`` per unit (default 1).
        tie : sequence, optional
            Tie label per unit (``None`` for untied); free units with equal labels share a scale.

        Examples
        --------
        >>> import balgraph
        >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
        >>> pb.n_vars, pb.roles
        (1, ('input', 'hidden', 'output'))
        """
        src = np.asarray(src, dtype=np.int64).ravel()
        dst = np.asarray(dst, dtype=np.int64).ravel()
        weight = _checked_weights(weight, src, dst, nodes)
        if src.shape != dst.shape or src.shape != weight.shape:
            raise NetworkError(
                f"src, dst and weight must have the same length, got {src.size}, {dst.size}, {weight.size}"
            )
        if nodes is None:
            if n_nodes is None:
                n_nodes = int(max(src.max(initial=-1), dst.max(initial=-1))) + 1
            nodes = tuple(range(n_nodes))
        nodes = tuple(nodes)
        n = len(nodes)
        if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
            raise NetworkError(f"edge endpoints must be node indices in [0, {n}); fix src/dst")
        if roles is None:
            indeg = np.bincount(dst, minlength=n)
            outdeg = np.bincount(src, minlength=n)
            roles = tuple(
                np.where(indeg == 0, "input", np.where(outdeg == 0, "output", "hidden")).tolist()
            )
        roles = tuple(roles)
        bad = [nodes[k] for k, r in enumerate(roles) if r not in ROLES]
        if bad:
            raise NetworkError(
                f"unknown role for unit(s) {name_some(bad)}: use one of {', '.join(ROLES)}"
            )
        deg = np.ones(n) if degree is None else np.asarray(degree, dtype=np.float64).ravel()
        bad = [nodes[k] for k in np.flatnonzero(~(np.isfinite(deg) & (deg > 0)))]
        if bad:
            raise NetworkError(f"the degree of unit(s) {name_some(bad)} must be a finite number > 0")
        is_fixed = np.array([r != "hidden" for r in roles], dtype=bool)
        if fixed is not None:
            is_fixed |= np.asarray(fixed, dtype=bool).ravel()
        deg = np.where(is_fixed, 1.0, deg)
        var = _assign_variables(nodes, is_fixed, deg, tie)
        for a in (src, dst, weight, is_fixed, deg, var):
            a.setflags(write=False)
        return cls(nodes, src, dst, weight, is_fixed, deg, var, roles, tuple(layers))

    @classmethod
    def from_layers(cls, matrices, biases=None, **kwargs) -> Problem:
        """Build an MLP problem from layer matrices; see :func:`balgraph.layers.problem_from_layers`."""
        from .layers import problem_from_layers

        return problem_from_layers(matrices, biases, **kwargs)

    # ------------------------------------------------------------------ sizes and maps
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_edges(self) -> int:
        return int(self.src.size)

    @cached_property
    def n_vars(self) -> int:
        return int(self.var.max(initial=-1)) + 1

    @cached_property
    def node_index(self) -> dict:
        """Map from node label to array index."""
        return {label: k for k, label in enumerate(self.nodes)}

    def edge_label(self, e: int) -> tuple:
        """The ``(j, i)`` label pair of compiled edge ``e``."""
        return (self.nodes[self.src[e]], self.nodes[self.dst[e]])

    @cached_property
    def is_layered(self) -> bool:
        """Whether every edge lies in exactly one dense :class:`Layer` block."""
        spans = sorted((L.edge_start, L.n_in * L.n_out) for L in self.layers)
        ends = np.cumsum([n for _, n in spans])
        return bool(spans) and [s for s, _ in spans] == [0, *ends[:-1].tolist()] and int(
            ends[-1]
        ) == self.n_edges

    @cached_property
    def var_degree(self) -> np.ndarray:
        """Degree ``c`` of each variable (uniform within a tie group)."""
        out = np.ones(self.n_vars)
        free = ~self.fixed
        out[self.var[free]] = self.degree[free]
        return out

    @cached_property
    def var_size(self) -> np.ndarray:
        """Number of units in each variable (1 unless tied)."""
        return np.bincount(self.var[~self.fixed], minlength=self.n_vars)

    @cached_property
    def log_abs_weight(self) -> np.ndarray:
        """``log |w_e|`` with ``-inf`` for zero weights."""
        with np.errstate(divide="ignore"):
            out = np.log(np.abs(self.weight))
        out.setflags(write=False)
        return out

    @cached_property
    def G(self) -> sp.csr_matrix:
        """The sparse edge-by-variable matrix ``G`` (design.md §1), shape ``(m, n_vars)``."""
        m = self.n_edges
        vi, vj = self.var[self.dst], self.var[self.src]
        rows = np.concatenate([np.flatnonzero(vi >= 0), np.flatnonzero(vj >= 0)])
        cols = np.concatenate([vi[vi >= 0], vj[vj >= 0]])
        vals = np.concatenate([np.ones(int((vi >= 0).sum())), -self.degree[self.src][vj >= 0]])
        g = sp.csr_matrix((vals, (rows, cols)), shape=(m, self.n_vars))
        g.sum_duplicates()
        g.eliminate_zeros()
        return g

    # ------------------------------------------------------------------ potentials
    def node_potentials(self, u: np.ndarray) -> np.ndarray:
        """Per-node potentials ``log Λ`` from per-variable ``u`` (0 on fixed nodes)."""
        u = np.asarray(u, dtype=np.float64)
        return np.where(self.fixed, 0.0, u[np.maximum(self.var, 0)] if u.size else 0.0)

    def variable_potentials(self, node_u: np.ndarray) -> np.ndarray:
        """Per-variable potentials from per-node ones (the mean over a tie group)."""
        node_u = np.asarray(node_u, dtype=np.float64)
        free = ~self.fixed
        sums = np.bincount(self.var[free], weights=node_u[free], minlength=self.n_vars)
        return sums / np.maximum(self.var_size, 1)

    def edge_log_scale(self, u: np.ndarray) -> np.ndarray:
        """``(G u)_e``: the log of the factor that scaling by ``exp(u)`` puts on each edge."""
        return self.G @ np.asarray(u, dtype=np.float64)

    def scaled_weights(self, u: np.ndarray) -> np.ndarray:
        """Weights after scaling every variable ``k`` by ``exp(u[k])``; zeros stay zero."""
        return self.weight * np.exp(self.edge_log_scale(u))

    def with_weights(self, weight: np.ndarray) -> Problem:
        """The same network with other weights (same nodes, edges, roles, ties)."""
        weight = _checked_weights(weight, self.src, self.dst, self.nodes)
        if weight.shape != self.weight.shape:
            raise NetworkError(f"expected {self.n_edges} weights, got {weight.size}")
        weight.setflags(write=False)
        return Problem(
            self.nodes, self.src, self.dst, weight, self.fixed, self.degree, self.var,
            self.roles, self.layers,
        )

    def with_fixed(self, units: np.ndarray) -> Problem:
        """The same network with the given unit indices made fixed (scale 1)."""
        fixed = self.fixed.copy()
        fixed[np.asarray(units, dtype=np.int64)] = True
        tie = _var_labels(self.var, fixed)
        deg = np.where(fixed, 1.0, self.degree)
        var = _assign_variables(self.nodes, fixed, deg, tie)
        for a in (fixed, deg, var):
            a.setflags(write=False)
        return Problem(
            self.nodes, self.src, self.dst, self.weight, fixed, deg, var, self.roles, self.layers
        )

    def __repr__(self) -> str:
        return (
            f"Problem({self.n_nodes} units, {self.n_edges} edges, {self.n_vars} free variables,"
            f" {len(self.layers)} dense layers)"
        )


def _checked_weights(weight, src, dst, nodes) -> np.ndarray:
    try:
        w = np.array(weight, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise NetworkError(f"weights must be real numbers: {exc}") from None
    bad = np.flatnonzero(~np.isfinite(w))
    if bad.size:
        label = lambda k: k if nodes is None else nodes[k]  # noqa: E731
        where = [(label(int(src[e])), label(int(dst[e]))) for e in bad[:10]]
        raise NetworkError(
            f"{bad.size} edge weight(s) are NaN or infinite, e.g. on edge(s) {name_some(where)}:"
            " replace them with finite numbers"
        )
    return w


def _var_labels(var: np.ndarray, fixed: np.ndarray) -> list:
    return [None if f else int(v) for v, f in zip(var.tolist(), fixed.tolist())]


def _assign_variables(nodes, fixed, degree, tie) -> np.ndarray:
    """Number the free units' variables: one per tie group, one per untied free unit."""
    n = len(nodes)
    var = np.full(n, -1, dtype=np.int64)
    free = np.flatnonzero(~fixed)
    if tie is None:
        var[free] = np.arange(free.size)
        return var
    tie = list(tie)
    groups: dict = {}
    for k in range(n):
        if tie[k] is not None:
            groups.setdefault(tie[k], []).append(k)
    for label, members in groups.items():
        kinds = {bool(fixed[k]) for k in members}
        if len(kinds) > 1:
            fixed_members = [nodes[k] for k in members if fixed[k]]
            raise NetworkError(
                f"tie group {label!r} mixes free units with fixed unit(s) {name_some(fixed_members)};"
                " tie only hidden units with a homogeneous activation"
            )
        degrees = {float(degree[k]) for k in members}
        if len(degrees) > 1:
            raise NetworkError(
                f"tie group {label!r} mixes degrees {sorted(degrees)} (units"
                f" {name_some([nodes[k] for k in members])}); tied units must share one degree"
            )
    next_var = 0
    seen: dict = {}
    for k in free.tolist():
        label = tie[k]
        if label is None:
            var[k] = next_var
            next_var += 1
        elif label in seen:
            var[k] = seen[label]
        else:
            seen[label] = var[k] = next_var
            next_var += 1
    return var
