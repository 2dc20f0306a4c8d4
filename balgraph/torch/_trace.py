"""Trace a PyTorch model with torch.fx into a network of scaling units.

Every tensor in the traced graph is described by the *units* of one of its dimensions, the
channel dimension: all entries of channel ``k`` are multiplied by the scale of unit
``units[k]`` when the network is rescaled. A ``Linear`` creates one unit per output neuron, a
``Conv`` one per output channel, a ``BatchNorm`` (eval mode) one per channel; positively
homogeneous ops (ReLU, pooling, flatten, ...) carry units through; residual additions tie the
units they add; any other op keeps the units it touches at scale 1 (with a warning).
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import NetworkError, name_some

__all__ = ["UnsupportedOpWarning", "LayerMap", "Traced", "trace"]


class UnsupportedOpWarning(UserWarning):
    """An op of the model is not positively homogeneous: the units it touches keep scale 1."""


@dataclass
class LayerMap:
    """Which parameters connect which units: the map between a module and the problem.

    ``kind`` is ``"linear"``, ``"conv"`` or ``"bn"``. ``out_units[r]`` is the unit of output
    channel ``r``; ``in_units[s]`` the unit of input feature (Linear) or channel (Conv, BN) ``s``.
    """

    name: str
    kind: str
    module: nn.Module
    out_units: np.ndarray
    in_units: np.ndarray
    groups: int = 1
    bias_unit: int = -1


@dataclass
class Traced:
    """The structure of a traced model (its parameters are read later, when solving)."""

    labels: list
    roles: list
    owner: list
    fixed: np.ndarray
    tie: list
    layers: list


@dataclass
class _Value:
    units: np.ndarray
    dim: int | None  # None: one fixed unit stands for every entry
    const: bool = False


_HOMOGENEOUS_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_HOMOGENEOUS_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.leaky_relu, F.prelu, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    operator.neg, torch.neg, operator.pos, torch.clone,
}
_HOMOGENEOUS_METHODS = {"relu", "relu_", "contiguous", "clone", "detach", "neg", "float", "double"}
_SHAPE_QUERIES = {"size", "dim", "numel", "ndimension"}
_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_SCALE = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}
_REDUCE = {torch.mean: "mean", torch.sum: "sum", torch.amax: "amax"}


class _ShapeRecorder(fx.Interpreter):
    """Run the traced graph once and record each tensor's shape (like fx's ShapeProp, whose
    import pulls in sympy: seconds)."""

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        n.meta["balgraph_shape"] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        return out


def _shape(node) -> tuple | None:
    return node.meta.get("balgraph_shape") if isinstance(node, fx.Node) else None


def _arg(node: fx.Node, pos: int, name: str, default=None):
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


class _Builder:
    def __init__(self, model: nn.Module):
        self.model = model
        self.labels: list[str] = []
        self.roles: list[str] = []
        self.owner: list[str] = []
        self.fix: list[np.ndarray] = []
        self.ties: list[tuple[np.ndarray, np.ndarray]] = []
        self.layers: list[LayerMap] = []
        self.shared: dict[str, LayerMap] = {}
        self.values: dict[fx.Node, _Value] = {}

    # ---------------------------------------------------------------- units
    def new_units(self, owner: str, n: int, role: str = "hidden") -> np.ndarray:
        start = len(self.labels)
        self.labels += [f"{owner}[{k}]" for k in range(n)]
        self.roles += [role] * n
        self.owner += [owner] * n
        return np.arange(start, start + n, dtype=np.int64)

    def merged(self, owner: str, const: bool = False) -> _Value:
        start = len(self.labels)
        self.labels.append(owner)
        self.roles.append("hidden")
        self.owner.append(owner)
        self.fix.append(np.array([start]))
        return _Value(np.array([start], dtype=np.int64), None, const)

    def along(self, value: _Value, shape: tuple, dim: int) -> np.ndarray | None:
        """Units of ``value`` along ``dim``, or None when its channels lie on another dim."""
        if value.dim is None:
            return np.full(shape[dim], value.units[0], dtype=np.int64)
        return value.units if value.dim == dim else None

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        self.ties.append((np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)))

    # ---------------------------------------------------------------- opaque ops
    def opaque(self, node: fx.Node, why: str) -> _Value | None:
        """Keep every unit feeding ``node`` at scale 1; its output gets fixed units."""
        touched = []
        for arg in node.all_input_nodes:
            value = self.values.get(arg)
            if value is not None and not value.const:
                self.fix.append(value.units)
                touched.append(value.units)
        units = np.unique(np.concatenate(touched)) if touched else np.zeros(0, dtype=np.int64)
        free = [self.labels[k] for k in units if self.roles[k] == "hidden"]
        if free:
            warnings.warn(
                f"balgraph.torch: {why} (node {node.name!r}) is not positively homogeneous; its"
                f" {len(free)} input unit(s) {name_some(free, 5)} keep scale 1. Replace it by"
                " ReLU/LeakyReLU/linear ops to let them be balanced.",
                UnsupportedOpWarning,
                stacklevel=4,
            )
        shape = _shape(node)
        if shape is None:
            return None
        first = next((self.values[a] for a in node.all_input_nodes if a in self.values), None)
        same = first is not None and first.dim is not None and _shape(node.all_input_nodes[0]) == shape
        return _Value(first.units, first.dim) if same else self.merged(node.name)

    # ---------------------------------------------------------------- layers
    def layer(self, node, name, kind, module, value, in_shape, dim, n_out, groups=1) -> _Value:
        in_units = self.along(value, in_shape, dim)
        if in_units is None:
            return self.opaque(node, f"{type(module).__name__} {name!r} on a channel-mixed input")
        out_shape = _shape(node)
        out_dim = dim if len(out_shape) == len(in_shape) else len(out_shape) - 1
        if name in self.shared:
            # A module called twice shares its parameters: one set of units, tied inputs.
            first = self.shared[name]
            self.tie(first.in_units, in_units)
            return _Value(first.out_units, out_dim)
        out_units = self.new_units(name, n_out)
        lm = LayerMap(name, kind, module, out_units, in_units, groups)
        self.shared[name] = lm
        self.layers.append(lm)
        return _Value(out_units, out_dim)

    def call_module(self, node: fx.Node, module: nn.Module) -> _Value | None:
        name = str(node.target)
        value = self.values.get(node.args[0]) if node.args else None
        in_shape = _shape(node.args[0]) if node.args else None
        if value is None or in_shape is None:
            return self.opaque(node, f"module {name!r} ({type(module).__name__})")
        if isinstance(module, _HOMOGENEOUS_MODULES):
            return value
        if isinstance(module, nn.Flatten):
            return self.flatten(node, value, in_shape, module.start_dim, module.end_dim)
        if isinstance(module, nn.Linear):
            return self.layer(node, name, "linear", module, value, in_shape, len(in_shape) - 1,
                              module.out_features)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dim = 1 if len(in_shape) == module.weight.ndim else 0
            return self.layer(node, name, "conv", module, value, in_shape, dim,
                              module.out_channels, module.groups)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training or not module.affine or not module.track_running_stats:
                return self.opaque(
                    node, f"BatchNorm {name!r} in training mode or without affine/running stats"
                    " (call model.eval() first)",
                )
            return self.layer(node, name, "bn", module, value, in_shape, 1, module.num_features)
        return self.opaque(node, f"module {name!r} ({type(module).__name__})")

    # ---------------------------------------------------------------- shape ops
    def flatten(self, node, value, shape, start, end=-1) -> _Value:
        nd = len(shape)
        start, end = start % nd, end % nd
        if value.dim is None or value.dim < start:
            return value
        if value.dim > end:
            return _Value(value.units, value.dim - (end - start))
        d = value.dim
        before = int(np.prod(shape[start:d], dtype=np.int64))
        after = int(np.prod(shape[d + 1:end + 1], dtype=np.int64))
        return _Value(np.tile(np.repeat(value.units, after), before), start)

    def reshape(self, node, value, shape) -> _Value | None:
        out = _shape(node)
        if out == shape:
            return value
        if len(shape) >= 2 and out == (shape[0], int(np.prod(shape[1:], dtype=np.int64))):
            return self.flatten(node, value, shape, 1, -1)
        return self.opaque(node, f"reshape to {out}")

    def reduce(self, node, value, shape, dims, keepdim) -> _Value | None:
        if dims is None:
            return self.opaque(node, "a reduction over every dimension")
        dims = {d % len(shape) for d in ((dims,) if isinstance(dims, int) else dims)}
        if value.dim is None:
            return value
        if value.dim in dims:
            return self.opaque(node, "a reduction over the channel dimension")
        return _Value(value.units, value.dim if keepdim else value.dim - sum(d < value.dim for d in dims))

    def permute(self, node, value, order) -> _Value:
        if value.dim is None:
            return value
        nd = len(order)
        return _Value(value.units, [d % nd for d in order].index(value.dim))

    def add(self, node, a, b) -> _Value | None:
        va, vb = self.values.get(a), self.values.get(b)
        sa, sb = _shape(a), _shape(b)
        if va is None or vb is None or va.const or vb.const or sa != sb:
            return self.opaque(node, "adding a constant or a broadcast tensor")
        dim = va.dim if va.dim is not None else vb.dim
        if dim is None:
            return va
        ua, ub = self.along(va, sa, dim), self.along(vb, sb, dim)
        if ua is None or ub is None:
            return self.opaque(node, "adding tensors whose channels lie on different dimensions")
        self.tie(ua, ub)
        return _Value(ua, dim)

    def cat(self, node, tensors, dim) -> _Value | None:
        vals = [self.values.get(t) for t in tensors]
        shapes = [_shape(t) for t in tensors]
        if any(v is None or v.const for v in vals):
            return self.opaque(node, "concatenating constants")
        dim = dim % len(shapes[0])
        chans = {v.dim for v in vals} - {None}
        if len(chans) > 1:
            return self.opaque(node, "concatenating tensors with channels on different dimensions")
        cdim = chans.pop() if chans else None
        if cdim is None:
            return vals[0]
        parts = [self.along(v, s, cdim) for v, s in zip(vals, shapes)]
        if cdim == dim:
            return _Value(np.concatenate(parts), cdim)
        for other in parts[1:]:
            self.tie(parts[0], other)
        return _Value(parts[0], cdim)

    def call(self, node: fx.Node) -> _Value | None:
        fn, args = node.target, node.args
        first = self.values.get(args[0]) if args and isinstance(args[0], fx.Node) else None
        shape = _shape(args[0]) if args and isinstance(args[0], fx.Node) else None
        method = node.op == "call_method"
        if _shape(node) is None:
            # Shape queries do not touch values; anything else producing non-tensors is opaque.
            if (method and fn in _SHAPE_QUERIES) or fn is getattr or (fn is operator.getitem and first is None):
                return None
            return self.opaque(node, f"op {node.name!r}")
        if first is not None:
            if (method and fn in _HOMOGENEOUS_METHODS) or (not method and fn in _HOMOGENEOUS_FUNCTIONS):
                return first
            if fn is F.pad and not _arg(node, 3, "value", None):
                return first  # zero, reflect, replicate and circular padding are homogeneous
            if fn in (torch.flatten, "flatten"):
                return self.flatten(node, first, shape, _arg(node, 1, "start_dim", 0),
                                    _arg(node, 2, "end_dim", -1))
            if fn in ("view", "reshape", torch.reshape):
                return self.reshape(node, first, shape)
            if fn in _REDUCE or fn in _REDUCE.values():
                return self.reduce(node, first, shape, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
            if fn in ("permute", torch.permute):
                order = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
                return self.permute(node, first, tuple(order))
            if fn in ("transpose", torch.transpose):
                order = list(range(len(shape)))
                i, j = args[1] % len(shape), args[2] % len(shape)
                order[i], order[j] = order[j], order[i]
                return self.permute(node, first, tuple(order))
            if fn in _SCALE or fn in ("mul", "div"):
                other = args[1] if len(args) > 1 else None
                if isinstance(other, (int, float)) and not isinstance(other, bool):
                    return first
        if fn in _SCALE and len(args) == 2 and isinstance(args[0], (int, float)) and fn in (operator.mul, torch.mul):
            value = self.values.get(args[1])
            if value is not None:
                return value
        if (fn in _ADD or fn in ("add", "add_", "sub")) and len(args) == 2 and "alpha" not in node.kwargs:
            if all(isinstance(a, fx.Node) for a in args):
                return self.add(node, *args)
        if fn in (torch.cat, torch.concat) and isinstance(args[0], (tuple, list)):
            return self.cat(node, list(args[0]), _arg(node, 1, "dim", 0))
        what = fn if method else getattr(fn, "__name__", str(fn))
        return self.opaque(node, f"op {what!r}")

    # ---------------------------------------------------------------- driver
    def run(self, graph: fx.Graph) -> Traced:
        outputs = []
        for node in graph.nodes:
            if node.op == "placeholder":
                shape = _shape(node)
                if shape is None:
                    continue
                dim = min(1, len(shape) - 1) if shape else None
                units = self.new_units(f"input:{node.name}", shape[dim] if dim is not None else 1, "input")
                self.values[node] = _Value(units, dim)
            elif node.op == "get_attr":
                if _shape(node) is not None:
                    self.values[node] = self.merged(f"const:{node.target}", const=True)
            elif node.op == "call_module":
                out = self.call_module(node, self.model.get_submodule(str(node.target)))
                if out is not None:
                    self.values[node] = out
            elif node.op in ("call_function", "call_method"):
                out = self.call(node)
                if out is not None:
                    self.values[node] = out
            elif node.op == "output":
                fx.node.map_arg(node.args, lambda n: outputs.append(n))
        return self.finish(outputs)

    def finish(self, outputs) -> Traced:
        roles = list(self.roles)
        for node in outputs:
            value = self.values.get(node)
            if value is not None and not value.const:
                for k in value.units.tolist():
                    if roles[k] == "hidden":
                        roles[k] = "output"
        for lm in self.layers:
            if lm.kind == "bn" or lm.module.bias is not None:
                lm.bias_unit = len(self.labels)
                self.labels.append(f"bias:{lm.name}")
                roles.append("bias")
                self.owner.append(f"bias:{lm.name}")
        m = len(self.labels)
        fixed = np.array([r != "hidden" for r in roles], dtype=bool)
        if self.fix:
            fixed[np.concatenate(self.fix)] = True
        tie = [None] * m
        if self.ties:
            a = np.concatenate([t[0] for t in self.ties])
            b = np.concatenate([t[1] for t in self.ties])
            graph = coo_matrix((np.ones(a.size), (a, b)), shape=(m, m))
            _, comp = connected_components(graph, directed=False)
            # A group that holds a fixed unit (an input, an opaque op) is fixed as a whole.
            fixed = np.bincount(comp, weights=fixed, minlength=comp.max() + 1)[comp] > 0
            size = np.bincount(comp)[comp]
            tie = [int(c) if s > 1 and not f else None for c, s, f in zip(comp, size, fixed)]
        return Traced(self.labels, roles, self.owner, fixed, tie, self.layers)


def trace(model: nn.Module, example_inputs) -> Traced:
    """Trace ``model`` with torch.fx and record shapes by running it on ``example_inputs``."""
    if not isinstance(model, nn.Module):
        raise NetworkError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(model, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm)):
        model = nn.Sequential(model)  # fx would inline a bare leaf into F.linear on constants
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # torch.fx raises many kinds of errors on untraceable code
        raise NetworkError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Make forward() free of"
            " data-dependent control flow, or wrap untraceable parts as leaf modules."
        ) from exc
    with torch.no_grad():
        _ShapeRecorder(gm).run(*example_inputs)
    return _Builder(model).run(gm.graph)
