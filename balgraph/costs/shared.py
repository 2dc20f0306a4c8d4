"""Shared weights (Section 8.3): edges that are one parameter, balanced exactly.

Edges of one share group (``problem.share``) are one parameter ``w``: they hold equal weights,
must stay equal under the rescaling, and the parameter costs ``g(|w|)`` once. Local balancing
cannot keep them equal (balancing unit ``i`` moves ``w_ij`` and so ``w_kl``), but the global
problem stays convex. With ``t = G u`` the admissible scalings are

    U = {u : (G u)_e = (G u)_f  for all e, f in one group}  =  {u = N z},

a linear subspace (``N`` a basis of the null space of the rows ``G_e − G_f``), and the cost,
written with coefficients ``b_e / k`` on a group of ``k`` edges (on ``U`` their ``k`` equal terms
sum to the parameter's cost once), is ``R(N z) = Σ_e φ_e((G N z)_e)``: the log-domain model
(:mod:`.logdomain`) with ``G N`` in place of ``G`` and ``z`` as coordinates. Its gradient parts
are the relative gradient of each admissible direction; at the optimum single units are in
general *not* balanced. In the manifold form (Prop. 9.4) the constraints are extra rows
``L_e − L_f = 0`` next to ``C L = 0`` (:func:`share_constraints`).

``N`` comes from a pivoted QR factorization of the (dense) constraint rows, so that each basis
column moves one free variable with everything tied to it: this suits networks up to a few
thousand free variables (``max_vars``).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from ..errors import NetworkError, OptionError
from ..model import Problem
from ..regularizers import PowerSum, Regularizer
from .base import constant_cost
from .logdomain import LogDomainCosts

__all__ = ["MAX_VARS", "SharedCosts", "share_constraints", "shared_basis", "shared_regularizer"]

MAX_VARS = 4000


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
    return sp.csr_matrix((np.concatenate([np.ones(r), -np.ones(r)]),
                          (np.tile(np.arange(r), 2), np.concatenate([rest, first]))), shape=(r, problem.n_edges))


def shared_basis(problem: Problem, groups: np.ndarray, max_vars: int | None = MAX_VARS) -> np.ndarray:
    """A basis ``N`` (``n_vars × d``) of the potentials that keep every group's weights equal.

    Pivoted QR of ``A = S G`` (``S`` from :func:`share_constraints`, restricted to non-zero
    weights: zeros stay equal): ``A Π = Q [R₁ R₂]`` gives ``N = Π [−R₁⁻¹ R₂; I]``, whose columns
    each move one free variable together with the variables it is tied to. ``A`` is factored
    through ``AᵀA`` (same null space), so memory stays ``O(n_vars²)``.
    """
    nv = problem.n_vars
    if max_vars is not None and nv > max_vars:
        raise OptionError(
            f"shared weights are solved with a dense basis, up to max_vars={max_vars} free variables;"
            f" this network has {nv}. Tie units that must share a scale (a 'tie' per channel, as in"
            " balgraph.gallery.resnet_channels) and solve without 'share', or pass max_vars=None.")
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


def shared_regularizer(problem: Problem, reg: Regularizer, groups: np.ndarray) -> Regularizer:
    """``reg`` with coefficient ``b_e / k`` on each edge of a group of ``k``: one cost per parameter."""
    if not isinstance(reg, PowerSum) or reg.coefficient_specs():
        raise OptionError(f"shared weights need a sum of powers with numeric coefficients (balgraph.Lp,"
                          f" PowerSum, ElasticNet), not {reg!r}")
    m = problem.n_edges
    size = np.bincount(groups[groups >= 0], minlength=int(groups.max()) + 1)
    mult = np.where(groups >= 0, 1.0 / size[np.maximum(groups, 0)], 1.0)
    terms = {}
    for p, b in reg.terms.items():
        b = np.broadcast_to(np.asarray(b, dtype=np.float64), (m,))
        order = np.argsort(groups, kind="stable")
        g, v = groups[order], b[order]
        bad = np.flatnonzero((g[1:] == g[:-1]) & (g[1:] >= 0) & (v[1:] != v[:-1]))
        if bad.size:
            e, f = int(order[bad[0]]), int(order[bad[0] + 1])
            raise NetworkError(f"shared edges {problem.edge_label(e)!r} and {problem.edge_label(f)!r} carry different"
                               f" coefficients of |w|^{p:g} ({b[e]!r} and {b[f]!r}): a shared parameter has one"
                               " cost, give its edges equal coefficients")
        terms[p] = b * mult
    return reg._rebuild(terms)


class SharedCosts(LogDomainCosts):
    """The cost on the admissible subspace ``u = N z`` (see the module docstring)."""

    name = "shared"

    @classmethod
    def build(cls, problem: Problem, reg: Regularizer, *, device=None, max_vars: int | None = MAX_VARS):
        if device not in (None, "cpu"):
            return "shared weights are solved on the CPU only"
        groups = problem.share
        N = shared_basis(problem, groups, max_vars)
        reg = shared_regularizer(problem, reg, groups)
        full = problem.G
        active = reg.active(problem.n_edges) & (problem.weight != 0) & (np.diff(full.indptr) > 0)
        nz = np.flatnonzero(active)
        GN = np.asarray(full[nz] @ N)
        GN[np.abs(GN) < 1e-12 * max(float(np.max(np.abs(GN), initial=0.0)), 1.0)] = 0.0
        G = sp.csr_matrix(GN)
        G.eliminate_zeros()
        costs = cls(G, problem.log_abs_weight[nz], reg.restrict(nz), problem=problem, basis=N)
        costs.log_fixed = constant_cost(problem, reg, active & ~np.isin(np.arange(problem.n_edges), nz))
        costs.n_groups = int(groups.max(initial=-1)) + 1
        return costs

    def sweeper(self, z, order: str = "parallel", seed=None):
        raise OptionError("shared weights cannot be balanced unit by unit (Section 8.3): use method='newton'")
