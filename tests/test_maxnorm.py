"""p = ∞: max-balancing against CLE's closed form, PyTorch's CLE, an LP and the L_p limit."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linprog

import balgraph
from balgraph.errors import OptionError
from balgraph.gallery import random_network


def max_balance(network, **kw):
    """p = inf through the one entry point (its default method is max_balance)."""
    res = balgraph.solve(network, p=np.inf, **{"tol": 1e-12, **kw})
    assert res.method == "max_balance"
    return res


def max_gaps(graph, weights):
    """|max_in − max_out| / (max_in + max_out) per hidden unit, straight from the graph."""
    out = {}
    for h, role in graph.nodes(data="role"):
        if role != "hidden":
            continue
        mi = max(abs(weights[(j, h)]) for j in graph.predecessors(h) if j != h)
        mo = max(abs(weights[(h, i)]) for i in graph.successors(h) if i != h)
        out[h] = abs(mi - mo) / (mi + mo)
    return out


def min_max_weight(graph):
    """LP: min_u max_e (log|w_e| + u_i − u_j) over free units (fixed units have u = 0)."""
    pb = balgraph.compile_network(graph)
    G = pb.G.toarray()
    nz = pb.weight != 0
    law = np.log(np.abs(pb.weight[nz]))
    # variables (u, s): minimize s subject to law + G u - s <= 0
    A = np.hstack([G[nz], -np.ones((nz.sum(), 1))])
    c = np.zeros(pb.n_vars + 1)
    c[-1] = 1.0
    res = linprog(c, A_ub=A, b_ub=-law, bounds=[(None, None)] * (pb.n_vars + 1), method="highs")
    assert res.status == 0
    return float(np.exp(res.fun))


def pair(seed, n_in=4, n_hid=6, n_out=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_hid, n_in)) * np.exp(rng.uniform(-2, 2, (n_hid, 1))),
            rng.standard_normal((n_out, n_hid)) * np.exp(rng.uniform(-2, 2, (1, n_hid))))


def test_layer_pair_is_cle_closed_form():
    W1, W2 = pair(0)
    res = balgraph.solve(balgraph.Problem.from_layers([W1, W2]), p=np.inf)
    r1, r2 = np.abs(W1).max(axis=1), np.abs(W2).max(axis=0)
    s = np.sqrt(r1 / r2)  # Nagel et al. 2019: W1 ← S⁻¹ W1, W2 ← W2 S
    A, B = res.layer_weights()
    np.testing.assert_allclose(A, W1 / s[:, None], rtol=1e-13)
    np.testing.assert_allclose(B, W2 * s[None, :], rtol=1e-13)
    assert res.iterations == 1


def test_matches_torch_cross_layer_equalization():
    torch = pytest.importorskip("torch")
    from torch.ao.quantization._equalize import equalize

    rng = np.random.default_rng(1)
    sizes = [3, 5, 4, 2]
    # torch's CLE equalizes per-channel ranges max − min; in kron(A, [[1, −1], [−1, 1]]) every
    # row and column holds each entry with both signs, so range = 2 max|w| and CLE max-balances.
    sign = np.array([[1.0, -1.0], [-1.0, 1.0]])
    layers = [
        np.kron(rng.standard_normal((sizes[k + 1], sizes[k]))
                * np.exp(rng.uniform(-2, 2, (sizes[k + 1], 1))), sign)
        for k in range(3)
    ]
    model = torch.nn.Sequential(*(torch.nn.Linear(w.shape[1], w.shape[0], bias=False) for w in layers))
    with torch.no_grad():
        for lin, w in zip(model, layers):
            lin.weight.copy_(torch.from_numpy(w))
    model = model.double()
    for lin in model:
        assert np.allclose(lin.weight.detach().numpy().max(1) - lin.weight.detach().numpy().min(1),
                           2 * np.abs(lin.weight.detach().numpy()).max(1))
    equalize(model, [["0", "1"], ["1", "2"]], threshold=1e-14, inplace=True)
    res = balgraph.solve(balgraph.Problem.from_layers(layers), p=np.inf, tol=1e-13)
    for ours, lin in zip(res.layer_weights(), model):
        np.testing.assert_allclose(ours, lin.weight.detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("kind", ["dag", "layered", "recurrent"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimal_largest_weight_and_balance(kind, seed):
    g = random_network(seed, kind=kind, n_hidden=9)
    res = balgraph.solve(g, p=np.inf, tol=1e-13)
    assert res.converged
    assert max(max_gaps(g, res.weights).values()) <= 1e-12
    assert res.cost_after == pytest.approx(max(abs(w) for w in res.weights.values()), rel=1e-15)
    assert res.cost_after == pytest.approx(min_max_weight(g), rel=1e-9)


@given(st.integers(0, 10_000), st.sampled_from(["dag", "layered"]))
def test_invariants_and_uniqueness_on_dags(seed, kind):
    g = random_network(seed, kind=kind, n_hidden=7)
    res = max_balance(g)
    x = np.random.default_rng(seed).standard_normal((5, 3))
    steps = 10 if kind == "recurrent" else None
    np.testing.assert_allclose(balgraph.forward(res.to_graph(), x, steps=steps),
                               balgraph.forward(g, x, steps=steps), rtol=1e-9, atol=1e-9)
    # Start from a random rescaling of the same network: the same max-balanced weights.
    rng = np.random.default_rng(seed + 1)
    hidden = [h for h, r in g.nodes(data="role") if r == "hidden"]
    lam = dict(zip(hidden, np.exp(rng.uniform(-3, 3, len(hidden)))))
    h = g.copy()
    for j, i, d in h.edges(data=True):
        d["weight"] *= lam.get(i, 1.0) / lam.get(j, 1.0)
    other = max_balance(h)
    np.testing.assert_allclose(other.weight_array, res.weight_array, rtol=1e-9)


def test_not_unique_with_cycles_among_free_units():
    """h1 ⇄ h2 carry each other's maxima: scaling both together keeps every unit max-balanced."""
    g = nx.DiGraph()
    for j, i, w in [("x", "h1", 1.0), ("h1", "h2", 10.0), ("h2", "h1", 10.0), ("h2", "y", 1.0)]:
        g.add_edge(j, i, weight=w)
    for lam in (1.0, 2.0):
        h = g.copy()
        h.edges["x", "h1"]["weight"] *= lam
        h.edges["h2", "y"]["weight"] /= lam
        res = max_balance(h)
        assert res.iterations == 0 and res.max_imbalance == 0.0  # already max-balanced
    # both are max-balanced and compute the same function, with different weights: the result
    # is the state reached from the given weights. Both have the least largest weight (the LP).
    assert min_max_weight(g) == pytest.approx(10.0, rel=1e-12)


