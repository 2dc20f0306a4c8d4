"""The layered cost model (layer matrices, BLAS) against the log-domain model, closed forms and sweeps by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import exponents

import balgraph
from balgraph.costs import LayeredCosts, plan_layers
from balgraph.errors import OptionError


def random_mlp(seed, widths, spread=2.0, bias=True, zeros=0.0):
    """Gaussian layers with per-layer scales exp(U(-spread, spread)); a fraction of zeros."""
    rng = np.random.default_rng(seed)
    mats, biases = [], []
    for n_in, n_out in itertools.pairwise(widths):
        s = np.exp(rng.uniform(-spread, spread))
        W = rng.standard_normal((n_out, n_in)) * s
        W[rng.random(W.shape) < zeros] = 0.0
        mats.append(W)
        biases.append(rng.standard_normal(n_out) * s if bias else None)
    return mats, biases


def relu_forward(mats, biases, x, degrees):
    """Forward pass with BiPU units f(z) = max(z, 0)^c (degree c), linear outputs."""
    for k, (W, b) in enumerate(zip(mats, biases)):
        x = W @ x + (0.0 if b is None else b[:, None])
        if k < len(mats) - 1:
            x = np.maximum(x, 0.0) ** degrees[k]
    return x


def both(pb, p, tol=1e-12):
    fast = balgraph.solve(pb, p=p, tol=tol, model="layered")
    general = balgraph.solve(pb, p=p, tol=tol, model="log-domain")
    return fast, general


def layer_sweeps(pb, reg, order):
    model = LayeredCosts.build(pb, reg)
    return model, model.sweeper(model.start(np.zeros(pb.n_vars)), order)


@given(
    seed=st.integers(0, 2**31 - 1),
    widths=st.lists(st.integers(1, 6), min_size=3, max_size=6),
    p=exponents,
    degrees=st.lists(st.sampled_from([1.0, 1.0, 0.5, 2.0, 3.0]), min_size=4, max_size=4),
    bias=st.booleans(),
)
def test_fast_path_matches_general_newton(seed, widths, p, degrees, bias):
    mats, biases = random_mlp(seed, widths, bias=bias)
    degs = degrees[: len(widths) - 2]
    pb = balgraph.Problem.from_layers(mats, biases, degrees=degs)
    fast, general = both(pb, p)
    assert fast.info["model"] == "layered" and general.info["model"] == "log-domain"
    assert fast.converged and fast.max_imbalance <= 1e-12  # recomputed edge by edge by solve()
    np.testing.assert_allclose(fast.weight_array, general.weight_array, rtol=1e-9, atol=0)
    assert np.all(np.isfinite(fast.weight_array))


@pytest.mark.parametrize("c", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("p", [1.0, 2.0, 3.5])
def test_single_unit_closed_form(c, p):
    # λ* = (c·out/in)^(1/(p(c+1))) for one unit (eqs. 5.6, 6.6)
    a, b = -3.0, 0.25
    pb = balgraph.Problem.from_layers([np.array([[a]]), np.array([[b]])], degrees=c)
    res = balgraph.solve(pb, p=p, model="layered")
    expected = (c * abs(b) ** p / abs(a) ** p) ** (1.0 / (p * (c + 1.0)))
    assert res.info["model"] == "layered"
    assert res.scales[(1, 0)] == pytest.approx(expected, rel=1e-12)


def test_layers_far_apart_stay_on_the_fast_path():
    # Uniform layers at 1e-150 and 1e+150: shifts keep every mat-vec in range.
    mats, biases = random_mlp(3, [5, 6, 4, 3], spread=0.5)
    mats[0] *= 1e-150
    biases[0] *= 1e-150
    mats[2] *= 1e150
    pb = balgraph.Problem.from_layers(mats, biases)
    fast, general = both(pb, 2.0)
    assert fast.info["model"] == "layered"
    np.testing.assert_allclose(fast.weight_array, general.weight_array, rtol=1e-9)


def test_weights_beyond_float64_range_fall_back():
    mats, biases = random_mlp(4, [4, 5, 5, 2], spread=0.5)
    mats[1][0, 0] = 1e-200  # |w|^2 spans 600 decades inside one block
    mats[1][1, 2] = 1e100
    pb = balgraph.Problem.from_layers(mats, biases)
    fast = balgraph.solve(pb, p=2.0, tol=1e-12)
    general = balgraph.solve(pb, p=2.0, tol=1e-12, model="log-domain")
    assert fast.info["model"] != "layered" and "layered" in fast.info["skipped_models"][0]
    assert fast.converged
    np.testing.assert_allclose(fast.weight_array, general.weight_array, rtol=1e-9)
    with pytest.raises(OptionError, match="decades"):
        balgraph.solve(pb, p=2.0, model="layered")


def test_zero_weights_stay_zero_and_no_nan():
    mats, biases = random_mlp(5, [6, 8, 8, 8, 3], zeros=0.3)
    biases[1][:] = 0.0
    pb = balgraph.Problem.from_layers(mats, biases)
    fast, general = both(pb, 1.5)
    assert fast.info["model"] == "layered"
    assert np.all(fast.weight_array[pb.weight == 0] == 0)
    assert not np.any(np.isnan(fast.weight_array))
    np.testing.assert_allclose(fast.weight_array, general.weight_array, rtol=1e-9)


def test_deep_narrow_net_uses_the_coarse_space():
    pb = balgraph.gallery.deep_mlp(0, depth=30, width=6)
    fast, general = both(pb, 2.0, tol=1e-10)
    assert fast.info["model"] == "layered" and fast.converged
    np.testing.assert_allclose(fast.weight_array, general.weight_array, rtol=1e-8)
    off = balgraph.solve(pb, p=2, model="layered", coarse=False)
    assert off.converged
    assert fast.info["cg_iterations"] < off.info["cg_iterations"]


@pytest.mark.parametrize("degree", [1.0, 2.0])
def test_dense_sweeps_reach_the_newton_answer(degree):
    mats, biases = random_mlp(6, [5, 7, 6, 7, 4])
    pb = balgraph.Problem.from_layers(mats, biases, degrees=degree)
    reg = balgraph.Lp(2.0)
    out = balgraph.solve(pb, p=2, method="alternating", tol=1e-11)
    assert out.converged and out.info["model"] == "layered"
    assert np.max(np.abs(balgraph.imbalance(pb, reg, out.x))) <= 1e-11
    newton = balgraph.solve(pb, p=2, tol=1e-12, model="log-domain")
    np.testing.assert_allclose(out.x, newton.potentials, atol=1e-8)


def test_layer_problem_result_keeps_the_function_and_balances():
    widths, degrees = [4, 6, 5, 3], [1.0, 2.0]
    mats, biases = random_mlp(7, widths)
    copies = [m.copy() for m in mats]
    pb = balgraph.Problem.from_layers(mats, biases, degrees=degrees)
    res = balgraph.solve(pb, p=2.0, tol=1e-12)
    assert res.converged and res.info["model"] == "layered"
    new_w, new_b = res.layer_weights(), res.layer_biases()
    x = np.random.default_rng(0).standard_normal((widths[0], 9))
    np.testing.assert_allclose(relu_forward(new_w, new_b, x, degrees), relu_forward(mats, biases, x, degrees),
                               rtol=1e-9, atol=1e-12)
    for k in range(len(mats) - 1):  # eq. 6.7: in = c·out for every hidden unit
        cost_in = np.sum(new_w[k] ** 2, axis=1) + new_b[k] ** 2
        cost_out = np.sum(new_w[k + 1] ** 2, axis=0)
        np.testing.assert_allclose(cost_in, degrees[k] * cost_out, rtol=1e-10)
    ref = balgraph.solve(pb, p=2, tol=1e-12, model="log-domain")
    np.testing.assert_allclose(res.scale_array, ref.scale_array, rtol=1e-9)
    assert all(m is not w for m, w in zip(mats, new_w))
    assert all(np.array_equal(m, c) for m, c in zip(mats, copies))  # the caller's matrices untouched


def test_float32_storage_with_float64_sums():
    mats, biases = random_mlp(8, [30, 40, 40, 10])
    ref = balgraph.solve(balgraph.Problem.from_layers(mats, biases), p=2.0, tol=1e-12)
    pb32 = balgraph.Problem.from_layers([m.astype(np.float32) for m in mats], [b.astype(np.float32) for b in biases])
    exact = balgraph.solve(pb32, p=2.0, tol=1e-12)  # float64 storage: exact for the float32 weights
    assert exact.info["storage"] == "float64" and exact.converged and exact.max_imbalance <= 1e-12
    assert all(W.dtype == np.float32 for W in exact.layer_weights())
    f32 = balgraph.solve(pb32, p=2.0, tol=1e-8, storage="float32")
    # |w|^p rounded to float32 (6e-8): converged is judged at the method's accuracy, 1e-6
    assert f32.info["storage"] == "float32" and f32.converged and 1e-10 < f32.max_imbalance <= 1e-6
    np.testing.assert_allclose(f32.scale_array, ref.scale_array, rtol=1e-5)


def test_what_the_fast_path_declines():
    pb = balgraph.Problem.from_layers(*random_mlp(9, [3, 4, 2]))
    ps = balgraph.PowerSum({1.0: 1.0, 2.0: 0.5})
    assert isinstance(plan_layers(pb, ps), str)
    res = balgraph.solve(pb, regularizer=ps)
    assert res.info["model"] == "log-domain" and res.converged
    with pytest.raises(OptionError, match="single power"):
        balgraph.solve(pb, regularizer=ps, model="layered")
    plain = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    assert "not in layer matrices" in plan_layers(plain, balgraph.Lp(2))


def test_warm_start_and_callback():
    pb = balgraph.gallery.dense_mlp([6, 8, 8, 3], seed=1)
    seen = []
    res = balgraph.solve(pb, p=2, callback=lambda r: seen.append((r.nit, r.x.shape)))
    assert res.info["model"] == "layered"
    assert seen and all(shape == (pb.n_vars,) for _, shape in seen)
    again = balgraph.solve(pb, p=2, u0=res.potentials)
    assert again.iterations == 0 and again.converged


def test_unknown_device_is_refused():
    pb = balgraph.gallery.dense_mlp([3, 4, 2], seed=0)
    with pytest.raises(OptionError, match="unknown device"):
        balgraph.solve(pb, p=2, device="tpu")


@pytest.mark.gpu
def test_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    mats, biases = random_mlp(10, [20, 30, 30, 30, 5])
    on_cpu = balgraph.solve(balgraph.Problem.from_layers(mats, biases, degrees=[1.0, 2.0, 1.0]), p=2, tol=1e-11)
    gpu_pb = balgraph.Problem.from_layers([cupy.asarray(m) for m in mats], [cupy.asarray(b) for b in biases],
                                          degrees=[1.0, 2.0, 1.0])
    on_gpu = balgraph.solve(gpu_pb, p=2, tol=1e-11)
    assert on_gpu.converged and on_gpu.info["model"] == "layered"
    np.testing.assert_allclose(on_gpu.scale_array, on_cpu.scale_array, rtol=1e-9)
    assert type(on_gpu.layer_weights()[0]).__module__.startswith("cupy")
    sparse_gpu = balgraph.solve(balgraph.Problem.from_layers(mats, biases, degrees=[1.0, 2.0, 1.0]), p=2,
                                tol=1e-11, device="cuda", model="sparse")
    np.testing.assert_allclose(sparse_gpu.scale_array, on_cpu.scale_array, rtol=1e-9)


def gauss_seidel_sweep(mats, biases, degrees, p, x, order):
    """One exact sweep by hand on explicit |W|^p: x_k = (log c_k + log out_k − log in_k)/(1 + c_k)."""
    A = [np.abs(W) ** p for W in mats]
    B = [np.zeros(W.shape[0]) if b is None else np.abs(b) ** p for W, b in zip(mats, biases)]
    x = [v.copy() for v in x]
    for L in order:  # hidden layer L sits between mats[L] and mats[L + 1]
        prev = np.exp(-degrees[L - 1] * x[L - 1]) if L else np.ones(mats[0].shape[1])
        nxt = np.exp(x[L + 1]) if L + 1 < len(x) else np.ones(mats[-1].shape[0])
        cost_in = A[L] @ prev + B[L]
        cost_out = nxt @ A[L + 1]
        x[L] = (np.log(degrees[L]) + np.log(cost_out) - np.log(cost_in)) / (1.0 + degrees[L])
    return x


@pytest.mark.parametrize("order", ["parallel", "alternating"])
def test_layer_sweeps_are_exact_gauss_seidel_in_their_order(order):
    widths, degrees, p = [3, 5, 4, 6, 4, 2], [1.0, 2.0, 0.5, 1.0], 1.5
    mats, biases = random_mlp(11, widths)
    pb = balgraph.Problem.from_layers(mats, biases, degrees=degrees)
    model, state = layer_sweeps(pb, balgraph.Lp(p), order)
    sizes = widths[1:-1]
    x = [np.zeros(n) for n in sizes]
    seq = range(4) if order == "parallel" else [0, 2, 1, 3]
    passes = []
    for _ in range(3):
        work = model.work
        state.sweep()
        passes.append((model.work - work) / sum(b.size for b in model.batches))
        x = gauss_seidel_sweep(mats, biases, degrees, p, x, seq)
        np.testing.assert_allclose(model.potentials(state.coordinates()), np.concatenate(x) / p, rtol=1e-12, atol=1e-13)
    # a sweep and its check: two passes over the free-to-free blocks (module docstring)
    assert passes == [2.0, 2.0, 2.0]
    assert len(state.phases) == (4 if order == "parallel" else 2)
    scaled = pb.scaled_weights(model.potentials(state.coordinates()))
    assert state.log_cost == pytest.approx(np.log(np.sum(np.abs(scaled) ** p)), rel=1e-13)


@pytest.mark.parametrize("order", ["parallel", "alternating"])
def test_dense_sweeps_orders_reach_the_same_balance(order):
    mats, biases = random_mlp(12, [4, 6, 6, 6, 3])
    pb = balgraph.Problem.from_layers(mats, biases, degrees=2.0)
    reg = balgraph.Lp(2.0)
    out = balgraph.solve(pb, p=2, method=order, tol=1e-11, model="layered")
    assert out.converged and out.info["schedule"] == order
    newton = balgraph.solve(pb, p=2, tol=1e-12, model="log-domain")
    np.testing.assert_allclose(out.x, newton.potentials, atol=1e-8)
    with pytest.raises(OptionError, match="order"):
        layer_sweeps(pb, reg, "random")
