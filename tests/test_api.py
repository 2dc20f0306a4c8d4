"""balgraph.solve as a user meets it: arguments, the result object, errors."""

import networkx as nx
import numpy as np
import pytest

import balgraph
from balgraph import NetworkError, NoFiniteOptimumError, OptionError
from balgraph.gallery import random_network


def chain():
    g = nx.DiGraph()
    g.add_node("x", role="input")
    g.add_node("y", role="output")
    g.add_edge("x", "h", weight=4.0)
    g.add_edge("h", "y", weight=1.0)
    return g


def test_readme_example():
    g = chain()
    res = balgraph.solve(g, p=2)
    assert res.weights[("x", "h")] == pytest.approx(2.0, rel=1e-12)
    assert res.weights[("h", "y")] == pytest.approx(2.0, rel=1e-12)
    assert res.scales == pytest.approx({"x": 1.0, "h": 0.5, "y": 1.0}, rel=1e-12)
    assert (res.cost_before, res.cost_after) == pytest.approx((17.0, 8.0), rel=1e-12)
    assert res.converged and res.success and res.max_imbalance <= 1e-10
    assert res.method == "newton"


def test_to_graph_is_a_new_graph_and_the_input_is_untouched():
    g = random_network(4, kind="recurrent")
    before = nx.to_dict_of_dicts(g)
    res = balgraph.solve(g)
    out = res.to_graph()
    assert nx.to_dict_of_dicts(g) == before
    assert out is not g
    for j, i, w in out.edges(data="weight"):
        assert w == res.weights[(j, i)]
    assert dict(out.nodes(data=True)) == dict(g.nodes(data=True))


def test_result_on_a_problem_and_on_the_graph_agree():
    g = random_network(5, kind="dag", bipu_fraction=0.3)
    pb = balgraph.compile_network(g)
    a, b = balgraph.solve(g, p=1.5), balgraph.solve(pb, p=1.5)
    np.testing.assert_allclose(a.weight_array, b.weight_array, rtol=1e-12)
    assert b.to_graph().number_of_edges() == g.number_of_edges()


def test_balanced_weights_are_a_positive_rescaling():
    g = random_network(6, kind="recurrent", bipu_fraction=0.3, n_ties=1, tanh_fraction=0.2)
    res = balgraph.solve(g, p=3)
    lam, deg = res.scales, nx.get_node_attributes(g, "degree")
    for (j, i), w in nx.get_edge_attributes(g, "weight").items():
        c = deg.get(j, 1.0)
        expected = w * lam[i] / lam[j] ** c
        assert res.weights[(j, i)] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("p", [0, -1, float("nan"), "two"])
def test_bad_p(p):
    with pytest.raises(OptionError, match="p must be"):
        balgraph.solve(chain(), p=p)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(OptionError, match="newton"):
        balgraph.solve(chain(), method="magic")


def test_bad_tol_and_unreachable_option():
    with pytest.raises(OptionError, match="tol"):
        balgraph.solve(chain(), tol=0)
    with pytest.raises(OptionError, match="unreachable"):
        balgraph.solve(chain(), unreachable="ignore")


def test_dead_end_is_named_and_options_work():
    g = chain()
    g.add_edge("x", "dead", weight=3.0)  # reaches no output
    g.nodes["dead"]["role"] = "hidden"
    with pytest.raises(NoFiniteOptimumError, match="'dead'") as err:
        balgraph.solve(g)
    assert err.value.units == ["dead"]
    fixed = balgraph.solve(g, unreachable="fix")
    assert fixed.scales["dead"] == 1.0 and fixed.weights[("x", "dead")] == 3.0
    pruned = balgraph.solve(g, unreachable="prune")
    assert pruned.weights[("x", "dead")] == 0.0
    assert pruned.weights[("x", "h")] == pytest.approx(2.0)


