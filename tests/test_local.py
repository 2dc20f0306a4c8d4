"""Local operations (balgraph.local) against closed forms and brute-force 1-D minimization."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

import balgraph
import balgraph.gallery
from balgraph import NetworkError, NoFiniteOptimumError, Problem
from balgraph import local as bl
from balgraph.regularizers import Lp, PowerSum


def star(w_in, w_out, degree=1.0, self_loop=None):
    """Inputs -> unit h -> outputs (h is node len(w_in)); optional self-loop on h."""
    n_in, n_out = len(w_in), len(w_out)
    h = n_in
    src = list(range(n_in)) + [h] * n_out
    dst = [h] * n_in + list(range(h + 1, h + 1 + n_out))
    w = list(w_in) + list(w_out)
    if self_loop is not None:
        src, dst, w = src + [h], dst + [h], w + [self_loop]
    roles = ["input"] * n_in + ["hidden"] + ["output"] * n_out
    deg = [1.0] * n_in + [degree] + [1.0] * n_out
    return Problem.from_arrays(src, dst, w, roles=roles, degree=deg)


def brute(pb, units, cost):
    """argmin over log λ of the total cost of the scaled network (scipy, bounded Brent)."""
    f = lambda s: cost(bl.scale_weights(pb, None, units, np.exp(s)))  # noqa: E731
    r = minimize_scalar(f, bounds=(-30, 30), method="bounded", options={"xatol": 1e-12})
    return r.x, f(0.0) - r.fun


weights = st.lists(st.floats(0.05, 20.0) | st.floats(-20.0, -0.05), min_size=1, max_size=5)


@given(weights, weights, st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_bilu_closed_form_matches_brute_force(w_in, w_out, p):
    pb = star(w_in, w_out)
    h = len(w_in)
    opt = bl.optimal_scale(pb, None, h, p)
    IN, OUT = np.sum(np.abs(w_in) ** p), np.sum(np.abs(w_out) ** p)
    assert opt.scale == pytest.approx((OUT / IN) ** (1 / (2 * p)), rel=1e-12)  # eq. 5.6
    assert opt.decrease == pytest.approx((np.sqrt(IN) - np.sqrt(OUT)) ** 2, rel=1e-9, abs=1e-12)
    s, dec = brute(pb, h, lambda w: np.sum(np.abs(w) ** p))
    assert opt.log_scale == pytest.approx(s, abs=1e-5)
    assert opt.decrease == pytest.approx(dec, rel=1e-6, abs=1e-9)  # eq. 5.17


@given(weights, weights, st.floats(0.3, 3.0), st.sampled_from([1.0, 2.0]))
def test_bipu_closed_form_and_balance_equation(w_in, w_out, c, p):
    pb = star(w_in, w_out, degree=c)
    h = len(w_in)
    opt = bl.optimal_scale(pb, None, h, p)
    IN, OUT = np.sum(np.abs(w_in) ** p), np.sum(np.abs(w_out) ** p)
    assert opt.scale == pytest.approx((c * OUT / IN) ** (1 / (p * (c + 1))), rel=1e-10)  # 6.6
    w = bl.balance_weights(pb, None, h, p)
    assert np.sum(np.abs(w[: len(w_in)]) ** p) == pytest.approx(
        c * np.sum(np.abs(w[len(w_in):]) ** p), rel=1e-10)  # eq. 6.7
    s, dec = brute(pb, h, lambda w: np.sum(np.abs(w) ** p))
    assert opt.log_scale == pytest.approx(s, abs=1e-5)
    assert opt.decrease == pytest.approx(dec, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("c,loop", [(2.0, 3.0), (0.5, -0.2), (1.7, 1e-3), (1.0, 5.0)])
def test_self_loop_newton_matches_brute_force(c, loop):
    pb = star([1.5, -0.3], [4.0], degree=c, self_loop=loop)
    opt = bl.optimal_scale(pb, None, 2, p=2)
    s, dec = brute(pb, 2, lambda w: np.sum(w**2))
    assert opt.log_scale == pytest.approx(s, abs=1e-6)
    assert opt.decrease == pytest.approx(dec, rel=1e-7)
    # balanced: the derivative of the cost in log λ vanishes, so λ* is a fixed point
    again = bl.optimal_scale(pb, bl.balance_weights(pb, None, 2), 2, p=2)
    assert abs(again.log_scale) < 1e-12


def test_power_sum_regularizer_and_coefficients_match_brute_force():
    pb = star([1.5, -0.3, 2.0], [4.0, 0.1])
    coef = np.array([1.0, 3.0, 0.5, 2.0, 1.0])
    for reg, cost in [
        (PowerSum({1.0: 0.7, 2.0: 1.3}), lambda w: np.sum(0.7 * np.abs(w) + 1.3 * w**2)),
        (Lp(2.0, coef), lambda w: np.sum(coef * w**2)),
    ]:
        opt = bl.optimal_scale(pb, None, 3, regularizer=reg)
        s, dec = brute(pb, 3, cost)
        assert opt.log_scale == pytest.approx(s, abs=1e-6)
        assert opt.decrease == pytest.approx(dec, rel=1e-7)


def chain():
    # x -> h1 -> h2 -> y, plus a disjoint x -> h3 -> y: h1, h3 are disjoint, h1, h2 are not
    g = nx.DiGraph()
    g.add_nodes_from(["x", "y"], role="input")
    g.nodes["y"]["role"] = "output"
    for j, i, w in [("x", "h1", 3.0), ("h1", "h2", -0.5), ("h2", "y", 2.0), ("x", "h3", 0.2),
                    ("h3", "y", 5.0), ("x", "h2", 1.0)]:
        g.add_edge(j, i, weight=w)
    return g


@given(st.floats(0.1, 10), st.floats(0.1, 10))
def test_scaling_commutes_and_composes(lam, mu):
    pb = balgraph.compile_network(chain())
    ij = bl.scale_weights(pb, bl.scale_weights(pb, None, "h1", lam), "h2", mu)
    ji = bl.scale_weights(pb, bl.scale_weights(pb, None, "h2", mu), "h1", lam)
    both = bl.scale_weights(pb, None, ["h1", "h2"], [lam, mu])
    np.testing.assert_allclose(ij, ji, rtol=1e-14)
    np.testing.assert_allclose(ij, both, rtol=1e-14)
    twice = bl.scale_weights(pb, bl.scale_weights(pb, None, "h1", lam), "h1", mu)
    np.testing.assert_allclose(twice, bl.scale_weights(pb, None, "h1", lam * mu), rtol=1e-14)
    # coordinated scaling S_λ(I) is the product of the S_λ(i)  (Def. 3.3)
    np.testing.assert_allclose(bl.scale_weights(pb, None, ["h1", "h2"], lam),
                               bl.scale_weights(pb, None, ["h1", "h2"], [lam, lam]), rtol=1e-14)


def test_balancing_commutes_only_for_disjoint_units():
    pb = balgraph.compile_network(chain())
    a = bl.balance_weights(pb, None, ["h1", "h3"])
    b = bl.balance_weights(pb, None, ["h3", "h1"])
    np.testing.assert_allclose(a, b, rtol=1e-14)  # Prop. 4.4
    a = bl.balance_weights(pb, None, ["h1", "h2"])
    b = bl.balance_weights(pb, None, ["h2", "h1"])
    assert np.max(np.abs(a - b)) > 1e-3  # connected units: B(i)B(j) != B(j)B(i)


def test_balancing_is_idempotent_and_balances():
    pb = balgraph.compile_network(chain())
    for p in (0.5, 1.0, 2.0, 3.5):
        once = bl.balance_weights(pb, None, "h2", p)
        twice = bl.balance_weights(pb, once, "h2", p)
        np.testing.assert_allclose(once, twice, rtol=1e-13)
        im = bl.unit_imbalance(pb, once, p)
        assert abs(im.relative[im.labels.index("h2")]) < 1e-13


def test_tied_balancing_balances_the_sum():
    pb = balgraph.compile_network(chain())
    w = bl.balance_weights(pb, None, ["h1", "h3"], tied=True)
    ratio = w / pb.weight
    lam = ratio[list(zip(pb.src, pb.dst)).index((pb.node_index["x"], pb.node_index["h1"]))]
    np.testing.assert_allclose(bl.scale_weights(pb, None, ["h1", "h3"], lam), w, rtol=1e-13)
    im = bl.group_imbalance(pb, w, {"h1": "t", "h3": "t"})
    assert abs(im.relative[0]) < 1e-13  # eq. 8.1 for the pair
    assert bl.unit_imbalance(pb, w).max_relative > 1e-2  # but not each unit


@given(weights, weights, st.sampled_from([1.0, 2.0, 3.0]), st.floats(0.4, 2.5))
def test_favourable_scales(w_in, w_out, p, c):
    pb = star(w_in, w_out, degree=c)
    h = len(w_in)
    lo, hi = bl.favourable_scales(pb, None, h, p)
    cost = lambda lam: np.sum(np.abs(bl.scale_weights(pb, None, h, lam)) ** p)  # noqa: E731
    r0 = cost(1.0)
    if hi / lo < 1 + 1e-9:
        return
    if c == 1.0:
        lam2 = bl.optimal_scale(pb, None, h, p).scale ** 2  # between 1 and λ*², Remark 4.6
        assert sorted([1.0, lam2]) == pytest.approx([lo, hi], rel=1e-12)
    for frac in (0.1, 0.5, 0.9):
        assert cost(lo * (hi / lo) ** frac) < r0
    assert cost(lo * (hi / lo) ** 1.1) > r0
    assert cost(lo * (hi / lo) ** -0.1) > r0
    assert cost(hi if lo == 1.0 else lo) == pytest.approx(r0, rel=1e-8)


def test_imbalance_measures_against_direct_sums():
    g = balgraph.gallery.random_network(3, kind="recurrent", bipu_fraction=0.3)
    pb = balgraph.compile_network(g)
    p = 1.5
    im = bl.unit_imbalance(pb, None, p)
    for label, lin, lout, rel in zip(im.labels, im.incoming, im.outgoing, im.relative):
        IN = sum(abs(d["weight"]) ** p for *_, d in g.in_edges(label, data=True))
        OUT = sum(abs(d["weight"]) ** p for *_, d in g.out_edges(label, data=True))
        c = g.nodes[label].get("degree", 1.0)
        assert lin == pytest.approx(IN, rel=1e-12) and lout == pytest.approx(c * OUT, rel=1e-12)
        assert rel == pytest.approx((IN - c * OUT) / (IN + c * OUT), rel=1e-10, abs=1e-15)
    assert bl.balance_deficit(pb, None, p) == pytest.approx(np.sum(im.absolute**2), rel=1e-12)
    assert bl.lp_cost(pb.weight, p) == pytest.approx(np.sum(np.abs(pb.weight) ** p), rel=1e-13)
    assert bl.lp_cost(pb.weight, p, log=True) == pytest.approx(np.log(bl.lp_cost(pb.weight, p)))
    assert bl.lp_cost([1e300, 1e300], 2, log=True) == pytest.approx(2 * 300 * np.log(10) + np.log(2))


def test_tie_groups_measure_agrees_with_api_imbalance_sign_and_zero():
    g = balgraph.gallery.random_network(5, kind="recurrent", n_ties=1, n_hidden=6)
    pb = balgraph.compile_network(g)
    im = bl.group_imbalance(pb, None, "tie")
    r = balgraph.imbalance(pb, Lp(2), np.zeros(pb.n_vars))
    assert np.array_equal(np.sign(im.relative), np.sign(r))
    res = balgraph.solve(g, tol=1e-12)
    assert bl.group_imbalance(pb, res.weight_array, "tie").max_relative < 1e-10


def test_tie_layers_gives_layer_balance():
    g = balgraph.gallery.random_network(2, kind="layered", n_hidden=7)
    tied = bl.tie_layers(g)
    assert all("tie" not in d for _, d in g.nodes(data=True))  # input untouched
    depth = {n: d for d, layer in enumerate(nx.topological_generations(g)) for n in layer}
    for n, t in tied.nodes(data="tie"):
        if g.nodes[n].get("role") == "hidden":
            assert t == f"layer{depth[n]}"
    res = balgraph.solve(tied, method="cyclic", tol=1e-12)
    pb = balgraph.compile_network(g)
    assert bl.group_imbalance(pb, res.weight_array, "depth").max_relative < 1e-10  # eq. 8.1
    assert bl.unit_imbalance(pb, res.weight_array).max_relative > 1e-3


def test_graph_wrappers_return_new_graphs():
    g = chain()
    before = {e: d["weight"] for *e, d in g.edges(data=True) for e in [tuple(e)]}
    out = bl.balance_units(g, ["h1", "h2"], p=1)
    assert {e: d["weight"] for *e, d in g.edges(data=True) for e in [tuple(e)]} == before
    pb = balgraph.compile_network(g)
    expected = bl.balance_weights(pb, None, ["h1", "h2"], 1)
    assert [out.edges[e]["weight"] for e in g.edges] == pytest.approx(expected.tolist(), rel=1e-14)
    s = bl.scale_units(g, "h3", 4.0, weights={e: 2.0 for e in g.edges})
    assert s.edges["x", "h3"]["weight"] == 8.0 and s.edges["h3", "y"]["weight"] == 0.5


def test_errors_name_the_unit():
    pb = balgraph.compile_network(chain())
    with pytest.raises(NetworkError, match="'nope'"):
        bl.optimal_scale(pb, None, "nope")
    with pytest.raises(NetworkError, match="'nope'"):
        bl.scale_weights(pb, None, ["h1", "nope"], 2.0)
    with pytest.raises(NetworkError, match="'x'.*input"):
        bl.balance_weights(pb, None, ["x"])
    with pytest.raises(NetworkError, match="'h1'"):
        bl.scale_weights(pb, None, "h1", -1.0)
    with pytest.raises(NetworkError, match="twice"):
        bl.scale_weights(pb, None, ["h1", "h1"], 2.0)
    with pytest.raises(balgraph.OptionError, match="p must be"):
        bl.optimal_scale(pb, None, "h1", p=0)
    with pytest.raises(NetworkError, match="NaN"):
        bl.unit_imbalance(pb, np.full(pb.n_edges, np.nan))
    dead = Problem.from_arrays([0, 1], [1, 2], [1.0, 0.0], roles=["input", "hidden", "output"])
    with pytest.raises(NoFiniteOptimumError, match="outgoing"):
        bl.optimal_scale(dead, None, 1)
    cyc = nx.DiGraph([("x", "a"), ("a", "b"), ("b", "a"), ("b", "y")])
    with pytest.raises(NetworkError, match="cycles"):
        bl.tie_layers(cyc, weights=lambda j, i, d: 1.0)


def test_extreme_weights_stay_finite():
    pb = star([1e-200, 3e-150], [1e180])
    opt = bl.optimal_scale(pb, None, 2, p=2)
    assert np.isfinite(opt.log_scale)
    w = bl.balance_weights(pb, None, 2, p=2)
    assert np.all(np.isfinite(w)) and np.all(w != 0)
    assert bl.unit_imbalance(pb, w).max_relative < 1e-12
