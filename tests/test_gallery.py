"""The workloads W1–W6: sizes from closed forms, structure checked independently."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

import balgraph
from balgraph.errors import NetworkError
from balgraph.forward import forward
from balgraph.gallery import (
    WORKLOADS,
    as_graph,
    autoencoder,
    dense_mlp,
    locally_connected,
    recurrent,
    resnet_channels,
    workload,
)


def _mlp_edges(sizes, bias=True):
    return sum(a * b for a, b in itertools.pairwise(sizes)) + (sum(sizes[1:]) if bias else 0)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_small_workloads_have_a_finite_optimum(name):
    pb = workload(name, seed=3, size="small")
    assert balgraph.diagnose(pb).ok
    assert pb.n_vars > 0 and np.all(np.isfinite(pb.weight))
    assert np.all(pb.weight != 0)


@pytest.mark.parametrize(
    "name, sizes",
    [("W1", (784, 200, 100, 50, 100, 200, 784)), ("W1", (20, 10, 5, 10, 20)),
     ("W3", [64] * 102), ("W3", [8] * 12), ("W5", (64, 128, 128, 10))],
)
def test_mlp_workload_sizes(name, sizes):
    size = "full" if len(sizes) > 60 or sizes[0] == 784 else "small"
    pb = workload(name, seed=0, size=size)
    assert pb.n_edges == _mlp_edges(sizes)
    assert pb.n_vars == sum(sizes[1:-1])
    assert pb.roles.count("input") == sizes[0] and pb.roles.count("output") == sizes[-1]
    assert pb.roles.count("bias") == len(sizes) - 1
    assert balgraph.diagnose(pb).ok


def test_w1_is_full_size_and_w5_sizes_follow_the_formula():
    assert workload("W1").n_edges == 365_034 and workload("W1").n_vars == 650
    # W5 itself is 470 MB: check its count by the formula the builder follows
    assert _mlp_edges((1024, 4096, 4096, 4096, 4096, 1000)) == 58_639_336


def test_dense_mlp_is_layers_of_scaled_gaussians():
    sizes = (5, 7, 3, 4)
    pb = dense_mlp(sizes, seed=9)
    rng = np.random.default_rng(9)
    scales = np.exp(rng.uniform(-2, 2, size=3))
    mats = [rng.standard_normal((sizes[k + 1], sizes[k])) * scales[k] for k in range(3)]
    biases = [rng.standard_normal(sizes[k + 1]) * scales[k] for k in range(3)]
    ref = balgraph.Problem.from_layers(mats, biases)
    for attr in ("src", "dst", "weight", "fixed", "degree", "var"):
        np.testing.assert_array_equal(getattr(pb, attr), getattr(ref, attr))
    assert pb.nodes == ref.nodes and pb.roles == ref.roles and all(b.n_edges for b in pb.blocks)
    x = np.random.default_rng(0).normal(size=(3, 5))
    np.testing.assert_allclose(forward(pb, x), forward(ref, x), rtol=1e-14)


def test_layer_scales_are_unequal():
    pb = autoencoder(1, sizes=(50, 40, 30, 40, 50))
    rms = [np.sqrt(np.mean(np.asarray(blk.weight) ** 2)) for blk in pb.blocks[:4]]
    assert max(rms) / min(rms) > 1.5 and all(np.exp(-2.5) < r < np.exp(2.5) for r in rms)


def _dense(pb):
    return sp.csr_matrix((pb.weight, (pb.dst, pb.src)), shape=(pb.n_nodes, pb.n_nodes)).toarray()


def test_locally_connected_windows_and_evaluation():
    image, lc, fc = (2, 6, 5), [(3, 3), (2, 2)], [4, 3]
    pb = locally_connected(4, image=image, lc=lc, fc=fc)
    shapes = [(2, 6, 5), (3, 4, 3), (2, 3, 2)]
    sizes = [int(np.prod(s)) for s in shapes] + fc
    starts = np.concatenate([[0], np.cumsum(sizes)])
    lc_edges = 3 * 4 * 3 * 2 * 9 + 2 * 3 * 2 * 3 * 4
    assert pb.n_edges == lc_edges + 12 * 4 + 4 * 3 + sum(sizes[1:])
    a = _dense(pb)
    x = np.random.default_rng(1).normal(size=(7, sizes[0]))
    h = x
    for k in range(1, len(sizes)):
        block = a[starts[k]:starts[k + 1], starts[k - 1]:starts[k]]
        if k <= len(lc):
            # every output position has its own kernel on exactly its k x k window
            (ci, hi, wi), (co, ho, wo), ker = shapes[k - 1], shapes[k], lc[k - 1][1]
            for o, y, xx in [(0, 0, 0), (co - 1, ho - 1, wo - 1), (co // 2, ho // 2, 0)]:
                row = block[(o * ho + y) * wo + xx].reshape(ci, hi, wi)
                mask = np.zeros_like(row, dtype=bool)
                mask[:, y:y + ker, xx:xx + ker] = True
                assert np.all(row[mask] != 0) and np.all(row[~mask] == 0)
        bias = a[starts[k]:starts[k + 1], pb.node_index[("bias", k)]]
        h = h @ block.T + bias
        if k < len(sizes) - 1:
            h = np.where(h >= 0, h, 0.01 * h)
    np.testing.assert_allclose(forward(pb, x, activations="leaky_relu"), h, rtol=1e-12, atol=1e-12)


def test_w2_full_size():
    pb = workload("W2")
    lc = 25 * 25 * 8 * 3 * 64 + 18 * 18 * 8 * 8 * 64 + 9 * 9 * 16 * 8 * 100
    units = 8 * 625 + 8 * 324 + 1296 + 300 + 100 + 10
    assert pb.n_edges == lc + 1296 * 300 + 300 * 100 + 100 * 10 + units
    assert pb.n_vars == units - 10


@pytest.mark.parametrize("kw", [
    {"n_hidden": 200, "n_edges": 2000, "n_inputs": 5, "n_outputs": 3},
    {"n_hidden": 40, "n_edges": 150, "n_inputs": 2, "n_outputs": 2, "self_loops": 1.0},
])
def test_recurrent_paths_loops_and_exact_edge_count(kw):
    pb = recurrent(5, **kw)
    assert pb.n_edges == kw["n_edges"]
    assert np.unique(pb.src * pb.n_nodes + pb.dst).size == pb.n_edges
    g = nx.DiGraph(zip(pb.src.tolist(), pb.dst.tolist()))
    g.add_nodes_from(range(pb.n_nodes))
    inputs = {k for k, r in enumerate(pb.roles) if r == "input"}
    outputs = {k for k, r in enumerate(pb.roles) if r == "output"}
    for h in (k for k, r in enumerate(pb.roles) if r == "hidden"):
        assert nx.ancestors(g, h) & inputs and nx.descendants(g, h) & outputs, h
    loops = int((pb.src == pb.dst).sum())
    assert loops > 0 and not nx.is_directed_acyclic_graph(g)
    if kw.get("self_loops") == 1.0:
        assert loops == kw["n_hidden"]


def test_w4_full_size():
    pb = workload("W4")
    assert pb.n_edges == 1_000_000 and pb.n_vars == 20_000
    assert pb.roles.count("input") == 50 and pb.roles.count("output") == 10
    assert balgraph.diagnose(pb).ok


def test_w6_ties_and_skip_connections():
    pb = workload("W6")
    free = int((~pb.fixed).sum())
    sizes = np.sort(pb.var_size[pb.var_size > 1])
    # stage 0: stem + 3 identity blocks (16 channels x 4 units); stages 1, 2 start with a
    # projection block, then 2 identity blocks (32 x 3 and 64 x 3)
    assert list(np.bincount(sizes)[2:]) == [0, 32 + 64, 16]
    assert pb.n_vars == free - 16 * 3 - (32 + 64) * 2
    skips = (pb.var[pb.src] == pb.var[pb.dst]) & ~pb.fixed[pb.src]
    assert skips.sum() == 16 * 3 + 32 * 2 + 64 * 2 and np.all(pb.weight[skips] == 1.0)
    g_rows = abs(pb.G[np.flatnonzero(skips)]).sum(axis=1)
    assert np.all(g_rows == 0)  # a rescaling never touches an identity skip
    assert balgraph.diagnose(pb).ok


def test_w6_channel_weights_are_kernel_p_norms():
    # same seed, same kernels: ||K||_2 <= ||K||_1 <= 3 ||K||_2 on 3x3 kernels, = on 1x1 ones
    w1 = resnet_channels(2, widths=(4, 8), blocks=1, p=1.0)
    w2 = resnet_channels(2, widths=(4, 8), blocks=1, p=2.0)
    np.testing.assert_array_equal(w1.src, w2.src)
    conv = w1.weight != w2.weight
    assert conv.sum() == 3 * 4 + 4 * 4 + 4 * 4 + 4 * 8 + 8 * 8  # the 3x3 convolutions
    assert np.all(w2.weight[conv] < w1.weight[conv]) and np.all(w1.weight[conv] <= 3 * w2.weight[conv])


def test_as_graph_round_trip_keeps_ties_and_degrees():
    for pb in (workload("W6", size="small"), workload("W1", size="small"),
               balgraph.Problem.from_layers([np.ones((2, 2)), np.ones((1, 2))], degrees=2.0,
                                            activations="bipu")):
        back = balgraph.compile_network(as_graph(pb))
        assert back.nodes == pb.nodes and back.n_vars == pb.n_vars
        np.testing.assert_array_equal(back.degree, pb.degree)
        np.testing.assert_array_equal(back.var_size[back.var[~back.fixed]], pb.var_size[pb.var[~pb.fixed]])
        edges = dict(zip(zip(pb.src.tolist(), pb.dst.tolist()), pb.weight.tolist()))
        assert dict(zip(zip(back.src.tolist(), back.dst.tolist()), back.weight.tolist())) == edges


def test_workload_names_and_errors():
    assert workload("deep_mlp", size="small").n_edges == workload("W3", size="small").n_edges
    with pytest.raises(NetworkError, match="W7"):
        workload("W7")
    with pytest.raises(NetworkError, match="size"):
        workload("W1", size="medium")
    with pytest.raises(NetworkError, match="n_edges"):
        recurrent(0, n_hidden=3, n_edges=1000, n_inputs=1, n_outputs=1)