def test_limit_of_lp_balance():
    """L_p-balanced weights approach the max-balanced ones as p grows (eq. 5.8 → max)."""
    g = random_network(3, kind="layered", n_hidden=8, weight_spread=1.0)
    target = np.log(np.abs(max_balance(g).weight_array))
    errs = []
    for p in (4.0, 16.0, 64.0):
        lp = balgraph.solve(g, p=p, tol=1e-12)
        errs.append(float(np.max(np.abs(np.log(np.abs(lp.weight_array)) - target))))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.1


def test_sum_of_maxima_is_not_the_balance():
    """The convex R_∞ = Σ_i (max_IN + max_OUT) of a width-1 chain is minimized at a' = 2b' = c'."""
    g = nx.DiGraph()
    nx.add_path(g, ["x", "h1", "h2", "y"])
    for e, w in zip(g.edges, (8.0, 1.0, 2.0)):
        g.edges[e]["weight"] = w
    res = max_balance(g)
    a, b, c = (res.weights[e] for e in g.edges)
    assert a == pytest.approx(b, rel=1e-12) and b == pytest.approx(c, rel=1e-12)
    assert a == pytest.approx(16.0 ** (1 / 3), rel=1e-12)   # the product is invariant


def test_errors():
    g = random_network(0, bipu_fraction=0.5, n_hidden=8)
    with pytest.raises(OptionError, match="BiPU"):
        balgraph.solve(g, p=np.inf)
    g = random_network(0)
    with pytest.raises(OptionError, match="p=inf"):
        balgraph.solve(g, p=np.inf, method="cyclic")
    with pytest.raises(OptionError, match="max_balance"):
        balgraph.solve(g, p=2, method="max_balance")
    j, i = next(iter(g.edges))
    g.edges[j, i]["share"] = "a"
    with pytest.raises(OptionError, match="not supported at p=inf"):
        balgraph.solve(g, p=np.inf)
