"""The sparse linear manifold of self-consistent ``L`` (Proposition 9.4, Remark 9.6).

The paper's variables are ``L_ij = log(Λ_i / Λ_j^{c_j})``, one per edge ``j -> i`` (eq. 9.6 and
Section 6 for BiPU degrees ``c_j``). In potentials ``u = log Λ`` per free variable this is
``L = G u`` (docs/design.md §1), so the self-consistent ``L`` (Definition 9.2) are ``range(G)``, the
null space of any matrix ``C`` whose rows span the left null space of ``G``.

Construction. Merge every fixed unit into one *ground* node and every tie group into one node
(Remark 9.6), and take a spanning tree of the undirected merged multigraph rooted at the ground,
breadth first so that its paths are short. Along a tree edge ``t`` from parent ``q`` to child ``k``
the relation ``L_t = u_i - c_j u_j`` gives ``u_k`` from ``u_q`` (the propagation of the proof of
Prop. 9.4): ``u_k = L_t + c_q u_q`` when ``t`` enters ``k`` and ``u_k = (u_q - L_t) / c_k`` when
it leaves ``k``. Hence ``u = P L`` with a sparse ``P`` whose row ``k`` holds, on the tree path
from the ground to ``k``, products of degrees. Each non-tree edge ``e`` gives one constraint
``L_e - (G P L)_e = 0``: the rows of ``C = (I - G P)[non-tree]``. With every degree 1 the shared
part of the two tree paths cancels exactly and the row is the signed fundamental cycle through
``e``: in the merged graph an input -> output path is a cycle, so these are the paper's
"sum of L along every input -> output path and every directed cycle is 0". ``C`` has
``m - n_vars`` independent rows and ``C G = 0``.

Edges inside one merged node (self-loops, edges within a tie group, edges between fixed units)
are never tree edges: their row is ``L_e - (1 - c) u_k``; for ``c = 1`` simply ``L_e = 0``.

Zero-weight edges play no role in the cost (Remark 5.5), but they keep a column: ``L`` has one
entry per edge of the problem, in its edge order, and every ``L`` on the manifold satisfies
``L = G u`` on them too. The tree uses non-zero edges wherever it can, so the rows of non-zero
edges only involve non-zero edges whenever those alone connect every unit to the ground.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .errors import NetworkError, name_some
from .model import Problem, as_problem

__all__ = ["Manifold", "manifold"]


@dataclass(frozen=True, eq=False)
class Manifold:
    """The self-consistent ``L`` of a network: ``{L = G u} = {L : C L = 0}`` (Prop. 9.4).

    Attributes
    ----------
    problem : Problem
        The compiled network.
    constraints : scipy.sparse.csr_matrix, shape (m - n_vars, m)
        ``C``: one row per non-tree edge of the merged graph (a fundamental cycle for BiLU units,
        with products of degrees for BiPU units); columns follow :attr:`edges`.
    tree : ndarray of bool, shape (m,)
        Which edges form the spanning tree rooted at the ground.
    potential_map : scipy.sparse.csr_matrix, shape (n_vars, m)
        ``P`` with ``u = P L`` for self-consistent ``L`` (entries on tree edges only).
    """

    problem: Problem
    constraints: sp.csr_matrix
    tree: np.ndarray
    potential_map: sp.csr_matrix

    @cached_property
    def edges(self) -> list:
        """``(j, i)`` labels of the edges, in the column order of ``C``."""
        nodes, pb = self.problem.nodes, self.problem
        return [(nodes[j], nodes[i]) for j, i in zip(pb.src.tolist(), pb.dst.tolist())]

    @property
    def G(self) -> sp.csr_matrix:
        """The edge-by-variable matrix with ``L = G u`` (``problem.G``)."""
        return self.problem.G

    @property
    def n_constraints(self) -> int:
        return self.constraints.shape[0]

    # ------------------------------------------------------------------ into L
    def from_potentials(self, u: np.ndarray) -> np.ndarray:
        """``L = G u`` for potentials ``u = log Λ`` per free variable."""
        u = np.asarray(u, dtype=np.float64).ravel()
        if u.size != self.problem.n_vars:
            raise NetworkError(
                f"expected {self.problem.n_vars} potentials (one per free variable), got {u.size}"
            )
        return self.G @ u

    def from_scales(self, scales: Mapping | np.ndarray) -> np.ndarray:
        """``L_ij = log Λ_i - c_j log Λ_j`` from scales per unit.

        ``scales`` maps unit labels to ``Λ > 0`` (missing units count as 1), or is an array in
        the problem's node order. Fixed units must have scale 1 and tied units equal scales.
        """
        pb = self.problem
        if isinstance(scales, Mapping):
            lam = np.ones(pb.n_nodes)
            index = pb.node_index
            unknown = [k for k in scales if k not in index]
            if unknown:
                raise NetworkError(f"unit(s) {name_some(unknown)} are not in the network")
            for label, value in scales.items():
                lam[index[label]] = value
        else:
            lam = np.array(scales, dtype=np.float64).ravel()
            if lam.size != pb.n_nodes:
                raise NetworkError(f"expected {pb.n_nodes} scales (one per unit), got {lam.size}")
        bad = np.flatnonzero(~(np.isfinite(lam) & (lam > 0)))
        if bad.size:
            labels = name_some([pb.nodes[k] for k in bad])
            raise NetworkError(f"the scale of unit(s) {labels} must be finite and > 0")
        node_u = np.log(lam)
        bad = np.flatnonzero(pb.fixed & (np.abs(node_u) > 1e-12))
        if bad.size:
            raise NetworkError(
                f"unit(s) {name_some([pb.nodes[k] for k in bad])} are fixed (visible, bias or"
                " non-homogeneous): their scale must be 1"
            )
        u = pb.variable_potentials(node_u)
        spread = np.abs(node_u - u[np.maximum(pb.var, 0)])
        bad = np.flatnonzero(~pb.fixed & (spread > 1e-12 * (1 + np.abs(node_u))))
        if bad.size:
            raise NetworkError(
                f"tied unit(s) {name_some([pb.nodes[k] for k in bad])} have scales that differ from"
                " their tie group's: give every unit of a group the same scale"
            )
        return self.from_potentials(u)

    # ------------------------------------------------------------------ out of L
    def residual(self, L: np.ndarray) -> np.ndarray:
        """``C L``: zero exactly when ``L`` is self-consistent."""
        return self.constraints @ self._checked(L)

    def is_self_consistent(self, L: np.ndarray, tol: float = 1e-9) -> bool:
        """Whether ``|(C L)_r| <= tol · (1 + (|C| |L|)_r)`` for every constraint row ``r``."""
        return self._worst_row(self._checked(L), tol)[0] < 0

    def to_potentials(self, L: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        """Potentials ``u = log Λ`` per free variable with ``G u = L`` (proof of Prop. 9.4).

        Propagates from the ground along the spanning tree (``u = P L``) after checking that
        ``L`` is self-consistent to ``tol`` (see :meth:`is_self_consistent`).

        Raises
        ------
        NetworkError
            If ``L`` is not self-consistent; the message names the worst cycle.
        """
        L = self._checked(L)
        row, value = self._worst_row(L, tol)
        if row >= 0:
            self._raise_inconsistent(row, value)
        return self.potential_map @ L

    def to_scales(self, L: np.ndarray, tol: float = 1e-9) -> dict:
        """Scales ``Λ`` of every unit (1 for fixed units) from a self-consistent ``L``.

        Examples
        --------
        >>> import networkx as nx
        >>> from balgraph.manifold import manifold
        >>> g = nx.DiGraph([("x", "h", {"weight": 1.0}), ("h", "y", {"weight": 1.0})])
        >>> M = manifold(g)
        >>> M.constraints.toarray().tolist()      # L_hx + L_yh = 0: the input -> output path
        [[1.0, 1.0]]
        >>> round(M.to_scales([0.5, -0.5])["h"], 6)  # Λ_h = e^0.5
        1.648721
        """
        u = self.to_potentials(L, tol)
        return dict(zip(self.problem.nodes, np.exp(self.problem.node_potentials(u)).tolist()))

    # ------------------------------------------------------------------ helpers
    def _checked(self, L) -> np.ndarray:
        L = np.asarray(L, dtype=np.float64).ravel()
        if L.size != self.problem.n_edges:
            raise NetworkError(f"expected one L per edge ({self.problem.n_edges}), got {L.size}")
        if not np.all(np.isfinite(L)):
            e = int(np.flatnonzero(~np.isfinite(L))[0])
            raise NetworkError(f"L is not finite on edge {self.edges[e]!r}: give finite log-scales")
        return L

    def _worst_row(self, L: np.ndarray, tol: float) -> tuple[int, float]:
        """Index and value of the most violated row, or ``(-1, 0)`` if all meet ``tol``."""
        if self.n_constraints == 0:
            return -1, 0.0
        res = self.constraints @ L
        scale = 1.0 + abs(self.constraints) @ np.abs(L)
        excess = np.abs(res) / scale
        r = int(np.argmax(excess))
        return (r, float(res[r])) if excess[r] > tol else (-1, 0.0)

    def _raise_inconsistent(self, row: int, value: float):
        C = self.constraints
        cols = C.indices[C.indptr[row]:C.indptr[row + 1]]
        coefs = C.data[C.indptr[row]:C.indptr[row + 1]]
        lead = int(np.flatnonzero(~self.tree)[row])
        terms = [f"{c:+.3g}·L{self.edges[e]!r}" for e, c in zip(cols.tolist(), coefs.tolist())]
        raise NetworkError(
            f"L is not self-consistent (Prop. 9.4): around the cycle closed by edge"
            f" {self.edges[lead]!r}, {name_some(terms, limit=8)} sums to {value:.3g} instead of 0."
            " Build L with from_potentials or from_scales, or take the potentials of the nearest"
            " consistent L by least squares on G."
        )


def manifold(network, weights="weight") -> Manifold:
    """The linear manifold of self-consistent ``L`` of a network (Prop. 9.4, Remark 9.6).

    Parameters
    ----------
    network : networkx.DiGraph or Problem
        The network; see :func:`balgraph.solve`.
    weights : str, mapping or callable
        Edge weights (only which ones are zero matters: the tree avoids zero edges).

    Returns
    -------
    Manifold

    Raises
    ------
    NetworkError
        If some free unit is connected to no fixed unit, even through zero edges: its scale
        is then not determined by ``L`` (Definition 9.2 asks for a unique ``Λ``).

    Examples
    --------
    Figure 3 of the paper with the path closed into a cycle by an edge back to its first unit:

    >>> import networkx as nx
    >>> from balgraph.manifold import manifold
    >>> g = nx.DiGraph()
    >>> nx.add_path(g, ["x", 1, 2, 3, 4, 5, "y"], weight=1.0)
    >>> g.add_edge(5, 1, weight=1.0)
    >>> manifold(g).n_constraints     # the input -> output path and the directed cycle
    2
    """
    return _build(as_problem(network, weights))


def _build(pb: Problem) -> Manifold:
    nv, m = pb.n_vars, pb.n_edges
    ground = nv
    node_of = np.where(pb.fixed, ground, pb.var)
    a, b = node_of[pb.src], node_of[pb.dst]
    parent, tree_edge, depth = _bfs_tree(pb, a, b)
    c_src = pb.degree[pb.src]

    # P row of each node, built one tree level at a time from the level above.
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(depth.max(initial=0) + 2))
    local = np.zeros(nv + 1, dtype=np.int64)
    prev = sp.csr_matrix((1, m))
    blocks, block_nodes = [], []
    for d in range(1, bounds.size - 1):
        kids = order[bounds[d]:bounds[d + 1]]
        t = tree_edge[kids]
        enters = b[t] == kids
        c = c_src[t]
        alpha = np.where(enters, c, 1.0 / c)
        beta = np.where(enters, 1.0, -1.0 / c)
        step = sp.csr_matrix((beta, (np.arange(kids.size), t)), shape=(kids.size, m))
        prev = (sp.diags(alpha) @ prev[local[parent[kids]]] + step).tocsr()
        local[kids] = np.arange(kids.size)
        blocks.append(prev)
        block_nodes.append(kids)
    if blocks:
        stacked = sp.vstack(blocks, format="csr")
        rows = np.empty(nv, dtype=np.int64)
        rows[np.concatenate(block_nodes)] = np.arange(nv)
        P = stacked[rows]
    else:
        P = sp.csr_matrix((nv, m))
    P.sort_indices()

    is_tree = np.zeros(m, dtype=bool)
    is_tree[tree_edge[np.arange(nv)]] = True
    nontree = np.flatnonzero(~is_tree)
    C = (sp.identity(m, format="csr")[nontree] - pb.G[nontree] @ P).tocsr()
    C.eliminate_zeros()
    C.sort_indices()
    is_tree.setflags(write=False)
    return Manifold(pb, C, is_tree, P)


def _bfs_tree(pb: Problem, a: np.ndarray, b: np.ndarray):
    """Parent, tree edge and depth of every merged node in a shortest-path tree from the ground.

    Non-zero edges cost 1 and zero edges more than any path of non-zero edges, so the tree uses
    a zero edge only where a unit has no other way to the ground.
    """
    nv = pb.n_vars
    ground = nv
    cand = np.flatnonzero(a != b)
    lo, hi = np.minimum(a[cand], b[cand]), np.maximum(a[cand], b[cand])
    cost = np.where(pb.weight[cand] != 0, 1.0, nv + 2.0)
    key = lo * (nv + 1) + hi
    pick = np.lexsort((cost, key))
    keys, first = np.unique(key[pick], return_index=True)
    chosen = cand[pick[first]]
    w = cost[pick[first]]
    lo, hi = lo[pick[first]], hi[pick[first]]
    graph = sp.csr_matrix((w, (lo, hi)), shape=(nv + 1, nv + 1))
    _, pred = csgraph.dijkstra(graph, directed=False, indices=ground, return_predecessors=True)
    unreached = np.flatnonzero(pred[:nv] < 0)
    if unreached.size:
        units = [pb.nodes[k] for k in np.flatnonzero(np.isin(pb.var, unreached))]
        raise NetworkError(
            f"unit(s) {name_some(units)} are connected to no input, output, bias or fixed unit:"
            " their scales are not determined by L. Connect them or remove them."
        )
    kids = np.arange(nv)
    parent = np.append(pred[:nv], -1).astype(np.int64)
    pair = np.minimum(parent[kids], kids) * (nv + 1) + np.maximum(parent[kids], kids)
    tree_edge = np.full(nv + 1, -1, dtype=np.int64)
    tree_edge[kids] = chosen[np.searchsorted(keys, pair)]
    tree = sp.csr_matrix((np.ones(nv), (parent[kids], kids)), shape=(nv + 1, nv + 1))
    depth = csgraph.dijkstra(tree, directed=True, indices=ground, unweighted=True)
    return parent, tree_edge, depth.astype(np.int64)
