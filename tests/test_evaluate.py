"""The independent report of balgraph.solve: layer matrices and edge lists against the definition."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import balgraph
from balgraph.evaluate import evaluate


def definition(problem, reg, u):
    """Relative imbalance, log-cost before and after, from dense ``G`` and the per-edge costs."""
    G = problem.G.toarray()
    coef = np.broadcast_to(reg.terms[reg.p], (problem.n_edges,))
    with np.errstate(divide="ignore"):
        lphi0 = np.log(coef) + reg.p * problem.log_abs_weight
    lphi = lphi0 + reg.p * (G @ u)
    top = lphi[np.isfinite(lphi)].max()
    phi = np.where(np.isfinite(lphi), np.exp(lphi - top), 0.0)
    P = np.where(G > 0, G, 0).T @ phi
    N = np.where(G < 0, -G, 0).T @ phi
    finite = lambda v: np.logaddexp.reduce(v[np.isfinite(v)])  # noqa: E731
    return (P - N) / (P + N), finite(lphi0), finite(lphi)


def as_edges(pb):
    """The same network as one edge list (no layer matrices)."""
    return balgraph.Problem.from_arrays(pb.src, pb.dst, pb.weight, nodes=pb.nodes, roles=pb.roles,
                                        degree=pb.degree, fixed=pb.fixed)


@given(
    seed=st.integers(0, 10_000),
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    p=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    bias=st.booleans(),
    degree=st.sampled_from([1.0, 0.5, 2.0]),
)
def test_layer_matrices_and_edge_lists_give_the_definition(seed, sizes, p, bias, degree):
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=(b, a)) * np.exp(rng.uniform(-3, 3)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=m.shape[0]) for m in mats] if bias else None
    pb = balgraph.Problem.from_layers(mats, biases, degrees=degree)
    reg = balgraph.Lp(p)
    u = rng.normal(scale=2.0, size=pb.n_vars)
    r, before, after = definition(pb, reg, u)
    for problem in (pb, as_edges(pb)):
        rep = evaluate(problem, reg, u)
        np.testing.assert_allclose(rep.relative_imbalance, r, rtol=1e-9, atol=1e-12)
        assert rep.log_cost_before == pytest.approx(before, rel=1e-12, abs=1e-12)
        assert rep.log_cost_after == pytest.approx(after, rel=1e-12, abs=1e-12)
        assert rep.out_of_range is None


def test_ties_self_loops_and_bipu_on_edge_lists():
    g = balgraph.gallery.random_network(3, kind="recurrent", n_hidden=9, bipu_fraction=0.3, n_ties=2)
    pb = balgraph.compile_network(g)
    u = np.random.default_rng(0).normal(size=pb.n_vars)
    reg = balgraph.Lp(1.5)
    r, before, after = definition(pb, reg, u)
    rep = evaluate(pb, reg, u)
    np.testing.assert_allclose(rep.relative_imbalance, r, rtol=1e-9, atol=1e-12)
    assert rep.log_cost_after == pytest.approx(after, rel=1e-12)


def test_sums_that_lose_digits_go_edge_by_edge():
    """A unit whose costs are 1e-480 beside units of order 1: a shifted mat-vec would return a
    subnormal sum (3 digits); the report takes that block edge by edge and stays exact."""
    a = 1e-240
    pb = balgraph.Problem.from_layers([np.array([[2.0], [a]]), np.eye(2), np.array([[1.0, 3.0]])])
    u = np.array([-0.46, 368.8, -0.23, 184.9])
    dense, edges = evaluate(pb, balgraph.Lp(2), u), evaluate(as_edges(pb), balgraph.Lp(2), u)
    np.testing.assert_allclose(dense.relative_imbalance, edges.relative_imbalance, rtol=0, atol=1e-14)


def test_balanced_weights_outside_float64_are_reported():
    pb = balgraph.Problem.from_arrays([0, 1, 2], [2, 2, 3], [1e-300, 1e300, 1.0])
    big = evaluate(pb, balgraph.Lp(2), np.array([300.0]))
    assert big.out_of_range is not None and "beyond float64" in big.out_of_range
    small = evaluate(pb, balgraph.Lp(2), np.array([-200.0]))
    assert small.out_of_range is not None and "below float64's normal range" in small.out_of_range
    ok = evaluate(pb, balgraph.Lp(2), np.array([1.0]))
    assert ok.out_of_range is None
    layers = balgraph.Problem.from_layers([np.array([[1e-300], [1.0]]), np.array([[1.0, 1.0]])])
    assert "below" in evaluate(layers, balgraph.Lp(2), np.array([-100.0, 0.0])).out_of_range
    assert "beyond" in evaluate(layers, balgraph.Lp(2), np.array([0.0, 710.0])).out_of_range
