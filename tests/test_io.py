"""Network files: GraphML / GML / npz round trips, and bad files refused with a NetworkError."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given

import balgraph
import balgraph.gallery
import balgraph.io as bio
from balgraph.errors import NetworkError

from strategies import networks


def _edges(g):
    return {(str(j), str(i)): float(d["weight"]) for j, i, d in g.edges(data=True)}


def _nodes(g):
    return {str(k): {a: v for a, v in d.items() if v is not None} for k, d in g.nodes(data=True)}


@pytest.mark.parametrize("suffix", [".graphml", ".gml"])
@given(g=networks())
def test_graph_round_trip(tmp_path_factory, suffix, g):
    path = tmp_path_factory.mktemp("io") / f"net{suffix}"
    bio.write_network(g, path)
    back = bio.read_network(path)
    assert isinstance(back, nx.DiGraph) and back.is_directed()
    assert _edges(back) == _edges(g)  # weights are written exactly (repr of a float64)
    assert _nodes(back) == _nodes(g)
    a, b = balgraph.compile_network(g), balgraph.compile_network(back)
    assert (a.n_vars, a.fixed.sum()) == (b.n_vars, b.fixed.sum())


def test_npz_round_trip_and_problem(tmp_path):
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(5, 3)), rng.normal(size=(4, 5)), rng.normal(size=(2, 4))]
    biases = [rng.normal(size=5), None, rng.normal(size=2)]
    path = tmp_path / "mlp.npz"
    bio.write_layers(path, mats, biases, ["relu", "tanh"])
    m2, b2, acts = bio.read_layers(path)
    assert acts == ["relu", "tanh"] and b2[1] is None
    for x, y in zip(mats + [biases[0], biases[2]], m2 + [b2[0], b2[2]]):
        np.testing.assert_array_equal(x, y)
    pb = bio.read_network(path)
    ref = balgraph.Problem.from_layers(mats, biases, activations=["relu", "tanh"])
    np.testing.assert_array_equal(pb.weight, ref.weight)
    np.testing.assert_array_equal(pb.fixed, ref.fixed)


def test_balanced_result_written_as_npz(tmp_path):
    rng = np.random.default_rng(1)
    mats = [rng.normal(size=(4, 3)) * 5, rng.normal(size=(3, 4)) * 0.2]
    biases = [rng.normal(size=4), rng.normal(size=3)]
    res = balgraph.solve(balgraph.Problem.from_layers(mats, biases), p=2.0)
    path = tmp_path / "out.npz"
    bio.write_network(res, path)
    m2, b2, acts = bio.read_layers(path)
    np.testing.assert_allclose(m2[0], res.layer_weights()[0])
    lam = res.scale_array[3:7]  # hidden units (1, r)
    np.testing.assert_allclose(m2[0], mats[0] * lam[:, None], rtol=1e-12)
    np.testing.assert_allclose(b2[0], biases[0] * lam, rtol=1e-12)
    np.testing.assert_allclose(m2[1], mats[1] / lam[None, :], rtol=1e-12)
    assert acts == ["relu"]


def test_graph_of_problem_compiles_back():
    g = balgraph.gallery.random_network(5, kind="recurrent", n_ties=1, bipu_fraction=0.3, tanh_fraction=0.2)
    pb = balgraph.compile_network(g)
    back = balgraph.compile_network(bio.graph_of(pb))
    assert back.n_vars == pb.n_vars
    np.testing.assert_array_equal(back.fixed, pb.fixed)
    np.testing.assert_array_equal(back.degree, pb.degree)
    assert balgraph.solve(back).cost_after == pytest.approx(balgraph.solve(pb).cost_after, rel=1e-10)


def test_general_graph_cannot_be_npz(tmp_path):
    with pytest.raises(NetworkError, match="graphml"):
        bio.write_network(balgraph.gallery.random_network(0), tmp_path / "x.npz")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.graphml", b"<graphml><graph", "not a valid GRAPHML"),
        ("bad.gml", b"graph [ node [ id 0 label", "not a valid GML"),
        ("bad.npz", b"PK\x03\x04 not a zip", "not a valid .npz"),
        ("undirected.gml", b'graph [ node [ id 0 label "a" ] node [ id 1 label "b" ]'
                           b" edge [ source 0 target 1 weight 1.0 ] ]", "undirected"),
        ("net.txt", b"", "suffix"),
    ],
)
def test_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(NetworkError, match=match):
        bio.read_network(path)


def test_npz_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, W0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(NetworkError, match="pickled"):
        bio.read_network(path)
    np.savez(path, W1=np.ones((2, 2)))
    with pytest.raises(NetworkError, match="W0, W1"):
        bio.read_network(path)


def test_missing_file(tmp_path):
    with pytest.raises(NetworkError, match="no such file"):
        bio.read_network(tmp_path / "nothere.graphml")


@pytest.mark.parametrize("suffix", [".graphml", ".gml"])
def test_labels_with_one_string_are_refused(tmp_path, suffix):
    g = nx.DiGraph([(1, "h", {"weight": 1.0}), ("h", "1", {"weight": 2.0})])
    with pytest.raises(NetworkError, match=r"node labels 1 and '1' are both written as '1'"):
        bio.write_network(g, tmp_path / f"x{suffix}")
    assert not (tmp_path / f"x{suffix}").exists()


def test_graphml_from_problem_and_result(tmp_path):
    rng = np.random.default_rng(5)
    pb = balgraph.Problem.from_layers([rng.normal(size=(4, 3)), rng.normal(size=(2, 4))], [rng.normal(size=4), None])
    res = balgraph.solve(pb)
    bio.write_network(res, tmp_path / "r.graphml")
    back = balgraph.compile_network(bio.read_network(tmp_path / "r.graphml"))
    assert back.n_vars == pb.n_vars
    assert sorted(back.weight) == sorted(res.weight_array)


def test_open_network_writes_across_formats(tmp_path):
    rng = np.random.default_rng(6)
    bio.write_layers(tmp_path / "m.npz", [rng.normal(size=(4, 3)), rng.normal(size=(2, 4))],
                     [rng.normal(size=4), None], "relu")
    nf = bio.open_network(tmp_path / "m.npz")
    res = balgraph.solve(nf.problem)
    for name in ("o.npz", "o.graphml", "o.gml"):
        nf.write(res.weight_array, tmp_path / name)
        back = balgraph.api.as_problem(bio.read_network(tmp_path / name))
        assert sorted(back.weight) == pytest.approx(sorted(res.weight_array), rel=1e-15)
    g = balgraph.gallery.random_network(2)
    bio.write_network(g, tmp_path / "g.gml")
    nf = bio.open_network(tmp_path / "g.gml")
    with pytest.raises(NetworkError, match="layer matrices"):
        nf.write(nf.problem.weight, tmp_path / "g.npz")
