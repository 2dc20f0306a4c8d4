"""The expat handlers behind :func:`balgraph.files.graphml.read_graphml_data` (see there)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import NetworkError

GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
_TYPES = {"boolean": bool, "int": int, "integer": int, "long": int, "float": float,
          "double": float, "string": str}
_BOOL = {"true": True, "false": False, "0": False, "1": True}


class Unsupported(Exception):
    """The file uses a GraphML feature that only networkx's reader handles."""


def _decode(text: str, type_: type, key: str):
    if type_ is bool:
        try:
            return _BOOL[text.lower()]
        except KeyError:
            raise ValueError(f"{text!r} is not a boolean (key {key!r})") from None
    return type_(text)


class _Parser:
    """expat callbacks that fill the columns (see :func:`read_graphml_data`).

    The handlers of ``<edge>`` and ``<data>`` (nearly every element) are looked up by their
    full name; character data is kept only inside ``<data>`` and ``<default>``.
    """

    NODE, EDGE, DATA = (f"{GRAPHML_NS}}}{t}" for t in ("node", "edge", "data"))

    def __init__(self, xml):
        self.xml = xml
        self.keys: dict = {}
        self.defaults = {"node_default": {}, "edge_default": {}}
        self.graph_attrs: dict = {}
        self.node_index: dict = {}
        self.node_attrs: list = []
        self.src: list = []
        self.dst: list = []
        self.columns: dict = {}
        self.directed = None
        self.n_graphs = 0
        self.owner = self.graph_attrs  # the attribute dict <data> elements go to
        self.key = None  # the <key> being read (its <default>)
        self.data = None  # the key id of the open <data>
        self.text = ""

    def chars(self, text: str) -> None:
        self.text += text

    def start(self, name: str, attrs: dict) -> None:
        if self.data is not None:
            raise Unsupported(f"element {name!r} inside <data> (a yFiles extension)")
        if name == self.DATA:
            self.data = attrs.get("key")
            self.text = ""
            self.xml.CharacterDataHandler = self.chars
        elif name == self.EDGE:
            if attrs.get("directed") == "false" and self.directed:
                raise NetworkError("directed=false edge found in directed graph")
            self.src.append(attrs["source"])
            self.dst.append(attrs["target"])
            self.owner = {"id": attrs["id"]} if attrs.get("id") else {}
        else:
            self._start_other(name, attrs)

    def _start_other(self, name: str, attrs: dict) -> None:
        ns, _, tag = name.rpartition("}")
        if ns != GRAPHML_NS:
            raise Unsupported(f"element {name!r}")
        if tag == "node":
            if "yfiles.foldertype" in attrs:
                raise Unsupported("yFiles group node")
            node = attrs["id"]
            if node not in self.node_index:
                self.node_index[node] = len(self.node_attrs)
                self.node_attrs.append({})
            self.owner = self.node_attrs[self.node_index[node]]
        elif tag == "key":
            if "yfiles.type" in attrs:
                raise Unsupported("yFiles key")
            if attrs.get("attr.name") is None:
                raise NetworkError(f"Unknown key for id {attrs.get('id')}.")
            kind = attrs.get("attr.type", "string")
            if kind not in _TYPES:
                raise Unsupported(f"attr.type {kind!r}")
            self.key = attrs.get("id")
            self.keys[self.key] = (attrs["attr.name"], _TYPES[kind], attrs.get("for"))
        elif tag == "default":
            self.text = ""
            self.xml.CharacterDataHandler = self.chars
        elif tag == "graph":
            self.n_graphs += 1
            if self.n_graphs > 1:
                raise Unsupported("several or nested graphs")
            self.directed = attrs.get("edgedefault") == "directed"
            self.owner = self.graph_attrs
        elif tag not in ("graphml", "desc"):
            raise Unsupported(f"element {tag!r}")

    def end(self, name: str) -> None:
        if name == self.DATA:
            self.xml.CharacterDataHandler = None
            try:
                attr, type_, _ = self.keys[self.data]
            except KeyError:
                raise NetworkError(f"Bad GraphML data: no key {self.data}") from None
            text = self.text
            if not text:
                self.owner[attr] = ""
            elif type_ is float:
                self.owner[attr] = float(text)
            else:
                self.owner[attr] = _decode(text, type_, self.data)
            self.data = None
        elif name == self.EDGE:
            owner, columns, e = self.owner, self.columns, len(self.src) - 1
            if owner.keys() == columns.keys():
                for attr, value in owner.items():
                    columns[attr].append(value)
            else:
                for attr, value in owner.items():
                    columns.setdefault(attr, [None] * e).append(value)
                for column in columns.values():
                    if len(column) == e:
                        column.append(None)
            self.owner = self.graph_attrs
        elif name == self.NODE:
            self.owner = self.graph_attrs
        elif name.endswith("}default"):
            self.xml.CharacterDataHandler = None
            attr, type_, scope = self.keys[self.key]
            value = _decode(self.text, type_, self.key)
            if scope in ("node", "edge"):
                self.defaults[f"{scope}_default"][attr] = value

    def result(self, path) -> tuple:
        if self.n_graphs == 0:
            raise Unsupported("no graph element")
        if not self.directed:
            raise NetworkError(
                f"{os.fspath(path)}: the file holds an undirected graph; networks are directed"
                " (set edgedefault=\"directed\" in GraphML, or 'directed 1' in GML)"
            )
        index = self.node_index
        for label in self.src + self.dst:  # nodes named only by edges, in networkx's order
            if label not in index:
                index[label] = len(self.node_attrs)
                self.node_attrs.append({})
        src = np.fromiter((index[x] for x in self.src), np.int64, len(self.src))
        dst = np.fromiter((index[x] for x in self.dst), np.int64, len(self.dst))
        n = len(index)
        if src.size:
            code = np.unique(src * n + dst, return_counts=True)
            if code[1].max() > 1:
                j, i = divmod(int(code[0][np.argmax(code[1] > 1)]), n)
                nodes = list(index)
                raise NetworkError(
                    f"{os.fspath(path)}: the file holds a multigraph (edge {nodes[j]!r} -> {nodes[i]!r}"
                    " appears more than once); merge parallel edges first"
                )
        return list(index), self.node_attrs, src, dst, self.columns, {**self.defaults, **self.graph_attrs}
