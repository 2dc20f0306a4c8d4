"""Trace a PyTorch model with torch.fx into units, ties and layer maps.

Every tensor of the traced graph carries a unit array (:mod:`balgraph.torch._values`): entry
``x[i]`` is multiplied by the scale of one unit when the network is rescaled. Parametrized ops
(:mod:`balgraph.torch._modules`) create units, one per output channel, and a
:class:`~balgraph.torch._maps.LayerMap` that says which parameter entries join which units.
Positively homogeneous ops (:mod:`balgraph.torch._ops`: ReLU, pooling, reshapes, attention's
softmax-weighted sum of values, ...) carry units through; ops that add or combine entries tie
the units they combine (a residual addition ties the two streams, a sum over a dimension ties
the units along it); any other op keeps the units it touches at scale 1 (*fixes* them) and the
reason is counted for the report.

The result is exact: a unit is left free only if scaling it (with its tie group) by any
``λ > 0``, incoming parameters times ``λ`` and outgoing ones divided by ``λ``, leaves the
model's function unchanged; ``tests/test_torch_symmetries.py`` checks this by brute force.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import NetworkError
from ._maps import LayerMap
from ._arith import ArithRules
from ._modules import ModuleRules
from ._ops import OpRules
from ._values import ParamRef, PVal, Val, expand

__all__ = ["Traced", "trace", "UnsupportedOpWarning", "FixedUnitsWarning"]


class FixedUnitsWarning(UserWarning):
    """Some units of a model cannot be balanced (the summary line says how many and why)."""


class UnsupportedOpWarning(FixedUnitsWarning):
    """An op unknown to balgraph, or a BatchNorm in training mode, keeps units at scale 1."""


@dataclass
class Traced:
    """The structure of a traced model (its parameters are read later, when solving).

    ``fixed`` marks units that keep scale 1 whatever the weights; ``tie`` is a label per unit
    (``None`` when untied or fixed); ``reason`` names, per hidden channel unit, what fixed it;
    ``channel`` marks the units created by parametrized ops (the ``M`` of the report);
    ``group`` is a representative unit per unit (its tie group, fixed groups included).
    """

    labels: list
    roles: list
    owner: list
    fixed: np.ndarray
    tie: list
    layers: list
    reason: list
    channel: np.ndarray
    group: np.ndarray
    unsupported: dict = field(default_factory=dict)
    train_bn: list = field(default_factory=list)


class _ShapeRecorder(fx.Interpreter):
    """Run the traced graph once and record each value's shape (list of shapes for tuples)."""

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        n.meta["bg_shape"] = _shape_of(out)
        return out


def _shape_of(out):
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)) and not isinstance(out, torch.Size):
        return [_shape_of(o) for o in out]
    return None


