"""solve()'s report on dense layered problems (no G, no per-edge temporaries) equals the per-edge one."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import balgraph
from balgraph._evaluate import _layered, evaluate
from balgraph.api import imbalance
from balgraph._logsum import logsumexp


def per_edge(problem, reg, u):
    t = problem.edge_log_scale(u)
    return (problem.weight * np.exp(t), imbalance(problem, reg, u),
            reg.log_cost(problem.log_abs_weight), logsumexp(reg.edge_terms(problem.log_abs_weight, t)[0]))


@given(
    seed=st.integers(0, 10_000),
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    p=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    bias=st.booleans(),
    degree=st.sampled_from([1.0, 0.5, 2.0]),
)
def test_layered_report_equals_the_per_edge_report(seed, sizes, p, bias, degree):
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=(b, a)) * np.exp(rng.uniform(-3, 3)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=m.shape[0]) for m in mats] if bias else None
    pb = balgraph.Problem.from_layers(mats, biases, degrees=degree)
    reg = balgraph.Lp(p)
    u = rng.normal(scale=2.0, size=pb.n_vars)
    fast = _layered(pb, reg, u)
    assert fast is not None
    w, r, before, after = per_edge(pb, reg, u)
    np.testing.assert_allclose(fast.weight_array, w, rtol=1e-12)
    np.testing.assert_allclose(fast.relative_imbalance, r, rtol=1e-9, atol=1e-12)
    assert fast.log_cost_before == pytest.approx(before, rel=1e-12, abs=1e-12)
    assert fast.log_cost_after == pytest.approx(after, rel=1e-12, abs=1e-12)


def test_non_layered_problems_take_the_per_edge_path():
    g = balgraph.gallery.random_network(1, kind="recurrent")
    pb = balgraph.compile_network(g)
    reg = balgraph.Lp(2)
    assert _layered(pb, reg, np.zeros(pb.n_vars)) is None
    rep = evaluate(pb, reg, np.zeros(pb.n_vars))
    np.testing.assert_array_equal(rep.weight_array, pb.weight)


def test_ranges_beyond_float64_fall_back():
    mats = [np.array([[1e200], [1.0]]), np.array([[1.0, 1e-200]])]
    pb = balgraph.Problem.from_layers(mats)
    assert _layered(pb, balgraph.Lp(2), np.zeros(pb.n_vars)) is None
