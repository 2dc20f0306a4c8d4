"""Tied-layer closed form (Theorem 12.2) against the tied solvers and brute force."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize

import balgraph
from balgraph.closed_forms import tied_layer_scales
from balgraph.errors import NetworkError, OptionError


def chain(seed, sizes, spread=2.0):
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((sizes[k + 1], sizes[k])) * np.exp(rng.uniform(-spread, spread))
        for k in range(len(sizes) - 1)
    ]


def tied_problem(mats):
    """The chain as a Problem whose hidden layers are tie groups (one scale per layer)."""
    pb = balgraph.Problem.from_layers(mats)
    tie = [k if role == "hidden" else None for (k, _), role in zip(pb.nodes, pb.roles)]
    return balgraph.Problem.from_blocks(pb.blocks, nodes=pb.nodes, roles=pb.roles, tie=tie)


def layer_scales_of(res, mats):
    return np.array([res.scales[(k, 0)] for k in range(1, len(mats))])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5])
@pytest.mark.parametrize("method", ["newton", "cyclic"])
def test_matches_tied_solvers(p, method):
    mats = chain(3, [4, 6, 5, 3, 2])
    closed = tied_layer_scales(mats, p)
    res = balgraph.solve(tied_problem(mats), p=p, method=method, tol=1e-12, max_iter=20000)
    np.testing.assert_allclose(layer_scales_of(res, mats), closed.layer_scales, rtol=1e-9)
    for a, b in zip(res.layer_weights(), closed.matrices):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)


@given(st.integers(0, 10_000), st.sampled_from([0.5, 1.0, 2.0, 4.0]), st.integers(2, 5))
def test_brute_force_and_invariants(seed, p, n_layers):
    mats = chain(seed, list(np.random.default_rng(seed).integers(1, 5, n_layers + 1)))
    out = tied_layer_scales(mats, p)
    assert np.prod(out.multipliers) == pytest.approx(1.0, rel=1e-12)
    norms = [np.sum(np.abs(a) ** p) ** (1 / p) for a in out.matrices]
    np.testing.assert_allclose(norms, out.norm, rtol=1e-12)  # layer balance, eq. 8.1
    # Brute force: minimize Σ_k e^{p x_k} ‖A_k‖^p over log-multipliers with Σ x_k = 0.
    a = np.array([np.sum(np.abs(m) ** p) for m in mats])
    a = a / a.max()

    def cost(y):
        x = np.append(y, -np.sum(y))
        return float(np.sum(a * np.exp(p * x)))

    best = minimize(cost, np.zeros(n_layers - 1), method="BFGS", options={"gtol": 1e-12})
    closed_cost = float(np.sum(a * out.multipliers**p))
    assert closed_cost <= best.fun * (1 + 1e-9)
    assert best.fun <= closed_cost * (1 + 1e-6)


def test_function_unchanged():
    mats = chain(5, [3, 7, 7, 2])
    out = tied_layer_scales(mats, 2.0)
    x = np.random.default_rng(0).standard_normal((3, 10))

    def run(ms):
        h = x
        for k, m in enumerate(ms):
            h = m @ h
            h = np.maximum(h, 0) if k < len(ms) - 1 else h
        return h

    np.testing.assert_allclose(run(out.matrices), run(mats), rtol=1e-12, atol=1e-12)


def test_inputs_untouched_and_errors():
    mats = chain(1, [2, 3, 2])
    copies = [m.copy() for m in mats]
    tied_layer_scales(mats)
    for a, b in zip(mats, copies):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(NetworkError, match="all zero"):
        tied_layer_scales([np.ones((3, 2)), np.zeros((2, 3))])
    with pytest.raises(NetworkError, match="columns"):
        tied_layer_scales([np.ones((3, 2)), np.ones((2, 4))])
    with pytest.raises(OptionError):
        tied_layer_scales([np.ones((3, 2))], p=-1)


def test_extreme_magnitudes():
    mats = [np.full((2, 2), 1e200), np.full((2, 2), 1e-200), np.full((1, 2), 1.0)]
    out = tied_layer_scales(mats, 2.0)
    assert np.all(np.isfinite(out.multipliers))
    np.testing.assert_allclose([np.linalg.norm(m) for m in out.matrices], out.norm, rtol=1e-12)
