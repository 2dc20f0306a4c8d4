"""No silent wrong answer through any entry point: bad, faulty and extreme inputs (issue 13).

Every kind of input that once gave a silent wrong answer, a raw crash or an unclear error goes
through each entry point it applies to (a networkx graph, edge arrays, layer matrices, the
command line) and must end in a clear error (naming the edge, unit, array or option, and saying
what to do), an explicit warning with ``converged=False``, or a correct answer. A property test
checks that the three ways to give one network (graph, arrays, layers) give one answer.
"""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import balgraph
from balgraph import NetworkError, NoFiniteOptimumError, OptionError, RangeWarning
from balgraph.cli import main


def G(edges, **attrs):
    """A DiGraph from ``(j, i, w)``; units named x* are inputs, y* outputs, others hidden."""
    g = nx.DiGraph()
    for j, i, w in edges:
        g.add_edge(j, i, weight=w)
    for n in g:
        g.nodes[n]["role"] = "input" if str(n).startswith("x") else "output" if str(n).startswith("y") else "hidden"
    for n, d in attrs.items():
        g.nodes[n].update(d)
    return g


CHAIN = [("x", "h", 4.0), ("h", "y", 1.0)]


def layers(n_hidden=1):
    rng = np.random.default_rng(0)
    sizes = [3] + [4] * n_hidden + [2]
    return [rng.normal(size=(b, a)) for a, b in zip(sizes[:-1], sizes[1:])]


# ---------------------------------------------------------------- silent wrong answers
@pytest.mark.parametrize("entry", ["graph", "arrays", "layers"])
def test_complex_weights_are_refused_naming_where(entry):
    z = np.complex128(4 + 3j)
    with pytest.raises(NetworkError, match=r"complex.*real part"):
        if entry == "graph":
            balgraph.solve(G([("x", "h", z), ("h", "y", 1.0)]))
        elif entry == "arrays":
            balgraph.Problem.from_arrays([0, 1], [1, 2], np.array([z, 1.0]))
        else:
            balgraph.Problem.from_layers([layers()[0] * (1 + 1j), layers()[1]])
    with pytest.raises(NetworkError, match=r"\('x', 'h'\)"):
        balgraph.solve(G([("x", "h", z), ("h", "y", 1.0)]))


def test_complex_npz_is_refused_by_the_command_line(tmp_path, capsys):
    path = tmp_path / "net.npz"
    np.savez(path, W0=np.ones((2, 2)) * (1 + 1j), W1=np.ones((1, 2)))
    assert main(["solve", str(path)]) == 1
    err = capsys.readouterr().err
    assert "W0" in err and "net.npz" in err and "Traceback" not in err


@pytest.mark.parametrize("p", [1e-6, 1e-5])
def test_tiny_p_never_claims_convergence_with_unrepresentable_scales(p):
    g = G([("x", "h", 1.0), ("h", "y1", 2.0), ("h", "y2", 3.0)])
    with pytest.warns(RangeWarning, match="float64"):
        res = balgraph.solve(g, p=p)
    assert not res.converged and res.status == 3
    assert np.all(np.isfinite(res.x))  # the potentials are exact log-scales
    # the scale it reports is the closed form (eq. 5.6) in the log domain
    expected = np.log(np.sum(np.abs([2.0, 3.0]) ** p) / 1.0) / (2 * p)
    assert res.x[0] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("p", [0, -1, np.nan, "2", True, 1 + 1j])
def test_nonpositive_or_non_numeric_p_is_refused(p):
    for entry in (G(CHAIN), balgraph.Problem.from_layers(layers())):
        with pytest.raises(OptionError, match="p must be"):
            balgraph.solve(entry, p=p)


def test_underflow_of_a_balanced_weight_is_not_converged():
    g = G([("x0", "h", 1e-300), ("x1", "h", 1e300), ("h", "y", 1.0)])
    with pytest.warns(RangeWarning, match="below float64's normal range"):
        res = balgraph.solve(g)
    assert not res.converged and res.status == 3
    assert "result.x" in res.message


