"""Cross-layer equalization conventions at p = ∞: absmax (AIMET, Brevitas) and minmax (torch.ao),
biases rescaled but left out of the ranges (or counted), against the peers' formulas iterated
to their fixed point and against torch.ao's ``equalize`` itself."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import balgraph
from balgraph import MaxNorm
from balgraph.errors import NoFiniteOptimumError, OptionError


def chain(seed, sizes=(4, 7, 6, 5, 3), spread=2.0):
    """Layers of a Linear/ReLU chain with badly scaled channels, and biases."""
    rng = np.random.default_rng(seed)
    mats = [rng.standard_normal((m, n)) * np.exp(rng.uniform(-spread, spread, (m, 1)))
            for n, m in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal(m) * np.exp(rng.uniform(-spread, spread, m)) for m in sizes[1:]]
    return mats, biases


def size(x, kind, axis):
    """A channel's size the way the peers write it (NumPy over the whole weight tensor)."""
    if kind == "absmax":
        return np.abs(x).max(axis=axis)
    return x.max(axis=axis) - x.min(axis=axis)


def peer_cle(mats, biases, kind, sweeps=20_000, one_pass=False):
    """CLE as AIMET (absmax) and torch.ao (minmax) write it, pair by pair along the chain:
    ``s = sqrt(r1 / r2)``, ``W1 ← S⁻¹ W1``, ``b1 ← S⁻¹ b1``, ``W2 ← W2 S``; biases stay out of
    the ranges. AIMET makes one pass; torch.ao repeats until nothing moves."""
    W, b = [m.copy() for m in mats], [v.copy() for v in biases]
    for _ in range(1 if one_pass else sweeps):
        moved = 0.0
        for k in range(len(W) - 1):
            s = np.sqrt(size(W[k], kind, 1) / size(W[k + 1], kind, 0))
            W[k] /= s[:, None]
            b[k] /= s
            W[k + 1] *= s[None, :]
            moved = max(moved, float(np.max(np.abs(np.log(s)))))
        if moved < 1e-15:
            break
    return W, b


def gaps(mats, biases, kind, biases_count=False):
    """Relative gap |in − out| / (in + out) of every hidden channel, by NumPy."""
    out = []
    for k in range(len(mats) - 1):
        w_in = np.hstack([mats[k], biases[k][:, None]]) if biases_count else mats[k]
        r1, r2 = size(w_in, kind, 1), size(mats[k + 1], kind, 0)
        out.append(np.abs(r1 - r2) / (r1 + r2))
    return np.concatenate(out)


def cle(mats, biases, kind, bias_mode="exclude", **kw):
    res = balgraph.solve(balgraph.Problem.from_layers(mats, biases), p=np.inf,
                         regularizer=MaxNorm(kind, biases=bias_mode), tol=1e-13, **kw)
    assert res.converged, res.message
    return res.layer_weights(), res.layer_biases(), res


def relu_net(mats, biases, x):
    for k, (W, b) in enumerate(zip(mats, biases)):
        x = x @ W.T + b
        if k < len(mats) - 1:
            x = np.maximum(x, 0.0)
    return x


