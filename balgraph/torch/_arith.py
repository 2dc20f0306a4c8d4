"""Arithmetic rules met while tracing (see ``_trace``): sums, products, matrix products,
reductions and attention.

- ``a + b`` ties the units of ``a`` and ``b`` entry by entry (a residual stream is one tie
  group, Section 8.2); ``x + P`` with a parameter ``P`` makes ``P``'s entries biases of ``x``'s
  units; adding a constant fixes.
- ``x * c`` passes units for a number ``c``; ``x * P`` is a per-channel multiplier (layer scale,
  a hand-written norm's affine weight): new units; ``x * g`` passes ``x``'s units when ``g`` is
  a value no rescaling changes (a sigmoid gate), else both are fixed (a bilinear product).
- ``A @ V`` passes ``V``'s column units when ``A`` cannot change (attention weights); ``x @ W``
  is a Linear layer; ``q @ kᵀ`` fixes both (attention scores).
- A sum, mean, max or norm over some dimensions ties the units along them.
- ``F.scaled_dot_product_attention(q, k, v)``: q and k are fixed, each value channel passes.
"""

from __future__ import annotations

import numpy as np
import torch.fx as fx

from ._maps import LayerMap
from ._ops import ADDS, DIVS, MATMULS, MULS, arg, is_number
from ._values import PVal, Val, expand, normalized, shifted

__all__ = ["ArithRules"]



