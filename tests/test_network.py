"""The network model contract: compile_network and Problem.from_arrays / from_layers."""

import networkx as nx
import numpy as np
import pytest

import balgraph
from balgraph import NetworkError, Problem, compile_network


def tiny():
    g = nx.DiGraph()
    g.add_node("x", role="input")
    g.add_node("h1")
    g.add_node("h2", activation="bipu", degree=2.0)
    g.add_node("y")
    g.add_edge("x", "h1", weight=2.0)
    g.add_edge("x", "h2", weight=-3.0)
    g.add_edge("h1", "y", weight=0.5)
    g.add_edge("h2", "y", weight=4.0)
    g.add_edge("h1", "h1", weight=0.25)
    return g


def test_roles_are_inferred_and_visible_units_fixed():
    pb = compile_network(tiny())
    assert pb.roles == ("input", "hidden", "hidden", "output")
    assert pb.fixed.tolist() == [True, False, False, True]
    assert pb.n_vars == 2


def test_G_rows_follow_design():
    pb = compile_network(tiny())
    G = pb.G.toarray()
    rows = {pb.edge_label(e): G[e].tolist() for e in range(pb.n_edges)}
    assert rows[("x", "h1")] == [1.0, 0.0]
    assert rows[("x", "h2")] == [0.0, 1.0]
    assert rows[("h1", "y")] == [-1.0, 0.0]
    assert rows[("h2", "y")] == [0.0, -2.0]  # BiPU: outgoing divided by λ^c
    assert rows[("h1", "h1")] == [0.0, 0.0]  # BiLU self-loop: λ/λ = 1


def test_scaled_weights_match_the_definition_of_scaling():
    pb = compile_network(tiny())
    lam = {"h1": 3.0, "h2": 0.5}
    u = np.log([lam["h1"], lam["h2"]])
    got = dict(zip([pb.edge_label(e) for e in range(pb.n_edges)], pb.scaled_weights(u)))
    c = {"h1": 1.0, "h2": 2.0}
    for (j, i), w in nx.get_edge_attributes(tiny(), "weight").items():
        expected = w * lam.get(i, 1.0) / lam.get(j, 1.0) ** c.get(j, 1.0)
        assert got[(j, i)] == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize(
    "weights",
    ["weight", {("x", "h1"): 2.0, ("x", "h2"): -3.0, ("h1", "y"): 0.5, ("h2", "y"): 4.0, ("h1", "h1"): 0.25},
     lambda j, i, d: d["weight"]],
)
def test_three_weight_conventions_agree(weights):
    assert np.array_equal(compile_network(tiny(), weights).weight, compile_network(tiny()).weight)


def test_ties_share_a_variable():
    g = tiny()
    g.add_node("h3", tie="t")
    g.nodes["h1"]["tie"] = "t"
    g.add_edge("x", "h3", weight=1.0)
    g.add_edge("h3", "y", weight=1.0)
    pb = compile_network(g)
    k = pb.node_index
    assert pb.var[k["h1"]] == pb.var[k["h3"]] != pb.var[k["h2"]]
    assert pb.n_vars == 2


def test_tanh_units_are_fixed():
    g = tiny()
    g.nodes["h1"]["activation"] = "tanh"
    pb = compile_network(g)
    assert pb.fixed[pb.node_index["h1"]]
    assert pb.n_vars == 1


@pytest.mark.parametrize(
    "mutate, culprit",
    [
        (lambda g: g.edges["x", "h1"].update(weight=float("nan")), "'x', 'h1'"),
        (lambda g: g.edges["x", "h1"].update(weight=float("inf")), "'x', 'h1'"),
        (lambda g: g.edges["x", "h1"].update(weight="heavy"), "'x', 'h1'"),
        (lambda g: g.nodes["h1"].update(role="middle"), "'h1'"),
        (lambda g: g.nodes["h2"].update(degree=0.0), "'h2'"),
        (lambda g: g.nodes["h2"].update(degree=-1.0), "'h2'"),
        (lambda g: g.edges["x", "h1"].pop("weight"), "'x', 'h1'"),
        (lambda g: g.nodes["x"].update(tie="t"), "'x'"),
    ],
)
def test_bad_input_names_the_culprit(mutate, culprit):
    g = tiny()
    mutate(g)
    with pytest.raises(NetworkError, match=culprit):
        compile_network(g)


def test_tie_group_mixing_degrees_is_rejected():
    g = tiny()
    g.nodes["h1"]["tie"] = "t"
    g.nodes["h2"]["tie"] = "t"
    with pytest.raises(NetworkError, match="degree"):
        compile_network(g)


def test_tie_group_mixing_fixed_and_free_is_rejected():
    g = tiny()
    g.nodes["h1"].update(tie="t", activation="tanh")
    g.add_node("h3", tie="t")
    g.add_edge("x", "h3", weight=1.0)
    g.add_edge("h3", "y", weight=1.0)
    with pytest.raises(NetworkError, match="'h1'"):
        compile_network(g)


@pytest.mark.parametrize("graph", [nx.MultiDiGraph([(0, 1), (1, 2)]), nx.Graph([(0, 1), (1, 2)])])
def test_only_digraphs_are_networks(graph):
    with pytest.raises(NetworkError, match="DiGraph"):
        compile_network(graph)


def test_compiling_does_not_mutate_the_graph():
    g = tiny()
    before = nx.to_dict_of_dicts(g), dict(g.nodes(data=True))
    compile_network(g)
    assert (nx.to_dict_of_dicts(g), dict(g.nodes(data=True))) == before


def test_problem_arrays_are_read_only():
    pb = compile_network(tiny())
    with pytest.raises(ValueError):
        pb.weight[0] = 1.0


def test_from_layers_matches_graph_built_by_hand():
    rng = np.random.default_rng(0)
    w1, w2, b1 = rng.normal(size=(3, 2)), rng.normal(size=(1, 3)), rng.normal(size=3)
    pb = Problem.from_layers([w1, w2], [b1, None])
    g = nx.DiGraph()
    for r in range(2):
        g.add_node((0, r), role="input")
    for r in range(3):
        g.add_node((1, r), role="hidden")
        for s in range(2):
            g.add_edge((0, s), (1, r), weight=w1[r, s])
        g.add_edge(("bias", 1), (1, r), weight=b1[r])
        g.add_edge((1, r), (2, 0), weight=w2[0, r])
    g.nodes[("bias", 1)]["role"] = "bias"
    g.nodes[(2, 0)]["role"] = "output"
    ref = compile_network(g)
    mine = {pb.edge_label(e): pb.weight[e] for e in range(pb.n_edges)}
    theirs = {ref.edge_label(e): ref.weight[e] for e in range(ref.n_edges)}
    assert mine == theirs
    assert pb.blocks[0].shape == (3, 2) and pb.blocks[2].shape == (3, 1)
    assert pb.blocks[0].weight is w1  # the caller's matrix, not a copy


def test_from_layers_rejects_mismatched_shapes():
    with pytest.raises(NetworkError, match="layer 2 expects 4 inputs"):
        Problem.from_layers([np.ones((3, 2)), np.ones((1, 4))])


def test_from_arrays_default_roles_and_errors():
    pb = Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    assert pb.roles == ("input", "hidden", "output")
    with pytest.raises(NetworkError, match="same length"):
        Problem.from_arrays([0, 1], [1], [1.0, 2.0])
    with pytest.raises(NetworkError, match="outside"):
        Problem.from_arrays([0], [5], [1.0], n_nodes=3)


def test_public_api_is_exported():
    for name in balgraph.__all__:
        assert hasattr(balgraph, name), name
