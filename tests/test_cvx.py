"""The cvxpy cross-checks (balgraph/cvx.py) against closed forms, scipy and Newton."""

import sys
import warnings

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from strategies import networks

import balgraph
from balgraph import ConvergenceWarning, Lp, NetworkError, PowerSum, Regularizer, SolverError
from balgraph.gallery import random_network

cp = pytest.importorskip("cvxpy")
from balgraph.solvers import REGISTRY, Run


def run(method, pb, reg, **kw):
    """Call a cvxpy method directly (no evaluation by balgraph.solve): the solver's output."""
    m = REGISTRY[method]
    out = m.solve(pb, reg, Run(tol=1e-10), m.options(**kw))
    assert np.all(np.isfinite(out.u))
    return out


def log_cost(pb, reg, u):
    return reg.log_cost(pb.log_abs_weight, pb.edge_log_scale(u))


def rel_weights(pb, u, v):
    """Norm-relative distance between the weights scaled by ``u`` and by ``v``."""
    a, b = pb.scaled_weights(u), pb.scaled_weights(v)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def argmin_tolerance(pb, reg, u_ref, log_cost_gap):
    """How far a point whose log-cost is ``log_cost_gap`` above the minimum can sit from the
    minimizer, as a norm-relative weight distance (the unit of :func:`rel_weights`).

    Near the minimum ``R(u)/R* − 1 ≈ ½ dᵀ H d ≥ ½ λ_min |d|²`` (``H`` the Hessian of ``R/R*``), so
    ``|d| ≤ sqrt(2 gap / λ_min)``, and each weight moves by ``|Δt_e| ≤ ‖G d‖ ≤ ‖G‖₂ |d|``
    (relative). An interior-point solver resolves the cost to its duality gap (1e-12), so its
    minimizer only to about the square root of that in flat directions: this is the tolerance
    the solver's accuracy justifies (seen: 2.7e-6 on 1 of 400 random networks, within the bound).
    """
    G = pb.G.toarray()
    log_phi, _, log_d2 = reg.edge_terms(pb.log_abs_weight, G @ u_ref)
    H = G.T @ (np.exp(log_d2 - np.logaddexp.reduce(log_phi))[:, None] * G)
    lam_min = np.linalg.eigvalsh(H)[0]
    gap = max(log_cost_gap, 0.0) + 1e-14  # the reference itself is a float64 minimum
    return 2.0 * np.linalg.norm(G, 2) * np.sqrt(2.0 * gap / lam_min)


def scipy_minimum(pb, reg):
    """Independent minimum of R(u) by scipy's trust-region Newton on the normalized cost."""
    shift = reg.log_cost(pb.log_abs_weight)
    G = pb.G.toarray()

    def fun(u):
        log_phi, log_d1, log_d2 = reg.edge_terms(pb.log_abs_weight, G @ u)
        return (np.exp(log_phi - shift).sum(), G.T @ np.exp(log_d1 - shift),
                G.T @ (np.exp(log_d2 - shift)[:, None] * G))

    res = minimize(lambda u: fun(u)[0], np.zeros(pb.n_vars), jac=lambda u: fun(u)[1],
                   hess=lambda u: fun(u)[2], method="trust-exact", options={"gtol": 1e-13})
    return res.x, shift + np.log(res.fun)


def problem(seed, **kw):
    kw.setdefault("kind", ["dag", "layered", "recurrent"][seed % 3])
    return balgraph.compile_network(random_network(seed, **kw))


