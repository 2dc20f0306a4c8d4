"""Load-balance measures (closed forms) and synaptic scaling (hand-computed rule, EMA, function change).

The scaling rule is checked against numpy forward passes written out by hand, not against the
module's own hooks.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from balgraph.errors import NetworkError
from balgraph.loadbalance import (
    activation_cv,
    activation_entropy,
    load_balance,
    mean_activations,
)

# ---------------------------------------------------------------- numpy measures (no torch)


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_uniform_use_has_entropy_one_and_cv_zero(n):
    a = np.full(n, 0.37)
    assert activation_entropy(a) == pytest.approx(1.0, abs=1e-15)
    assert activation_cv(a) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("n", [2, 3, 10])
def test_one_hot_use_has_entropy_zero_and_cv_sqrt_n_minus_1(n):
    a = np.zeros(n)
    a[n // 2] = 4.2
    assert activation_entropy(a) == 0.0
    # mean 4.2/n, population std 4.2 sqrt(n-1)/n
    assert activation_cv(a) == pytest.approx(math.sqrt(n - 1), rel=1e-14)
    assert load_balance(a).silent == n - 1


@given(st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_two_units_closed_forms(x, y):
    if x + y == 0:
        return
    p = x / (x + y)
    binary = -sum(q * math.log(q) for q in (p, 1 - p) if q > 0) / math.log(2)
    assert activation_entropy([x, y]) == pytest.approx(binary, abs=1e-12)
    assert activation_cv([x, y]) == pytest.approx(abs(x - y) / (x + y), abs=1e-12)


@given(arrays(np.float64, st.integers(2, 30), elements=st.just(0.0) | st.floats(1e-6, 1e3)), st.floats(1e-3, 1e3))
def test_measures_are_in_range_and_scale_and_permutation_invariant(a, c):
    if a.sum() == 0:
        return
    h, cv = activation_entropy(a), activation_cv(a)
    assert 0.0 <= h <= 1.0 and 0.0 <= cv <= math.sqrt(a.size - 1) * (1 + 1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert h == pytest.approx(scipy_stats.entropy(a / a.sum()) / math.log(a.size), abs=1e-12)
    assert activation_entropy(c * a) == pytest.approx(h, abs=1e-12)
    assert activation_cv(a[::-1] * c) == pytest.approx(cv, rel=1e-9, abs=1e-12)


def test_two_dimensional_input_is_averaged_over_samples():
    x = np.array([[0.0, 1.0, 3.0], [2.0, 1.0, 0.0]])
    assert mean_activations(x).tolist() == [1.0, 1.0, 1.5]
    assert activation_entropy(x) == activation_entropy([1.0, 1.0, 1.5])
    assert load_balance(x).n_units == 3


def test_silent_layer_counts_as_uniform_and_never_nan():
    lb = load_balance(np.zeros((4, 3)))
    assert (lb.cv, lb.entropy, lb.silent) == (0.0, 1.0, 3)


@pytest.mark.parametrize(
    "bad, match",
    [([1.0, -0.5], "units 1 have a negative mean"), (np.zeros((2, 2, 2)), "samples x units"),
     ([1.0, np.nan], "finite"), (np.zeros((0, 3)), "no unit or no sample")],
)
def test_invalid_activations_are_refused_with_a_reason(bad, match):
    with pytest.raises(NetworkError, match=match):
        load_balance(bad)


# ---------------------------------------------------------------- torch: synaptic scaling

torch = pytest.importorskip("torch")
nn = torch.nn
import balgraph.torch as bt


def tiny_mlp():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.5], [0.2, 0.1], [-1.0, 2.0]]))
        net[0].bias.copy_(torch.tensor([0.1, 0.3, 0.0]))
        net[2].weight.copy_(torch.tensor([[1.0, -0.5, 0.3], [0.4, 0.4, 0.4]]))
        net[2].bias.copy_(torch.tensor([0.2, 0.0]))
        net[4].weight.copy_(torch.tensor([[1.0, -2.0]]))
    return net


def relu(x):
    return np.maximum(x, 0.0)


def hand_hidden(params, x):
    """The two hidden layers of tiny_mlp in numpy."""
    w0, b0, w2, b2 = params
    h1 = relu(x @ w0.T + b0)
    return h1, relu(h1 @ w2.T + b2)


def np_params(net):
    return [t.detach().numpy().copy() for t in (net[0].weight, net[0].bias, net[2].weight, net[2].bias)]


X = [np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [-1.0, 1.0]]),
     np.array([[0.0, 1.0], [1.0, 1.0], [3.0, -2.0]]),
     np.array([[2.0, 2.0], [-0.5, 0.5]])]


def test_running_mean_matches_a_hand_ema_and_ignores_eval_passes():
    net, m = tiny_mlp(), 0.7
    sc = bt.SynapticScaling(net, target=1.0, gamma=0.2, momentum=m)
    params = np_params(net)
    ema = None
    for x in X:
        net(torch.from_numpy(x))
        means = [h.mean(axis=0) for h in hand_hidden(params, x)]
        ema = means if ema is None else [m * e + (1 - m) * b for e, b in zip(ema, means)]
    net.eval()
    net(torch.from_numpy(X[0] * 5))
    np.testing.assert_allclose(sc.running_mean["0"].numpy(), ema[0], rtol=1e-14)
    np.testing.assert_allclose(sc.running_mean["2"].numpy(), ema[1], rtol=1e-14)


@pytest.mark.parametrize("target", ["layer_mean", 0.8])
def test_step_multiplies_incoming_weights_and_bias_by_target_over_mean_to_the_gamma(target):
    net, gamma = tiny_mlp(), 0.3
    sc = bt.SynapticScaling(net, target=target, gamma=gamma, momentum=0.5)
    before = np_params(net)
    out_before = net[4].weight.detach().clone()
    for x in X[:2]:
        net(torch.from_numpy(x))
    h = [hand_hidden(before, x) for x in X[:2]]
    sc.step()
    after = np_params(net)
    for k in range(2):
        abar = 0.5 * h[0][k].mean(axis=0) + 0.5 * h[1][k].mean(axis=0)
        a_star = abar.mean() if target == "layer_mean" else target
        active = (abar > 0) & (h[1][k].mean(axis=0) > 0)  # silent on the last batch: not scaled
        expect = np.where(active, (a_star / np.where(active, abar, 1.0)) ** gamma, 1.0)
        assert not np.allclose(expect, 1.0)
        np.testing.assert_allclose(sc.running_mean[str(2 * k)].numpy(), abar * expect, rtol=1e-13)
        np.testing.assert_allclose(after[2 * k], before[2 * k] * expect[:, None], rtol=1e-13)
        np.testing.assert_allclose(after[2 * k + 1], before[2 * k + 1] * expect, rtol=1e-13)
    assert torch.equal(net[4].weight, out_before), "the output layer is not a hidden layer"


def test_silent_unit_is_left_unchanged():
    net = tiny_mlp()
    with torch.no_grad():
        net[0].weight[1] = torch.tensor([-1.0, -1.0])
        net[0].bias[1] = -10.0
    sc = bt.SynapticScaling(net, target=1.0, gamma=0.5)
    net(torch.from_numpy(X[0]))
    w = net[0].weight[1].detach().clone()
    sc.step()
    assert sc.running_mean["0"][1] == 0.0 and sc.last_factors["0"][1] == 1.0
    assert torch.equal(net[0].weight[1], w)


def test_scaling_changes_the_function_and_balancing_does_not():
    torch.manual_seed(1)
    x = torch.randn(64, 2, dtype=torch.float64)
    net = tiny_mlp()
    sc = bt.SynapticScaling(net, target=1.0, gamma=0.5)
    before_acts = bt.layer_mean_activations(net, x)
    y0 = net(x).detach()
    sc.step()
    y1 = net(x).detach()
    assert not torch.allclose(y0, y1, rtol=1e-3)
    # ReLU is positively homogeneous: the first hidden layer's activity is multiplied by the factor
    np.testing.assert_allclose(bt.layer_mean_activations(net, x)["0"],
                               before_acts["0"] * sc.last_factors["0"].numpy(), rtol=1e-12)
    res = bt.balance_(net, 2.0, x, tol=1e-10)
    assert res.converged and res.cost_after < res.cost_before * (1 - 1e-6)
    torch.testing.assert_close(net(x).detach(), y1, rtol=1e-10, atol=1e-12)


def test_repeated_scaling_on_a_fixed_batch_follows_the_closed_form():
    """ReLU is homogeneous: on a fixed batch log ā_t − log a* = (1 − γ)^t (log ā_0 − log a*)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    x = torch.randn(256, 5, dtype=torch.float64)
    a_star, gamma, t = 0.25, 0.2, 40
    sc = bt.SynapticScaling(net, target=a_star, gamma=gamma, momentum=0.8)
    start = bt.load_balance_report(net, x)["0"]
    for _ in range(t):
        net(x)
        sc.step()
    end = bt.load_balance_report(net, x)["0"]
    alive = start.mean > 0
    expect = a_star * (start.mean[alive] / a_star) ** ((1 - gamma) ** t)
    np.testing.assert_allclose(end.mean[alive], expect, rtol=1e-10)
    np.testing.assert_allclose(sc.running_mean["0"].numpy()[alive], expect, rtol=1e-10)
    assert end.cv < start.cv and end.entropy > start.entropy