@pytest.mark.parametrize("kw,match", [
    (dict(roles=["input", "hidden"]), "roles must hold one entry per unit"),
    (dict(fixed=[True]), "fixed must hold one entry per unit"),
    (dict(fixed=[0, 1, 0]), "fixed must be booleans"),
    (dict(tie=["a"]), "tie must hold one entry per unit"),
    (dict(degree=[1.0, -2.0, 1.0]), "degree of unit.*1"),
    (dict(degree=[1.0]), "degree must hold one entry per unit"),
    (dict(nodes=["a", "a", "b"]), "appear twice"),
    (dict(share=["s"]), "share must hold one entry per edge"),
])
def test_from_arrays_refuses_arrays_that_do_not_fit(kw, match):
    with pytest.raises(NetworkError, match=match):
        balgraph.Problem.from_arrays([0, 1], [1, 2], [1.0, 1.0], **kw)


def test_from_arrays_refuses_float_and_out_of_range_indices():
    with pytest.raises(NetworkError, match="integer node indices"):
        balgraph.Problem.from_arrays([0.0, 1.0], [1, 2], [1.0, 1.0])
    with pytest.raises(NetworkError, match="outside"):
        balgraph.Problem.from_arrays([0, 1], [1, 5], [1.0, 1.0], n_nodes=3)


@pytest.mark.parametrize("degrees", [-1, 0, np.nan, [1.0, -1.0]])
def test_layers_refuse_bad_degrees(degrees):
    with pytest.raises(NetworkError, match="degree"):
        balgraph.Problem.from_layers(layers(2), degrees=degrees)


def test_a_dead_unit_in_layers_is_named_like_in_graphs():
    mats = [np.array([[1.0], [1.0]]), np.array([[1.0, 0.0]])]  # unit (1, 1) reaches no output
    with pytest.raises(NoFiniteOptimumError, match=r"\(1, 1\)"):
        balgraph.solve(balgraph.Problem.from_layers(mats))
    res = balgraph.solve(balgraph.Problem.from_layers(mats), unreachable="fix")
    assert res.converged and res.scales[(1, 1)] == 1.0


def test_results_own_their_data():
    g = G(CHAIN)
    g.edges["x", "h"]["meta"] = [1]
    res = balgraph.solve(g)
    g.add_edge("x", "y", weight=5.0)
    g.nodes["h"]["role"] = "output"
    g.edges["x", "h"]["meta"].append(2)
    out = res.to_graph()
    assert sorted(out.edges) == [("h", "y"), ("x", "h")] and out.nodes["h"]["role"] == "hidden"
    assert out.edges["x", "h"]["meta"] == [1]
    out.edges["x", "h"]["meta"].append(3)
    out.nodes["h"]["role"] = "changed"
    assert g.edges["x", "h"]["meta"] == [1, 2] and res.to_graph().nodes["h"]["role"] == "hidden"
    assert not res.x.flags.writeable and not res.weight_array.flags.writeable


def test_inputs_are_never_mutated_or_frozen():
    mats = layers(2)
    copies = [m.copy() for m in mats]
    res = balgraph.solve(balgraph.Problem.from_layers(mats))
    assert all(np.array_equal(a, b) and a.flags.writeable for a, b in zip(mats, copies))
    src, dst, w = np.array([0, 1]), np.array([1, 2]), np.array([4.0, 1.0])
    balgraph.solve(balgraph.Problem.from_arrays(src, dst, w))
    assert w.flags.writeable and src.flags.writeable and w.tolist() == [4.0, 1.0]
    assert res.layer_weights()[0] is not mats[0]


# ---------------------------------------------------------------- raw crashes
@pytest.mark.parametrize("mats,kw", [
    ([np.ones((2, 3))], {}),
    ([np.ones((2, 3)), np.ones((1, 2))], {"activations": "tanh"}),
])
def test_layers_with_no_free_unit_return_the_trivial_result(mats, kw):
    res = balgraph.solve(balgraph.Problem.from_layers(mats, **kw))
    assert res.converged and res.nit == 0 and res.x.size == 0 and "nothing to balance" in res.message
    assert all(np.array_equal(a, b) for a, b in zip(res.layer_weights(), mats))


