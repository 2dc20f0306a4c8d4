"""Rules for torch functions and tensor methods met while tracing (see ``_trace``).

Each rule maps the unit arrays of an op's inputs to those of its output, tying or fixing
units when the op requires it. Homogeneous ops (``relu(λx) = λ relu(x)``) pass units through;
shape ops move them; additions, concatenations of equal channels, reductions and pooling tie
the units they combine; a product with a value that no rescaling changes passes the other
factor's units (a sigmoid gate, attention weights times values); other ops fix.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F

from ._values import PVal, Val, expand, index, normalized, permute, reshape, shifted

PASS_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.leaky_relu, F.leaky_relu_, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d, torch.abs, torch.neg, operator.neg, operator.pos, operator.abs,
    torch.clone, torch.detach,
}
PASS_METHODS = {"relu", "relu_", "abs", "neg", "contiguous", "clone", "detach", "float", "double",
                "half", "bfloat16", "to", "type_as", "type", "cpu", "cuda", "requires_grad_"}
MOVES = {torch.roll, "roll", torch.flip, "flip"}  # entries move; with no unit dims, units pass
POOL_FUNCTIONS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2,
    F.avg_pool3d: 3, F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3, F.lp_pool1d: 1,
    F.lp_pool2d: 2, torch.max_pool1d: 1, torch.max_pool2d: 2, torch.avg_pool1d: 1,
    F.interpolate: -1, F.upsample: -1, F.upsample_nearest: -1, F.upsample_bilinear: -1,
}
RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
            "reshape_as", torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, torch.unflatten,
            torch.ravel, "ravel"}
EXPANDS = {"expand", "expand_as", "broadcast_to", torch.broadcast_to}
PERMUTES = {"permute", "transpose", "t", "swapaxes", "swapdims", "movedim", torch.permute,
            torch.transpose, torch.t, torch.swapaxes, torch.swapdims, torch.movedim}
SPLITS = {"chunk", "split", "unbind", "tensor_split", torch.chunk, torch.split, torch.unbind,
          torch.tensor_split}
ADDS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub, "add",
        "add_", "sub", "sub_"}
MULS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
DIVS = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_"}
MATMULS = {operator.matmul, torch.matmul, torch.bmm, torch.mm, "matmul", "bmm", "mm"}
REDUCTIONS = {torch.sum: "sum", torch.mean: "mean", torch.amax: "amax", torch.amin: "amin",
              torch.max: "max", torch.min: "min", torch.norm: "norm", torch.std: "std",
              torch.linalg.vector_norm: "norm", torch.nansum: "sum", torch.logsumexp: None}
NAMES = {
    F.gelu: "GELU", F.silu: "SiLU", F.mish: "Mish", F.hardswish: "Hardswish",
    F.hardsigmoid: "Hardsigmoid", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
    F.tanh: "tanh", F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "softmax",
    torch.log_softmax: "softmax", F.relu6: "ReLU6", F.hardtanh: "Hardtanh", F.elu: "ELU",
    F.selu: "SELU", F.celu: "CELU", F.softplus: "Softplus", F.logsigmoid: "sigmoid", F.glu: "GLU",
    torch.exp: "exp", torch.log: "log", torch.sqrt: "sqrt", torch.rsqrt: "rsqrt", torch.pow: "pow",
    operator.pow: "pow", torch.square: "pow", torch.reciprocal: "reciprocal", torch.erf: "erf",
    torch.sin: "sin", torch.cos: "cos", F.normalize: "normalize", torch.var: "variance",
    torch.clamp: "clamp", torch.clip: "clamp", F.softsign: "Softsign", torch.sign: "sign",
    torch.logsumexp: "logsumexp", F.hardshrink: "Hardshrink", F.softshrink: "Softshrink",
}
KNOWN_METHODS = {"gelu": "GELU", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
                 "log_softmax": "softmax", "exp": "exp", "log": "log", "sqrt": "sqrt",
                 "rsqrt": "rsqrt", "pow": "pow", "square": "pow", "reciprocal": "reciprocal",
                 "var": "variance", "clamp": "clamp", "clip": "clamp", "sin": "sin", "cos": "cos",
                 "erf": "erf", "sign": "sign", "silu": "SiLU"}
LIKE = {torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
        torch.randn_like, torch.randint_like}
NON_TENSOR = {"size", "dim", "numel", "ndimension", "nelement", "item", "tolist", "stride",
              "data_ptr", "is_contiguous", "element_size"}


def arg(node: fx.Node, pos: int, name: str, default=None):
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class OpRules:
    """Mixed into the tracing builder: ``call`` handles call_function and call_method nodes."""

    def call(self, node: fx.Node):
        fn = node.target
        method = node.op == "call_method"
        out_shape = self.shape(node)
        inputs = [self.values.get(a) for a in node.all_input_nodes]
        if out_shape is None:
            if fn is operator.getitem and isinstance(self.get(node.args[0]), tuple):
                return self.get(node.args[0])[node.args[1]]
            if fn is getattr or (method and fn in NON_TENSOR) or not any(
                    isinstance(v, (Val, PVal)) and not getattr(v, "const", False) for v in inputs):
                return None
            return self.opaque(node, f"op {self.op_name(node)!r} (returns a non-tensor)", True)
        live = [v for v in _flat(inputs) if isinstance(v, Val) and not v.const]
        params = [v for v in _flat(inputs) if isinstance(v, PVal)]
        if not live and not params:
            return self.merged(f"const:{node.name}", "constant", const=True)
        if not live:
            return self.param_op(node)
        for rule in (self.functional_layer, self.shape_op, self.arith_op, self.misc_op):
            out = rule(node, fn, method)
            if out is not NotImplemented:
                return out
        name = NAMES.get(fn) if not method else KNOWN_METHODS.get(fn)
        if name is not None:
            return self.opaque(node, name)
        return self.opaque(node, f"op {self.op_name(node)!r}", True)

    @staticmethod
    def op_name(node: fx.Node) -> str:
        fn = node.target
        return fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))

    # ---------------------------------------------------------------- parameters alone
    def param_op(self, node: fx.Node):
        """An op on a parameter alone: a view keeps it a parameter; anything else pins it."""
        fn, method = node.target, node.op == "call_method"
        pv = self.get(node.args[0]) if node.args else None
        in_shape, out_shape = self.shape(node.args[0]) if node.args else None, self.shape(node)
        if isinstance(pv, PVal) and isinstance(out_shape, tuple):
            if (method and fn in PASS_METHODS) or fn in (torch.clone, torch.detach):
                return pv
            if fn in PERMUTES and pv.idval is None and len(in_shape) == 2:
                return PVal(pv.ref, None, not pv.t)
            ids = pv.ids(in_shape)
            out = None
            if ids is None:
                pass
            elif fn in RESHAPES:
                out = reshape(ids, in_shape, out_shape)
            elif fn in EXPANDS:
                out = shifted(ids, len(out_shape) - len(in_shape))
            elif fn in PERMUTES:
                out = permute(ids, self.order(node, in_shape))
            elif fn is operator.getitem:
                out = index(ids, in_shape, out_shape, node.args[1])
            if out is not None:
                return PVal(pv.ref, out)
        for v in node.all_input_nodes:
            self.fix_value(self.values.get(v), "parameter used as a constant")
        return self.merged(f"const:{node.name}", "constant", const=True)

    # ---------------------------------------------------------------- shape ops
    def order(self, node: fx.Node, shape: tuple) -> tuple:
        fn, nd, args = node.target, len(shape), node.args
        if fn in ("permute", torch.permute):
            order = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            return tuple(order) if order else tuple(arg(node, 1, "dims"))
        if fn in ("t", torch.t):
            return tuple(range(nd))[::-1]
        if fn in ("movedim", torch.movedim):
            src, dst = arg(node, 1, "source"), arg(node, 2, "destination")
            src, dst = ([src], [dst]) if isinstance(src, int) else (list(src), list(dst))
            src, dst = [s % nd for s in src], [d % nd for d in dst]
            rest = [d for d in range(nd) if d not in src]
            order = [None] * nd
            for s, d in zip(src, dst):
                order[d] = s
            it = iter(rest)
            return tuple(o if o is not None else next(it) for o in order)
        i, j = arg(node, 1, "dim0") % nd, arg(node, 2, "dim1") % nd
        order = list(range(nd))
        order[i], order[j] = order[j], order[i]
        return tuple(order)

    def shape_op(self, node: fx.Node, fn, method: bool):
        first = self.get(node.args[0]) if node.args else None
        in_shape, out_shape = self.shape(node.args[0]) if node.args else None, self.shape(node)
        if fn is operator.getitem and isinstance(first, tuple):
            return first[node.args[1]]
        if not isinstance(first, Val):
            if fn in (torch.cat, torch.concat, torch.concatenate, torch.stack):
                return self.concat(node)
            return NotImplemented
        if (method and fn in PASS_METHODS) or (not method and fn in PASS_FUNCTIONS) or (
                fn in MOVES and not first.dims):
            return first
        if fn in RESHAPES:
            out = reshape(first, in_shape, out_shape)
            return out if out is not None else self.opaque(node, f"reshape {in_shape} -> {out_shape}", True)
        if fn in EXPANDS:
            return shifted(first, len(out_shape) - len(in_shape), lazy_input=first.lazy_input)
        if fn == "repeat":
            return self.repeat(node, first, in_shape, out_shape)
        if not first.dims and first.lazy_input and (fn in PERMUTES or fn is operator.getitem):
            return first  # a model input: units per channel are made on demand, on any dim
        if fn in PERMUTES:
            return permute(first, self.order(node, in_shape))
        if fn is getattr and node.args[1] in ("T", "mT"):
            order = list(range(len(in_shape)))
            if node.args[1] == "T":
                return permute(first, tuple(order[::-1]))
            order[-2:] = order[-2:][::-1]
            return permute(first, tuple(order))
        if fn is operator.getitem:
            out = index(first, in_shape, out_shape, node.args[1])
            return out if out is not None else self.opaque(node, "advanced indexing", True)
        if fn in SPLITS:
            return self.split(node, first, in_shape)
        if fn in MOVES:
            return self.move_entries(node, first, in_shape)
        if fn in POOL_FUNCTIONS:
            k = POOL_FUNCTIONS[fn]
            spatial = range(2, len(in_shape)) if k < 0 else range(len(in_shape) - k, len(in_shape))
            return self.collapse(first, in_shape, spatial)
        if fn is F.pad:
            mode, value = arg(node, 2, "mode", "constant"), arg(node, 3, "value", None)
            pad = arg(node, 1, "pad")
            padded = {len(in_shape) - 1 - k // 2 for k in range(len(pad)) if pad[k]}
            if (mode != "constant" or not value) and not padded & set(first.dims):
                return first
            return self.opaque(node, "padding with a non-zero constant")
        return NotImplemented

    def move_entries(self, node: fx.Node, val: Val, shape: tuple) -> Val:
        """``roll``/``flip`` move entries along some dims: the unit array moves the same way."""
        units = val.units
        if node.target in (torch.roll, "roll"):
            shifts, dims = arg(node, 1, "shifts"), arg(node, 2, "dims", None)
            if dims is None:  # rolls the flattened tensor
                return self.collapse(val, shape, val.dims)
            shifts, dims = ((shifts,), (dims,)) if isinstance(dims, int) else (tuple(shifts), tuple(dims))
            for k, d in zip(shifts, dims):
                if d % len(shape) in val.dims:
                    units = np.roll(units, k, axis=val.dims.index(d % len(shape)))
        else:
            dims = arg(node, 1, "dims")
            for d in (dims,) if isinstance(dims, int) else dims:
                if d % len(shape) in val.dims:
                    units = np.flip(units, axis=val.dims.index(d % len(shape)))
        return Val(np.ascontiguousarray(units), val.dims, val.const)

    def repeat(self, node, val: Val, in_shape, out_shape):
        val = shifted(val, len(out_shape) - len(in_shape))
        reps = [o // max(1, i) for o, i in zip(out_shape[len(out_shape) - len(in_shape):], in_shape)]
        reps = [1] * (len(out_shape) - len(in_shape)) + reps
        if not val.dims:
            return val
        units = np.tile(val.units, [reps[d] for d in val.dims])
        return normalized(units, val.dims, out_shape)

    def split(self, node: fx.Node, val: Val, shape: tuple):
        fn = node.target
        dim = arg(node, 1, "dim", 0) if fn in ("unbind", torch.unbind) else arg(node, 2, "dim", 0)
        dim %= len(shape)
        pieces, start, out = self.shape(node), 0, []
        for s in pieces:
            if fn in ("unbind", torch.unbind):
                idx = (slice(None),) * dim + (start,)
                start += 1
            else:
                idx = (slice(None),) * dim + (slice(start, start + s[dim]),)
                start += s[dim]
            out.append(index(val, shape, s, idx))
        return tuple(out)

    def concat(self, node: fx.Node):
        """``cat``/``stack``: units of the pieces side by side along ``dim`` (new dim for stack)."""
        fn = node.target
        tensors = list(node.args[0])
        out_shape = self.shape(node)
        dim = arg(node, 1, "dim", 0) % len(out_shape)
        vals = [self.get(t) for t in tensors]
        stack = fn is torch.stack
        if any(v is None for v in vals):
            return self.opaque(node, "concatenating non-tensors", True)
        pieces, live = [], []
        for t, v in zip(tensors, vals):
            s = self.shape(t)
            if stack:
                s = s[:dim] + (1,) + s[dim:]
                v = v if not isinstance(v, Val) else Val(v.units, tuple(d + (d >= dim) for d in v.dims), v.const)
            pieces.append((v, s))
            live.append(isinstance(v, Val) and not v.const)
        if not any(live):
            return self.merged(f"const:{node.name}", "constant", const=True)
        ref = next(v for (v, _), ok in zip(pieces, live) if ok)
        dims = sorted(set().union(*(v.dims for v, _ in pieces if isinstance(v, Val))) | {dim})
        parts = []
        for (v, s), ok in zip(pieces, live):
            if isinstance(v, PVal):
                # a parameter block (a class token) concatenated along a non-channel dimension:
                # its entries are biases of the units the other pieces carry at the same channels
                ids = v.ids(s)
                if v.ref.is_parameter and ids is not None and dim not in ids.dims and dim not in ref.dims:
                    v = self.attach_bias(Val(ref.units, ref.dims), PVal(v.ref, ids), s, in_shape=s)
                else:
                    self.pin(v.ref, "a parameter concatenated along channels")
                    v = self.merged(f"const:{node.name}", "constant", const=True)
            parts.append(expand(v, s, tuple(dims)))
        units = np.concatenate(parts, axis=dims.index(dim))
        return normalized(units, tuple(dims), out_shape)

    # ---------------------------------------------------------------- reductions and the rest
    def misc_op(self, node: fx.Node, fn, method: bool):
        first = self.get(node.args[0]) if node.args else None
        if fn in LIKE or (method and isinstance(fn, str) and fn.startswith("new_")):
            return self.merged(f"const:{node.name}", "constant", const=True)
        shape = self.shape(node.args[0]) if node.args else None
        name = fn if method else REDUCTIONS.get(fn, "")
        if name in ("sum", "mean", "amax", "amin", "max", "min", "norm", "std", "nansum") and isinstance(first, Val):
            return self.reduce(node, first, shape, name)
        if fn is F.scaled_dot_product_attention:
            return self.attention(node)
        if fn in (torch.where,) and len(node.args) == 3:
            cond, x, y = node.args
            self.fix_value(self.get(cond), "a condition")
            if isinstance(self.get(x), Val) and isinstance(self.get(y), Val):
                return self.tie_add(node, self.get(x), self.get(y), x, y)
            return self.opaque(node, "where with a constant")
        if fn in ("masked_fill", "masked_fill_", torch.masked_fill):
            self.fix_value(self.get(node.args[1]), "a mask")
            value = arg(node, 2, "value")
            if is_number(value) and value == 0 and isinstance(first, Val):
                return first
            return self.opaque(node, "masked_fill with a non-zero value")
        if fn in (torch.clamp, torch.clip, "clamp", "clip", "clamp_", "clamp_min"):
            lo = arg(node, 1, "min")
            hi = arg(node, 2, "max")
            if is_number(lo) and lo == 0 and hi is None and isinstance(first, Val):
                return first  # clamp(min=0) is ReLU
        if fn is F.prelu or fn is torch.prelu:
            self.fix_value(self.get(node.args[1]), "PReLU slope")
            return first
        return NotImplemented


def _flat(values):
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _flat(v)
        else:
            yield v