def test_per_edge_coefficients_from_an_attribute():
    g = chain()
    g.edges["x", "h"]["decay"] = 0.25  # costs 0.25 * 16 = 4 = 1 * 1 ... times λ² and 1/λ²
    res = balgraph.solve(g, regularizer=balgraph.Lp(2, coefficient="decay"))
    # balanced: 0.25 (4λ)^2 = (1/λ)^2  ->  λ^4 = 1/4
    assert res.scales["h"] == pytest.approx(0.25 ** 0.25, rel=1e-10)


def test_zero_coefficient_on_the_only_input_edge_has_no_optimum():
    g = chain()
    with pytest.raises(NoFiniteOptimumError, match="'h'"):
        balgraph.solve(g, regularizer=balgraph.Lp(2, coefficient={("x", "h"): 0.0, ("h", "y"): 1.0}))


def test_zero_weights_stay_zero():
    g = chain()
    g.add_edge("x", "y", weight=0.0)
    g.add_edge("h", "h", weight=0.0)
    res = balgraph.solve(g)
    assert res.weights[("x", "y")] == 0.0 and res.weights[("h", "h")] == 0.0


# ---------------------------------------------------------------- the conventions users bring
def test_networkx_weight_keyword_and_scipy_maxiter():
    g = chain()
    nx.set_edge_attributes(g, {e: 2.0 * w for e, w in nx.get_edge_attributes(g, "weight").items()}, "w")
    a = balgraph.solve(g, weight="w")
    b = balgraph.solve(g, weights="w")
    assert a.weights == b.weights and a.to_graph().edges["x", "h"]["w"] == a.weights[("x", "h")]
    with pytest.raises(OptionError, match="not both"):
        balgraph.solve(g, weights="w", weight="w")
    with pytest.warns(balgraph.ConvergenceWarning):
        c = balgraph.solve(random_network(3, kind="recurrent"), method="cyclic", maxiter=2)
    assert c.nit == 2 and c.status == 1 and not c.success


def test_result_reads_like_scipy_optimize_result():
    from scipy.optimize import OptimizeResult

    res = balgraph.solve(chain())
    assert res.success is res.converged is True and res.status == 0 and isinstance(res.message, str)
    assert res.fun == res.cost_after == pytest.approx(8.0) and res.nit == res.iterations
    np.testing.assert_array_equal(res.x, res.potentials)
    assert set(res) >= {"x", "fun", "success", "status", "message", "nit"} and res["fun"] == res.fun
    assert dict(res)["nit"] == res.nit and len(res) == len(list(res))
    opt = res.to_optimize_result()
    assert isinstance(opt, OptimizeResult) and opt.fun == res.fun and opt.x is res.x


def test_scipy_callback_sees_every_iteration_and_can_stop():
    seen = []

    def stop_after_two(intermediate_result):
        seen.append((intermediate_result.nit, intermediate_result.max_imbalance, intermediate_result.fun))
        if intermediate_result.nit == 2:
            raise StopIteration

    with pytest.warns(balgraph.ConvergenceWarning):
        res = balgraph.solve(random_network(3, kind="recurrent"), method="cyclic", callback=stop_after_two)
    assert [k for k, *_ in seen] == [0, 1, 2] and res.status == 4 and res.nit == 2
    assert seen[-1][1] == pytest.approx(res.max_imbalance, rel=1e-6)
    with pytest.raises(OptionError, match="callable"):
        balgraph.solve(chain(), callback="print")


def test_methods_lists_every_method_and_unknown_options_are_refused_by_name():
    listed = balgraph.methods()
    assert {"newton", "parallel", "alternating", "stochastic", "random_sweep", "cyclic", "max_balance",
            "cvxpy", "cvxpy_dgp"} <= set(listed)
    assert listed["newton"]["options"]["warmup"] == 10
    with pytest.raises(OptionError, match=r"no option 'warmpu'.*warmup"):
        balgraph.solve(chain(), warmpu=3)
    with pytest.raises(OptionError, match="no option 'warmup'.*none"):
        balgraph.solve(chain(), method="cyclic", warmup=3)
    with pytest.raises(OptionError, match="device"):
        balgraph.solve(chain(), device="tpu")
