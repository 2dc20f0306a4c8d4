"""forward(): checked against direct numpy evaluations and hand-computed outputs."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import networks

import balgraph
from balgraph.errors import NetworkError
from balgraph.forward import forward
from balgraph.gallery import as_graph, random_network

HOMOGENEOUS = {"relu", "leaky_relu", "linear", "identity", "bilu", "bipu"}


def _mlp(seed, sizes=(3, 5, 4, 2)):
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=(b, a)) for a, b in itertools.pairwise(sizes)]
    biases = [rng.normal(size=b) for b in sizes[1:]]
    biases[1] = None
    return mats, biases


def _numpy_mlp(mats, biases, x, act):
    for k, (w, b) in enumerate(zip(mats, biases)):
        x = x @ w.T + (0.0 if b is None else b)
        if k < len(mats) - 1:
            x = act(x)
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_matches_numpy_on_every_path(seed):
    mats, biases = _mlp(seed)
    pb = balgraph.Problem.from_layers(mats, biases)
    x = np.random.default_rng(seed + 10).normal(size=(9, 3))
    expect = _numpy_mlp(mats, biases, x, lambda z: np.maximum(z, 0))
    np.testing.assert_allclose(forward(pb, x), expect, rtol=1e-13, atol=1e-13)  # dense layers
    plain = balgraph.Problem.from_arrays(pb.src, pb.dst, pb.weight, nodes=pb.nodes, roles=pb.roles)
    np.testing.assert_allclose(forward(plain, x), expect, rtol=1e-13, atol=1e-13)  # levels
    np.testing.assert_allclose(forward(as_graph(pb), x), expect, rtol=1e-13, atol=1e-13)  # graph
    # a DAG run for at least its depth (3) synchronous steps reaches the feed-forward values
    np.testing.assert_allclose(forward(plain, x, steps=3), expect, rtol=1e-13, atol=1e-13)
    assert not np.allclose(forward(plain, x, steps=2), expect)


def test_leaky_and_bipu_layers_match_numpy():
    mats, biases = _mlp(3)
    pb = balgraph.Problem.from_layers(mats, biases)
    x = np.random.default_rng(4).normal(size=(6, 3))
    leaky = _numpy_mlp(mats, biases, x, lambda z: np.where(z >= 0, z, 0.01 * z))
    np.testing.assert_allclose(forward(pb, x, activations="leaky_relu"), leaky, rtol=1e-13)
    pb2 = balgraph.Problem.from_layers(mats, biases, activations="bipu", degrees=2.0)
    cube = _numpy_mlp(mats, biases, x, lambda z: np.sign(z) * z**2)
    np.testing.assert_allclose(forward(pb2, x), cube, rtol=1e-12)


def test_hand_built_graph_every_activation():
    g = nx.DiGraph()
    g.add_node("x1", role="input")
    g.add_node("x2", role="input")
    g.add_node("b", role="bias")
    g.add_node("relu", role="hidden")  # default activation: relu
    g.add_node("leaky", role="hidden", activation="leaky_relu", slope=0.1)
    g.add_node("bilu", role="hidden", activation="bilu", a=-2.0, b=3.0)
    g.add_node("pow", role="hidden", activation="bipu", degree=3.0)
    g.add_node("th", role="hidden", activation="tanh")
    g.add_node("sg", role="hidden", activation="sigmoid")
    g.add_node("y1", role="output")
    g.add_node("y2", role="output", activation="relu")
    g.add_edges_from([
        ("x1", "relu", {"weight": 1.0}), ("x2", "relu", {"weight": -1.0}),
        ("x1", "leaky", {"weight": -1.0}), ("b", "bilu", {"weight": -0.5}),
        ("x2", "pow", {"weight": 1.0}), ("relu", "th", {"weight": 1.0}),
        ("b", "sg", {"weight": 0.0}),
        ("relu", "y1", {"weight": 1.0}), ("leaky", "y1", {"weight": 10.0}),
        ("bilu", "y1", {"weight": 1.0}), ("pow", "y1", {"weight": 1.0}),
        ("th", "y2", {"weight": 1.0}), ("sg", "y2", {"weight": -4.0}), ("x1", "y2", {"weight": 1.0}),
    ])
    out = forward(g, np.array([[2.0, -1.0], [-1.0, 2.0]]))
    # sample 1: relu = 3, leaky = 0.1·(-2) = -0.2, bilu(-0.5) = -2·-0.5 = 1, pow = (-1)^3 = -1
    # y1 = 3 - 2 + 1 - 1 = 1; th = tanh 3, sg = 1/2, y2 = relu(tanh 3 - 2 + 2)
    # sample 2: relu = 0, leaky = 1, bilu = 1, pow = 8: y1 = 10 + 1 + 8 = 19; y2 = relu(0 - 2 - 1) = 0
    np.testing.assert_allclose(out, [[1.0, np.tanh(3.0)], [19.0, 0.0]], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(forward(g, np.array([2.0, -1.0])), out[0])


def test_bias_is_clamped_to_one_and_input_order_is_node_order():
    g = nx.DiGraph()
    g.add_node("b", role="bias")
    g.add_node("late", role="input")
    g.add_node("early", role="input")
    g.add_node("y", role="output")
    g.add_edge("b", "y", weight=3.0)
    g.add_edge("late", "y", weight=1.0)
    g.add_edge("early", "y", weight=100.0)
    g.add_edge("y", "b", weight=7.0)  # edges into clamped units are ignored
    out = forward(g, np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), steps=None)
    np.testing.assert_array_equal(out, [[4.0], [103.0], [3.0]])


def test_recurrent_matches_unrolled_numpy():
    g = random_network(5, kind="recurrent", n_hidden=6, bias=True, tanh_fraction=0.2)
    assert not nx.is_directed_acyclic_graph(g)
    nodes = list(g.nodes)
    idx = {v: k for k, v in enumerate(nodes)}
    a = np.zeros((len(nodes), len(nodes)))
    for j, i, w in g.edges(data="weight"):
        a[idx[i], idx[j]] = w
    roles = [g.nodes[v]["role"] for v in nodes]
    clamped = np.array([r in ("input", "bias") for r in roles])
    act = [g.nodes[v].get("activation", "relu") for v in nodes]
    x = np.random.default_rng(0).normal(size=(4, roles.count("input")))
    for steps in (1, 2, 7):
        expect = []
        for sample in x:
            s = np.zeros(len(nodes))
            s[[k for k, r in enumerate(roles) if r == "input"]] = sample
            s[[k for k, r in enumerate(roles) if r == "bias"]] = 1.0
            for _ in range(steps):
                z = a @ s
                new = np.where(np.array(act) == "tanh", np.tanh(z),
                               np.where(np.array(act) == "linear", z, np.maximum(z, 0)))
                s = np.where(clamped, s, new)
            expect.append(s[[k for k, r in enumerate(roles) if r == "output"]])
        np.testing.assert_allclose(forward(g, x, steps=steps), expect, rtol=1e-12, atol=1e-12)


def _scaled(g, lam):
    """Rescale every free unit: incoming ×λ, outgoing ÷λ^c (Sections 3, 6.2), from the attributes."""
    def free(v):
        d = g.nodes[v]
        return d.get("role") == "hidden" and d.get("activation", "relu") in HOMOGENEOUS

    def c(v):
        return g.nodes[v].get("degree", 1.0) if g.nodes[v].get("activation") == "bipu" else 1.0

    h = g.copy()
    for j, i, d in h.edges(data=True):
        d["weight"] *= (lam[i] if free(i) else 1.0) / (lam[j] ** c(j) if free(j) else 1.0)
    return h


@given(networks(), st.integers(0, 2**31 - 1))
def test_rescaling_free_units_leaves_the_function_unchanged(g, seed):
    rng = np.random.default_rng(seed)
    lam = {v: float(np.exp(rng.uniform(-2, 2))) for v in g.nodes}
    x = rng.normal(size=(5, sum(d["role"] == "input" for _, d in g.nodes(data=True))))
    steps = None if nx.is_directed_acyclic_graph(g) else 6
    before = forward(g, x, steps=steps)
    after = forward(_scaled(g, lam), x, steps=steps)
    scale = max(1.0, float(np.max(np.abs(before))))
    np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-9 * scale)


def test_rescaling_a_fixed_tanh_unit_changes_the_function():
    # the control for the invariance test: tanh is not homogeneous
    g = random_network(2, n_hidden=5, tanh_fraction=1.0)
    lam = {v: 3.0 for v in g.nodes}
    for v in g.nodes:
        g.nodes[v]["activation"] = "tanh" if g.nodes[v]["role"] == "hidden" else "linear"
    bad = g.copy()
    for j, i, d in bad.edges(data=True):
        d["weight"] *= (lam[i] if g.nodes[i]["role"] == "hidden" else 1) / (
            lam[j] if g.nodes[j]["role"] == "hidden" else 1)
    x = np.random.default_rng(0).normal(size=(5, 3))
    assert not np.allclose(forward(g, x), forward(bad, x))


def test_weights_as_mapping_callable_array_and_result():
    g = random_network(7, n_hidden=6)
    x = np.random.default_rng(1).normal(size=(3, 3))
    doubled = {(j, i): 2 * w for j, i, w in g.edges(data="weight")}
    h = g.copy()
    for j, i, d in h.edges(data=True):
        d["w2"] = 2 * d["weight"]
    ref = forward(h, x, weights="w2")
    np.testing.assert_allclose(forward(g, x, weights=doubled), ref, rtol=1e-14)
    np.testing.assert_allclose(forward(g, x, weights=lambda j, i, d: 2 * d["weight"]), ref, rtol=1e-14)
    pb = balgraph.compile_network(g)
    np.testing.assert_allclose(forward(pb, x, weights=2 * pb.weight), ref, rtol=1e-14)
    assert not np.allclose(ref, forward(g, x))


def test_balanced_result_computes_the_same_function():
    g = random_network(11, n_hidden=7, bipu_fraction=0.3, tanh_fraction=0.2)
    x = np.random.default_rng(2).normal(size=(4, 3))
    res = balgraph.solve(g, p=2)
    assert res.max_imbalance <= 1e-10
    before = forward(g, x)
    np.testing.assert_allclose(forward(res.to_graph(), x), before, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(forward(res, x), before, rtol=1e-10, atol=1e-12)


def test_errors_name_the_problem():
    g = random_network(1, kind="recurrent")
    with pytest.raises(NetworkError, match="steps="):
        forward(g, np.zeros((1, 3)))
    with pytest.raises(NetworkError, match="shape"):
        forward(g, np.zeros((1, 4)), steps=2)
    g2 = nx.DiGraph([("x", "h", {"weight": 1.0}), ("h", "y", {"weight": 1.0})])
    g2.nodes["h"]["activation"] = "gelu"
    with pytest.raises(NetworkError, match="'h'.*gelu"):
        forward(g2, np.zeros((1, 1)))
    np.testing.assert_allclose(forward(g2, np.ones((1, 1)), activations={"h": np.exp}), [[np.e]])
    pb = balgraph.compile_network(g2)  # 'h' is fixed, and a Problem forgets why
    with pytest.raises(NetworkError, match="activations="):
        forward(pb, np.zeros((1, 1)))
    np.testing.assert_allclose(forward(pb, np.ones((1, 1)), activations="tanh"), [[np.tanh(1.0)]])
    with pytest.raises(NetworkError, match="weights"):
        forward(pb, np.zeros((1, 1)), weights=np.ones(5))
