"""Iterative schedules (balgraph.iterative): monotone cost, one balanced state, same function."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from strategies import exponents, networks

import balgraph
from balgraph import local as bl
from balgraph.costs import LayeredCosts, LogDomainCosts
from balgraph.errors import RangeExceeded
from balgraph.graphs import colouring, symmetric
from balgraph.regularizers import ElasticNet, Lp

SCHEDULES = ["cyclic", "random_sweep", "stochastic", "parallel", "alternating"]


def reference_potentials(pb, p):
    """Minimize R(u) = Σ |w|^p exp(p G u) by scipy's trust-region Newton (a second algorithm)."""
    G = pb.G.toarray()
    a = p * pb.log_abs_weight
    keep = np.isfinite(a)
    G, a = G[keep], a[keep] - a[keep].max()

    def f(u):
        c = np.exp(a + p * G @ u)
        return c.sum(), p * G.T @ c, p * p * (G.T * c) @ G

    res = minimize(lambda u: f(u)[0], np.zeros(pb.n_vars), jac=lambda u: f(u)[1],
                   hess=lambda u: f(u)[2], method="trust-exact", options={"gtol": 1e-13})
    return res.x


def implied_scales_residual(pb, w_new):
    """Fit one log Λ per variable to log(w_new / w) = ℓ_i − c_j ℓ_j; return the worst residual.

    Fixed units have Λ = 1 and tied units share one Λ by construction of the fit, so a zero
    residual means the new weights are a rescaling of the old ones: same network function.
    """
    nz = pb.weight != 0
    assert np.all(np.sign(w_new[nz]) == np.sign(pb.weight[nz]))
    assert np.all(w_new[~nz] == 0)
    G = pb.G.toarray()[nz]
    rhs = np.log(np.abs(w_new[nz])) - np.log(np.abs(pb.weight[nz]))
    ell = np.linalg.lstsq(G, rhs, rcond=None)[0] if pb.n_vars else np.zeros(0)
    return np.max(np.abs(G @ ell - rhs), initial=0.0)


@pytest.mark.parametrize("seed,kind,p", [(0, "dag", 2.0), (1, "recurrent", 1.0), (2, "layered", 3.0),
                                         (3, "recurrent", 0.5)])
def test_every_schedule_reaches_the_newton_optimum(seed, kind, p):
    g = balgraph.gallery.random_network(seed, kind=kind, bipu_fraction=0.3)
    pb = balgraph.compile_network(g)
    u_ref = reference_potentials(pb, p)
    w_ref = pb.scaled_weights(u_ref)
    for method in SCHEDULES:
        res = balgraph.solve(g, p=p, method=method, tol=1e-12, seed=seed)
        np.testing.assert_allclose(res.weight_array, w_ref, rtol=1e-7, err_msg=method)


@settings(max_examples=10)
@given(networks(), exponents, st.integers(0, 2**16))
def test_schedules_agree_keep_function_and_never_raise_cost(g, p, seed):
    results = {m: balgraph.solve(g, p=p, method=m, tol=1e-11, seed=seed) for m in SCHEDULES}
    ref = results["cyclic"].weight_array
    pb = results["cyclic"].problem
    for method, res in results.items():
        assert res.converged and res.max_imbalance <= 1e-11
        # Theorem 9.1: one balanced state whatever the order
        np.testing.assert_allclose(res.weight_array, ref, rtol=1e-6, atol=0, err_msg=method)
        assert implied_scales_residual(pb, res.weight_array) < 1e-8
        h = res.history
        assert len(h["iteration"]) == len(h["log_cost"]) == len(h["max_imbalance"]) == res.iterations + 1
        logc = np.asarray(h["log_cost"])
        assert np.all(np.diff(logc) <= 1e-13 * (1 + np.abs(logc[:-1]))), method
        assert h["log_cost"][0] == pytest.approx(res.log_cost_before, rel=1e-12, abs=1e-12)


def forward(g, x, weight="weight"):
    """Reference evaluator: DAG order, relu / linear / tanh / bipu(x) = max(x, 0)^c."""
    val = {}
    inputs = [n for n in g if g.nodes[n].get("role") == "input"]
    for n in nx.topological_sort(g):
        d = g.nodes[n]
        if d.get("role") == "input":
            val[n] = x[inputs.index(n)]
            continue
        if d.get("role") == "bias":
            val[n] = 1.0
            continue
        z = sum(val[j] * g.edges[j, n][weight] for j in g.predecessors(n))
        act = d.get("activation", "relu")
        val[n] = {"relu": max(z, 0.0), "linear": z, "tanh": np.tanh(z),
                  "bipu": max(z, 0.0) ** d.get("degree", 1.0)}[act]
    return [val[n] for n in g if g.nodes[n].get("role") == "output"]


@given(networks(kinds=("dag", "layered")), st.sampled_from(["stochastic", "parallel"]))
def test_function_unchanged_on_dags(g, method):
    res = balgraph.solve(g, method=method, tol=1e-10, seed=0)
    h = res.to_graph()
    rng = np.random.default_rng(0)
    n_in = sum(1 for _, r in g.nodes(data="role") if r == "input")
    for _ in range(3):
        x = rng.normal(size=n_in)
        np.testing.assert_allclose(forward(h, x), forward(g, x), rtol=1e-9, atol=1e-9)


