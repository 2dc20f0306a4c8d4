"""The Newton solver against closed forms, brute force, cvxpy and invariants."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize
from strategies import exponents, networks

import balgraph
from balgraph.errors import ConvergenceWarning, OptionError
from balgraph.gallery import random_network
from balgraph.solvers import REGISTRY, Run

TOL = 1e-10


def solve_newton(pb, reg, *, tol=TOL, **options):
    """The Newton method called directly (no structure check, no evaluation by balgraph.solve)."""
    m = REGISTRY["newton"]
    out = m.solve(pb, reg, Run(tol=tol), m.options(**options))
    out.converged = out.status == "done"
    return out


def _cost(problem: balgraph.Problem, p: float, u: np.ndarray) -> float:
    """``R(u) = Σ |w_e|^p exp(p (G u)_e)``, written out independently of the solver."""
    return float(np.sum(np.abs(problem.weight) ** p * np.exp(p * (problem.G @ u))))


def _scale_map_ok(res: balgraph.BalanceResult, graph: nx.DiGraph, weight="weight") -> None:
    """Balanced weight of ``j -> i`` is ``w · Λ_i / Λ_j^{c_j}`` (Section 6: f(λx) = λ^c f(x))."""
    for j, i, data in graph.edges(data=True):
        c_j = graph.nodes[j].get("degree", 1.0) if res.scales[j] != 1.0 else 1.0
        expected = data[weight] * res.scales[i] / res.scales[j] ** c_j
        assert res.weights[(j, i)] == pytest.approx(expected, rel=1e-9, abs=0.0)


# --------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("c", [1.0, 0.5, 2.5])
def test_single_unit_closed_form(p, c):
    """One hidden unit: λ* = (c Σ_OUT |w|^p / Σ_IN |w|^p)^{1/(p(c+1))} (eqs. 5.6 and 6.6)."""
    w_in, w_out = np.array([3.0, -0.2]), np.array([0.7, 5.0, -1e-3])
    g = nx.DiGraph()
    g.add_node("h", role="hidden", activation="bipu", degree=c)
    for k, w in enumerate(w_in):
        g.add_edge(f"x{k}", "h", weight=float(w))
    for k, w in enumerate(w_out):
        g.add_edge("h", f"y{k}", weight=float(w))
    res = balgraph.solve(g, p=p, tol=TOL)
    lam = (c * np.sum(np.abs(w_out) ** p) / np.sum(np.abs(w_in) ** p)) ** (1 / (p * (c + 1)))
    assert res.converged
    assert res.scales["h"] == pytest.approx(lam, rel=1e-10)
    _scale_map_ok(res, g)


def _tied_chain(sizes, seed, p):
    """A layered BiLU net in which every hidden layer is one tie group (Appendix B)."""
    rng = np.random.default_rng(seed)
    mats = [
        rng.normal(size=(b, a)) * np.exp(rng.uniform(-3, 3)) for a, b in zip(sizes[:-1], sizes[1:])
    ]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    src, dst, w = [], [], []
    for k, A in enumerate(mats):
        rows, cols = np.divmod(np.arange(A.size), A.shape[1])
        src.append(starts[k] + cols)
        dst.append(starts[k + 1] + rows)
        w.append(A.ravel())
    layer_of = np.repeat(np.arange(len(sizes)), sizes)
    tie = [f"L{k}" if 0 < k < len(sizes) - 1 else None for k in layer_of]
    pb = balgraph.Problem.from_arrays(
        np.concatenate(src), np.concatenate(dst), np.concatenate(w), tie=tie
    )
    return pb, mats


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_tied_chain_closed_form(p):
    """Tied layers (Thm 12.2, eq. 12.7 for L_p): the balanced layer k is M_k A_k with
    M_k = (∏_j ‖A_j‖_p)^{1/N} / ‖A_k‖_p, so that ∏ M_k = 1 and every ‖M_k A_k‖_p is equal."""
    sizes = [4, 6, 3, 5, 2]
    pb, mats = _tied_chain(sizes, 7, p)
    res = balgraph.solve(pb, p=p, tol=TOL)
    norms = np.array([np.sum(np.abs(A) ** p) ** (1 / p) for A in mats])
    M = np.exp(np.mean(np.log(norms))) / norms
    assert np.prod(M) == pytest.approx(1.0, rel=1e-12)
    off = 0
    for A, m in zip(mats, M):
        got = res.weight_array[off:off + A.size].reshape(A.shape)
        np.testing.assert_allclose(got, m * A, rtol=1e-9)
        off += A.size


# --------------------------------------------------------------------------- brute force, cvxpy
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("p", [0.5, 2.0, 3.0])
def test_matches_brute_force_minimizer(seed, p):
    """scipy's BFGS on R(u) with its exact gradient, from the network as given."""
    g = random_network(seed, kind="recurrent", n_hidden=5, weight_spread=1.0, bipu_fraction=0.2)
    pb = balgraph.compile_network(g)
    G, a = pb.G.toarray(), np.abs(pb.weight) ** p

    def f(u):
        c = a * np.exp(p * (G @ u))
        return c.sum(), p * (G.T @ c)

    ref = minimize(f, np.zeros(pb.n_vars), jac=True, method="BFGS", options={"gtol": 1e-12})
    out = solve_newton(pb, balgraph.Lp(p), tol=TOL)
    assert out.converged
    assert _cost(pb, p, out.u) <= ref.fun * (1 + 1e-12)
    np.testing.assert_allclose(out.u, ref.x, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_matches_cvxpy_exponential_cone(seed):
    """min Σ_e t_e s.t. (p (G u)_e + log a_e, 1, t_e) ∈ K_exp, i.e. t_e >= a_e e^{p (G u)_e}."""
    cp = pytest.importorskip("cvxpy")
    p = 2.0
    g = random_network(seed, kind="dag", n_hidden=6, bipu_fraction=0.3, n_ties=1)
    pb = balgraph.compile_network(g)
    nz = pb.weight != 0
    G, log_a = pb.G.toarray()[nz], p * pb.log_abs_weight[nz]
    u, t = cp.Variable(pb.n_vars), cp.Variable(G.shape[0])
    cone = cp.constraints.ExpCone(p * (G @ u) + log_a, np.ones(G.shape[0]), t)
    cp.Problem(cp.Minimize(cp.sum(t)), [cone]).solve(solver=cp.CLARABEL)
    out = solve_newton(pb, balgraph.Lp(p), tol=TOL)
    assert out.converged
    np.testing.assert_allclose(out.u, u.value, atol=2e-4)
    assert _cost(pb, p, out.u) <= _cost(pb, p, u.value) * (1 + 1e-9)


# --------------------------------------------------------------------------- invariants
@given(graph=networks(), p=exponents)
def test_invariants_on_random_networks(graph, p):
    res = balgraph.solve(graph, p=p, tol=TOL)
    assert res.converged and res.max_imbalance <= TOL
    r = balgraph.imbalance(res.problem, balgraph.Lp(p), res.potentials)
    assert np.all(np.abs(r) <= TOL) and not np.any(np.isnan(res.weight_array))
    assert res.log_cost_after <= res.log_cost_before + 1e-12
    _scale_map_ok(res, graph)
    again = balgraph.solve(res.to_graph(), p=p, tol=TOL)
    np.testing.assert_allclose(again.potentials, 0.0, atol=1e-8)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_both_linear_solvers_agree_with_each_other(p, solver):
    g = random_network(11, kind="recurrent", n_hidden=12, bipu_fraction=0.3, n_ties=2)
    pb = balgraph.compile_network(g)
    ref = solve_newton(pb, balgraph.Lp(p), tol=TOL, linear_solver="dense", warmup=0)
    out = solve_newton(pb, balgraph.Lp(p), tol=TOL, linear_solver=solver)
    assert out.converged and ref.converged
    np.testing.assert_allclose(out.u, ref.u, atol=1e-8)


def test_deep_layered_network_uses_coarse_cg():
    """A deep narrow MLP solved by CG with the per-level coarse space, checked against dense."""
    rng = np.random.default_rng(3)
    mats = [rng.normal(size=(6, 6)) * np.exp(rng.uniform(-2, 2)) for _ in range(30)]
    pb = balgraph.Problem.from_layers(mats, [rng.normal(size=6) for _ in mats])
    cg = solve_newton(pb, balgraph.Lp(2), tol=TOL, linear_solver="cg")
    dense = solve_newton(pb, balgraph.Lp(2), tol=TOL, linear_solver="dense")
    assert cg.converged and cg.info["cg_iterations"] > 0
    np.testing.assert_allclose(cg.u, dense.u, atol=1e-8)


# --------------------------------------------------------------------------- extreme scales
@pytest.mark.parametrize("kind", ["dag", "recurrent"])
@pytest.mark.parametrize("seed", range(3))
def test_weights_spanning_1e300_tiny_units_balanced(seed, kind):
    """Unit scales 1e±75 put on a balanced network (weights then span 1e±150, costs 1e±300 at
    p = 2): the solver must undo them exactly (the balanced state is unique, Theorem 9.1),
    including a sub-network living entirely on weights near 1e-150."""
    rng = np.random.default_rng(seed)
    g = random_network(seed, kind=kind, n_hidden=8, weight_spread=0.5)
    g.add_node("t0", role="hidden")
    g.add_node("t1", role="hidden")
    g.add_edges_from([("x0", "t0", {"weight": 3e-150}), ("t0", "t1", {"weight": -1e-151}),
                      ("t1", "y0", {"weight": 2e-150}), ("t0", "y0", {"weight": 5e-151})])
    balanced = balgraph.solve(g, p=2.0, tol=TOL).to_graph()
    log_scale = {n: rng.uniform(-75, 75) * np.log(10) if d.get("role") == "hidden" else 0.0
                 for n, d in balanced.nodes(data=True)}
    far = balanced.copy()
    for j, i, data in far.edges(data=True):
        data["weight"] *= np.exp(log_scale[i] - log_scale[j])
    spread = np.log10(np.abs([w for *_, w in far.edges(data="weight")]))
    assert spread.max() - spread.min() > 200
    res = balgraph.solve(far, p=2.0, tol=TOL)
    r = balgraph.imbalance(res.problem, balgraph.Lp(2), res.potentials)
    assert res.converged and np.all(np.abs(r) <= TOL)
    for j, i, w in balanced.edges(data="weight"):
        assert res.weights[(j, i)] == pytest.approx(w, rel=1e-8, abs=0.0)
    _scale_map_ok(res, far)


def test_huge_costs_do_not_overflow():
    """p = 4 with weights near 1e±100: costs of 1e±400 exist only in the log domain."""
    g = random_network(5, kind="dag", n_hidden=6)
    for k, (j, i, data) in enumerate(g.edges(data=True)):
        data["weight"] *= 1e100 if k % 2 else 1e-100
    res = balgraph.solve(g, p=4.0, tol=TOL)
    assert res.converged and np.isfinite(res.log_cost_after)
    assert res.log_cost_after <= res.log_cost_before


# --------------------------------------------------------------------------- reporting
def test_no_convergence_is_reported_not_hidden():
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(5, 5)) * np.exp(rng.uniform(-8, 8)) for _ in range(12)]
    pb = balgraph.Problem.from_layers(mats)
    with pytest.warns(ConvergenceWarning, match="newton"):
        res = balgraph.solve(pb, p=2.0, tol=TOL, max_iter=1, warmup=0)
    assert not res.converged and "max_iter" in res.message
    assert np.all(np.isfinite(res.weight_array))


