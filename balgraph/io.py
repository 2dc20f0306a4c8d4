"""Network files: GraphML and GML (networkx graphs) and ``.npz`` layer matrices (MLPs).

- GraphML / GML: a directed graph; node attributes as in :mod:`balgraph.network` (``role``,
  ``activation``, ``degree``, ``tie``); the edge attribute ``weight`` holds the weight.
- ``.npz``: an MLP ``x_k = f(W_k x_{k-1} + b_k)``: arrays ``W0, W1, ...`` of shape
  ``(n_out, n_in)``, optional ``b0, b1, ...`` and optional ``activations`` (one string per hidden
  layer, or one for all). Read with ``np.load(allow_pickle=False)``: nothing is ever unpickled.

Every read error becomes a :class:`~balgraph.errors.NetworkError` that names the file.

Examples
--------
>>> import numpy as np, tempfile, os, balgraph.io as bio
>>> path = os.path.join(tempfile.mkdtemp(), "mlp.npz")
>>> bio.write_layers(path, [np.ones((3, 2)), np.ones((1, 3))], [np.zeros(3), None])
>>> bio.read_network(path).n_vars
3
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence

import networkx as nx
import numpy as np

from .errors import NetworkError
from .model import DenseBlock, Problem, problem_graph

__all__ = ["FORMATS", "detect_format", "read_network", "write_network", "read_layers", "write_layers",
           "layers_of", "graph_of"]

FORMATS = {".graphml": "graphml", ".gml": "gml", ".npz": "npz"}


def detect_format(path: str | os.PathLike, format: str | None = None) -> str:
    """``"graphml"``, ``"gml"`` or ``"npz"``, from ``format`` or the file's suffix."""
    if format is not None:
        if format not in FORMATS.values():
            raise NetworkError(f"unknown format {format!r}: use graphml, gml or npz")
        return format
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in FORMATS:
        raise NetworkError(
            f"{os.fspath(path)}: cannot tell the file format from {suffix or 'no suffix'!r};"
            " name it .graphml, .gml or .npz"
        )
    return FORMATS[suffix]


