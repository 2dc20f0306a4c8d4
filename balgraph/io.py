"""Network files: GraphML, GML, ``.npz`` layer matrices, and model files of layer chains.

- GraphML / GML: a directed graph; node attributes as in :mod:`balgraph.network` (``role``,
  ``activation``, ``degree``, ``tie``); an edge attribute (``weight`` unless told) holds the
  weight. GraphML is streamed by expat (:mod:`balgraph.files.graphml`, several times faster than
  networkx's reader); files using yFiles extensions, nested graphs or ports go to networkx.
- ``.npz``: an MLP ``x_k = f(W_k x_{k-1} + b_k)``: arrays ``W0, W1, ...`` of shape
  ``(n_out, n_in)``, optional ``b0, b1, ...`` and optional ``activations`` (one string per hidden
  layer, or one for all). Read with ``np.load(allow_pickle=False)``: nothing is ever unpickled.
- ``.pt`` / ``.pth`` (PyTorch state dicts, ``torch.load(weights_only=True)``) and ``.safetensors``:
  chains of Linear layers (``0.weight``, ``0.bias``, ``2.weight``, ...; see
  :mod:`balgraph.files.models`), written back with the same names, shapes and dtypes.
- ``.safetensors.index.json`` (sharded safetensors, as Hugging Face writes them) and, with
  ``chunks=``, ``.safetensors``: read chunk-wise into Dask arrays, balanced where the chunks
  live and written back shard by shard (:mod:`balgraph.files.sharded`, ``balgraph[dask]``).

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
from dataclasses import dataclass

import networkx as nx
import numpy as np

from .errors import NetworkError
from .files.graphml import GraphMLData, Unsupported, check_string_labels, read_graphml_data
from .files.models import INDEX_SUFFIX, LayerChain, read_layer_chain
from .model import Problem, compile_network, problem_graph

__all__ = ["FORMATS", "INDEX_SUFFIX", "detect_format", "read_network", "write_network", "read_layers", "write_layers",
           "layers_of", "graph_of", "open_network", "NetworkFile", "read_layer_chain", "LayerChain"]

FORMATS = {".graphml": "graphml", ".gml": "gml", ".npz": "npz", ".pt": "torch", ".pth": "torch",
           ".safetensors": "safetensors", INDEX_SUFFIX: "safetensors-index"}
MODEL_FORMATS = ("torch", "safetensors", "safetensors-index")


def detect_format(path: str | os.PathLike, format: str | None = None) -> str:
    """``"graphml"``, ``"gml"``, ``"npz"``, ``"torch"``, ``"safetensors"`` or ``"safetensors-index"``
    (a sharded ``.safetensors.index.json``), from ``format`` or the suffix."""
    if format is not None:
        if format not in FORMATS.values():
            raise NetworkError(f"unknown format {format!r}: use graphml, gml, npz, torch, safetensors"
                               " or safetensors-index")
        return format
    if str(path).lower().endswith(INDEX_SUFFIX):
        return "safetensors-index"
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in FORMATS:
        raise NetworkError(
            f"{os.fspath(path)}: cannot tell the file format from {suffix or 'no suffix'!r};"
            f" name it .graphml, .gml, .npz, .pt, .pth, .safetensors or {INDEX_SUFFIX}"
        )
    return FORMATS[suffix]


def _read_chain(path, fmt: str, order=None, chunks=None, show_progress=None) -> LayerChain:
    """A model file's chain: loaded, or read chunk-wise into Dask arrays (``chunks``; always for
    a sharded index)."""
    return read_layer_chain(path, fmt, order=order, chunks=chunks, show_progress=show_progress)


def read_layers(path: str | os.PathLike) -> tuple[list, list, list | str]:
    """Read an ``.npz`` MLP: ``(matrices, biases, activations)`` (biases hold None where absent)."""
    p = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise NetworkError(f"{p}: not a valid .npz file ({exc})") from None
    except ValueError as exc:
        raise NetworkError(f"{p}: unreadable .npz (pickled objects are refused): {exc}") from None
    n = 0
    while f"W{n}" in arrays:
        n += 1
    unknown = sorted(set(arrays) - {f"W{k}" for k in range(n)} - {f"b{k}" for k in range(n)} - {"activations"})
    if n == 0 or unknown:
        raise NetworkError(
            f"{p}: an MLP .npz holds W0, W1, ... (consecutive), optional b0, b1, ... and"
            f" 'activations'; found keys {sorted(arrays)}"
        )
    for name, a in arrays.items():
        if name == "activations":
            continue
        ndim = 2 if name.startswith("W") else 1
        if a.dtype.kind not in "fiub" or a.ndim != ndim:
            kind = {"c": "complex", "U": "string", "S": "bytes", "O": "object"}.get(a.dtype.kind, str(a.dtype))
            raise NetworkError(
                f"{p}: array {name!r} must be a {ndim}-D array of real numbers, got a {a.ndim}-D"
                f" {kind} array ({a.dtype}, shape {list(a.shape)})"
            )
    mats = [arrays[f"W{k}"] for k in range(n)]
    biases = [arrays.get(f"b{k}") for k in range(n)]
    acts = arrays.get("activations")
    if acts is None:
        activations: list | str = "relu"
    elif acts.dtype.kind != "U":
        raise NetworkError(f"{p}: 'activations' must be an array of strings")
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


def _read_graph_networkx(path, fmt: str) -> nx.DiGraph:
    try:
        graph = nx.read_graphml(path) if fmt == "graphml" else nx.read_gml(path, label="label")
    except (nx.NetworkXError, ET.ParseError, ValueError, KeyError, UnicodeDecodeError) as exc:
        msg = re.sub(r"\s+", " ", str(exc)).strip()
        raise NetworkError(f"{os.fspath(path)}: not a valid {fmt.upper()} file ({msg})") from None
    return _as_directed(graph, path)


def _check_exists(path) -> None:
    if not os.path.isfile(path):
        raise NetworkError(f"{os.fspath(path)}: no such file")


def read_network(path: str | os.PathLike, format: str | None = None, *,
                 activation: str | Sequence[str] = "relu", chunks=None,
                 show_progress: bool | None = None) -> nx.DiGraph | Problem:
    """Read a network file: a ``networkx.DiGraph`` (GraphML, GML) or a :class:`Problem` (layers).

    ``activation`` is the hidden activation of a model file's layer chain (``.pt``, ``.pth``,
    ``.safetensors``, ``.safetensors.index.json``); ``.npz`` files name their own. ``chunks``
    reads a ``.safetensors`` chain chunk-wise into Dask arrays (Dask's ``chunks=``, e.g.
    ``"auto"``); sharded files are always read so. GraphML is read by the streaming reader into
    the graph that ``networkx.read_graphml`` returns.
    """
    fmt = detect_format(path, format)
    _check_exists(path)
    if fmt == "npz":
        mats, biases, activations = read_layers(path)
        return Problem.from_layers(mats, biases, activations=activations)
    if fmt in MODEL_FORMATS:
        return _read_chain(path, fmt, chunks=chunks, show_progress=show_progress).problem(activation)
    if fmt == "graphml":
        try:
            return read_graphml_data(path, show_progress=show_progress).to_networkx()
        except Unsupported:
            pass
    return _read_graph_networkx(path, fmt)


def layers_of(network, weight: np.ndarray | None = None) -> tuple[list, list]:
    """The layer matrices and biases of a network built from layers: a :class:`Problem` (at
    per-edge ``weight``, default its own) or a :class:`~balgraph.BalanceResult` (balanced)."""
    from .result import BalanceResult

    if isinstance(network, BalanceResult):
        if not network.problem.dense:
            raise NetworkError("this network is a general graph, not layer matrices: write it as .graphml or .gml")
        return network.layer_weights(), network.layer_biases()
    pb = network if weight is None else network.with_weights(weight)
    if not pb.dense:
        raise NetworkError("this network is a general graph, not layer matrices: write it as .graphml or .gml")
    mats, bias_of = [], {}
    for b in pb.blocks:
        if b.in_units.size == 1 and pb.roles[int(b.in_units[0])] == "bias":
            bias_of[int(b.out_units[0])] = np.asarray(b.weight).reshape(-1)
        else:
            mats.append(b)
    return [np.asarray(b.weight) for b in mats], [bias_of.get(int(b.out_units[0])) for b in mats]


def graph_of(problem: Problem, weight: np.ndarray | None = None) -> nx.DiGraph:
    """A DiGraph of a problem with string labels (``role``, ``activation``, ``degree``, ``tie``)."""
    labels = check_string_labels(problem.nodes)
    g = problem_graph(problem, weight)
    return nx.relabel_nodes(g, dict(zip(problem.nodes, labels)))


def _write_graph(graph: nx.DiGraph, path, fmt: str, show_progress: bool | None = None) -> None:
    if fmt == "graphml":
        try:
            GraphMLData.from_graph(graph).write(path, show_progress=show_progress)
            return
        except Unsupported:
            graph = _clean_for_file(graph)
            nx.write_graphml(graph, path)
            return
    check_string_labels(graph.nodes)
    nx.write_gml(_clean_for_file(graph), path, stringizer=str)


def _clean_for_file(graph: nx.DiGraph) -> nx.DiGraph:
    """Drop None attributes (GraphML/GML cannot store them) without touching the input."""
    out = graph.copy()
    for _, data in out.nodes(data=True):
        for key in [k for k, v in data.items() if v is None]:
            del data[key]
    return out


def _default_names(n_layers: int) -> tuple[list, list]:
    return [f"{k}.weight" for k in range(n_layers)], [f"{k}.bias" for k in range(n_layers)]


def _write_model(path, fmt, mats, biases, like: LayerChain | str | os.PathLike | None,
                 show_progress=None) -> None:
    if like is not None:
        chain = like if isinstance(like, LayerChain) else read_layer_chain(like)
        chain.write(path, mats, biases, fmt, show_progress=show_progress)
        return
    w_names, b_names = _default_names(len(mats))
    b_names = [name if b is not None else None for name, b in zip(b_names, biases)]
    names = [n for pair in zip(w_names, b_names) for n in pair if n is not None]
    chain = LayerChain("", fmt, [str(k) for k in range(len(mats))], w_names, b_names, list(mats),  # read from no file
                       list(biases), dict.fromkeys(names, "float64"), names)
    chain.write(path, mats, biases, fmt, show_progress=show_progress)


def write_network(network, path: str | os.PathLike, format: str | None = None, *,
                  activations: str | Sequence[str] | None = None,
                  like: LayerChain | str | os.PathLike | None = None,
                  show_progress: bool | None = None) -> None:
    """Write a ``DiGraph``, a :class:`Problem` or a :class:`~balgraph.BalanceResult` (balanced weights).

    GraphML and GML store labels as strings (two labels with one string, ``1`` and ``"1"``,
    are refused); ``.npz`` and model files need a network built from layers. ``.npz`` writes
    ``activations`` (default: ``"relu"`` for free hidden layers, ``"opaque"`` for fixed ones).
    Model files take their tensor names and dtypes from ``like`` (a model file or
    :class:`LayerChain` of the same chain); without it they are ``0.weight, 0.bias, 1.weight, ...``
    in float64.
    """
    from .result import BalanceResult

    fmt = detect_format(path, format)
    if isinstance(network, BalanceResult):
        problem = network.problem
        graph = network.to_graph() if network.problem.source is not None else None
    elif isinstance(network, Problem):
        problem, graph = network, None
    elif isinstance(network, nx.DiGraph):
        problem, graph = None, network
    else:
        raise NetworkError(f"cannot write a {type(network).__name__}: give a DiGraph, Problem or BalanceResult")
    if fmt == "npz" or fmt in MODEL_FORMATS:
        if problem is None or not problem.dense:
            raise NetworkError(f"only networks built from layer matrices can be written as {fmt};"
                               " write a general graph as .graphml or .gml")
        mats, biases = layers_of(network)
        if fmt in MODEL_FORMATS:
            _write_model(path, fmt, mats, biases, like, show_progress)
            return
        if activations is None and len(mats) > 1:
            hidden = [b for b in problem.blocks if not (b.in_units.size == 1 and problem.roles[int(b.in_units[0])] == "bias")]
            activations = ["opaque" if problem.fixed[int(b.out_units[0])] else "relu" for b in hidden[:-1]]
        write_layers(path, mats, biases, activations)
        return
    if graph is None:
        weight = network.weight_array if isinstance(network, BalanceResult) else None
        graph = graph_of(problem, weight)
    _write_graph(graph, path, fmt, show_progress)


@dataclass
class NetworkFile:
    """A network read from a file, with what is needed to write balanced weights in its own form.

    ``problem`` is what :func:`balgraph.solve` takes; :meth:`write` writes new weights (one per
    edge of ``problem``) keeping everything else of the source: GraphML/GML node and edge
    attributes, ``.npz`` activations, model-file tensor names and dtypes.
    """

    path: str
    format: str
    problem: Problem
    source: object = None
    weight_attr: str = "weight"
    activations: object = None

    def write(self, weights, path: str | os.PathLike, format: str | None = None, *,
              show_progress: bool | None = None) -> None:
        """Write the network with new weights to ``path`` (its suffix picks the format).

        ``weights`` is a :class:`~balgraph.BalanceResult` of ``problem`` (layer files are then
        written from its balanced matrices, never as one per-edge array) or per-edge weights.
        """
        from .result import BalanceResult

        fmt = detect_format(path, format)
        result = isinstance(weights, BalanceResult)
        # a result's per-edge array is formed only for graph files: layer files take its matrices
        per_edge = None if result and fmt not in ("graphml", "gml") else \
            weights.weight_array if result else np.asarray(weights, dtype=np.float64)
        if fmt in ("graphml", "gml"):
            if fmt == "graphml" and isinstance(self.source, GraphMLData):
                self.source.with_weights(per_edge, self.weight_attr).write(path, show_progress=show_progress)
            else:
                _write_graph(self._graph(per_edge), path, fmt, show_progress)
            return
        if not self.problem.dense:
            raise NetworkError(f"only networks built from layer matrices can be written as {fmt};"
                               " write a general graph as .graphml or .gml")
        mats, biases = layers_of(weights) if result else layers_of(self.problem, per_edge)
        if fmt in MODEL_FORMATS and isinstance(self.source, LayerChain):
            self.source.write(path, mats, biases, fmt, show_progress=show_progress)
        elif fmt == "npz":
            write_layers(path, mats, biases, self.activations)
        else:
            _write_model(path, fmt, mats, biases, None, show_progress)

    def _graph(self, weight: np.ndarray) -> nx.DiGraph:
        if isinstance(self.source, GraphMLData):
            return self.source.with_weights(weight, self.weight_attr).to_networkx()
        if isinstance(self.source, nx.DiGraph):
            out = self.source.copy()
            nodes, attr = self.problem.nodes, self.weight_attr
            for j, i, w in zip(self.problem.src.tolist(), self.problem.dst.tolist(), weight.tolist()):
                out.edges[nodes[j], nodes[i]][attr] = w
            return out
        return graph_of(self.problem, weight)


def open_network(path: str | os.PathLike, format: str | None = None, *, weight_attr: str = "weight",
                 activation: str | Sequence[str] = "relu", order: Sequence[str] | None = None,
                 chunks=None, show_progress: bool | None = None) -> NetworkFile:
    """Read a network file as a :class:`NetworkFile` (the ``balgraph`` command's path).

    GraphML goes straight from the streaming reader into a :class:`Problem`, without networkx.
    ``weight_attr`` names the GraphML/GML edge attribute holding the weights; ``activation`` is
    the hidden activation of a model file's layer chain, ``order`` its module paths in chain
    order (see :func:`read_layer_chain`), ``chunks`` (see :func:`read_network`) reads it
    chunk-wise into Dask arrays, as sharded ``.safetensors.index.json`` files always are.
    """
    p = os.fspath(path)
    fmt = detect_format(path, format)
    _check_exists(path)
    if fmt == "npz":
        mats, biases, activations = read_layers(path)
        return NetworkFile(p, fmt, Problem.from_layers(mats, biases, activations=activations),
                           activations=activations)
    if fmt in MODEL_FORMATS:
        chain = _read_chain(path, fmt, order=order, chunks=chunks, show_progress=show_progress)
        return NetworkFile(p, fmt, chain.problem(activation), chain, activations=activation)
    if fmt == "graphml":
        try:
            data = read_graphml_data(path, show_progress=show_progress)
        except Unsupported:
            pass
        else:
            return NetworkFile(p, fmt, data.to_problem(weight_attr), data, weight_attr)
    graph = _read_graph_networkx(path, fmt)
    return NetworkFile(p, fmt, compile_network(graph, weight_attr), graph, weight_attr)
