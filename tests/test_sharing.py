"""Shared weights (Section 8.3): exact constrained balancing, checked against cvxpy and CNNs."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import balgraph
from balgraph.costs.shared import share_constraints, shared_basis
from balgraph.errors import NetworkError, OptionError
from balgraph.gallery import random_network


def with_sharing(seed, kind="dag", n_groups=3, size=3, **kw):
    """A random network in which a few groups of non-self-loop edges share one weight."""
    g = random_network(seed, kind=kind, **kw)
    rng = np.random.default_rng(seed + 1)
    edges = [e for e in g.edges if e[0] != e[1]]
    pick = rng.permutation(len(edges))[: n_groups * size]
    for k, idx in enumerate(np.array_split(pick, n_groups)):
        w = g.edges[edges[idx[0]]]["weight"]
        for e in idx:
            g.edges[edges[e]]["weight"] = w
            g.edges[edges[e]]["share"] = f"s{k}"
    return g


def parameters(graph, weights, p):
    """Cost with each shared parameter counted once: computed straight from the graph."""
    seen, total = set(), 0.0
    for j, i, d in graph.edges(data=True):
        key = d.get("share", (j, i))
        if key not in seen:
            seen.add(key)
            total += abs(weights[(j, i)]) ** p
    return total


def assert_shared_equal(graph, weights):
    groups = {}
    for j, i, d in graph.edges(data=True):
        if "share" in d:
            groups.setdefault(d["share"], []).append(weights[(j, i)])
    for vals in groups.values():
        np.testing.assert_allclose(vals, vals[0], rtol=1e-12, atol=0)


def cvxpy_shared_cost(graph, p):
    """min Σ_param |w|^p e^{p t} over u with equal t within each group: the potential form."""
    cp = pytest.importorskip("cvxpy")
    pb = balgraph.compile_network(graph)
    G = pb.G.toarray()
    labels = [graph.edges[pb.nodes[j], pb.nodes[i]].get("share") for j, i in zip(pb.src, pb.dst)]
    first, keep = {}, []
    u = cp.Variable(pb.n_vars)
    cons = []
    for e, lab in enumerate(labels):
        if lab is None or lab not in first:
            keep.append(e)
            if lab is not None:
                first[lab] = e
        else:
            cons.append(G[e] @ u == G[first[lab]] @ u)
    keep = np.array(keep)
    la = p * np.log(np.abs(pb.weight[keep]))
    top = la.max()
    obj = cp.sum(cp.exp(la - top + p * (G[keep] @ u)))
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver="CLARABEL")
    return float(prob.value) * np.exp(top)


@pytest.mark.parametrize("seed,kind,p", [(0, "dag", 2.0), (1, "layered", 1.0), (2, "recurrent", 3.0),
                                         (3, "dag", 0.5)])
def test_against_cvxpy(seed, kind, p):
    g = with_sharing(seed, kind)
    res = balgraph.solve(g, p=p, tol=1e-11)
    assert res.converged
    assert_shared_equal(g, res.weights)
    once = parameters(g, res.weights, p)
    assert res.cost_after == pytest.approx(once, rel=1e-12)  # the result counts parameters once
    assert once == pytest.approx(cvxpy_shared_cost(g, p), rel=1e-7)
    before = {(j, i): d["weight"] for j, i, d in g.edges(data=True)}
    assert res.cost_before == pytest.approx(parameters(g, before, p), rel=1e-12)
    assert once <= res.cost_before * (1 + 1e-12)


def test_manifold_rows_hold_at_optimum():
    from balgraph.manifold import manifold

    g = with_sharing(4, "recurrent")
    res = balgraph.solve(g, p=2, tol=1e-11)
    pb = res.problem
    L = pb.G @ res.potentials
    groups = pb.share
    S = share_constraints(pb, groups)
    assert S.shape[0] == np.sum(groups >= 0) - (groups.max() + 1)
    np.testing.assert_allclose(S @ L, 0, atol=1e-12)
    assert manifold(pb).is_self_consistent(L)
    N = shared_basis(pb, groups)
    np.testing.assert_allclose((S @ pb.G) @ N, 0, atol=1e-12)
    assert np.linalg.matrix_rank(N) == N.shape[1]


@given(st.integers(0, 10_000), st.sampled_from(["dag", "layered", "recurrent"]),
       st.sampled_from([1.0, 2.0]), st.integers(1, 3))
def test_invariants(seed, kind, p, size):
    g = with_sharing(seed, kind, n_groups=2, size=size + 1)
    res = balgraph.solve(g, p=p, tol=1e-10)
    assert_shared_equal(g, res.weights)
    x = np.random.default_rng(seed).standard_normal((4, sum(r == "input" for r in res.problem.roles)))
    steps = 12 if kind == "recurrent" else None
    np.testing.assert_allclose(balgraph.forward(res.to_graph(), x, steps=steps),
                               balgraph.forward(g, x, steps=steps), rtol=1e-9, atol=1e-9)
    assert res.log_cost_after <= res.log_cost_before + 1e-12


def test_singletons_equal_plain_newton():
    g = random_network(5, kind="dag")
    for k, e in enumerate(g.edges):
        g.edges[e]["share"] = k
    a = balgraph.solve(g, p=2, tol=1e-11)
    b = balgraph.solve(g, p=2, tol=1e-11, share=None)
    np.testing.assert_allclose(a.weight_array, b.weight_array, rtol=1e-9)


def test_errors():
    g = with_sharing(6, "dag")
    j, i = next((j, i) for j, i, d in g.edges(data=True) if d.get("share") == "s0")
    g.edges[j, i]["weight"] *= 1.5
    with pytest.raises(NetworkError, match=f"shared edges .*{j!r}.*different weights"):
        balgraph.solve(g)
    g2 = with_sharing(6, "dag")
    for method in ("cyclic", "parallel", "stochastic"):
        with pytest.raises(OptionError, match="shared weights cannot be kept equal"):
            balgraph.solve(g2, method=method)
    for method in ("cvxpy",):
        with pytest.raises(OptionError, match="shared weights"):
            balgraph.solve(g2, method=method)
    res = balgraph.solve(g2, share=None, method="cyclic", tol=1e-6, max_iter=100000)
    assert res.converged  # share=None ignores the attribute


# ------------------------------------------------------------------ a 1-D CNN, unit by unit
def conv_net(seed, channels=(2, 3, 3, 2), n=5, k=3, circular=True):
    """Conv layers over n positions (kernels shared across positions), then a 1×1 head."""
    rng = np.random.default_rng(seed)
    g = nx.DiGraph()
    g.add_node("b", role="bias")
    kernels, biases = [], []
    for layer in range(len(channels)):
        role = "input" if layer == 0 else "output" if layer == len(channels) - 1 else "hidden"
        for c in range(channels[layer]):
            for x in range(n):
                g.add_node((layer, c, x), role=role)
    for layer in range(1, len(channels)):
        ker = 1 if layer == len(channels) - 1 else k
        K = rng.standard_normal((channels[layer], channels[layer - 1], ker)) * np.exp(rng.uniform(-2, 2))
        b = rng.standard_normal(channels[layer])
        kernels.append(K)
        biases.append(b)
        for o in range(channels[layer]):
            for x in range(n):
                g.add_edge("b", (layer, o, x), weight=b[o], share=("b", layer, o))
                for i in range(channels[layer - 1]):
                    for t in range(ker):
                        xs = x + t - ker // 2
                        if circular:
                            xs %= n
                        elif not 0 <= xs < n:
                            continue
                        g.add_edge((layer - 1, i, xs), (layer, o, x), weight=K[o, i, t],
                                   share=(layer, o, i, t))
    return g, kernels, biases


def channel_graph(kernels, biases, p):
    g = nx.DiGraph()
    g.add_node("b", role="bias")
    n_layers = len(kernels) + 1
    for layer, (K, b) in enumerate(zip(kernels, biases), start=1):
        for o in range(K.shape[0]):
            role = "output" if layer == n_layers - 1 else "hidden"
            g.add_node((layer, o), role=role)
            g.add_edge("b", (layer, o), weight=abs(b[o]))
            for i in range(K.shape[1]):
                g.add_node((layer - 1, i), role="input" if layer == 1 else "hidden")
                g.add_edge((layer - 1, i), (layer, o), weight=np.sum(np.abs(K[o, i]) ** p) ** (1 / p))
    return g


@pytest.mark.parametrize("circular", [True, False])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_conv_net_equals_channel_graph(circular, p):
    g, kernels, biases = conv_net(7, circular=circular)
    res = balgraph.solve(g, p=p, tol=1e-11)
    ch = balgraph.solve(channel_graph(kernels, biases, p), p=p, tol=1e-12)
    assert res.cost_before == pytest.approx(ch.cost_before, rel=1e-12)
    assert res.cost_after == pytest.approx(ch.cost_after, rel=1e-10)
    # The sharing constraints alone collapse per-position scales to one scale per channel.
    for label, lam in res.scales.items():
        if label != "b" and 0 < label[0] < len(kernels):
            assert lam == pytest.approx(ch.scales[(label[0], label[1])], rel=1e-8)
    assert res.info["n_directions"] == sum(K.shape[0] for K in kernels[:-1])