def read_layers(path: str | os.PathLike) -> tuple[list, list, list | str]:
    """Read an ``.npz`` MLP: ``(matrices, biases, activations)`` (biases hold None where absent)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise NetworkError(f"{os.fspath(path)}: not a valid .npz file ({exc})") from None
    except ValueError as exc:
        raise NetworkError(f"{os.fspath(path)}: unreadable .npz (pickled objects are refused): {exc}") from None
    n = 0
    while f"W{n}" in arrays:
        n += 1
    unknown = sorted(set(arrays) - {f"W{k}" for k in range(n)} - {f"b{k}" for k in range(n)} - {"activations"})
    if n == 0 or unknown:
        raise NetworkError(
            f"{os.fspath(path)}: an MLP .npz holds W0, W1, ... (consecutive), optional b0, b1, ... and"
            f" 'activations'; found keys {sorted(arrays)}"
        )
    mats = [arrays[f"W{k}"] for k in range(n)]
    for k, w in enumerate(mats):
        if w.ndim != 2 or not np.issubdtype(w.dtype, np.number):
            raise NetworkError(f"{os.fspath(path)}: W{k} must be a 2-D numeric array, got {w.dtype} {w.shape}")
    biases = [arrays.get(f"b{k}") for k in range(n)]
    acts = arrays.get("activations")
    if acts is None:
        activations: list | str = "relu"
    elif acts.dtype.kind != "U":
        raise NetworkError(f"{os.fspath(path)}: 'activations' must be an array of strings")
    else:
        activations = str(acts) if acts.ndim == 0 else [str(a) for a in acts.tolist()]
    return mats, biases, activations


def write_layers(path: str | os.PathLike, matrices: Sequence[np.ndarray],
                 biases: Sequence[np.ndarray | None] | None = None,
                 activations: str | Sequence[str] | None = None) -> None:
    """Write an MLP as ``.npz`` (see :func:`read_layers`)."""
    arrays = {f"W{k}": np.asarray(w, dtype=np.float64) for k, w in enumerate(matrices)}
    for k, b in enumerate(biases or []):
        if b is not None:
            arrays[f"b{k}"] = np.asarray(b, dtype=np.float64)
    if activations is not None:
        arrays["activations"] = np.asarray(activations, dtype=str)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _as_directed(graph, path) -> nx.DiGraph:
    if graph.is_multigraph():
        raise NetworkError(f"{os.fspath(path)}: the file holds a multigraph; merge parallel edges first")
    if not graph.is_directed():
        raise NetworkError(
            f"{os.fspath(path)}: the file holds an undirected graph; networks are directed"
            " (set edgedefault=\"directed\" in GraphML, or 'directed 1' in GML)"
        )
    return graph


def read_network(path: str | os.PathLike, format: str | None = None) -> nx.DiGraph | Problem:
    """Read a network file: a ``networkx.DiGraph`` (GraphML, GML) or a :class:`Problem` (npz)."""
    fmt = detect_format(path, format)
    if not os.path.isfile(path):
        raise NetworkError(f"{os.fspath(path)}: no such file")
    if fmt == "npz":
        mats, biases, activations = read_layers(path)
        return Problem.from_layers(mats, biases, activations=activations)
    try:
        graph = nx.read_graphml(path) if fmt == "graphml" else nx.read_gml(path, label="label")
    except (nx.NetworkXError, ET.ParseError, ValueError, KeyError, UnicodeDecodeError) as exc:
        msg = re.sub(r"\s+", " ", str(exc)).strip()
        raise NetworkError(f"{os.fspath(path)}: not a valid {fmt.upper()} file ({msg})") from None
    return _as_directed(graph, path)


def layers_of(problem: Problem, weight: np.ndarray | None = None) -> tuple[list, list]:
    """The layer matrices and biases of a problem built from layers, at per-edge ``weight``."""
    pb = problem if weight is None else problem.with_weights(weight)
    mats, bias_of = [], {}
    for b in pb.blocks:
        if not isinstance(b, DenseBlock):
            raise NetworkError("this network is a general graph, not layer matrices: write it as .graphml or .gml")
        if b.in_units.size == 1 and pb.roles[int(b.in_units[0])] == "bias":
            bias_of[int(b.out_units[0])] = np.asarray(b.weight, dtype=np.float64).reshape(-1)
        else:
            mats.append(b)
    if not mats:
        raise NetworkError("this network is a general graph, not layer matrices: write it as .graphml or .gml")
    biases = [bias_of.get(int(b.out_units[0])) for b in mats]
    return [np.asarray(b.weight, dtype=np.float64) for b in mats], biases


def graph_of(problem: Problem, weight: np.ndarray | None = None) -> nx.DiGraph:
    """A DiGraph of a problem with string labels (``role``, ``activation``, ``degree``, ``tie``)."""
    g = problem_graph(problem, weight)
    return nx.relabel_nodes(g, {label: str(label) for label in g.nodes})


def _clean_for_file(graph: nx.DiGraph) -> nx.DiGraph:
    """Drop None attributes (GraphML/GML cannot store them) without touching the input."""
    out = graph.copy()
    for _, data in out.nodes(data=True):
        for key in [k for k, v in data.items() if v is None]:
            del data[key]
    return out


def write_network(network, path: str | os.PathLike, format: str | None = None, *,
                  activations: str | Sequence[str] | None = None) -> None:
    """Write a ``DiGraph``, a :class:`Problem` or a :class:`~balgraph.BalanceResult` (balanced weights).

    GraphML and GML store labels as strings; ``.npz`` needs a network built from layers, and
    writes ``activations`` (default: ``"relu"`` for free hidden layers, ``"opaque"`` for fixed ones).
    """
    from .result import BalanceResult

    fmt = detect_format(path, format)
    if isinstance(network, BalanceResult):
        problem, weight = network.problem, network.weight_array
        graph = network.to_graph() if network.problem.source is not None else None
    elif isinstance(network, Problem):
        problem, weight, graph = network, network.weight, None
    elif isinstance(network, nx.DiGraph):
        problem, weight, graph = None, None, network
    else:
        raise NetworkError(f"cannot write a {type(network).__name__}: give a DiGraph, Problem or BalanceResult")
    if fmt == "npz":
        if problem is None or not problem.dense:
            raise NetworkError("only networks read from .npz layer matrices can be written as .npz;"
                               " write a general graph as .graphml or .gml")
        mats, biases = layers_of(problem, weight)
        hidden = [b for b in problem.blocks if b.in_units.size > 1 or problem.roles[int(b.in_units[0])] != "bias"][:-1]
        if activations is None and hidden:
            activations = ["opaque" if problem.fixed[int(b.out_units[0])] else "relu" for b in hidden]
        write_layers(path, mats, biases, activations)
        return
    graph = _clean_for_file(graph if graph is not None else graph_of(problem, weight))
    if fmt == "graphml":
        nx.write_graphml(graph, path)
    else:
        nx.write_gml(graph, path, stringizer=str)
