"""General additive regularizers (Section 5, Remark 5.8): sums of powers, per-edge coefficients."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import balgraph
from balgraph.errors import NetworkError, NoFiniteOptimumError
from balgraph.gallery import random_network
from strategies import networks


def generalized_balance(graph, weights, terms):
    """Per free unit or tie group: Σ_IN w g'(w) and c Σ_OUT w g'(w) (eq. 5.15; 6.7), from the graph.

    ``terms`` maps p to a coefficient or to an edge-attribute name; w g'(w) = Σ_k b_k p_k |w|^p_k.
    """
    pb = balgraph.compile_network(graph)
    out = {}
    for k, label in enumerate(pb.nodes):
        if pb.fixed[k]:
            continue
        c = pb.degree[k]

        def wg(j, i):
            d = graph.edges[j, i]
            return sum((d.get(b, 1.0) if isinstance(b, str) else b) * p * abs(weights[(j, i)]) ** p
                       for p, b in terms.items())

        ins = sum(wg(j, label) for j in graph.predecessors(label) if j != label)
        outs = sum(wg(label, i) for i in graph.successors(label) if i != label)
        loop = wg(label, label) * (1 - c) if graph.has_edge(label, label) else 0.0
        key = graph.nodes[label].get("tie", label)  # a tie group balances as one
        a, b = out.get(key, (0.0, 0.0))
        out[key] = (a + ins + max(loop, 0.0), b + c * outs - min(loop, 0.0))
    return out


def dgp_cost(graph, terms):
    """The geometric program min_Λ Σ_e Σ_k b_k |w_e|^p_k Λ_i^p_k Λ_j^(-p_k c_j), written out."""
    cp = pytest.importorskip("cvxpy")
    pb = balgraph.compile_network(graph)
    lam = cp.Variable(pb.n_vars, pos=True)
    parts = []
    for j, i, d in graph.edges(data=True):
        a, b = pb.node_index[j], pb.node_index[i]
        for p, coef in terms.items():
            beta = d.get(coef, 1.0) if isinstance(coef, str) else coef
            if beta == 0 or d["weight"] == 0:
                continue
            term = beta * abs(d["weight"]) ** p
            if not pb.fixed[b]:
                term = term * lam[pb.var[b]] ** p
            if not pb.fixed[a]:
                term = term * lam[pb.var[a]] ** (-p * pb.degree[a])
            parts.append(term)
    prob = cp.Problem(cp.Minimize(sum(parts)))
    prob.solve(gp=True, solver="CLARABEL")
    return float(prob.value)


def cost(weights, graph, terms):
    total = 0.0
    for (j, i), w in weights.items():
        d = graph.edges[j, i]
        total += sum((d.get(b, 1.0) if isinstance(b, str) else b) * abs(w) ** p for p, b in terms.items())
    return total


@pytest.mark.parametrize("seed,terms", [
    (0, {1.0: 0.3, 2.0: 1.0}),
    (1, {0.5: 1.0, 3.0: 0.01}),
    (2, {1.0: 1.0, 1.5: 2.0, 2.0: 0.5}),
])
def test_powersum_against_dgp(seed, terms):
    g = random_network(seed, kind="recurrent", bipu_fraction=0.3, weight_spread=1.0)
    res = balgraph.solve(g, regularizer=balgraph.PowerSum(terms), tol=1e-11)
    assert res.converged
    ours = cost(res.weights, g, terms)
    assert res.cost_after == pytest.approx(ours, rel=1e-12)
    # mixed powers do not allow normalizing the weights: keep them moderate (spread 1)
    assert ours == pytest.approx(dgp_cost(g, terms), rel=1e-7)
    for ins, outs in generalized_balance(g, res.weights, terms).values():
        assert ins == pytest.approx(outs, rel=1e-8)


def test_elastic_net_is_l1_plus_l2_and_local_balancing_agrees():
    g = random_network(3, kind="layered")
    reg = balgraph.ElasticNet(l1=0.5, l2=2.0)
    assert reg == balgraph.PowerSum({1: 0.5, 2: 2.0})
    a = balgraph.solve(g, regularizer=reg, tol=1e-12)
    for method in ("cyclic", "parallel"):
        # local balancing solves the 1-D equation 5.11 for λ by a safeguarded Newton
        b = balgraph.solve(g, regularizer=reg, method=method, tol=1e-11, max_iter=200_000)
        np.testing.assert_allclose(b.weight_array, a.weight_array, rtol=1e-8, atol=1e-12)
    for ins, outs in generalized_balance(g, a.weights, {1.0: 0.5, 2.0: 2.0}).values():
        assert ins == pytest.approx(outs, rel=1e-9)


def test_per_edge_coefficients_attribute_mapping_array():
    g = random_network(4, kind="dag")
    rng = np.random.default_rng(0)
    for j, i in g.edges:
        g.edges[j, i]["decay"] = float(rng.uniform(0.1, 3.0))
    by_attr = balgraph.solve(g, regularizer=balgraph.PowerSum({1: "decay", 2: 1.0}), tol=1e-12)
    mapping = {(j, i): d["decay"] for j, i, d in g.edges(data=True)}
    by_map = balgraph.solve(g, regularizer=balgraph.PowerSum({1: mapping, 2: 1.0}), tol=1e-12)
    pb = balgraph.compile_network(g)
    arr = np.array([mapping[pb.edge_label(e)] for e in range(pb.n_edges)])
    by_arr = balgraph.solve(pb, regularizer=balgraph.PowerSum({1: arr, 2: 1.0}), tol=1e-12)
    np.testing.assert_allclose(by_map.weight_array, by_attr.weight_array, rtol=1e-12)
    np.testing.assert_allclose(by_arr.weight_array, by_attr.weight_array, rtol=1e-12)
    for ins, outs in generalized_balance(g, by_attr.weights, {1: "decay", 2: 1.0}).values():
        assert ins == pytest.approx(outs, rel=1e-9)
    assert by_attr.cost_after == pytest.approx(cost(by_attr.weights, g, {1: "decay", 2: 1.0}), rel=1e-12)


def test_no_decay_on_biases():
    """Zero coefficients remove edges from the cost: a unit pinned only by them has no optimum."""
    g = nx.DiGraph()
    g.add_node("b", role="bias")
    g.add_edge("x", "h", weight=2.0, decay=1.0)
    g.add_edge("b", "h", weight=1.0, decay=0.0)
    g.add_edge("h", "y", weight=0.5, decay=1.0)
    g.add_edge("b", "k", weight=3.0, decay=0.0)   # k is fed by the bias only
    g.add_edge("k", "y", weight=1.0, decay=1.0)
    reg = balgraph.Lp(2, coefficient="decay")
    with pytest.raises(NoFiniteOptimumError, match="'k'") as info:
        balgraph.solve(g, regularizer=reg)
    assert info.value.units == ["k"]
    res = balgraph.solve(g, regularizer=reg, unreachable="fix", tol=1e-12)
    # h is balanced on its decayed edges only: λ² · 4 = 0.25 / λ²  ⇒  λ = (1/16)^(1/4)
    assert res.scales["h"] == pytest.approx(0.5, rel=1e-12)
    assert res.scales["k"] == 1.0


def test_non_convex_settings_rejected():
    with pytest.raises(balgraph.OptionError, match="non-convex"):
        balgraph.PowerSum({1: -0.1, 2: 1.0})
    with pytest.raises(balgraph.OptionError, match="non-convex"):
        balgraph.Lp(2, coefficient=np.array([1.0, -1.0]))
    with pytest.raises(balgraph.OptionError, match="p must be"):
        balgraph.PowerSum({-1: 1.0})
    g = random_network(0)
    for j, i in g.edges:
        g.edges[j, i]["decay"] = -1.0
    with pytest.raises(NetworkError, match="non-convex"):
        balgraph.solve(g, regularizer=balgraph.Lp(2, coefficient="decay"))


@given(networks(max_hidden=6), st.floats(0.0, 2.0), st.floats(0.05, 2.0), st.sampled_from([0.5, 1.0, 3.0]))
def test_generalized_balance_invariant(g, b1, b2, q):
    terms = {q: b1, 2.0: b2}
    res = balgraph.solve(g, regularizer=balgraph.PowerSum(terms), tol=1e-10)
    for label, (ins, outs) in generalized_balance(g, res.weights, terms).items():
        assert abs(ins - outs) <= 1e-8 * (ins + outs) + 1e-300, label
    assert res.log_cost_after <= res.log_cost_before + 1e-12
    x = np.random.default_rng(0).standard_normal((3, sum(r == "input" for r in res.problem.roles)))
    cyclic = any(True for _ in nx.simple_cycles(g))
    steps = 10 if cyclic else None
    np.testing.assert_allclose(balgraph.forward(res.to_graph(), x, steps=steps),
                               balgraph.forward(g, x, steps=steps), rtol=1e-8, atol=1e-8)
