"""Graph utilities, written once: adjacency, depth levels, colourings, reachability.

Vectorized over edges (scipy.sparse); no Python loop per node or edge. Units that share no
edge can be balanced at once (Prop. 4.4): the depth levels of a DAG and the classes of a
colouring are such independent sets, and depth levels also give Newton's coarse space
(one scale per level, docs/design.md §2).

Examples
--------
>>> adj = merged_adjacency(np.array([0, 1, 2]), np.array([1, 2, 3]), 4)
>>> longest_path_levels(adj).tolist()
[0, 1, 2, 3]
>>> colouring(symmetric(adj), seed=0).tolist()
[0, 1, 0, 1]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

__all__ = ["grouped_pairs", "merged_adjacency", "symmetric", "longest_path_levels", "levels", "colouring",
           "classes_of", "reachable"]


def grouped_pairs(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR structure of the distinct ``(row, col)`` pairs: ``(indptr, indices, entry)`` with
    ``entry[e]`` the position of pair ``e`` in ``indices`` (sorted rows, sorted columns).

    One sort of the keys ``row · n + col``; values summed per entry later cost one
    ``bincount(entry, values)``, so a matrix whose values change keeps its structure.

    >>> indptr, indices, entry = grouped_pairs(np.array([1, 0, 1]), np.array([0, 2, 0]), 3)
    >>> indptr.tolist(), indices.tolist(), entry.tolist()
    ([0, 1, 2, 2], [2, 0], [1, 0, 1])
    """
    key = rows.astype(np.int64) * n + cols
    order = np.argsort(key)
    sorted_key = key[order]
    new = np.ones(sorted_key.size, dtype=bool)
    new[1:] = sorted_key[1:] != sorted_key[:-1]
    entry = np.empty(key.size, dtype=np.int64)
    entry[order] = np.cumsum(new) - 1
    uniq = sorted_key[new]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(uniq // n, minlength=n))]).astype(np.int64)
    return indptr, (uniq % n).astype(np.int64), entry


def merged_adjacency(src: np.ndarray, dst: np.ndarray, n: int) -> sp.csr_matrix:
    """0/1 adjacency ``adj[a, b] = 1`` for an edge ``a -> b`` (duplicates merged, self-loops dropped)."""
    keep = src != dst
    indptr, indices, _ = grouped_pairs(src[keep], dst[keep], n)
    return sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n, n))


def symmetric(adj: sp.csr_matrix) -> sp.csr_matrix:
    """The undirected 0/1 version of ``adj`` (conflicts between units joined either way)."""
    sym = (adj + adj.T).tocsr()
    sym.data[:] = 1.0
    return sym


def longest_path_levels(adj: sp.csr_matrix, skip: int | None = None) -> np.ndarray | None:
    """Longest-path depth of every node from the nodes without predecessors, or ``None`` on a cycle.

    Kahn's algorithm by rounds, vectorized: each round places every node whose predecessors
    are all placed. Each level is an independent set (edges only go to deeper levels). The
    node ``skip`` (the ground), if given, is left out with its edges (its level is 0).
    """
    n = adj.shape[0]
    indeg = np.bincount(adj.indices, minlength=n)
    level = np.full(n, -1, dtype=np.int64)
    if skip is not None:
        indeg -= np.bincount(adj.indices[adj.indptr[skip]:adj.indptr[skip + 1]], minlength=n)
        level[skip] = 0
        indeg[skip] = -1
    frontier = np.flatnonzero(indeg == 0)
    depth = 0
    while frontier.size:
        level[frontier] = depth
        starts, stops = adj.indptr[frontier], adj.indptr[frontier + 1]
        lens = stops - starts
        hit = adj.indices[np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())]
        if skip is not None:
            hit = hit[hit != skip]
        indeg = indeg - np.bincount(hit, minlength=n)
        frontier = np.unique(hit[indeg[hit] == 0])
        depth += 1
    return level if np.all(level >= 0) else None


def levels(adj: sp.csr_matrix, ground: int | None = None) -> tuple[np.ndarray, bool]:
    """Depth levels of the nodes other than ``ground`` and whether they form a DAG.

    ``adj`` includes the ``ground`` node (every fixed unit merged) when given. On a DAG the
    level is the longest path (ground left out); with cycles, the breadth-first distance from
    the ground (an ordering, not an independent-set partition). Levels are numbered 0, 1, ...
    """
    n = adj.shape[0]
    lev = longest_path_levels(adj, skip=ground)
    keep = np.ones(n, dtype=bool)
    if ground is not None:
        keep[ground] = False
    if lev is not None:
        return lev[keep], True
    if ground is None:
        dist = np.zeros(n)
    else:
        dist = csgraph.shortest_path(adj, indices=ground, unweighted=True, directed=True)
    dist = np.where(np.isfinite(dist), dist, 0.0)[keep]
    return np.unique(dist.astype(np.int64), return_inverse=True)[1].astype(np.int64), False


def colouring(sym: sp.csr_matrix, seed: int | None = 0, priority: np.ndarray | None = None) -> np.ndarray:
    """Colour classes (independent sets) of a symmetric 0/1 adjacency, greedy by maximal sets.

    Each colour is a maximal independent set of the still uncoloured nodes, found by Luby
    rounds: every candidate whose random priority beats all its candidate neighbours joins,
    then it and its neighbours leave the candidates. One vectorized pass over the edges per
    round; the colour count stays near that of a sequential greedy colouring. ``priority``
    replaces the random priorities: decreasing priorities along a chain give the sequential
    greedy colouring in that order (0, 1, 0, 1, ... for the layers of an MLP).
    """
    n = sym.shape[0]
    prio = np.random.default_rng(seed).random(n) if priority is None else np.asarray(priority, dtype=np.float64)
    colour = np.full(n, -1, dtype=np.int64)
    indptr, nbr = sym.indptr, sym.indices
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    c = 0
    while np.any(colour < 0):
        active = colour < 0
        while active.any():
            vals = np.where(active[nbr], prio[nbr], -np.inf)
            best = np.full(n, -np.inf)
            if nonempty.size:
                best[nonempty] = np.maximum.reduceat(vals, indptr[nonempty])
            win = active & (prio > best)
            colour[win] = c
            active &= ~win & ~((sym @ win.astype(np.float64)) > 0)
        c += 1
    return colour


def classes_of(labels: np.ndarray) -> list[np.ndarray]:
    """The index sets of equal labels, in increasing label order (empty labels dropped).

    >>> [c.tolist() for c in classes_of(np.array([1, 0, 1, 2]))]
    [[1], [0, 2], [3]]
    """
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return [c for c in np.split(order, cuts) if c.size]


def reachable(adj: sp.csr_matrix, start: int) -> np.ndarray:
    """Boolean mask of the nodes reachable from ``start`` along ``adj`` (``start`` included)."""
    order = csgraph.breadth_first_order(adj, start, directed=True, return_predecessors=False)
    seen = np.zeros(adj.shape[0], dtype=bool)
    seen[order] = True
    return seen