# ---------------------------------------------------------------- closed forms, brute force
@pytest.mark.parametrize("method", ["cvxpy", "cvxpy_dgp"])
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
def test_single_hidden_unit_matches_eq_5_6(method, p):
    w_in, w_out = np.array([3.0, -0.2]), np.array([0.05, 1.5, -7.0])
    g = nx.DiGraph()
    g.add_edges_from((f"x{k}", "h", {"weight": w}) for k, w in enumerate(w_in))
    g.add_edges_from(("h", f"y{k}", {"weight": w}) for k, w in enumerate(w_out))
    res = balgraph.solve(g, p=p, method=method, tol=1e-6)  # interior point: ~1e-7, not 1e-10
    lam = (np.sum(np.abs(w_out) ** p) / np.sum(np.abs(w_in) ** p)) ** (1 / (2 * p))
    assert res.converged and res.max_imbalance <= 1e-6
    assert res.scales["h"] == pytest.approx(lam, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("p", [0.5, 2.0, 3.0])
def test_cost_equals_scipy_minimum(seed, p):
    pb = problem(seed, n_hidden=4, bipu_fraction=0.3, n_ties=1)
    reg = Lp(p)
    _, best = scipy_minimum(pb, reg)
    for method in ("cvxpy", "cvxpy_dgp"):
        out = run(method, pb, reg)
        assert out.info["status"] in ("optimal", "optimal_inaccurate")
        assert abs(np.expm1(log_cost(pb, reg, out.u) - best)) <= 1e-7


def test_power_sum_with_per_edge_coefficients_matches_scipy():
    pb = problem(11, n_hidden=5)
    coef = np.random.default_rng(0).uniform(0.1, 2.0, pb.n_edges)
    reg = PowerSum({1.0: 0.3, 2.0: coef})
    u_ref, best = scipy_minimum(pb, reg)
    for method in ("cvxpy", "cvxpy_dgp"):
        u = run(method, pb, reg).u
        assert abs(np.expm1(log_cost(pb, reg, u) - best)) <= 1e-7
        assert rel_weights(pb, u, u_ref) <= 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_both_formulations_agree(seed):
    pb = problem(seed, n_hidden=7, bipu_fraction=0.3, tanh_fraction=0.2, n_ties=1)
    reg = Lp(2.0)
    a, b = run("cvxpy", pb, reg).u, run("cvxpy_dgp", pb, reg).u
    assert rel_weights(pb, a, b) <= 1e-6
    assert abs(log_cost(pb, reg, a) - log_cost(pb, reg, b)) <= 1e-10


@settings(max_examples=10)
@given(networks(), st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_cvxpy_minimizes_on_random_networks(g, p):
    pb = balgraph.compile_network(g)
    reg = Lp(p)
    out = run("cvxpy", pb, reg)
    dgp = run("cvxpy_dgp", pb, reg)
    u_ref, best = scipy_minimum(pb, reg)
    c = log_cost(pb, reg, out.u)
    assert c <= reg.log_cost(pb.log_abs_weight) + 1e-12  # never worse than doing nothing
    assert abs(c - best) <= 1e-10
    assert rel_weights(pb, out.u, u_ref) <= max(1e-9, argmin_tolerance(pb, reg, u_ref, c - best))
    # The DGP form resolves tiny units less well (seen: 4e-5 imbalance); its cost still agrees.
    assert abs(log_cost(pb, reg, dgp.u) - best) <= 1e-8
    assert rel_weights(pb, dgp.u, u_ref) <= 1e-4
    assert out.info["constraint_residual"] <= 1e-8
    measured = np.abs(balgraph.imbalance(pb, reg, out.u)).max(initial=0.0)
    assert out.info["max_imbalance"] == pytest.approx(measured)


# ---------------------------------------------------------------- Newton == cvxpy
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
def test_newton_matches_cvxpy(seed, p):
    g = random_network(seed, kind=["dag", "layered", "recurrent"][seed % 3], n_hidden=9,
                       bipu_fraction=0.3 * (seed % 2), n_ties=seed % 2, tanh_fraction=0.2)
    newton = balgraph.solve(g, p=p, method="newton", tol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the comparison below is the check
        cvx = balgraph.solve(g, p=p, method="cvxpy")
    assert abs(np.expm1(cvx.log_cost_after - newton.log_cost_after)) <= 1e-8
    a, b = cvx.weight_array, newton.weight_array
    assert np.linalg.norm(a - b) <= 1e-6 * np.linalg.norm(b)


# ---------------------------------------------------------------- through balgraph.solve
def test_solve_reports_status_and_zero_weights_stay_zero():
    g = random_network(2, kind="recurrent", n_hidden=6)
    first = next(iter(g.edges))
    g.edges[first]["weight"] = 0.0
    res = balgraph.solve(g, p=2, method="cvxpy", tol=1e-6)
    assert res.converged and res.info["status"] in ("optimal", "optimal_inaccurate")
    assert res.weights[first] == 0.0
    assert "max relative imbalance" in res.message
    assert res.max_imbalance == pytest.approx(res.info["max_imbalance"])


def test_unconverged_run_warns():
    pb = problem(5, n_hidden=6)
    with pytest.warns(ConvergenceWarning, match="max relative imbalance"):
        res = balgraph.solve(pb, p=2, method="cvxpy", max_iter=3)
    assert not res.converged


def test_large_networks_are_refused_unless_asked():
    pb = problem(1, n_hidden=5)
    with pytest.raises(SolverError, match="method='newton'"):
        balgraph.solve(pb, method="cvxpy", max_edges=5)
    with pytest.raises(SolverError, match="max_edges=None"):
        balgraph.solve(pb, method="cvxpy_dgp", max_edges=5)
    assert balgraph.solve(pb, method="cvxpy", tol=1e-6, max_edges=None).converged


def test_scs_fallback_when_clarabel_is_missing(monkeypatch):
    pb = problem(4, n_hidden=4)
    monkeypatch.setattr(cp, "installed_solvers", lambda: ["SCS"])
    out = run("cvxpy", pb, Lp(2.0))
    assert out.info["solver"] == "SCS"
    ref, _ = scipy_minimum(pb, Lp(2.0))
    assert rel_weights(pb, out.u, ref) <= 1e-3  # SCS is a first-order method: coarse


def test_no_solver_is_a_solver_error(monkeypatch):
    monkeypatch.setattr(cp, "installed_solvers", list)
    with pytest.raises(SolverError, match="CLARABEL is not installed"):
        run("cvxpy", problem(0), Lp(2.0))


def test_missing_cvxpy_gives_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    with pytest.raises(ImportError, match=r'pip install "balgraph\[cvx\]"'):
        balgraph.solve(problem(0), method="cvxpy")


def test_non_power_regularizer_is_refused():
    class Huber(Regularizer):
        def edge_terms(self, log_abs_w, t):
            return log_abs_w + t, log_abs_w + t, log_abs_w + t

    with pytest.raises(balgraph.OptionError, match="sums of powers"):
        run("cvxpy", problem(0), Huber())


def test_inputs_are_not_mutated():
    pb = problem(3)
    before = pb.weight.copy()
    run("cvxpy_dgp", pb, Lp(1.0))
    np.testing.assert_array_equal(pb.weight, before)