class _Builder(OpRules, ArithRules, ModuleRules):
    def __init__(self, model: nn.Module):
        self.model = model
        self.labels: list[str] = []
        self.roles: list[str] = []
        self.owner: list[str] = []
        self.parent: list[int] = []
        self.rfixed: list[bool] = []
        self.root_reason: dict[int, str] = {}
        self.reason_of: dict[int, str] = {}
        self.maps: list[LayerMap] = []
        self.pinned: dict[tuple, tuple[ParamRef, str]] = {}
        self.values: dict[fx.Node, object] = {}
        self.lazy: dict[tuple, np.ndarray] = {}
        self.unsupported: Counter = Counter()
        self.train_bn: list[str] = []

    # ---------------------------------------------------------------- units
    def new_units(self, owner: str, n: int, role: str = "hidden") -> np.ndarray:
        start = len(self.labels)
        self.labels += [f"{owner}[{k}]" for k in range(n)]
        self.roles += [role] * n
        self.owner += [owner] * n
        self.parent += list(range(start, start + n))
        self.rfixed += [role != "hidden"] * n
        return np.arange(start, start + n, dtype=np.int64)

    def merged(self, owner: str, reason: str, const: bool = False) -> Val:
        """One fixed unit standing for every entry of a value (a constant, an opaque output)."""
        k = len(self.labels)
        self.labels.append(owner)
        self.roles.append("hidden")
        self.owner.append(owner)
        self.parent.append(k)
        self.rfixed.append(True)
        self.root_reason[k] = reason
        return Val(np.array(k, dtype=np.int64), (), const)

    def find(self, k: int) -> int:
        parent = self.parent
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def tie(self, a, b) -> None:
        """Make the units of ``a`` and ``b`` (equal-shape arrays) share a scale."""
        a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
        for x, y in zip(a.ravel().tolist(), b.ravel().tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx == ry:
                continue
            if ry < rx:
                rx, ry = ry, rx
            self.parent[ry] = rx
            self.rfixed[rx] = self.rfixed[rx] or self.rfixed[ry]
            if rx not in self.root_reason and ry in self.root_reason:
                self.root_reason[rx] = self.root_reason[ry]

    def fix(self, units, reason: str) -> None:
        """Keep ``units`` (and their tie groups) at scale 1, for ``reason``."""
        for k in np.unique(np.asarray(units, np.int64)).tolist():
            r = self.find(k)
            self.rfixed[r] = True
            self.root_reason.setdefault(r, reason)
            self.reason_of.setdefault(k, reason)

    def known_fixed(self, units) -> bool:
        """Whether every unit is fixed already (then the value cannot change under rescaling)."""
        return all(self.rfixed[self.find(k)] for k in np.unique(np.asarray(units)).tolist())

    # ---------------------------------------------------------------- values
    def get(self, arg):
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    @staticmethod
    def shape(node):
        return node.meta.get("bg_shape") if isinstance(node, fx.Node) else None

    def collapse(self, val: Val, shape: tuple, dims) -> Val:
        """Tie the units of ``val`` along ``dims`` (an op mixes entries there); drop those dims."""
        units, keep = val.units, list(val.dims)
        for d in sorted({d % len(shape) for d in dims} & set(val.dims), reverse=True):
            axis = keep.index(d)
            self.tie(np.broadcast_to(np.take(units, [0], axis=axis), units.shape), units)
            units = np.take(units, 0, axis=axis)
            keep.pop(axis)
        return Val(units, tuple(keep), val.const, val.lazy_input)

    def channel_units(self, val: Val, shape: tuple, dim: int) -> np.ndarray:
        """The units along ``dim``, for an op that applies the same weights at every position."""
        dim %= len(shape)
        if val.lazy_input is not None and not val.dims:
            key = (val.lazy_input, dim, shape[dim])
            if key not in self.lazy:
                self.lazy[key] = self.new_units(f"input:{val.lazy_input}", shape[dim], "input")
            return self.lazy[key]
        val = self.collapse(val, shape, [d for d in val.dims if d != dim])
        return np.ascontiguousarray(expand(val, shape, (dim,)))

    def fix_value(self, value, reason: str) -> None:
        """Fix every unit a value carries (and pin the parameters it is made of)."""
        if isinstance(value, (tuple, list)):
            for v in value:
                self.fix_value(v, reason)
        elif isinstance(value, PVal):
            self.pin(value.ref, reason)
        elif isinstance(value, Val) and not value.const:
            self.fix(value.units, reason)

    def opaque(self, node: fx.Node, reason: str, unsupported: bool = False):
        """Fix every unit feeding ``node``; its output keeps the first input's units (fixed)."""
        if unsupported:
            self.unsupported[reason] += 1
            reason = f"unsupported {reason}"
        first = None
        for arg in node.all_input_nodes:
            value = self.values.get(arg)
            self.fix_value(value, reason)
            if first is None and isinstance(value, Val) and self.shape(arg) == self.shape(node):
                first = value
        out = self.shape(node)
        if out is None:
            return None
        if isinstance(out, list):
            return tuple(self.merged(f"{node.name}.{k}", reason) if s is not None else None
                         for k, s in enumerate(out))
        if first is not None:
            return Val(first.units, first.dims)
        return self.merged(node.name, reason)

    def pin(self, ref: ParamRef, reason: str) -> None:
        """A parameter used outside a layer map must keep its values: its maps' units get fixed."""
        self.pinned.setdefault(ref.key, (ref, reason))

    def add_map(self, lm: LayerMap) -> LayerMap:
        self.maps.append(lm)
        return lm

    def called_again(self, kind: str, refs: tuple, in_units: np.ndarray | None) -> np.ndarray | None:
        """The out units of an earlier call of the same op (same parameters): a module called
        twice computes the same channels from tied inputs (Section 8.3)."""
        keys = tuple(None if r is None else r.key for r in refs)
        for lm in self.maps:
            mine = (lm.weight, lm.bias, lm.mean)[:len(refs)]
            if lm.kind == kind and tuple(None if r is None else r.key for r in mine) == keys:
                if in_units is not None and lm.in_units is not None and lm.in_units.shape == in_units.shape:
                    self.tie(lm.in_units, in_units)
                    return lm.out_units
                if in_units is None:
                    return lm.out_units
        return None

    # ---------------------------------------------------------------- driver
    def run(self, graph: fx.Graph) -> Traced:
        outputs = []
        for node in graph.nodes:
            if node.op == "placeholder":
                shape = self.shape(node)
                if isinstance(shape, tuple):
                    unit = self.new_units(f"input:{node.name}", 1, "input")[0]
                    self.values[node] = Val(np.array(unit), (), False, node.name)
            elif node.op == "get_attr":
                self.values[node] = self.attribute(node)
            elif node.op == "call_module":
                out = self.call_module(node, self.model.get_submodule(str(node.target)))
                if out is not None:
                    self.values[node] = out
            elif node.op in ("call_function", "call_method"):
                out = self.call(node)
                if out is not None:
                    self.values[node] = out
            elif node.op == "output":
                fx.node.map_arg(node.args, outputs.append)
        return self.finish(outputs)

    def attribute(self, node: fx.Node):
        target = str(node.target)
        obj = self.model
        for part in target.split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, torch.Tensor):
            return None
        return PVal(ParamRef(target, obj))

    def finish(self, outputs) -> Traced:
        for node in outputs:
            value = self.values.get(node)
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(v, Val) and not v.const:
                    for k in np.unique(v.units).tolist():
                        if self.roles[k] == "hidden":
                            self.roles[k] = "output"
                    self.fix(v.units, "model output")
                elif isinstance(v, PVal):
                    self.pin(v.ref, "model output")
        self.share_parameters()
        for lm in self.maps:
            if lm.has_bias_edges:
                lm.bias_unit = self.new_units(f"bias:{lm.name}", 1, "bias")[0]
                self.labels[lm.bias_unit] = f"bias:{lm.name}"
        self.compact()
        n = len(self.labels)
        roots = np.array([self.find(k) for k in range(n)], dtype=np.int64)
        fixed = np.array(self.rfixed, dtype=bool)[roots]
        size = np.bincount(roots, minlength=n)[roots]
        tie = [int(r) if s > 1 and not f else None for r, s, f in zip(roots, size, fixed)]
        channel = np.zeros(n, dtype=bool)
        for lm in self.maps:
            if lm.kind != "bias" and not (lm.kind == "bn" and lm.weight is None):
                channel[lm.out_units] = True
        channel &= np.array([r == "hidden" for r in self.roles])
        reason = [None] * n
        for k in np.flatnonzero(channel & fixed).tolist():
            reason[k] = self.reason_of.get(k) or self.root_reason.get(int(roots[k])) or "tied to a fixed unit"
        return Traced(self.labels, self.roles, self.owner, fixed, tie, self.maps, reason, channel,
                      roots, dict(self.unsupported), self.train_bn)

    def compact(self) -> None:
        """Drop units no map refers to (placeholders, constants, opaque outputs), renumbering."""
        n = len(self.labels)
        used = np.zeros(n, dtype=bool)
        for lm in self.maps:
            for units in (lm.out_units, lm.in_units):
                if units is not None:
                    used[units] = True
            if lm.bias_unit >= 0:
                used[lm.bias_unit] = True
        if used.all():
            return
        roots = np.array([self.find(k) for k in range(n)], dtype=np.int64)
        rfixed = np.array(self.rfixed, dtype=bool)[roots]
        new = np.cumsum(used) - 1
        keep = np.flatnonzero(used).tolist()
        # a tie group keeps its smallest used member as root; its fixedness and reason follow
        rep = {}
        for k in keep:
            rep.setdefault(int(roots[k]), k)
        self.parent = [int(new[rep[int(roots[k])]]) for k in keep]
        self.rfixed = [bool(rfixed[k]) for k in keep]
        self.root_reason = {int(new[r]): self.root_reason[int(roots[r])] for r in rep.values()
                            if int(roots[r]) in self.root_reason}
        self.reason_of = {int(new[k]): v for k, v in self.reason_of.items() if used[k]}
        for name in ("labels", "roles", "owner"):
            setattr(self, name, [getattr(self, name)[k] for k in keep])
        for lm in self.maps:
            lm.out_units = new[lm.out_units]
            if lm.in_units is not None:
                lm.in_units = new[lm.in_units]
            if lm.bias_unit >= 0:
                lm.bias_unit = int(new[lm.bias_unit])

    def share_parameters(self) -> None:
        """One tensor used by several maps: tie their units if the layouts agree, else fix them.

        Pinned tensors (used outside any map) fix the units of every map that rescales them.
        """
        uses: dict[tuple, list] = {}
        for lm in self.maps:
            for role, ref in lm.params():
                uses.setdefault(ref.key, []).append((lm, role, ref))
        for key, group in uses.items():
            name = group[0][2].name
            if key in self.pinned:
                for lm, role, _ in group:
                    for units in lm.factor_units(role):
                        self.fix(units, f"parameter {name!r} also used outside a layer")
                continue
            first, role0, _ = group[0]
            for lm, role, _ in group[1:]:
                lm.skip.add(role)
                mine, theirs = lm.factor_units(role), first.factor_units(role0)
                if lm.layout(role) == first.layout(role0) and [u.shape for u in mine] == [u.shape for u in theirs]:
                    for a, b in zip(theirs, mine):
                        self.tie(a, b)
                else:
                    for units in mine + theirs:
                        self.fix(units, f"parameter {name!r} shared by ops of different kinds")


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise NetworkError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            raise NetworkError(
                f"model {type(model).__name__} is on the meta device (tensor {name!r} has no"
                " values): materialize it first, e.g. model.to_empty(device='cpu') and load its"
                " weights, then balance it"
            )


def trace(model: nn.Module, example_inputs) -> Traced:
    """Trace ``model`` with torch.fx and record shapes by running it on ``example_inputs``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), torch.nn.Linear(4, 2))
    >>> t = trace(net, torch.zeros(1, 3))
    >>> int(t.channel.sum()), sorted(set(r for r in t.reason if r))
    (4, ['GELU'])
    """
    _check_model(model)
    if example_inputs is None:
        raise NetworkError("tracing needs example_inputs: a tensor (or tuple of tensors) the model accepts")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    root = model
    if type(model).__module__.startswith("torch.nn") and not isinstance(model, nn.Sequential):
        root = nn.Sequential(model)  # fx would inline a bare leaf into F.linear on constants
    try:
        gm = fx.symbolic_trace(root)
    except Exception as exc:  # torch.fx raises many kinds of errors on untraceable code
        raise NetworkError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Make forward() free of"
            " data-dependent control flow, or wrap untraceable parts as leaf modules."
        ) from exc
    buffers = [(b, b.detach().clone()) for b in root.buffers()]
    try:  # a forward pass in training mode would update BatchNorm statistics: undo it
        with torch.no_grad():
            _ShapeRecorder(gm).run(*example_inputs)
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    return _Builder(root).run(gm.graph)
