"""Shared weights (Section 8.3): edges that are one parameter, balanced exactly.

Edges carrying the same value of an edge attribute (``share`` by default) are one parameter
``w``: they must hold equal weights, stay equal under the rescaling, and the parameter costs
``g(|w|)`` once. The paper notes that local balancing cannot keep them equal (balancing unit
``i`` moves ``w_ij`` and so ``w_kl``, which may unbalance ``k`` or ``l``); the global problem is
still convex. With ``t = G u`` (design.md §1) the admissible scalings are

    U = {u : (G u)_e = (G u)_f  for all e, f in one group}  =  {u = N z},

a linear subspace (``N`` a basis of the null space of the rows ``G_e − G_f``), and the cost,
written with per-edge coefficients ``1/k`` on a group of ``k`` edges (on ``U`` their ``k``
equal terms sum to the parameter's cost once), is ``R(N z) = Σ_e φ_e((G N z)_e)``: the same
kind of strictly convex function as eq. 9.6, in the variables ``z`` and the matrix ``G N``.
Newton's method on ``z`` (:func:`solve_shared`) finds the exact constrained minimum; its
stopping test is the relative gradient ``(P_k − N_k)/(P_k + N_k)`` of each basis direction.
At that minimum single units are in general *not* balanced (:func:`balgraph.imbalance` is not
0): balance holds for the admissible directions only. In the paper's manifold form (Prop. 9.4)
the constraints are extra rows ``L_e − L_f = 0`` next to ``C L = 0``
(:func:`share_constraints`).

A convolution written out unit by unit, with each kernel entry's edges in one group, has
``U`` = one scale per channel once the input units are fixed (each conv unit receives every
kernel entry from fixed or already collapsed units, with any padding), and its optimum equals
that of the channel graph with edge weights ``(Σ_kernel |K|^p)^{1/p}``
(:func:`balgraph.gallery_workloads.resnet_channels`). Counting a shared parameter once makes
padding irrelevant; counting every edge would weigh boundary positions differently.

``N`` comes from a pivoted QR factorization of the (dense) constraint rows, so that each
basis column moves one free variable with everything tied to it: this suits networks up to a
few thousand free variables (``max_vars``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import networkx as nx
import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from . import _hessian as hz
from ._logsum import VariableSides
from .errors import NetworkError, name_some
from .problem import Problem
from .regularizers import Lp, PowerSum, Regularizer
from .result import SolverOutput

__all__ = ["share_groups", "share_constraints", "shared_basis", "shared_regularizer", "solve_shared"]

MAX_VARS = 4000


def share_groups(
    network: nx.DiGraph | Problem, problem: Problem, share: str | Sequence[Hashable | None] | None
) -> np.ndarray | None:
    """Group index per edge (``-1`` for unshared edges), or None when nothing is shared.

    ``share`` is an edge-attribute name (networkx network) or one label per compiled edge
    (``None`` for unshared). Edges of a group must carry equal weights.

    Examples
    --------
    >>> import networkx as nx, balgraph
    >>> g = nx.DiGraph()
    >>> g.add_edge("x", "a", weight=2.0, share="k"); g.add_edge("x", "b", weight=2.0, share="k")
    >>> g.add_edge("a", "y", weight=1.0); g.add_edge("b", "y", weight=3.0)
    >>> share_groups(g, balgraph.compile_network(g), "share").tolist()
    [0, 0, -1, -1]
    """
    if share is None:
        return None
    if isinstance(share, str):
        if not isinstance(network, nx.DiGraph):
            return None
        nodes = problem.nodes
        labels = [
            network.edges[nodes[j], nodes[i]].get(share)
            for j, i in zip(problem.src.tolist(), problem.dst.tolist())
        ]
    else:
        labels = list(share)
        if len(labels) != problem.n_edges:
            raise NetworkError(f"share needs one label per edge ({problem.n_edges}), got {len(labels)}")
    ids: dict = {}
    groups = np.array([-1 if x is None else ids.setdefault(x, len(ids)) for x in labels], np.int64)
    if not ids:
        return None
    _check_equal(problem, groups, problem.weight, "weights", "give every edge of a shared"
                 " parameter the same weight")
    return groups


def _check_equal(problem: Problem, groups: np.ndarray, values: np.ndarray, what: str, fix: str):
    order = np.argsort(groups, kind="stable")
    g, v = groups[order], values[order]
    same = g[1:] == g[:-1]
    tol = 1e-12 * np.maximum(np.abs(v[1:]), np.abs(v[:-1]))
    bad = np.flatnonzero(same & (g[1:] >= 0) & (np.abs(v[1:] - v[:-1]) > tol))
    if bad.size:
        e, f = int(order[bad[0]]), int(order[bad[0] + 1])
        raise NetworkError(
            f"shared edges {problem.edge_label(e)!r} and {problem.edge_label(f)!r} carry different"
            f" {what} ({values[e]!r} and {values[f]!r}): {fix}"
        )


def _map_coefficients(reg: Regularizer, fn: Callable[[np.ndarray], np.ndarray], m: int) -> Regularizer:
    if not isinstance(reg, PowerSum) or reg.coefficient_specs():
        raise NetworkError(
            f"shared weights need a sum of powers with numeric coefficients (balgraph.Lp,"
            f" PowerSum, ElasticNet), not {reg!r}"
        )
    terms = {p: fn(np.broadcast_to(np.asarray(b, dtype=np.float64), (m,))) for p, b in reg.terms.items()}
    return Lp(reg.p, terms[reg.p]) if isinstance(reg, Lp) else PowerSum(terms)


def shared_regularizer(problem: Problem, reg: Regularizer, groups: np.ndarray) -> Regularizer:
    """``reg`` with coefficient ``b_e / k`` on each edge of a group of ``k``: one cost per parameter.

    The edges of a group must carry equal coefficients (one parameter has one cost).
    """
    m = problem.n_edges
    size = np.bincount(groups[groups >= 0], minlength=int(groups.max()) + 1)
    mult = np.where(groups >= 0, 1.0 / size[np.maximum(groups, 0)], 1.0)
    for p, b in reg.terms.items() if isinstance(reg, PowerSum) else ():
        if isinstance(b, np.ndarray) and b.ndim:
            _check_equal(problem, groups, b, f"coefficients of |w|^{p:g}", "a shared parameter"
                         " has one cost: give its edges equal coefficients")
    return _map_coefficients(reg, lambda b: b * mult, m)


def share_constraints(problem: Problem, groups: np.ndarray) -> sp.csr_matrix:
    """Rows ``L_f − L_e = 0`` (``e`` the first edge of its group, ``f`` each other one), shape ``(r, m)``.

    Together with the manifold's ``C L = 0`` (:func:`balgraph.manifold.manifold`) they describe
    the self-consistent ``L`` that keep shared weights equal.
    """
    order = np.argsort(groups, kind="stable")
    order = order[groups[order] >= 0]
    g = groups[order]
    first = order[np.searchsorted(g, g)]
    rest = order[first != order]
    first = first[first != order]
    r = rest.size
    return sp.csr_matrix(
        (np.concatenate([np.ones(r), -np.ones(r)]),
         (np.tile(np.arange(r), 2), np.concatenate([rest, first]))),
        shape=(r, problem.n_edges),
    )


def shared_basis(problem: Problem, groups: np.ndarray, max_vars: int | None = MAX_VARS) -> np.ndarray:
    """A basis ``N`` (``n_vars × d``) of the potentials that keep every group's weights equal.

    Pivoted QR of ``A = S G`` (``S`` from :func:`share_constraints`, restricted to non-zero
    weights: zeros stay equal): ``A Π = Q [R₁ R₂]`` gives ``N = Π [−R₁⁻¹ R₂; I]``, whose columns
    each move one free variable together with the variables it is tied to. ``A`` is
    factored through ``AᵀA`` (same null space), so memory stays ``O(n_vars²)``.
    """
    nv = problem.n_vars
    if max_vars is not None and nv > max_vars:
        raise NetworkError(
            f"shared weights are solved with a dense basis, up to max_vars={max_vars} free"
            f" variables; this network has {nv}. Tie units that must share a scale (a 'tie' per"
            " channel, as in balgraph.gallery_workloads.resnet_channels) and solve without"
            " 'share', or pass max_vars=None."
        )
    S = share_constraints(problem, np.where(problem.weight != 0, groups, -1))
    A = (S @ problem.G).tocsr()
    A = A[np.flatnonzero(np.diff(A.indptr) > 0)]
    if A.shape[0] == 0 or nv == 0:
        return np.eye(nv)
    # null(A) = null(AᵀA): an n_vars × n_vars dense factorization however many rows A has.
    # Its entries are small integers for BiLU units, so squaring costs no accuracy there.
    R, piv = la.qr((A.T @ A).toarray(), mode="r", pivoting=True, check_finite=False)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > nv * np.finfo(float).eps * 64 * max(diag.max(initial=0.0), 1.0)))
    N = np.zeros((nv, nv - rank))
    N[piv[rank:], np.arange(nv - rank)] = 1.0
    if rank:
        N[piv[:rank]] = -la.solve_triangular(R[:rank, :rank], R[:rank, rank:], check_finite=False)
    N[np.abs(N) < 1e-12] = 0.0
    return N


def solve_shared(
    problem: Problem,
    reg: Regularizer,
    *,
    tol: float,
    max_iter: int | None = None,
    seed: int | None = None,
    callback: Callable | None = None,
    share: np.ndarray,
    max_vars: int | None = MAX_VARS,
) -> SolverOutput:
    """Minimize ``R(u)`` over potentials that keep shared weights equal: Newton on ``u = N z``.

    ``share`` holds the group index of each edge (:func:`share_groups`) and ``reg`` already
    counts a group once (:func:`shared_regularizer`; :func:`balgraph.solve` does both). The
    reduced problem has the matrix ``G N`` in place of ``G`` and is solved by the same damped
    Newton iteration and log-domain line search as :func:`balgraph.newton.solve_newton`, with a
    dense step. ``converged`` means every basis direction has relative gradient ``<= tol``;
    ``info["reduced_imbalance"]`` holds the final value and ``info["n_directions"]`` the size
    of ``z``.

    Examples
    --------
    >>> import networkx as nx, balgraph
    >>> g = nx.DiGraph()
    >>> g.add_edge("x", "a", weight=4.0, share="k"); g.add_edge("x", "b", weight=4.0, share="k")
    >>> g.add_edge("a", "y", weight=1.0); g.add_edge("b", "y", weight=3.0)
    >>> res = balgraph.solve(g, p=2)   # a and b must keep one scale: (|4|² counted once)
    >>> round(res.weights[("x", "a")], 9) == round(res.weights[("x", "b")], 9)
    True
    """
    from .newton import _line_search, _Point

    del seed
    max_iter = 100 if max_iter is None else int(max_iter)
    N = shared_basis(problem, np.asarray(share), max_vars)
    full = problem.G.tocsr()
    nz = np.flatnonzero((problem.weight != 0) & (np.diff(full.indptr) > 0))
    GN = np.asarray(full[nz] @ N)
    GN[np.abs(GN) < 1e-12 * max(float(np.max(np.abs(GN), initial=0.0)), 1.0)] = 0.0
    G = sp.csr_matrix(GN)
    G.eliminate_zeros()
    G.sort_indices()
    law = problem.log_abs_weight[nz]
    sub = _map_coefficients(reg, lambda b: b[nz], problem.n_edges)
    sides = VariableSides(G)
    structure = hz.structure_of(G)
    pt = _Point(G, law, sub, sides, np.zeros(N.shape[1]))
    history: dict[str, list] = {"iteration": [0], "log_cost": [pt.log_cost], "max_imbalance": [pt.worst]}
    message, k = "", 0
    while pt.worst > tol and k < max_iter:
        k += 1
        S = hz.ScaledHessian(G, pt.log_d2, structure)
        gamma = pt.gradient_over(S.log_d)
        d = hz.dense_newton_step(S, gamma)
        new, _, ok = _line_search(G, law, sub, sides, pt, d, gamma)
        if not ok:
            message = f"line search stalled at iteration {k} (relative gradient {pt.worst:.3g})"
            break
        pt = new
        for key, val in zip(history, (k, pt.log_cost, pt.worst)):
            history[key].append(val)
        if callback is not None:
            callback(k, N @ pt.u)
    converged = pt.worst <= tol
    if not message:
        message = (
            f"every admissible direction balanced to {pt.worst:.3g} <= tol={tol:g}" if converged
            else f"max_iter={max_iter} iterations reached (relative gradient {pt.worst:.3g})"
        )
    info = dict(reduced_imbalance=pt.worst, n_directions=int(N.shape[1]), newton_iterations=k,
                n_shared_groups=int(np.max(share, initial=-1)) + 1)
    return SolverOutput(N @ pt.u, converged, k, message, history, info)