def w1():
    sizes = [784, 200, 100, 50, 100, 200, 784]
    rng = np.random.default_rng(0)
    sc = np.exp(rng.uniform(-2, 2, size=len(sizes) - 1))
    mats = [rng.normal(size=(b, a)) * s for a, b, s in zip(sizes[:-1], sizes[1:], sc)]
    return balgraph.Problem.from_layers(mats, [rng.normal(size=b) * s for b, s in zip(sizes[1:], sc)])


def test_w1_parallel_converges_to_1e_8():
    pb = w1()
    res = balgraph.solve(pb, method="parallel", tol=1e-8)
    assert res.converged and res.info["model"] == "layered"
    assert np.max(np.abs(balgraph.imbalance(pb, Lp(2), res.potentials))) <= 1e-8


def small_mlp(seed=0, degrees=1.0, spread=2.0):
    rng = np.random.default_rng(seed)
    sizes = [6, 5, 4, 5, 3]
    mats = [rng.normal(size=(b, a)) * np.exp(rng.uniform(-spread, spread))
            for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=b) if k % 2 else None for k, b in enumerate(sizes[1:])]
    return balgraph.Problem.from_layers(mats, biases, degrees=degrees)


@pytest.mark.parametrize("degrees", [1.0, [1.0, 2.0, 0.5]])
@pytest.mark.parametrize("method", ["parallel", "alternating"])
def test_dense_layers_path_matches_general_path(method, degrees):
    pb = small_mlp(1, degrees)
    reg = Lp(1.5)
    fast = balgraph.solve(pb, method=method, regularizer=reg, tol=1e-12)
    slow = balgraph.solve(pb, method=method, regularizer=reg, tol=1e-12, model="log-domain")
    assert fast.info["model"] == "layered" and slow.info["model"] == "log-domain"
    np.testing.assert_allclose(fast.weight_array, slow.weight_array, rtol=1e-9)
    # the same exact layer updates in the same order: the same iterates
    assert fast.iterations == slow.iterations
    np.testing.assert_allclose(fast.history["log_cost"], slow.history["log_cost"], rtol=1e-12)


def test_dense_path_declines_extreme_ranges_and_coefficients_are_honoured():
    rng = np.random.default_rng(3)
    # |w|^2 spans 400 decades inside a block between two hidden layers: beyond float64 mat-vecs
    mats = [rng.normal(size=(4, 3)), rng.normal(size=(5, 4)), rng.normal(size=(2, 5))]
    mats[1][0, 0] = 1e-200
    pb = balgraph.Problem.from_layers(mats)
    with pytest.raises(RangeExceeded):
        LayeredCosts.build(pb, Lp(2))
    assert balgraph.solve(pb, method="parallel", tol=1e-12).info["model"] != "layered"
    pb = small_mlp(2)
    coef = rng.uniform(0.1, 3.0, size=pb.n_edges)
    reg = Lp(2.0, coef)
    res = balgraph.solve(pb, method="parallel", regularizer=reg, tol=1e-12)
    assert res.info["model"] == "layered"
    np.testing.assert_allclose(res.weight_array, balgraph.solve(
        pb, method="cyclic", regularizer=reg, tol=1e-12).weight_array, rtol=1e-8)


@pytest.mark.parametrize("method", SCHEDULES)
def test_non_power_regularizer_converges_to_its_balance(method):
    g = balgraph.gallery.random_network(4, kind="recurrent", bipu_fraction=0.3)
    reg = ElasticNet(0.3, 1.0)
    res = balgraph.solve(g, method=method, regularizer=reg, tol=1e-11, seed=1)
    ref = balgraph.solve(g, method="cyclic", regularizer=reg, tol=1e-12)
    np.testing.assert_allclose(res.weight_array, ref.weight_array, rtol=1e-7)
    # the balance equation of Theorem 5.6 for L1 + L2: Σ_IN (0.3|w| + 2 w²) = c Σ_OUT (...)
    pb = res.problem
    d = 0.3 * np.abs(res.weight_array) + 2.0 * res.weight_array**2
    free = np.flatnonzero(~pb.fixed)
    lhs = np.bincount(pb.dst, d, pb.n_nodes)[free]
    rhs = pb.degree[free] * np.bincount(pb.src, d, pb.n_nodes)[free]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9)


@given(networks(kinds=("recurrent",), max_hidden=12), st.integers(0, 100))
def test_colouring_classes_are_independent_and_cover(g, seed):
    pb = balgraph.compile_network(g)
    adj = symmetric(pb.variable_graph[:pb.n_vars, :pb.n_vars])
    colour = colouring(adj, seed)
    assert np.all(colour >= 0)
    coo = adj.tocoo()
    assert not np.any(colour[coo.row] == colour[coo.col])
    # each class is maximal among the later ones: every vertex of colour k > 0 has a
    # neighbour of every smaller colour (greedy by maximal independent sets)
    for v in range(pb.n_vars):
        nbr = colour[adj.indices[adj.indptr[v]:adj.indptr[v + 1]]]
        assert set(range(colour[v])) <= set(nbr.tolist())
    sets = LogDomainCosts.build(pb, Lp(2)).sweeper(np.zeros(pb.n_vars), seed=seed).sets
    assert np.array_equal(np.sort(np.concatenate([s[0] for s in sets])), np.arange(pb.n_vars))