def test_a_unit_silent_on_the_last_batch_keeps_its_weights():
    net = tiny_mlp()
    sc = bt.SynapticScaling(net, target=1.0, gamma=0.5)
    net(torch.tensor([[1.0, 1.0]], dtype=torch.float64))  # unit 2 of layer 0 fires: -1 + 2 > 0
    net(torch.tensor([[1.0, 0.0]], dtype=torch.float64))  # it does not: -1 < 0
    w = net[0].weight.detach().clone()
    sc.step()
    assert sc.running_mean["0"][2] > 0 and sc.last_factors["0"][2] == 1.0
    assert torch.equal(net[0].weight[2], w[2]) and not torch.equal(net[0].weight[0], w[0])


def test_conv_channels_are_scaled_per_channel():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 2)).double()
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    sc = bt.SynapticScaling(net, target="layer_mean", gamma=1.0)
    w, b = net[0].weight.detach().clone(), net[0].bias.detach().clone()
    act = torch.relu(nn.functional.conv2d(x, w, b)).mean(dim=(0, 2, 3)).numpy()
    net(x)
    np.testing.assert_allclose(sc.running_mean["0"].numpy(), act, rtol=1e-13)
    sc.step()
    f = act.mean() / act
    np.testing.assert_allclose(net[0].weight.detach().numpy(), w.numpy() * f[:, None, None, None], rtol=1e-13)
    np.testing.assert_allclose(net[0].bias.detach().numpy(), b.numpy() * f, rtol=1e-13)
    # gamma = 1 with a fixed batch equalizes the channels at once (ReLU is homogeneous)
    lb = bt.load_balance_report(net, x)["0"]
    assert lb.entropy == pytest.approx(1.0, abs=1e-12) and lb.cv == pytest.approx(0.0, abs=1e-12)