def test_one_layer_npz_through_the_command_line(tmp_path, capsys):
    path = tmp_path / "one.npz"
    np.savez(path, W0=np.ones((2, 3)))
    assert main(["solve", str(path)]) == 0
    assert (tmp_path / "one.balanced.npz").exists() and "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("bad", [[], np.ones((2, 2)), [np.ones(3)], [[[1, 2], [3]]]])
def test_bad_layer_lists_are_clear_errors(bad):
    with pytest.raises(NetworkError, match="matrices|2-D|ragged"):
        balgraph.Problem.from_layers(bad)


# ---------------------------------------------------------------- unclear errors
@pytest.mark.parametrize("value,match", [
    (None, "weight None"),
    (10**400, "beyond float64's range"),
    ("four", "not a number"),
    (float("nan"), "NaN or infinite"),
    (np.inf, "NaN or infinite"),
])
def test_bad_weights_name_the_edge(value, match):
    with pytest.raises(NetworkError, match=match) as err:
        balgraph.solve(G([("x", "h", value), ("h", "y", 1.0)]))
    assert "('x', 'h')" in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("kw,match", [
    (dict(tol="1e-3"), "tol must be"), (dict(tol=0), "tol must be"), (dict(tol=np.nan), "tol must be"),
    (dict(tol=2.0), "tol must be below 1"),
    (dict(seed=-1), "seed"), (dict(seed="abc"), "seed"), (dict(seed=1.5), "seed"), (dict(seed=True), "seed"),
    (dict(max_iter=-1), "max_iter"), (dict(max_iter=2.5), "max_iter"), (dict(max_iter="10"), "max_iter"),
    (dict(method="magic"), "unknown method"), (dict(unreachable="ignore"), "unreachable"),
    (dict(device="tpu"), "unknown device"), (dict(regularizer="L2"), "regularizer must be"),
    (dict(linear_solver="magic"), "linear_solver"), (dict(warmup=-1), "warmup"),
    (dict(callback=3), "callable"),
])
def test_bad_options_are_option_errors_naming_the_option(kw, match):
    with pytest.raises(OptionError, match=match):
        balgraph.solve(G(CHAIN), **kw)


def test_option_errors_are_value_and_type_errors_and_not_network_errors():
    with pytest.raises(TypeError):
        balgraph.solve(G(CHAIN), tol="1e-3")
    with pytest.raises(ValueError):
        balgraph.solve(G(CHAIN), tol=-1)
    assert not issubclass(OptionError, NetworkError)


@pytest.mark.parametrize("where", ["tie", "share"])
def test_unhashable_labels_name_the_unit_or_edge(where):
    g = G(CHAIN)
    if where == "tie":
        g.nodes["h"]["tie"] = ["t"]
    else:
        g.edges["x", "h"]["share"] = {"s": 1}
    with pytest.raises(NetworkError, match="not hashable"):
        balgraph.solve(g)


def test_ragged_matrices_and_wrong_length_biases_are_named():
    with pytest.raises(NetworkError, match=r"layer 1 \(matrices\[0\]\) is ragged"):
        balgraph.Problem.from_layers([[[1.0, 2.0], [3.0]], np.ones((1, 2))])
    with pytest.raises(NetworkError, match=r"bias 1 \(biases\[0\]\).*2 units"):
        balgraph.Problem.from_layers([np.ones((2, 2)), np.ones((1, 2))], [np.ones(3), None])
    with pytest.raises(NetworkError, match="one degree per hidden layer"):
        balgraph.Problem.from_layers(layers(2), degrees=[1.0, 2.0, 3.0])
    with pytest.raises(NetworkError, match="not a number"):
        balgraph.Problem.from_layers([np.ones((2, 2)), np.ones((1, 2))], [np.array(["a", "b"]), None])