def test_info_history_and_callback():
    g = random_network(2, kind="layered", n_hidden=8)
    seen = []
    res = balgraph.solve(g, p=2.0, tol=TOL, callback=lambda r: seen.append((r.nit, r.x.shape, r.max_imbalance)))
    h = res.history
    assert set(h) >= {"iteration", "log_cost", "max_imbalance", "time"}
    assert len({len(v) for v in h.values()}) == 1
    assert h["iteration"] == list(range(len(h["iteration"])))
    assert [(k, shape) for k, shape, _ in seen] == [(k, (res.problem.n_vars,)) for k in h["iteration"]]
    assert [r for *_, r in seen] == h["max_imbalance"]
    assert h["max_imbalance"][-1] == pytest.approx(res.max_imbalance, abs=1e-13)
    assert np.all(np.diff(h["log_cost"]) <= 1e-12)
    for key in ("newton_iterations", "cg_iterations", "backtracks", "warmup_sweeps"):
        assert key in res.info


def test_input_not_mutated_and_bad_options():
    pb = balgraph.compile_network(random_network(4))
    w = pb.weight.copy()
    u0 = np.zeros(pb.n_vars)
    solve_newton(pb, balgraph.Lp(2), tol=TOL, u0=u0)
    assert np.array_equal(pb.weight, w) and np.all(u0 == 0)
    with pytest.raises(OptionError, match="linear_solver"):
        solve_newton(pb, balgraph.Lp(2), tol=TOL, linear_solver="magic")
    with pytest.raises(OptionError, match="u0"):
        solve_newton(pb, balgraph.Lp(2), tol=TOL, u0=np.zeros(pb.n_vars + 1))


@given(seed=st.integers(0, 2**31 - 1), p=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_zero_weights_and_self_loops_play_no_role(seed, p):
    """Adding zero-weight edges (and self-loops) of BiLU units leaves the balanced state as is:
    a BiLU self-loop is scale-invariant, a zero weight stays zero (Remark 5.5)."""
    g = random_network(seed, kind="dag", n_hidden=5)
    h = g.copy()
    hidden = [n for n, d in g.nodes(data=True) if d.get("role") == "hidden"]
    for k, n in enumerate(hidden):
        h.add_edge(n, n, weight=0.5 + k)
        h.add_edge("x0", n, weight=0.0) if not h.has_edge("x0", n) else None
    a = balgraph.solve(g, p=p, tol=TOL)
    b = balgraph.solve(h, p=p, tol=TOL)
    for n in hidden:
        assert b.scales[n] == pytest.approx(a.scales[n], rel=1e-8)
