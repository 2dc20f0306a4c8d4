"""The global solver's acceptance checks (issue "Core II"), each against an independent computation.

For layered, skip-connection, recurrent (self-loops), mixed tanh/BiPU and tied networks and
p in {0.5, 1, 2, 3}: every free unit balanced to 1e-10, the network function unchanged (evaluated
with balgraph.forward), and the cost equal to cvxpy's optimum of the paper's formulation.
"""

import networkx as nx
import numpy as np
import pytest

import balgraph
from balgraph.gallery import random_network

KINDS = {
    "layered": dict(kind="layered"),
    "skip": dict(kind="dag", density=0.6),
    "recurrent": dict(kind="recurrent"),
    "mixed": dict(kind="dag", tanh_fraction=0.2, bipu_fraction=0.3),
    "tied": dict(kind="dag", n_ties=2),
    "recurrent-mixed-tied": dict(kind="recurrent", tanh_fraction=0.2, bipu_fraction=0.3, n_ties=1),
}


def outputs(graph, x):
    steps = None if nx.is_directed_acyclic_graph(graph) else 4
    return balgraph.forward(graph, x, steps=steps)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("name", list(KINDS))
def test_balanced_function_kept_and_cost_matches_cvxpy(name, p):
    cp = pytest.importorskip("cvxpy")
    g = random_network(17, n_hidden=9, **KINDS[name])
    res = balgraph.solve(g, p=p)
    assert res.converged and res.max_imbalance <= 1e-10
    r = balgraph.imbalance(res.problem, balgraph.Lp(p), res.potentials)
    assert np.max(np.abs(r)) <= 1e-10

    x = np.random.default_rng(0).normal(size=(32, sum(1 for _, d in g.nodes(data="role") if d == "input")))
    before, after = outputs(g, x), outputs(res.to_graph(), x)
    np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-12 * np.abs(before).max())

    # cvxpy on the potentials, written here: min Σ |w|^p exp(p (G u)_e)
    pb = res.problem
    nz = pb.weight != 0
    u = cp.Variable(pb.n_vars)
    log_a = p * pb.log_abs_weight[nz]
    shift = log_a.max()
    objective = cp.sum(cp.exp(log_a - shift + p * (pb.G[np.flatnonzero(nz)] @ u)))
    cp.Problem(cp.Minimize(objective)).solve(solver="CLARABEL")
    log_cvx = shift + np.log(objective.value)
    assert res.log_cost_after == pytest.approx(log_cvx, abs=1e-8)
    assert res.log_cost_after <= log_cvx + 1e-12  # Newton is at least as good as the conic solver


def test_weights_spanning_1e150_balance_every_unit():
    rng = np.random.default_rng(3)
    g = random_network(8, kind="recurrent", n_hidden=10)
    hidden = [n for n, r in g.nodes(data="role") if r == "hidden"]
    lam = {h: 10.0 ** rng.uniform(-75, 75) for h in hidden}
    for j, i, d in g.edges(data=True):
        d["weight"] *= lam.get(i, 1.0) / lam.get(j, 1.0)
    res = balgraph.solve(g, p=2)
    assert res.converged and res.max_imbalance <= 1e-10
    assert np.all(np.isfinite(res.weight_array))
    spread = np.ptp(np.log10(np.abs([w for w in nx.get_edge_attributes(g, "weight").values() if w])))
    assert spread > 150


def test_no_finite_optimum_is_an_error_not_a_nan():
    g = random_network(2, kind="dag")
    g.add_node("lonely", role="hidden")
    g.add_edge("lonely", "y0", weight=1.0)  # reached from no input
    with pytest.raises(balgraph.NoFiniteOptimumError, match="lonely"):
        balgraph.solve(g)
