"""Every cost model against dense arithmetic written here: points, Hessians, coarse matrices, sweeps.

The reference is the definition itself (docs/design.md §1): with ``G`` dense and
``φ_e = b_e |w_e|^p e^{p (G u)_e}``, the gradient is ``p Gᵀ φ`` (split by the sign of ``G`` into
``P`` and ``N``), the Hessian ``p² Gᵀ diag(φ) G`` and ``R = Σ φ``. The models compute the same
numbers by mat-vecs with scaling vectors (layered, sparse) or edge by edge in the log domain.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import exponents, networks

import balgraph
from balgraph.costs import LayeredCosts, LogDomainCosts, SharedCosts, SparseCosts
from balgraph.errors import RangeExceeded
from balgraph.gallery import dense_mlp, random_network

MODELS = {"sparse": SparseCosts, "log-domain": LogDomainCosts}


def reference(pb: balgraph.Problem, reg: balgraph.Lp, u: np.ndarray):
    """``(log P, log N, log R, S)`` at ``u`` from the dense definition (normalized by max φ)."""
    G = pb.G.toarray()
    coef = np.broadcast_to(reg.terms[reg.p], (pb.n_edges,))
    with np.errstate(divide="ignore"):
        lphi = np.log(coef) + reg.p * (pb.log_abs_weight + G @ u)
    log_r = np.logaddexp.reduce(lphi[np.isfinite(lphi)])  # every edge costs, moved or not
    keep = np.isfinite(lphi) & np.any(G != 0, axis=1)
    G, lphi = G[keep], lphi[keep]
    top = lphi.max()
    phi = np.exp(lphi - top)
    P = reg.p * np.where(G > 0, G, 0).T @ phi
    N = reg.p * np.where(G < 0, -G, 0).T @ phi
    H = reg.p ** 2 * G.T @ (phi[:, None] * G)
    d = np.sqrt(np.diag(H))
    with np.errstate(divide="ignore"):
        return np.log(P) + top, np.log(N) + top, log_r, H / np.outer(d, d)


def assert_point(pt, ref, model) -> None:
    lp, ln, lr, _ = ref
    for got, want in ((pt.log_p, lp), (pt.log_n, ln)):
        got = np.asarray(got)
        assert np.array_equal(np.isneginf(got), np.isneginf(want))
        np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=0, atol=1e-10)
    assert pt.log_cost == pytest.approx(lr, abs=1e-10)
    diff = np.where(np.isneginf(lp) & np.isneginf(ln), 0.0, lp - ln)
    assert pt.gap == pytest.approx(np.max(np.abs(diff), initial=0.0), abs=1e-9)


@given(graph=networks(), p=exponents, seed=st.integers(0, 2**31 - 1))
def test_sparse_and_log_domain_points_and_hessians(graph, p, seed):
    """Random networks with BiPU units, self-loops, ties and fixed units."""
    pb = balgraph.compile_network(graph)
    reg = balgraph.Lp(p)
    rng = np.random.default_rng(seed)
    u = rng.normal(scale=2.0, size=pb.n_vars)
    ref = reference(pb, reg, u)
    for name, cls in MODELS.items():
        model = cls.build(pb, reg)
        pt = model.point(model.start(u))
        assert_point(pt, ref, name)
        H = model.hessian(pt)
        S = H.matrix()
        np.testing.assert_allclose(S, ref[3], rtol=0, atol=1e-10)
        v = rng.normal(size=pb.n_vars)
        np.testing.assert_allclose(H.matvec(v), S @ v, rtol=0, atol=1e-10)
        # the Galerkin matrix of a random partition, against Wᵀ S W formed densely
        levels = np.unique(rng.integers(0, 3, size=pb.n_vars), return_inverse=True)[1].astype(np.int64)
        L = int(levels.max(initial=-1)) + 1
        w = rng.uniform(0.5, 1.5, size=pb.n_vars)
        W = np.zeros((pb.n_vars, L))
        W[np.arange(pb.n_vars), levels] = w
        np.testing.assert_allclose(H.coarse_matrix(w, levels, L), W.T @ S @ W, rtol=0, atol=1e-10)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_layered_model_matches_the_definition(p):
    pb = dense_mlp([5, 7, 6, 4, 3], seed=int(p))
    reg = balgraph.Lp(p)
    u = np.random.default_rng(0).normal(size=pb.n_vars)
    model = LayeredCosts.build(pb, reg)
    z = model.start(u)
    np.testing.assert_allclose(model.potentials(z), u, rtol=0, atol=1e-15)
    pt = model.point(z)
    lp, ln, lr, S = reference(pb, reg, u)
    # the layered model works in x = p u: its gradient parts are those of R(u) divided by p
    assert_point(pt, (lp - np.log(p), ln - np.log(p), lr, S), "layered")
    H = model.hessian(pt)
    v = np.random.default_rng(1).normal(size=pb.n_vars)
    np.testing.assert_allclose(H.matvec(v), S @ v, rtol=0, atol=1e-10)
    levels = model.levels
    L = model.n_levels
    d = np.exp(np.asarray(H.log_d))
    w = np.sqrt(d / np.bincount(levels, weights=d)[levels])  # the canonical coarse vectors
    W = np.zeros((pb.n_vars, L))
    W[np.arange(pb.n_vars), levels] = w
    np.testing.assert_allclose(H.coarse_matrix(w, levels, L), W.T @ S @ W, rtol=0, atol=1e-10)


def test_per_edge_coefficients_enter_the_costs():
    """``a_e = b_e |w_e|^p``: per-edge coefficients (eq. 9.6 with weights b_e)."""
    pb = balgraph.compile_network(random_network(7, kind="dag", n_hidden=6, n_ties=1))
    reg = balgraph.Lp(3.0, coefficient=np.random.default_rng(0).uniform(0.1, 10.0, pb.n_edges))
    u = np.random.default_rng(1).normal(size=pb.n_vars)
    for name, cls in MODELS.items():
        model = cls.build(pb, reg)
        assert_point(model.point(model.start(u)), reference(pb, reg, u), name)


@pytest.mark.parametrize("name", ["layered", "sparse", "log-domain"])
def test_sweeps_balance_each_class_exactly_and_never_raise_the_cost(name):
    """A sweep balances each class of units exactly in turn (eq. 5.6): right after a
    "parallel" sweep the deepest hidden layer, swept last, is balanced; the cost never
    increases (coordinate descent on a convex function)."""
    pb = dense_mlp([4, 6, 5, 3], seed=2)
    reg = balgraph.Lp(2.0)
    cls = {"layered": LayeredCosts, "sparse": SparseCosts, "log-domain": LogDomainCosts}[name]
    model = cls.build(pb, reg)
    state = model.sweeper(model.start(np.zeros(pb.n_vars)), "parallel")
    costs = [state.log_cost]
    for _ in range(5):
        state.sweep()
        costs.append(state.log_cost)
        r = balgraph.imbalance(pb, reg, model.potentials(state.coordinates()))
        last = np.array([pb.var[k] for k, lab in enumerate(pb.nodes) if lab[0] == 2])
        assert np.max(np.abs(r[last])) <= 1e-12
    assert np.all(np.diff(costs) <= 1e-12) and costs[-1] < costs[0]


@pytest.mark.parametrize("kind", ["dag", "layered"])
@pytest.mark.parametrize("seed", range(3))
def test_sparse_sweeps_equal_log_domain_sweeps(kind, seed):
    """Exact level sweeps (eqs. 5.6, 6.6) from mat-vecs give the per-edge sweeps' scales."""
    g = random_network(seed, kind=kind, n_hidden=9, bipu_fraction=0.3, weight_spread=4.0)
    pb = balgraph.compile_network(g)
    reg = balgraph.Lp(2.0)
    a = SparseCosts.build(pb, reg).sweeper(np.zeros(pb.n_vars))
    b = LogDomainCosts.build(pb, reg).sweeper(np.zeros(pb.n_vars))
    assert a.exact and b.exact
    for _ in range(3):
        a.sweep()
        b.sweep()
    np.testing.assert_allclose(a.coordinates(), b.coordinates(), rtol=0, atol=1e-10)


