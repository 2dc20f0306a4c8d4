"""The streaming GraphML reader and writer against networkx's (the reference semantics)."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given

import balgraph
import balgraph.io as bio
from balgraph.errors import NetworkError
from balgraph.files.graphml import GraphMLData, Unsupported, read_graphml_data

from strategies import networks


def _same_graph(a: nx.DiGraph, b: nx.DiGraph):
    assert list(a.nodes(data=True)) == list(b.nodes(data=True))
    assert sorted(a.edges(data=True), key=repr) == sorted(b.edges(data=True), key=repr)
    assert a.graph == b.graph


def _same_problem(a, b):
    assert a.nodes == b.nodes and a.roles == b.roles
    np.testing.assert_array_equal(a.fixed, b.fixed)
    np.testing.assert_array_equal(a.degree, b.degree)
    assert a.n_vars == b.n_vars
    ea = {(a.nodes[j], a.nodes[i]): w for j, i, w in zip(a.src, a.dst, a.weight)}
    eb = {(b.nodes[j], b.nodes[i]): w for j, i, w in zip(b.src, b.dst, b.weight)}
    assert ea == eb
    # same tie groups: units share a variable in one iff they do in the other
    va, vb = a.var, b.var
    assert np.array_equal(va[:, None] == va[None, :], vb[:, None] == vb[None, :])


@given(g=networks())
def test_reader_matches_networkx(tmp_path_factory, g):
    path = tmp_path_factory.mktemp("gml") / "net.graphml"
    nx.write_graphml(bio._clean_for_file(g), path)  # networkx's writer, our reader
    data = read_graphml_data(path)
    reference = nx.read_graphml(path)
    ours = data.to_networkx()
    assert (ours.number_of_nodes(), ours.number_of_edges()) == (reference.number_of_nodes(),
                                                                 reference.number_of_edges())
    _same_graph(ours, reference)
    _same_problem(data.to_problem(), balgraph.compile_network(reference))


@given(g=networks())
def test_writer_is_read_back_by_networkx(tmp_path_factory, g):
    path = tmp_path_factory.mktemp("gml") / "net.graphml"
    GraphMLData.from_graph(bio._clean_for_file(g)).write(path)  # our writer, networkx's reader
    back = nx.read_graphml(path)
    assert {(str(j), str(i)): d["weight"] for j, i, d in g.edges(data=True)} == {
        (j, i): d["weight"] for j, i, d in back.edges(data=True)}
    _same_graph(read_graphml_data(path).to_networkx(), back)


HANDWRITTEN = """<?xml version="1.0" encoding="UTF-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <desc>hand written</desc>
  <key id="r" for="node" attr.name="role" attr.type="string"><default>hidden</default></key>
  <key id="c" for="node" attr.name="degree" attr.type="double"/>
  <key id="k" for="node" attr.name="keep" attr.type="boolean"/>
  <key id="n" for="node" attr.name="count" attr.type="int"/>
  <key id="w" for="edge" attr.name="weight" attr.type="double"><default>1.0</default></key>
  <key id="t" for="edge" attr.name="note" attr.type="string"/>
  <key id="g" for="graph" attr.name="title" attr.type="string"/>
  <graph id="G" edgedefault="directed">
    <data key="g">a &amp; b</data>
    <node id="x"><data key="r">input</data><data key="k">True</data></node>
    <edge id="e0" source="x" target="h"><data key="w">4.0</data><data key="t">first &lt;one&gt;</data></edge>
    <node id="h"><data key="c">2.0</data><data key="n">7</data><data key="k">0</data></node>
    <edge source="h" target="y"><data key="w"> 0.5 </data></edge>
    <edge source="h" target="z"><data key="w">1e-3</data><data key="t"></data></edge>
    <node id="y"><data key="r">output</data></node>
  </graph>
