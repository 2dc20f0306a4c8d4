"""GraphML without networkx's reader and writer: a streaming expat parser and a text writer.

networkx builds an ElementTree of the whole file and then a graph edge by edge; on a 243k-edge
file that took 8 of the 9 s of ``balgraph solve``. Here expat streams the file into columns
(node ids, node attribute dicts, edge endpoints, one list per edge attribute), which become a
:class:`~balgraph.problem.Problem` directly (:meth:`GraphMLData.to_problem`) or a
``networkx.DiGraph`` (:meth:`GraphMLData.to_networkx`) equal to ``networkx.read_graphml``'s.
``python benchmarks/graphml_speed.py`` measures both readers and writers side by side.

The reader follows ``networkx.read_graphml``: node ids are strings; ``<data>`` values are
converted by their key's ``attr.type`` (boolean, int, long, float, double, string); key
defaults are kept as ``node_default`` / ``edge_default`` graph attributes, not copied onto
elements; nodes named only by edges come after the declared ones. Files that use what it does
not handle (yFiles extensions, nested graphs, hyperedges, ports, several graphs, elements
outside the GraphML namespace) raise :class:`Unsupported`, and callers fall back to networkx.

Examples
--------
>>> import networkx as nx, os, tempfile
>>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
>>> path = os.path.join(tempfile.mkdtemp(), "g.graphml")
>>> GraphMLData.from_graph(g).write(path)
>>> data = read_graphml_data(path)
>>> data.nodes, data.src.tolist(), data.dst.tolist(), data.edge_attrs["weight"]
(['x', 'h', 'y'], [0, 1], [1, 2], [4.0, 1.0])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import networkx as nx
import numpy as np

from ..errors import NetworkError
from ..model import Problem
from ..progress import progress
from ._graphml_parser import GRAPHML_NS, Unsupported, _Parser

__all__ = ["GraphMLData", "read_graphml_data", "Unsupported", "GRAPHML_NS"]

_CHUNK = 1 << 22


@dataclass
class GraphMLData:
    """A directed GraphML graph as columns.

    Attributes
    ----------
    nodes : list of str
        Node ids in networkx's order.
    node_attrs : list of dict
        Attributes of each node.
    src, dst : ndarray of int64
        Edge ``e`` goes from ``nodes[src[e]]`` to ``nodes[dst[e]]``, in file order.
    edge_attrs : dict of str to list
        One list per attribute name, one value per edge (``None`` where absent).
    graph_attrs : dict
        Graph attributes, with ``node_default`` and ``edge_default`` (key defaults).
    """

    nodes: list
    node_attrs: list
    src: np.ndarray
    dst: np.ndarray
    edge_attrs: dict
    graph_attrs: dict = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        return int(self.src.size)

    # ------------------------------------------------------------ conversions
    def edge_label(self, e: int) -> tuple:
        return (self.nodes[self.src[e]], self.nodes[self.dst[e]])

    def weights(self, attr: str = "weight") -> np.ndarray:
        """The float64 values of edge attribute ``attr``; an error names an edge without one."""
        column = self.edge_attrs.get(attr)
        if column is None:
            if self.n_edges == 0:
                return np.zeros(0)
            names = sorted(self.edge_attrs)
            raise NetworkError(
                f"edge {self.edge_label(0)!r} has no {attr!r} attribute (edge attributes in the"
                f" file: {', '.join(map(repr, names)) or 'none'}): name the attribute that holds"
                " the weights (weight_attr=...)"
            )
        if None in column:  # numpy would turn None into NaN
            raise NetworkError(f"edge {self.edge_label(column.index(None))!r} has no {attr!r} attribute:"
                               " give every edge a weight")
        try:
            return np.array(column, dtype=np.float64)
        except (TypeError, ValueError):
            pass
        for e, w in enumerate(column):
            try:
                float(w)
            except (TypeError, ValueError):
                raise NetworkError(f"edge {self.edge_label(e)!r} has a non-numeric weight {w!r}:"
                                   " weights must be real numbers") from None
        raise NetworkError("weights must be real numbers")  # pragma: no cover

    def to_problem(self, weight_attr: str = "weight") -> Problem:
        """The :class:`Problem` that ``compile_network(self.to_networkx(), weight_attr)`` gives.

        Node attributes as in :mod:`balgraph.network`: ``role`` (default by in/out-degree),
        ``activation`` (homogeneous ones make a hidden unit free), ``degree``, ``tie``.
        """
        weight = self.weights(weight_attr)
        n = len(self.nodes)
        indeg = np.bincount(self.dst, minlength=n)
        outdeg = np.bincount(self.src, minlength=n)
        roles, activation, degree, tie, args = [], [None] * n, [1.0] * n, [None] * n, {}
        for k, data in enumerate(self.node_attrs):
            role = data.get("role")
            if role is None:
                role = "input" if indeg[k] == 0 else "output" if outdeg[k] == 0 else "hidden"
            roles.append(role)
            if data:
                act = data.get("activation")
                activation[k] = None if act is None else str(act)
                degree[k] = data.get("degree", 1.0)
                tie[k] = data.get("tie")
                params = {key: data[key] for key in ("slope", "a", "b") if key in data}
                if params:
                    args[k] = params
        tied = any(t is not None for t in tie)
        return Problem.from_arrays(self.src, self.dst, weight, nodes=tuple(self.nodes), roles=roles,
                                   degree=degree, tie=tie if tied else None, activation=activation,
                                   activation_args=args)

    def to_networkx(self) -> nx.DiGraph:
        """The ``DiGraph`` that ``networkx.read_graphml`` returns for the same file."""
        g = nx.DiGraph()
        g.graph.update({"node_default": {}, "edge_default": {}}, **self.graph_attrs)
        g.add_nodes_from(zip(self.nodes, (dict(d) for d in self.node_attrs)))
        names = list(self.edge_attrs)
        columns = [self.edge_attrs[a] for a in names]
        nodes = self.nodes
        g.add_edges_from(
            (nodes[j], nodes[i], {a: v for a, v in zip(names, values) if v is not None})
            for j, i, *values in zip(self.src.tolist(), self.dst.tolist(), *columns)
        )
        return g

    def with_weights(self, weight: np.ndarray, attr: str = "weight") -> GraphMLData:
        """A copy whose edge attribute ``attr`` holds ``weight`` (float64, one per edge)."""
        attrs = dict(self.edge_attrs)
        attrs[attr] = np.asarray(weight, dtype=np.float64).tolist()
        return GraphMLData(self.nodes, self.node_attrs, self.src, self.dst, attrs, self.graph_attrs)

    @classmethod
    def from_graph(cls, graph: nx.DiGraph) -> GraphMLData:
        """Columns of a ``DiGraph`` (labels as strings; ``None`` attribute values dropped).

        Raises :class:`~balgraph.errors.NetworkError` when two labels have the same string
        (``1`` and ``"1"``): GraphML and GML would merge them.
        """
        labels = check_string_labels(graph.nodes)
        index = {node: k for k, node in enumerate(graph.nodes)}
        node_attrs = [{a: v for a, v in d.items() if v is not None} for _, d in graph.nodes(data=True)]
        src, dst, columns = [], [], {}
        m = graph.number_of_edges()
        for e, (j, i, d) in enumerate(graph.edges(data=True)):
            src.append(index[j])
            dst.append(index[i])
            for a, v in d.items():
                if v is not None:
                    column = columns.get(a)
                    if column is None:
                        column = columns[a] = [None] * m
                    column[e] = v
        graph_attrs = dict(graph.graph)
        return cls(labels, node_attrs, np.asarray(src, np.int64), np.asarray(dst, np.int64), columns,
                   graph_attrs)

    # ------------------------------------------------------------ writing
    def write(self, path: str | os.PathLike, *, show_progress: bool | None = None) -> None:
        """Write GraphML that ``networkx.read_graphml`` (and :func:`read_graphml_data`) reads back.

        Floats are written as ``repr`` (exact). Raises :class:`Unsupported` for attribute values
        that are not bool, int, float or str.
        """
        keys: dict = {}

        def key(scope: str, name: str, value) -> str:
            kind = _xml_type(value, name)
            return keys.setdefault((scope, name, kind), f"d{len(keys)}")

        defaults = {}
        for scope in ("node", "edge"):
            for name, value in (self.graph_attrs.get(f"{scope}_default") or {}).items():
                defaults[key(scope, name, value)] = value
        graph_data = [(key("graph", a, v), v) for a, v in self.graph_attrs.items()
                      if a not in ("node_default", "edge_default") and v is not None]
        node_lines = []
        for label, data in zip(self.nodes, self.node_attrs):
            items = "".join(f'      <data key="{key("node", a, v)}">{_text(v)}</data>\n'
                            for a, v in data.items() if v is not None)
            node_lines.append(f"    <node id={quoteattr(label)}>\n{items}    </node>\n" if items
                              else f"    <node id={quoteattr(label)} />\n")
        columns = []
        for name, column in self.edge_attrs.items():
            kinds = {(_xml_type(v, name)) for v in column if v is not None}
            ids = {kind: keys.setdefault(("edge", name, kind), f"d{len(keys)}") for kind in sorted(kinds)}
            columns.append((ids, column))
        quoted = [quoteattr(label) for label in self.nodes]
        with open(path, "w", encoding="utf-8") as fh, progress(
                self.n_edges, desc=f"writing {os.path.basename(os.fspath(path))}", unit="edges",
                enabled=show_progress) as bar:
            fh.write("<?xml version='1.0' encoding='utf-8'?>\n"
                     f'<graphml xmlns="{GRAPHML_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
                     f' xsi:schemaLocation="{GRAPHML_NS} {GRAPHML_NS}/1.0/graphml.xsd">\n')
            for (scope, name, kind), kid in sorted(keys.items(), key=lambda item: int(item[1][1:])):
                head = f'  <key id="{kid}" for="{scope}" attr.name={quoteattr(name)} attr.type="{kind}"'
                fh.write(f"{head}>\n    <default>{_text(defaults[kid])}</default>\n  </key>\n"
                         if kid in defaults else f"{head} />\n")
            fh.write('  <graph edgedefault="directed">\n')
            fh.writelines(f'    <data key="{k}">{_text(v)}</data>\n' for k, v in graph_data)
            fh.writelines(node_lines)
            _write_edges(fh, quoted, self.src.tolist(), self.dst.tolist(), columns, bar)
            fh.write("  </graph>\n</graphml>\n")


def _write_edges(fh, quoted, src, dst, columns, bar) -> None:
    step = 1 << 14
    simple = [(next(iter(ids.values())), column) for ids, column in columns
              if len(ids) == 1 and next(iter(ids)) == "double" and None not in column]
    if len(simple) == len(columns) == 1:  # the common case: one float weight per edge
        kid, column = simple[0]
        for start in range(0, len(src), step):
            stop = min(start + step, len(src))
            fh.writelines(
                f"    <edge source={quoted[j]} target={quoted[i]}>\n"
                f'      <data key="{kid}">{w!r}</data>\n    </edge>\n'
                for j, i, w in zip(src[start:stop], dst[start:stop], column[start:stop])
            )
            bar.update(stop - start)
        return
    for e, (j, i) in enumerate(zip(src, dst)):
        items = "".join(f'      <data key="{ids[_xml_type(column[e], "")]}">{_text(column[e])}</data>\n'
                        for ids, column in columns if column[e] is not None)
        fh.write(f"    <edge source={quoted[j]} target={quoted[i]}>\n{items}    </edge>\n" if items
                 else f"    <edge source={quoted[j]} target={quoted[i]} />\n")
        if e % step == step - 1:
            bar.update(step)


def _xml_type(value, name: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "long"
    if isinstance(value, (float, np.floating)):
        return "double"
    if isinstance(value, str):
        return "string"
    raise Unsupported(f"attribute {name!r} holds a {type(value).__name__}")


def _text(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return escape(value)


def check_string_labels(labels) -> list[str]:
    """``str`` of every label; an error names two labels with the same string (``1``, ``"1"``)."""
    out = [str(x) for x in labels]
    if len(set(out)) < len(out):
        seen: dict = {}
        for label, text in zip(labels, out):
            if text in seen:
                raise NetworkError(
                    f"node labels {seen[text]!r} and {label!r} are both written as {text!r} in"
                    " GraphML and GML, which store labels as strings: relabel one of them"
                    " (networkx.relabel_nodes) before writing"
                )
            seen[text] = label
    return out


def _degree(label, value) -> float:
    try:
        c = float(value)
    except (TypeError, ValueError):
        c = float("nan")
    if not (np.isfinite(c) and c > 0):
        raise NetworkError(f"the BiPU degree of unit {label!r} must be a finite number > 0, got {value!r}")
    return c

def read_graphml_data(path: str | os.PathLike, *, show_progress: bool | None = None) -> GraphMLData:
    """Stream a GraphML file into :class:`GraphMLData` (expat; the file is never held as a tree).

    Raises :class:`Unsupported` for what only networkx reads, :class:`NetworkError` (naming
    the file) for an invalid or undirected file, and ``OSError`` for an unreadable one.
    """
    xml = expat.ParserCreate(namespace_separator="}")
    xml.buffer_text = True
    parser = _Parser(xml)
    xml.StartElementHandler = parser.start
    xml.EndElementHandler = parser.end
    name = os.path.basename(os.fspath(path))
    try:
        with open(path, "rb") as fh, progress(os.path.getsize(path), desc=f"reading {name}", unit="B",
                                              enabled=show_progress) as bar:
            while chunk := fh.read(_CHUNK):
                xml.Parse(chunk, False)
                bar.update(len(chunk))
            xml.Parse(b"", True)
    except expat.ExpatError as exc:
        raise NetworkError(f"{os.fspath(path)}: not a valid GRAPHML file ({exc})") from None
    except (ValueError, KeyError) as exc:
        raise NetworkError(f"{os.fspath(path)}: not a valid GRAPHML file ({type(exc).__name__}: {exc})") from None
    except NetworkError as exc:
        text = str(exc)
        raise NetworkError(text if text.startswith(os.fspath(path)) else
                           f"{os.fspath(path)}: not a valid GRAPHML file ({text})") from None
    return GraphMLData(*parser.result(path))
