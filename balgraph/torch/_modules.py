"""Rules for parametrized ops, as modules or as functional calls on parameters (see ``_trace``).

Each creates one unit per output channel and a :class:`~balgraph.torch._maps.LayerMap`:

- ``Linear``, ``F.linear``, ``x @ W``: in units along the last dim (tied across positions);
- ``Conv``/``ConvTranspose`` (``F.conv*d``): in units along the channel dim, any ``groups``;
- ``BatchNorm`` in eval mode (``F.batch_norm`` with running statistics, as timm's
  BatchNormAct calls it): a per-channel affine layer ``a = γ/σ`` with bias ``β − aμ``;
- ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm``, and BatchNorm on batch statistics:
  the normalized input is fixed, the affine outputs ``γ x̂ + β`` are free units;
- ``Embedding``: a unit per embedding channel (the index input is fixed);
- ``MultiheadAttention``: the value projection's channels are units that pass through the
  softmax-weighted sum into ``out_proj``; query and key channels are fixed (their product is
  bilinear).
"""

from __future__ import annotations

import numpy as np
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ._maps import LayerMap
from ._ops import arg
from ._values import ParamRef, PVal, Val, normalized

PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.RReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                nn.Dropout3d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ReflectionPad1d,
                nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
                nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)
POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
                nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
KNOWN_MODULES = (nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                 nn.Softmax, nn.LogSoftmax, nn.Softmax2d, nn.ReLU6, nn.Hardtanh, nn.ELU, nn.SELU,
                 nn.CELU, nn.Softplus, nn.GLU, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
                 nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.LocalResponseNorm)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TCONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = tuple(c for c in (nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None)) if c is not None)
F_CONV = {F.conv1d: False, F.conv2d: False, F.conv3d: False, F.conv_transpose1d: True,
          F.conv_transpose2d: True, F.conv_transpose3d: True}
TRAIN_BN = "BatchNorm in training mode (call model.eval() first)"


def _ref(name: str, t) -> ParamRef | None:
    return None if t is None else ParamRef(name, t, None, isinstance(t, nn.Parameter))


