"""Diagnosis of free units without a finite optimum (balgraph.structure)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import balgraph
from balgraph.errors import NoFiniteOptimumError
from balgraph.model import diagnose, ensure_finite_optimum


def _net(edges, hidden=(), **attrs):
    """A DiGraph from ``(j, i, w)``; names starting with x are inputs, y outputs."""
    g = nx.DiGraph()
    for j, i, w in edges:
        g.add_edge(j, i, weight=w)
    for n in g.nodes:
        role = "input" if n.startswith("x") else "output" if n.startswith("y") else "hidden"
        g.nodes[n]["role"] = role
    for n, a in attrs.items():
        g.nodes[n].update(a)
    return g


def _labels(pb, idx):
    return sorted(pb.nodes[k] for k in idx)


def test_dead_end_dead_start_and_closed_component():
    g = _net([
        ("x", "h", 1.0), ("h", "y", 1.0),          # fine
        ("h", "e", 2.0),                           # e reaches no output: dead end
        ("s", "h", 3.0),                           # s is reached from no input: dead start
        ("c1", "c2", 1.0), ("c2", "c1", 1.0),      # a loop cut off from both sides: closed
    ])
    g.nodes["s"]["role"] = "hidden"
    pb = balgraph.compile_network(g)
    diag = diagnose(pb)
    assert _labels(pb, diag.dead_ends) == ["e"]
    assert _labels(pb, diag.dead_starts) == ["s"]
    assert _labels(pb, diag.closed) == ["c1", "c2"]
    assert not diag.ok
    with pytest.raises(NoFiniteOptimumError) as err:
        balgraph.solve(g)
    assert sorted(err.value.units) == ["c1", "c2", "e", "s"]
    for name in ("'e'", "'s'", "'c1'", "dead end", "dead start", "closed", "unreachable="):
        assert name in str(err.value)


def test_zero_weight_edges_do_not_connect():
    """A unit whose only path to an output has weight 0 is a dead end (Remark 5.5)."""
    g = _net([("x", "h", 1.0), ("h", "y", 0.0), ("x", "k", 1.0), ("k", "y", 2.0)])
    pb = balgraph.compile_network(g)
    assert _labels(pb, diagnose(pb).dead_ends) == ["h"]
    g["h"]["y"]["weight"] = 1e-300
    assert diagnose(balgraph.compile_network(g)).ok


def test_tie_group_is_one_variable_for_reachability():
    """h2 alone reaches no output, but tied to h1 (which does) the group has an optimum."""
    g = _net([("x", "h1", 1.0), ("h1", "y", 2.0), ("x", "h2", 3.0)])
    assert not diagnose(balgraph.compile_network(g)).ok
    g.nodes["h1"]["tie"] = g.nodes["h2"]["tie"] = "t"
    pb = balgraph.compile_network(g)
    assert diagnose(pb).ok
    res = balgraph.solve(g, p=2.0)
    # One scale λ for both: in = (1 + 9) λ², out = 4 / λ²  ->  λ⁴ = 4 / 10 (eq. 5.6 for a group).
    assert res.scales["h1"] == res.scales["h2"] == pytest.approx((4 / 10) ** 0.25, rel=1e-10)


def test_fixed_unit_is_ground():
    """A tanh unit is fixed: a free unit feeding only it still reaches the ground."""
    g = _net([("x", "h", 1.0), ("h", "t", 2.0), ("t", "y", 1.0)], t={"activation": "tanh"})
    assert diagnose(balgraph.compile_network(g)).ok


def test_bipu_loop_with_gain_above_one_has_an_optimum():
    """x -> a -> b -> a with degrees c_a = c_b = 2 and no path to an output: a BiLU loop would
    be a dead end, but with gain c_a c_b = 4 > 1 the cost is coercive (Stiemke LP path)."""
    g = _net([("x", "a", 1.0), ("a", "b", 1.0), ("b", "a", 1.0)],
             a={"activation": "bipu", "degree": 2.0}, b={"activation": "bipu", "degree": 2.0})
    pb = balgraph.compile_network(g)
    assert diagnose(pb).ok
    res = balgraph.solve(g, p=2.0)
    # Independent check: the minimum of R over (u_a, u_b) by brute force.
    from scipy.optimize import minimize

    G, a = pb.G.toarray(), np.abs(pb.weight) ** 2
    ref = minimize(lambda u: np.sum(a * np.exp(2 * (G @ u))), np.zeros(2), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    assert res.cost_after == pytest.approx(ref.fun, rel=1e-7)


def test_bipu_loop_with_gain_below_one_is_a_dead_end():
    g = _net([("x", "a", 1.0), ("a", "b", 1.0), ("b", "a", 1.0)],
             a={"activation": "bipu", "degree": 0.5}, b={"activation": "bipu", "degree": 0.5})
    pb = balgraph.compile_network(g)
    assert _labels(pb, diagnose(pb).units) == ["a", "b"]


def test_unreachable_fix_and_prune():
    g = _net([("x", "h", 4.0), ("h", "y", 1.0), ("h", "e", 2.0), ("x", "e", 5.0)])
    pb = balgraph.compile_network(g)
    fixed = ensure_finite_optimum(pb, "fix")
    e = pb.node_index["e"]
    assert fixed.fixed[e] and fixed.n_vars == 1
    res = balgraph.solve(g, p=2.0, unreachable="fix")
    # e kept at scale 1; h balanced with e acting as a visible unit: in = 16, out = 1 + 4.
    assert res.scales["e"] == 1.0
    assert res.scales["h"] == pytest.approx((5 / 16) ** 0.25, rel=1e-10)
    res = balgraph.solve(g, p=2.0, unreachable="prune")
    # e's weights go to 0 (the infimum); h then balances 16 λ² against 1/λ².
    assert res.weights[("h", "e")] == 0.0 and res.weights[("x", "e")] == 0.0
    assert res.scales["h"] == pytest.approx((1 / 16) ** 0.25, rel=1e-10)
    assert g["h"]["e"]["weight"] == 2.0  # the caller's graph is untouched
    with pytest.raises(balgraph.OptionError, match="unreachable"):
        balgraph.solve(g, unreachable="ignore")


def test_error_names_at_most_ten_units_but_keeps_all():
    edges = [("x", "h", 1.0), ("h", "y", 1.0)] + [("h", f"d{k}", 1.0) for k in range(15)]
    with pytest.raises(NoFiniteOptimumError) as err:
        balgraph.solve(_net(edges))
    assert len(err.value.units) == 15 and "and 5 more" in str(err.value)


def test_dense_layer_reachability_matches_the_graph_search():
    """The mat-vec reachability on dense layers agrees with breadth-first search on the edges."""
    from balgraph.model.structure import _dense_reach

    rng = np.random.default_rng(0)
    for trial in range(20):
        sizes = rng.integers(1, 5, size=rng.integers(3, 6)).tolist()
        mats = [rng.normal(size=(b, a)) * (rng.random((b, a)) < 0.4) for a, b in zip(sizes[:-1], sizes[1:])]
        biases = [rng.normal(size=m.shape[0]) * (rng.random(m.shape[0]) < 0.3) for m in mats]
        pb = balgraph.Problem.from_layers(mats, biases)
        fast = balgraph.diagnose(pb)
        assert _dense_reach(pb) is not None
        slow = diagnose(balgraph.Problem.from_arrays(pb.src, pb.dst, pb.weight, nodes=pb.nodes, roles=pb.roles))
        for name in ("dead_ends", "dead_starts", "closed"):
            assert np.array_equal(getattr(fast, name), getattr(slow, name)), (trial, name)