class ArithRules:
    """Mixed into the tracing builder (module docstring)."""

    def arith_op(self, node: fx.Node, fn, method: bool):
        if fn in ADDS and len(node.args) == 2:
            return self.add(node)
        if fn in MULS and len(node.args) == 2:
            return self.mul(node, *node.args)
        if fn in DIVS and len(node.args) == 2 and "rounding_mode" not in node.kwargs:
            a, b = node.args
            if self.scalar(b) and not (is_number(b) and b == 0):
                return self.get(a) if isinstance(self.get(a), Val) else NotImplemented
            vb = self.get(b)
            if isinstance(self.get(a), Val) and isinstance(vb, Val) and self.known_fixed(vb.units):
                return self.aligned(node, a)
            if isinstance(self.get(a), Val) and isinstance(vb, PVal):
                self.pin(vb.ref, "divisor")
                return self.aligned(node, a)
            return self.opaque(node, "division by a rescaled value")
        if fn in MATMULS:
            return self.matmul(node)
        return NotImplemented

    def scalar(self, x) -> bool:
        """A Python number, or a number computed from shapes while tracing (``1 / sqrt(C)``)."""
        return is_number(x) or (isinstance(x, fx.Node) and self.shape(x) is None
                                 and x not in self.values)

    def aligned(self, node: fx.Node, a) -> Val:
        """The units of input ``a`` broadcast to the output shape of ``node``."""
        va, sa, out = self.get(a), self.shape(a), self.shape(node)
        va = shifted(va, len(out) - len(sa))
        return Val(va.units, va.dims, va.const)

    def add(self, node: fx.Node):
        a, b = node.args
        out = self.shape(node)
        va, vb = self.get(a), self.get(b)
        if not isinstance(va, (Val, PVal)):
            a, b, va, vb = b, a, vb, va
        if vb is None:
            if is_number(b) and b == 0:
                return self.aligned(node, a)
            return self.opaque(node, "adding a constant")
        if isinstance(va, PVal):
            a, b, va, vb = b, a, vb, va
        if isinstance(vb, PVal):
            if not vb.ref.is_parameter:
                self.pin(vb.ref, "added buffer")
                return self.tie_add(node, va, self.merged(f"const:{b.name}", "constant", True), a, b)
            return self.attach_bias(shifted(va, len(out) - len(self.shape(a))), vb, out,
                                    in_shape=self.shape(b))
        return self.tie_add(node, va, vb, a, b)

    def tie_add(self, node, va: Val, vb: Val, a, b) -> Val:
        out = self.shape(node)
        va = shifted(va, len(out) - len(self.shape(a)))
        vb = shifted(vb, len(out) - len(self.shape(b))) if isinstance(b, fx.Node) else vb
        for x, y in ((va, vb), (vb, va)):
            if y.const and not x.const:
                self.fix(x.units, "adding a constant tensor")
        dims = tuple(sorted(set(va.dims) | set(vb.dims)))
        ua, ub = expand(va, out, dims), expand(vb, out, dims)
        self.tie(ua, ub)
        return normalized(ua, dims, out)

    def attach_bias(self, val: Val, pv: PVal, out: tuple, in_shape=None) -> Val:
        """``x + P``: each entry of ``P`` is a bias into the unit of the entry it is added to."""
        ids = pv.ids(in_shape if in_shape is not None else out)
        if ids is None:
            self.pin(pv.ref, "a large parameter added to a value")
            return self._fix_to(val, "bias")
        ids = shifted(ids, len(out) - len(in_shape)) if in_shape is not None else ids
        val = self.collapse(val, out, [d for d in val.dims if d not in ids.dims])
        if not ids.dims:
            self.pin(pv.ref, "a scalar parameter added to every channel")
            return self._fix_to(val, "bias")
        entries = expand(ids, out, ids.dims).ravel()
        units = expand(val, out, ids.dims).ravel()
        if np.unique(entries).size != entries.size:
            self.pin(pv.ref, "a parameter added at several places")
            return self._fix_to(val, "bias")
        self.add_map(LayerMap(pv.ref.name, "bias", units, weight=pv.ref, entries=entries[:, None]))
        return val

    def _fix_to(self, val: Val, why: str) -> Val:
        self.fix(val.units, f"a {why} that cannot follow the channels")
        return val

    def mul(self, node: fx.Node, a, b):
        va, vb = self.get(a), self.get(b)
        if not isinstance(va, (Val, PVal)):
            a, b, va, vb = b, a, vb, va
        if vb is None:
            return self.aligned(node, a) if self.scalar(b) and isinstance(va, Val) else NotImplemented
        if isinstance(va, PVal):
            a, b, va, vb = b, a, vb, va
        if isinstance(vb, PVal):
            return self.layer_scale(node, a, b)
        if self.known_fixed(vb.units):
            return self.aligned(node, a)
        if self.known_fixed(va.units):
            return self.aligned(node, b)
        return self.opaque(node, "product of two rescaled values")

    def layer_scale(self, node: fx.Node, a, b):
        """``x * P``: a per-channel multiplier (layer scale, a norm's affine weight)."""
        out = self.shape(node)
        va, pv = self.aligned(node, a), self.get(b)
        ids = pv.ids(self.shape(b))
        ids = ids if ids is None else shifted(ids, len(out) - len(self.shape(b)))
        if (not pv.ref.is_parameter or ids is None or not ids.dims
                or (va.dims and not set(va.dims) & set(ids.dims))):
            self.pin(pv.ref, "a multiplier along non-channel dimensions")
            return va
        va = self.collapse(va, out, [d for d in va.dims if d not in ids.dims])
        entries = expand(ids, out, ids.dims).ravel()
        if np.unique(entries).size != entries.size:
            self.pin(pv.ref, "a multiplier used at several places")
            return va
        in_units = expand(va, out, ids.dims).ravel()
        units = self.new_units(pv.ref.name, entries.size)
        self.add_map(LayerMap(pv.ref.name, "diag", units, in_units, weight=pv.ref, entries=entries[:, None]))
        return normalized(units.reshape([out[d] for d in ids.dims]), ids.dims, out)

    def matmul(self, node: fx.Node):
        a, b = node.args[:2]
        va, vb = self.get(a), self.get(b)
        sa, sb, out = self.shape(a), self.shape(b), self.shape(node)
        if isinstance(vb, PVal) and isinstance(va, Val) and len(sb) == 2 and vb.idval is None:
            # x @ W (W stored (n_in, n_out)) or x @ W.t() (W stored (n_out, n_in))
            return self.linear(node, va, sa, vb.ref.name, vb.ref, None, transposed=not vb.t)
        if not (isinstance(va, Val) and isinstance(vb, Val)) or len(sa) < 2 or len(sb) < 2:
            return self.opaque(node, "matrix product with a parameter", True)
        if self.known_fixed(va.units):  # weights @ values: each column of b passes linearly
            return shifted(self.collapse(vb, sb, [len(sb) - 2]), len(out) - len(sb))
        if self.known_fixed(vb.units):  # values @ constant matrix: a's rows pass
            return shifted(self.collapse(va, sa, [len(sa) - 1]), len(out) - len(sa))
        return self.opaque(node, "attention scores (Q/K)")

    def reduce(self, node: fx.Node, val: Val, shape: tuple, name: str):
        """A sum, mean, max, norm or std over ``dims`` ties the units along them."""
        norm = name == "norm"
        dims = arg(node, 2, "dim", None) if norm else arg(node, 1, "dim", None)
        if dims is None or isinstance(dims, fx.Node):
            dims = tuple(range(len(shape)))
        dims = {d % len(shape) for d in ((dims,) if isinstance(dims, int) else dims)}
        out = self.shape(node)
        values_shape = out[0] if isinstance(out, list) else out
        val = self.collapse(val, shape, dims)
        if len(values_shape) != len(shape):
            val = Val(val.units, tuple(d - sum(g < d for g in dims) for d in val.dims), val.const)
        if isinstance(out, list):
            return (val, self.merged(f"{node.name}.indices", "indices", const=True))
        return val

    def attention(self, node: fx.Node):
        """``softmax(q kᵀ) v``: q and k are fixed (scores); each value channel passes linearly."""
        q, k, v = node.args[:3]
        for x in (q, k, arg(node, 3, "attn_mask")):
            self.fix_value(self.get(x), "attention scores (Q/K)")
        vv, sv, out = self.get(v), self.shape(v), self.shape(node)
        if not isinstance(vv, Val):
            return self.opaque(node, "attention on constant values")
        vv = self.collapse(vv, sv, [len(sv) - 2])
        bad = [d for d in vv.dims if len(sv) != len(out) or sv[d] != out[d]]
        vv = self.collapse(vv, sv, bad)
        return Val(vv.units, vv.dims)