@pytest.mark.parametrize("kind", ["absmax", "minmax"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_point_of_the_peers_iteration(kind, seed):
    mats, biases = chain(seed)
    W, b, res = cle(mats, biases, kind)
    W_ref, b_ref = peer_cle(mats, biases, kind)
    for ours, ref in zip(W + b, W_ref + b_ref):
        np.testing.assert_allclose(ours, ref, rtol=1e-10)
    assert gaps(W, b, kind).max() <= 1e-12
    x = np.random.default_rng(seed).standard_normal((16, mats[0].shape[1]))
    np.testing.assert_allclose(relu_net(W, b, x), relu_net(mats, biases, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["absmax", "minmax"])
def test_deep_chain_in_few_newton_steps_at_the_peers_fixed_point(kind):
    """24 hidden layers: the pairwise iteration needs hundreds of passes (the slow mode runs
    along the depth); Newton's steps on the piecewise-linear balance equations need a few."""
    mats, biases = chain(3, sizes=(5,) + (6,) * 24 + (3,), spread=3.0)
    W, b, res = cle(mats, biases, kind)
    W_ref, b_ref = peer_cle(mats, biases, kind)
    for ours, ref in zip(W + b, W_ref + b_ref):
        np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert gaps(W, b, kind).max() <= 1e-12
    passes = 0
    W_pass, b_pass = mats, biases
    while gaps(W_pass, b_pass, kind).max() > 1e-12:
        W_pass, b_pass = peer_cle(W_pass, b_pass, kind, one_pass=True)
        passes += 1
    assert passes > 100 and res.iterations < passes / 10


@pytest.mark.parametrize("kind", ["absmax", "minmax"])
def test_zero_entries_count_as_values_in_the_range(kind):
    """torch.ao's range is over a tensor's entries, zeros included: a channel [0, 0, 2] has range 2."""
    mats, biases = chain(8)
    rng = np.random.default_rng(8)
    for W in mats:
        W[rng.random(W.shape) < 0.4] = 0.0
        W[np.arange(W.shape[0]), np.arange(W.shape[0]) % W.shape[1]] += 1.0  # no empty row,
        W[np.arange(W.shape[1]) % W.shape[0], np.arange(W.shape[1])] += 1.0  # no empty column
        W[0, 1:] = 0.0
        W[0, 0] = abs(W[0, 0]) + 0.5  # a channel with one positive entry and zeros
    W, b, _ = cle(mats, biases, kind)
    W_ref, b_ref = peer_cle(mats, biases, kind)
    for ours, ref in zip(W + b, W_ref + b_ref):
        np.testing.assert_allclose(ours, ref, rtol=1e-10)


@pytest.mark.parametrize("depth,left", [(3, 1e-3), (8, 1e-3)])
def test_one_pass_leaves_a_gap_that_the_exact_solve_closes(depth, left):
    """AIMET's single pass over the pairs leaves channels unbalanced on deeper chains."""
    mats, biases = chain(7, sizes=(4,) + (8,) * depth + (3,))
    W1, b1 = peer_cle(mats, biases, "absmax", one_pass=True)
    W, b, res = cle(mats, biases, "absmax")
    assert gaps(W1, b1, "absmax").max() > left
    assert gaps(W, b, "absmax").max() <= 1e-12
    assert res.iterations > 1


@pytest.mark.parametrize("kind", ["absmax", "minmax"])
def test_biases_counted_on_request(kind):
    mats, biases = chain(3)
    biases = [10.0 * v for v in biases]  # large enough to set some channel's size
    W, b, _ = cle(mats, biases, kind, bias_mode="include")
    assert gaps(W, b, kind, biases_count=True).max() <= 1e-12
    assert gaps(W, b, kind).max() > 1e-3
    W_ex, b_ex, _ = cle(mats, biases, kind)
    assert not np.allclose(W_ex[0], W[0])


def test_default_is_the_lp_limit_and_ranges_differ():
    """``p=inf`` alone is MaxNorm(): absmax with biases counted (the limit of eq. 5.8)."""
    mats, biases = chain(4)
    res = balgraph.solve(balgraph.Problem.from_layers(mats, biases), p=np.inf, tol=1e-14)
    W, b = res.layer_weights(), res.layer_biases()
    assert gaps(W, b, "absmax", biases_count=True).max() <= 1e-12
    W_mm, _, _ = cle(mats, biases, "minmax")
    assert np.max(np.abs(W_mm[0] / W[0] - 1)) > 0.01


def test_matches_torch_ao_equalize_on_a_linear_chain():
    torch = pytest.importorskip("torch")
    from torch.ao.quantization._equalize import equalize

    mats, biases = chain(5, spread=1.0)
    layers = []
    for W, b in zip(mats, biases):
        lin = torch.nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    names = [str(2 * k) for k in range(len(mats))]
    equalize(model, [[a, c] for a, c in zip(names, names[1:])], threshold=1e-14, inplace=True)
    W, b, _ = cle(mats, biases, "minmax")
    # torch.ao adds 1e-9 to the second range, which moves its fixed point by about that much
    for k, name in enumerate(names):
        np.testing.assert_allclose(W[k], model.get_submodule(name).weight.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(b[k], model.get_submodule(name).bias.detach().numpy(), rtol=1e-6)


def test_zero_range_is_refused_by_name():
    W1 = np.array([[1.0, 1.0], [2.0, -1.0]])  # unit (1, 0): both weights equal, range 0
    W2 = np.array([[1.0, 3.0], [-2.0, 1.0]])
    with pytest.raises(NoFiniteOptimumError, match=r"\(1, 0\).*range='absmax'"):
        balgraph.solve(balgraph.Problem.from_layers([W1, W2]), p=np.inf, regularizer=MaxNorm("minmax"))
    res = balgraph.solve(balgraph.Problem.from_layers([W1, W2]), p=np.inf, regularizer=MaxNorm("absmax"))
    assert res.converged


def test_a_unit_fed_only_by_its_bias_is_refused_when_biases_do_not_count():
    W1 = np.array([[0.0, 0.0], [2.0, -1.0]])
    W2 = np.array([[1.0, 3.0], [-2.0, 1.0]])
    pb = balgraph.Problem.from_layers([W1, W2], [np.array([1.0, 1.0]), None])
    assert balgraph.solve(pb, p=np.inf).converged
    with pytest.raises(NoFiniteOptimumError, match=r"\(1, 0\)"):
        balgraph.solve(pb, p=np.inf, regularizer=MaxNorm(biases="exclude"))


def test_options_are_checked():
    with pytest.raises(OptionError, match="range"):
        MaxNorm("max")
    with pytest.raises(OptionError, match="biases"):
        MaxNorm(biases="skip")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["absmax", "minmax"]), st.sampled_from(["include", "exclude"]))
def test_invariants(seed, kind, bias_mode):
    """Balanced by NumPy's count, the function kept, idempotent, and the same state from any
    rescaling of the start (chains have no cycle among free units)."""
    mats, biases = chain(seed, sizes=(3, 5, 4, 2))
    W, b, _ = cle(mats, biases, kind, bias_mode)
    assert gaps(W, b, kind, biases_count=bias_mode == "include").max() <= 1e-12
    x = np.random.default_rng(seed).standard_normal((8, 3))
    np.testing.assert_allclose(relu_net(W, b, x), relu_net(mats, biases, x), rtol=1e-9, atol=1e-12)
    W2, b2, again = cle(W, b, kind, bias_mode)
    assert again.iterations == 0
    rng = np.random.default_rng(seed + 1)
    lam = [np.exp(rng.uniform(-4, 4, m.shape[0])) for m in mats[:-1]] + [np.ones(mats[-1].shape[0])]
    scaled = [m * lam[k][:, None] / (lam[k - 1][None, :] if k else 1.0) for k, m in enumerate(mats)]
    W3, b3, _ = cle(scaled, [v * lam[k] for k, v in enumerate(biases)], kind, bias_mode)
    for ours, other in zip(W + b, W3 + b3):
        np.testing.assert_allclose(other, ours, rtol=1e-9)