def test_load_balance_report_matches_a_numpy_forward_pass():
    net = tiny_mlp()
    x = np.vstack(X)
    h1, h2 = hand_hidden(np_params(net), x)
    rep = bt.load_balance_report(net, torch.from_numpy(x))
    np.testing.assert_allclose(rep["2"].mean, h2.mean(axis=0), rtol=1e-14)
    assert rep["0"].entropy == pytest.approx(activation_entropy(h1), abs=1e-14)


def test_hidden_layers_sees_through_batchnorm_but_scaling_refuses_it():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    assert [h.name for h in bt.hidden_layers(net)] == ["0"]
    with pytest.raises(NetworkError, match=r"\['0'\] are followed by BatchNorm"):
        bt.SynapticScaling(net)


def test_shared_activation_and_parametrized_weights_are_refused():
    relu_ = nn.ReLU()
    with pytest.raises(NetworkError, match="own nn.ReLU"):
        bt.hidden_layers(nn.Sequential(nn.Linear(2, 2), relu_, nn.Linear(2, 2), relu_, nn.Linear(2, 1)))
    wn = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(2, 3)), nn.ReLU(), nn.Linear(3, 1))
    with pytest.raises(NetworkError, match="parametrization"):
        bt.SynapticScaling(wn)
    with pytest.raises(NetworkError, match="positively homogeneous"):
        bt.SynapticScaling(nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)))
    with pytest.raises(NetworkError, match="target"):
        bt.SynapticScaling(tiny_mlp(), target="median")


def test_remove_stops_recording():
    net = tiny_mlp()
    sc = bt.SynapticScaling(net)
    sc.remove()
    net(torch.from_numpy(X[0]))
    sc.step()
    assert sc.running_mean == {} and sc.last_factors == {}