</graphml>
"""


def test_handwritten_file_matches_networkx(tmp_path):
    path = tmp_path / "hand.graphml"
    path.write_text(HANDWRITTEN)
    data = read_graphml_data(path)
    reference = nx.read_graphml(path)
    _same_graph(data.to_networkx(), reference)
    assert data.nodes == ["x", "h", "y", "z"]  # z is named only by an edge: last
    assert data.edge_attrs["id"] == ["e0", None, None] and data.edge_attrs["note"][2] == ""
    _same_problem(data.to_problem(), balgraph.compile_network(reference))
    assert bio.read_network(path).graph["title"] == "a & b"


def test_unusual_labels_round_trip(tmp_path):
    g = nx.DiGraph()
    labels = ["x <in>", "h & \"q\" 'p'", "ü→ y", "1"]
    g.add_edge(labels[0], labels[1], weight=2.0)
    g.add_edge(labels[1], labels[2], weight=0.25)
    g.add_edge(labels[1], labels[3], weight=-1.5)
    g.nodes[labels[1]]["note"] = "<&>"
    path = tmp_path / "odd.graphml"
    bio.write_network(g, path)
    _same_graph(bio.read_network(path), nx.read_graphml(path))
    assert list(bio.read_network(path).nodes) == labels


@pytest.mark.parametrize("text, match", [
    ('<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><key id="w" for="edge" attr.name="weight"'
     ' attr.type="double"/><graph edgedefault="directed"><edge source="a" target="b"><data key="w">1</data>'
     '</edge><edge source="a" target="b"><data key="w">2</data></edge></graph></graphml>', "multigraph.*'a' -> 'b'"),
    ('<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="undirected">'
     '<edge source="a" target="b"/></graph></graphml>', "undirected"),
    ('<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="directed">'
     '<edge source="a" target="b"><data key="nope">1</data></edge></graph></graphml>', "no key nope"),
    ('<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><key id="w" for="edge" attr.name="weight"'
     ' attr.type="double"/><graph edgedefault="directed"><edge source="a" target="b"><data key="w">x</data>'
     '</edge></graph></graphml>', "not a valid GRAPHML"),
    ('<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="directed">', "not a valid GRAPHML"),
])
def test_bad_files_name_the_file(tmp_path, text, match):
    path = tmp_path / "bad.graphml"
    path.write_text(text)
    with pytest.raises(NetworkError, match=match) as exc:
        bio.open_network(path)
    assert "bad.graphml" in str(exc.value)
    with pytest.raises(NetworkError, match=match):
        bio.read_network(path)


def test_weights_missing_or_not_numbers(tmp_path):
    g = nx.DiGraph([("x", "h", {"weight": 1.0}), ("h", "y", {"w": 1.0})])
    bio.write_network(g, tmp_path / "a.graphml")
    with pytest.raises(NetworkError, match=r"\('h', 'y'\) has no 'weight'"):
        bio.open_network(tmp_path / "a.graphml")
    with pytest.raises(NetworkError, match=r"has no 'nope' attribute.*'w', 'weight'"):
        bio.open_network(tmp_path / "a.graphml", weight_attr="nope")
    g = nx.DiGraph([("x", "h", {"weight": "heavy"}), ("h", "y", {"weight": 1.0})])
    bio.write_network(g, tmp_path / "b.graphml")
    with pytest.raises(NetworkError, match="non-numeric weight 'heavy'"):
        bio.open_network(tmp_path / "b.graphml")


def test_yfiles_files_go_to_networkx(tmp_path):
    text = HANDWRITTEN.replace('<key id="t" for="edge" attr.name="note" attr.type="string"/>',
                               '<key id="t" for="edge" yfiles.type="edgegraphics"/>')
    path = tmp_path / "yed.graphml"
    path.write_text(text.replace('<data key="t"></data>', ""))
    with pytest.raises(Unsupported):
        read_graphml_data(path)
    _same_graph(bio.read_network(path), nx.read_graphml(path))
    _same_problem(bio.open_network(path).problem, balgraph.compile_network(nx.read_graphml(path)))


def test_balanced_file_keeps_everything_but_the_weights(tmp_path):
    path = tmp_path / "hand.graphml"
    path.write_text(HANDWRITTEN)
    nf = bio.open_network(path)
    res = balgraph.solve(nf.problem)
    nf.write(res.weight_array, tmp_path / "out.graphml")
    before, after = nx.read_graphml(path), nx.read_graphml(tmp_path / "out.graphml")
    assert list(before.nodes(data=True)) == list(after.nodes(data=True))
    assert before.graph == after.graph
    for j, i, d in before.edges(data=True):
        rest = {k: v for k, v in d.items() if k != "weight"}
        assert rest == {k: v for k, v in after.edges[j, i].items() if k != "weight"}
        assert after.edges[j, i]["weight"] == res.weights[(j, i)]