def test_ties_are_balanced_as_one_variable():
    g = bl.tie_layers(balgraph.gallery.random_network(6, kind="layered", n_hidden=7))
    pb = balgraph.compile_network(g)
    for method in SCHEDULES:
        res = balgraph.solve(g, method=method, tol=1e-12, seed=2)
        assert bl.group_imbalance(pb, res.weight_array, "tie").max_relative < 1e-10
        assert implied_scales_residual(pb, res.weight_array) < 1e-9


def test_seeds_reproduce_and_stochastic_counts_sweeps():
    g = balgraph.gallery.random_network(7, kind="recurrent", n_hidden=9)
    a = balgraph.solve(g, method="stochastic", tol=1e-10, seed=5)
    b = balgraph.solve(g, method="stochastic", tol=1e-10, seed=5)
    assert a.history["log_cost"] == b.history["log_cost"]
    assert a.history["iteration"] == list(range(a.iterations + 1))
    seen = []
    balgraph.solve(g, method="random_sweep", tol=1e-10, seed=1, callback=lambda r: seen.append(r.nit))
    assert seen == list(range(len(seen)))


def test_max_iter_reports_non_convergence():
    pb = small_mlp(0)
    with pytest.warns(balgraph.ConvergenceWarning):
        res = balgraph.solve(pb, method="cyclic", tol=1e-14, max_iter=2)
    assert not res.converged and res.iterations == 2


@pytest.mark.parametrize("method", ["parallel", "alternating"])
def test_dense_history_is_the_cost_at_each_iterate(method):
    # a one-term cost with per-edge coefficients and a bias into the outputs (a fixed-to-fixed
    # block, a constant part of R): log_cost must be log R at the iterate the callback sees
    pb = small_mlp(4, [1.0, 2.0, 0.5])
    coef = np.random.default_rng(4).uniform(0.1, 3.0, size=pb.n_edges)
    reg = balgraph.PowerSum({1.5: coef})
    seen = []
    res = balgraph.solve(pb, method=method, regularizer=reg, tol=1e-12,
                         callback=lambda r: seen.append(r.x))
    assert res.info["model"] == "layered" and res.converged
    expected = [reg.log_cost(pb.log_abs_weight, pb.edge_log_scale(u)) for u in seen]
    np.testing.assert_allclose(res.history["log_cost"], expected, rtol=1e-12)
    assert res.history["log_cost"][0] == pytest.approx(reg.log_cost(pb.log_abs_weight), rel=1e-12)
    np.testing.assert_allclose(res.history["max_imbalance"][-1], res.max_imbalance, rtol=1e-6, atol=1e-15)


def test_extreme_weights_next_to_fixed_units_stay_on_the_dense_path():
    # blocks with a fixed side reduce to row/column sums with per-row shifts: exact at any range
    rng = np.random.default_rng(3)
    mats = [rng.normal(size=(4, 3)), rng.normal(size=(2, 4))]
    mats[0][0, 0] = 1e-200
    pb = balgraph.Problem.from_layers(mats)
    fast = balgraph.solve(pb, method="parallel", tol=1e-12)
    slow = balgraph.solve(pb, method="parallel", tol=1e-12, model="log-domain")
    assert fast.info["model"] == "layered" and "fallback" not in fast.info
    assert fast.iterations == slow.iterations
    np.testing.assert_allclose(fast.history["log_cost"], slow.history["log_cost"], rtol=1e-12)


@pytest.mark.parametrize("method", ["parallel", "alternating"])
def test_dense_path_hands_over_when_scales_leave_float64_range(method):
    # Two independent paths through a diagonal middle block; path 2 starts at 1e-240. Balanced,
    # every weight of a path is the cube root of its product (Theorem 5.6 with p = 2, c = 1),
    # so path 2's units scale by ~1e160: e^{-x} spans more than a float64 mat-vec holds.
    a = 1e-240
    mats = [np.array([[2.0], [a]]), np.eye(2), np.array([[1.0, 3.0]])]
    pb = balgraph.Problem.from_layers(mats)
    res = balgraph.solve(pb, method=method, tol=1e-12)
    assert res.info["fallback"].startswith("layered -> log-domain")
    expected = np.cbrt([2.0, 2.0, a * 3.0, a * 3.0, 2.0, a * 3.0])
    w = np.abs(res.weight_array)
    np.testing.assert_allclose(np.sort(w[w > 0]), np.sort(expected), rtol=1e-9)
    logc = np.asarray(res.history["log_cost"])
    assert np.all(np.diff(logc) <= 1e-13 * (1 + np.abs(logc[:-1])))