def test_sparse_model_rebases_far_points_and_refuses_float64_overflow(monkeypatch):
    """With the float64 margin shrunk to e^40, potentials spread by a few units make the stored
    costs unusable: the model moves its base to the new point and still matches the definition;
    costs spanning more than the margin raise RangeExceeded, and the solver falls back to the
    log-domain model and still balances every unit."""
    monkeypatch.setattr("balgraph.costs.sparse._SAFE", 40.0)
    pb = balgraph.compile_network(random_network(3, kind="recurrent", n_hidden=8, bipu_fraction=0.3))
    reg = balgraph.Lp(2.0)
    model = SparseCosts.build(pb, reg)
    assert model.base == 0
    u = np.random.default_rng(0).normal(scale=8.0, size=pb.n_vars)
    model.rebase(u)  # a far base: the costs at 0 are out of its reach
    zero = np.zeros(pb.n_vars)
    assert_point(model.point(zero), reference(pb, reg, zero), "sparse")
    assert model.base == 2
    with pytest.raises(RangeExceeded):
        model.point(10.0 * u)
    res = balgraph.solve(pb, p=2.0, u0=10.0 * u, model="sparse")
    assert res.converged and res.max_imbalance <= 1e-10 and "log-domain" in res.info["fallback"]


def test_layered_model_refuses_what_it_cannot_hold():
    pb = balgraph.compile_network(random_network(0))
    assert "not in layer matrices" in LayeredCosts.build(pb, balgraph.Lp(2))
    tied = balgraph.Problem.from_layers([np.ones((2, 2)), np.ones((1, 2))])
    tied = balgraph.Problem.from_blocks(tied.blocks, nodes=tied.nodes, roles=tied.roles, tie=[None, None, "t", "t", None])
    assert "tied" in LayeredCosts.build(tied, balgraph.Lp(2))
    assert "single power" in LayeredCosts.build(dense_mlp([2, 3, 1]), balgraph.ElasticNet())
    huge = balgraph.Problem.from_layers([np.ones((2, 2)), np.array([[1e-200, 1.0], [1.0, 1.0]]), np.ones((1, 2))])
    with pytest.raises(RangeExceeded):
        LayeredCosts.build(huge, balgraph.Lp(2.0))


def test_shared_model_moves_only_admissible_directions():
    g = random_network(1, kind="dag", n_hidden=4)
    edges = [(j, i) for j, i in g.edges if g.nodes[i].get("role") == "hidden"][:2]
    for j, i in edges:
        g.edges[j, i]["weight"] = 1.5
        g.edges[j, i]["share"] = "k"
    pb = balgraph.compile_network(g)
    model = SharedCosts.build(pb, balgraph.Lp(2.0))
    z = np.random.default_rng(0).normal(size=model.n)
    t = pb.G @ model.potentials(z)
    pos = [k for k in range(pb.n_edges) if pb.edge_label(k) in edges]
    assert t[pos[0]] == pytest.approx(t[pos[1]], abs=1e-12)