def _owner(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


class ModuleRules:
    """Mixed into the tracing builder: call_module nodes and functional parametrized ops."""

    # ---------------------------------------------------------------- layers
    def linear(self, node, val: Val, in_shape, name, weight, bias, transposed=False, module=None):
        in_units = self.channel_units(val, in_shape, len(in_shape) - 1)
        n_out = weight.shape[1] if transposed else weight.shape[0]
        out = self.shape(node)
        units = self.called_again("linear", (weight, bias), in_units)
        if units is None:
            units = self.new_units(name, n_out)
            self.add_map(LayerMap(name, "linear", units, in_units, weight, bias, transposed=transposed,
                                  module=module))
        return normalized(units, (len(out) - 1,), out)

    def conv(self, node, val: Val, in_shape, name, weight, bias, groups, transposed, module=None):
        w_nd = len(weight.shape)
        cdim = 1 if len(in_shape) == w_nd else 0
        in_units = self.channel_units(val, in_shape, cdim)
        n_out = weight.shape[1] * groups if transposed else weight.shape[0]
        out = self.shape(node)
        units = self.called_again("conv", (weight, bias), in_units)
        if units is None:
            units = self.new_units(name, n_out)
            self.add_map(LayerMap(name, "conv", units, in_units, weight, bias, groups=int(groups),
                                  transposed=transposed, module=module))
        return normalized(units, (cdim,), out)

    def batchnorm(self, node, val: Val, shape, name, weight, bias, mean, var, eps, module=None):
        """Eval-mode BatchNorm: per channel ``γ (x − μ)/σ + β``; without γ, β it passes units."""
        in_units = self.channel_units(val, shape, 1)
        if weight is None:
            if bias is not None:
                self.pin(bias, "BatchNorm bias without a weight")
                self.fix(in_units, "BatchNorm bias without a weight")
            self.add_map(LayerMap(name, "bn", in_units, in_units, mean=mean, var=var, eps=eps, module=module))
            return normalized(in_units, (1,), self.shape(node))
        units = self.called_again("bn", (weight, bias, mean), in_units)
        if units is None:
            units = self.new_units(name, in_units.size)
            self.add_map(LayerMap(name, "bn", units, in_units, weight, bias, mean=mean, var=var,
                                  eps=float(eps), module=module))
        return normalized(units, (1,), self.shape(node))

    def norm_affine(self, node, val, name, weight, bias, ch_dims, reason, module=None):
        """``γ x̂ + β`` after a normalization: ``x̂`` is fixed, each affine channel is a unit."""
        self.fix_value(val, reason)
        if weight is None:
            if bias is not None:
                self.pin(bias, "a norm's bias without a weight")
            return self.merged(node.name, reason)
        units = self.called_again("diag", (weight, bias), None)
        if units is None:
            src = self.merged(f"{name}:normalized", reason).units
            n = int(np.prod(weight.shape, dtype=np.int64))
            units = self.new_units(name, n)
            one_d = len(weight.shape) == 1
            self.add_map(LayerMap(name, "diag", units, np.full(n, int(src)), weight, bias,
                                  axis=0 if one_d else None,
                                  entries=None if one_d else np.arange(n)[:, None], module=module))
        out = self.shape(node)
        return normalized(units.reshape(weight.shape), tuple(d % len(out) for d in ch_dims), out)

    def embedding(self, node, name, weight, module=None):
        self.fix_value(self.get(node.args[0]), "embedding indices")
        units = self.called_again("diag", (weight, None), None)
        if units is None:
            src = self.merged(f"{name}:index", "embedding indices").units
            units = self.new_units(name, weight.shape[1])
            self.add_map(LayerMap(name, "diag", units, np.full(weight.shape[1], int(src)), weight, axis=1,
                                  module=module))
        out = self.shape(node)
        return normalized(units, (len(out) - 1,), out)

    def attention_module(self, node, name: str, m: nn.MultiheadAttention):
        """``nn.MultiheadAttention``: value channels are units, query/key channels are fixed."""
        names = ("query", "key", "value")
        ins = [node.args[k] if len(node.args) > k else node.kwargs.get(n) for k, n in enumerate(names)]
        vals = [self.get(x) for x in ins]
        if not all(isinstance(v, Val) for v in vals):
            return self.opaque(node, f"MultiheadAttention {name!r} on constants", True)
        for key in ("key_padding_mask", "attn_mask"):
            self.fix_value(self.get(node.kwargs.get(key)), "attention mask")
        for extra in node.args[3:]:
            self.fix_value(self.get(extra), "attention mask")
        E = m.embed_dim
        units_in = [self.channel_units(v, self.shape(x), -1) for v, x in zip(vals, ins)]
        if m._qkv_same_embed_dim:
            ws = [ParamRef(f"{name}.in_proj_weight", m.in_proj_weight, (slice(k * E, (k + 1) * E),))
                  for k in range(3)]
        else:
            ws = [_ref(f"{name}.{p}_proj_weight", getattr(m, f"{p}_proj_weight")) for p in "qkv"]
        bs = [None] * 3 if m.in_proj_bias is None else [
            ParamRef(f"{name}.in_proj_bias", m.in_proj_bias, (slice(k * E, (k + 1) * E),)) for k in range(3)]
        proj = []
        for k, part in enumerate("qkv"):
            units = self.new_units(f"{name}.{part}", E)
            self.add_map(LayerMap(f"{name}.{part}_proj", "linear", units, units_in[k], ws[k], bs[k]))
            proj.append(units)
        self.fix(np.concatenate(proj[:2]), "attention scores (Q/K)")
        if m.bias_k is not None:
            self.pin(_ref(f"{name}.bias_k", m.bias_k), "attention key bias")
            self.add_map(LayerMap(f"{name}.bias_v", "bias", proj[2], weight=_ref(f"{name}.bias_v", m.bias_v),
                                  axis=2))
        out = self.shape(node)
        units = self.new_units(f"{name}.out_proj", E)
        o = m.out_proj
        self.add_map(LayerMap(f"{name}.out_proj", "linear", units, proj[2], _ref(f"{name}.out_proj.weight", o.weight),
                              _ref(f"{name}.out_proj.bias", o.bias), module=o))
        first = normalized(units, (len(out[0]) - 1,), out[0])
        weights = self.merged(f"{name}.attn_weights", "attention weights") if out[1] is not None else None
        return (first, weights)

    # ---------------------------------------------------------------- modules
    def call_module(self, node: fx.Node, m: nn.Module):
        name = str(node.target)
        val = self.get(node.args[0]) if node.args else None
        shape = self.shape(node.args[0]) if node.args else None
        kind = type(m).__name__
        if isinstance(m, nn.MultiheadAttention):
            return self.attention_module(node, name, m)
        if not isinstance(val, Val) or not isinstance(shape, tuple):
            return self.opaque(node, f"module {name!r} ({kind}) on a constant or a tuple", True)
        if isinstance(m, PASS_MODULES) or (isinstance(m, nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d)
                                           and m.value == 0) or (isinstance(m, nn.AlphaDropout) and not m.training):
            return val
        if isinstance(m, nn.PReLU):
            self.pin(_ref(f"{name}.weight", m.weight), "PReLU slope")
            return val
        if isinstance(m, POOL_MODULES):
            k = {"1d": 1, "2d": 2, "3d": 3}.get(kind[-2:], len(shape) - 2)
            return self.collapse(val, shape, range(len(shape) - k, len(shape)))
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            from ._values import reshape

            return reshape(val, shape, self.shape(node))
        w, b = _ref(f"{name}.weight", getattr(m, "weight", None)), _ref(f"{name}.bias", getattr(m, "bias", None))
        if isinstance(m, nn.Linear):
            return self.linear(node, val, shape, name, w, b, module=m)
        if isinstance(m, CONVS + TCONVS):
            return self.conv(node, val, shape, name, w, b, m.groups, isinstance(m, TCONVS), m)
        if isinstance(m, nn.modules.batchnorm._NormBase):
            batch_stats = m.training or not m.track_running_stats or m.running_mean is None
            if not batch_stats:
                return self.batchnorm(node, val, shape, name, w, b, _ref(f"{name}.running_mean", m.running_mean),
                                      _ref(f"{name}.running_var", m.running_var), m.eps, m)
            reason = f"{kind} input"
            if m.training and m.track_running_stats:
                self.train_bn.append(name)
                reason = TRAIN_BN
            return self.norm_affine(node, val, name, w, b, (1,), reason, m)
        if isinstance(m, NORMS):
            dims = (1,) if isinstance(m, nn.GroupNorm) else tuple(range(-len(m.normalized_shape), 0))
            return self.norm_affine(node, val, name, w, b, dims, f"{kind} input", m)
        if isinstance(m, nn.Embedding) and m.max_norm is None:
            return self.embedding(node, name, w, m)
        if isinstance(m, KNOWN_MODULES):
            return self.opaque(node, kind)
        return self.opaque(node, f"module {name!r} ({kind})", True)

    # ---------------------------------------------------------------- functional layers
    def functional_layer(self, node: fx.Node, fn, method: bool):
        if method:
            return NotImplemented
        params = {k: self.get(arg(node, pos, k)) for k, pos in (("weight", 1), ("bias", 2))}
        val = self.get(node.args[0]) if node.args else None
        shape = self.shape(node.args[0]) if node.args else None
        if fn is F.linear or fn in F_CONV:
            w, b = params["weight"], params["bias"]
            if not (isinstance(w, PVal) and w.identity and isinstance(val, Val)) or (
                    b is not None and not (isinstance(b, PVal) and b.identity)):
                return self.opaque(node, f"{fn.__name__} with a computed weight")
            name = _owner(w.ref.name)
            if fn is F.linear:
                return self.linear(node, val, shape, name, w.ref, b and b.ref)
            transposed = F_CONV[fn]
            groups = arg(node, 6, "groups", 1)
            return self.conv(node, val, shape, name, w.ref, b and b.ref, groups, transposed)
        if fn is F.embedding:
            w = params["weight"]
            if isinstance(w, PVal) and w.identity and arg(node, 3, "max_norm") is None:
                return self.embedding(node, _owner(w.ref.name), w.ref)
            return self.opaque(node, "embedding with a computed table")
        if fn in (F.batch_norm, F.instance_norm):
            return self.functional_bn(node, fn, val, shape)
        norms = {F.layer_norm: (2, 3, "LayerNorm input"), F.group_norm: (2, 3, "GroupNorm input")}
        if hasattr(F, "rms_norm"):
            norms[F.rms_norm] = (2, None, "RMSNorm input")
        if fn in norms:
            wpos, bpos, reason = norms[fn]
            w = self.get(arg(node, wpos, "weight"))
            b = self.get(arg(node, bpos, "bias")) if bpos else None
            if not all(x is None or (isinstance(x, PVal) and x.identity) for x in (w, b)):
                return self.opaque(node, reason)
            dims = (1,) if fn is F.group_norm else tuple(range(-len(w.ref.shape), 0)) if w else ()
            name = _owner(w.ref.name) if w else node.name
            return self.norm_affine(node, val, name, w and w.ref, b and b.ref, dims, reason)
        return NotImplemented

    def functional_bn(self, node, fn, val, shape):
        names = ("running_mean", "running_var", "weight", "bias")
        vals = [self.get(arg(node, k + 1, n)) for k, n in enumerate(names)]
        if not all(v is None or (isinstance(v, PVal) and v.identity) for v in vals):
            return self.opaque(node, "batch_norm with computed statistics")
        mean, var, w, b = [v and v.ref for v in vals]
        if fn is F.batch_norm:
            batch_stats = bool(arg(node, 5, "training", False)) or mean is None
            training = bool(arg(node, 5, "training", False)) and mean is not None
        else:
            batch_stats = bool(arg(node, 5, "use_input_stats", True)) or mean is None
            training = False
        name = _owner(w.name) if w else node.name
        if not batch_stats:
            return self.batchnorm(node, val, shape, name, w, b, mean, var, arg(node, 7, "eps", 1e-5))
        reason = "BatchNorm input"
        if training:
            self.train_bn.append(name)
            reason = TRAIN_BN
        return self.norm_affine(node, val, name, w, b, (1,), reason)