def test_p_infinity_on_layers_is_max_balancing_and_nan_is_refused():
    res = balgraph.solve(balgraph.Problem.from_layers([np.full((2, 2), 2.0), np.ones((1, 2))]), p=np.inf)
    assert res.method == "max_balance" and res.converged
    A, B = res.layer_weights()
    assert np.abs(A).max() == pytest.approx(np.abs(B).max(), rel=1e-12)


def test_labels_that_collide_as_strings_are_refused_when_writing(tmp_path):
    g = nx.DiGraph([(1, "h", {"weight": 1.0}), ("h", "1", {"weight": 2.0})])
    with pytest.raises(NetworkError, match="'1'"):
        balgraph.io.write_network(g, tmp_path / "g.graphml")


def test_check_json_is_valid_json_at_huge_p(tmp_path, capsys):
    import json

    path = tmp_path / "net.npz"
    np.savez(path, W0=np.array([[1e-3, 10.0], [1.0, 2.0]]), W1=np.ones((1, 2)))
    assert main(["check", str(path), "-p", "600", "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


# ---------------------------------------------------------------- slow and silent
def test_iterative_runs_stop_at_a_default_budget_and_say_how_far_they_got(monkeypatch):
    monkeypatch.setattr("balgraph.solvers.sweeps.DEFAULT_SWEEPS", 50)  # the real one: 10 000
    pb = balgraph.gallery.dense_mlp([4] * 42, seed=0)
    with pytest.warns(balgraph.ConvergenceWarning, match="sweeps"):
        res = balgraph.solve(pb, method="parallel", tol=1e-12)
    assert not res.converged and res.status == 1 and res.nit == 50
    assert "default budget" in res.message and "more sweeps would reach" in res.message
    assert "method='newton'" in res.message
    with pytest.warns(balgraph.ConvergenceWarning, match="max_iter=60"):
        explicit = balgraph.solve(pb, method="parallel", tol=1e-12, max_iter=60)  # max_iter wins
    assert explicit.nit == 60 and "default budget" not in explicit.message


# ---------------------------------------------------------------- one network, three doors
def _three_doors(seed: int, sizes: list[int], p: float):
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=(b, a)) * np.exp(rng.uniform(-2, 2)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=b) for b in sizes[1:]]
    layered = balgraph.Problem.from_layers(mats, biases)
    arrays = balgraph.Problem.from_arrays(layered.src, layered.dst, layered.weight, nodes=layered.nodes,
                                          roles=layered.roles)
    g = nx.DiGraph()
    for k, label in enumerate(layered.nodes):
        g.add_node(label, role=layered.roles[k])
    g.add_weighted_edges_from((layered.nodes[j], layered.nodes[i], w) for j, i, w in
                              zip(layered.src.tolist(), layered.dst.tolist(), layered.weight.tolist()))
    return [balgraph.solve(x, p=p, tol=1e-11) for x in (g, arrays, layered)]


@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(1, 5), min_size=3, max_size=5),
       p=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_graph_arrays_and_layers_give_one_answer(seed, sizes, p):
    results = _three_doors(seed, sizes, p)
    models = {r.info.get("model") for r in results}
    assert "layered" in models and len(models) >= 2  # the three doors reach different cost models
    ref = results[0]
    for res in results:
        assert res.converged and res.max_imbalance <= 1e-11
        for edge, w in ref.weights.items():  # a graph lists its edges in its own order
            assert res.weights[edge] == pytest.approx(w, rel=1e-8, abs=0)
        assert res.log_cost_after == pytest.approx(ref.log_cost_after, rel=1e-12, abs=1e-12)


def test_warnings_are_not_errors_in_disguise():
    # a converged run emits no warning at all
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [balgraph.solve(G(CHAIN)),
                balgraph.solve(balgraph.Problem.from_layers(layers(3)), method="parallel")]
    assert all(res.converged for res in runs)
    assert [str(w.message) for w in caught] == []
