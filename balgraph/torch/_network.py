"""The map between a traced PyTorch model and a balgraph :class:`~balgraph.Problem`.

Edges join units (neurons, channels). A Linear weight ``W[r, s]`` is the edge
``in_units[s] -> out_units[r]``. A Conv kernel slice ``W[o, i, ...]`` is one edge between
channels whose weight is the slice's p-norm ``(Σ_k |w_k|^p)^{1/p}``: then ``|weight|^p`` is the
slice's exact L_p cost, each shared kernel parameter counted once, so the edge weights depend on
``p``. Several parameters landing on the same pair of units (a Linear after a Flatten: one
channel feeds ``H·W`` inputs) are merged the same way. A single-parameter edge keeps its sign.

A BatchNorm in eval mode, ``y = γ (x − μ)/σ + β`` with ``σ = sqrt(var + eps)``, is an affine
layer of its own: a unit per channel, an edge ``x_c -> y_c`` of weight ``a_c = γ_c/σ_c`` and a
bias edge ``β_c − a_c μ_c`` (nothing is folded, the model keeps its modules).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

from ..model import Problem
from ._trace import LayerMap, Traced

__all__ = ["TorchNetwork"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _merge(src, dst, w, p, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge parallel edges: the merged weight is the p-norm of the parts (their L_p cost adds)."""
    key = src * n + dst
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    if uniq.size == key.size:
        return src, dst, w
    cost = np.bincount(inv, weights=np.abs(w) ** p, minlength=uniq.size)
    signed = np.zeros(uniq.size)
    single = counts[inv] == 1
    signed[inv[single]] = w[single]
    merged = np.where(counts == 1, signed, cost ** (1.0 / p))
    return uniq // n, uniq % n, merged


@dataclass
class _Edges:
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray


class TorchNetwork:
    """A traced model: its units, and which parameter entries each edge and unit stands for.

    Built by :func:`balgraph.torch.to_problem`. The structure is traced once; :meth:`problem`
    reads the current parameters, so a training loop can rebuild the problem cheaply.

    Attributes
    ----------
    labels : tuple of str
        Unit labels: ``"fc1[3]"`` (output 3 of module ``fc1``), ``"input:x[0]"``,
        ``"bias:fc1"``, or the name of the fx node of an opaque op.
    layers : list of LayerMap
        One entry per parametrized module (Linear, Conv, BatchNorm), with unit index arrays.
    """

    def __init__(self, model: torch.nn.Module, traced: Traced):
        self.model = model
        self.labels = tuple(traced.labels)
        self.roles = tuple(traced.roles)
        self.owner = tuple(traced.owner)
        self.fixed = traced.fixed
        self.tie = traced.tie
        self.layers: list[LayerMap] = traced.layers

    @property
    def n_units(self) -> int:
        return len(self.labels)

    # ---------------------------------------------------------------- edges and problem
    def _layer_edges(self, lm: LayerMap, p: float) -> tuple[_Edges, _Edges | None]:
        mod, n = lm.module, self.n_units
        bias = None
        if lm.kind == "bn":
            sigma = np.sqrt(_np(mod.running_var) + mod.eps)
            a = _np(mod.weight) / sigma
            b = _np(mod.bias) - a * _np(mod.running_mean)
            weight = _Edges(lm.in_units, lm.out_units, a)
            bias = _Edges(np.full(lm.out_units.size, lm.bias_unit), lm.out_units, b)
            return weight, bias
        w = _np(mod.weight)
        n_out = w.shape[0]
        if lm.kind == "linear":
            src = np.broadcast_to(lm.in_units, w.shape).ravel()
            vals = w.ravel()
        else:
            src = self.conv_sources(lm).ravel()
            slices = w.reshape(w.shape[0] * w.shape[1], -1)
            vals = slices[:, 0] if slices.shape[1] == 1 else (np.abs(slices) ** p).sum(1) ** (1.0 / p)
        dst = np.repeat(lm.out_units, src.size // n_out)
        # Parallel edges arise only where an input unit repeats (after Flatten, or a merged unit).
        repeats = np.unique(lm.in_units).size < lm.in_units.size
        weight = _Edges(*(_merge(src, dst, vals, p, n) if repeats else (src, dst, vals)))
        if mod.bias is not None:
            bias = _Edges(np.full(n_out, lm.bias_unit), lm.out_units, _np(mod.bias))
        return weight, bias

    @staticmethod
    def conv_sources(lm: LayerMap) -> np.ndarray:
        """Unit of input channel ``(o // out_per_group) * in_per_group + i`` for kernel ``[o, i]``."""
        w = lm.module.weight
        n_out, in_per_group = w.shape[0], w.shape[1]
        group = np.arange(n_out) // (n_out // lm.groups)
        return lm.in_units[group[:, None] * in_per_group + np.arange(in_per_group)[None, :]]

    def edges(self, p: float = 2.0) -> _Edges:
        """All edges (weights first, layer by layer, then biases), read from the parameters."""
        weights, biases = zip(*(self._layer_edges(lm, p) for lm in self.layers)) if self.layers else ((), ())
        parts = list(weights) + [b for b in biases if b is not None]
        if not parts:
            return _Edges(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return _Edges(*(np.concatenate([getattr(e, f) for e in parts]) for f in ("src", "dst", "weight")))

    def problem(self, p: float = 2.0) -> Problem:
        """The balancing problem at the model's current parameters (edge weights depend on ``p``)."""
        e = self.edges(p)
        ties = self.tie if any(t is not None for t in self.tie) else None
        return Problem.from_arrays(
            e.src, e.dst, e.weight, nodes=self.labels, roles=self.roles, fixed=self.fixed, tie=ties,
        )

    def to_graph(self, p: float = 2.0) -> nx.DiGraph:
        """A networkx DiGraph of the units (attributes ``role``, ``activation``, ``tie``).

        Free hidden units get ``activation="linear"`` (they are positively homogeneous), fixed
        hidden units ``activation="opaque"``; parallel edges are merged by their p-norm.
        """
        e = self.edges(p)
        src, dst, w = _merge(e.src, e.dst, e.weight, p, self.n_units)
        g = nx.DiGraph()
        for k, label in enumerate(self.labels):
            attrs = {"role": self.roles[k], "layer": self.owner[k]}
            if self.roles[k] == "hidden":
                attrs["activation"] = "opaque" if self.fixed[k] else "linear"
            if self.tie[k] is not None:
                attrs["tie"] = f"tie{self.tie[k]}"
            g.add_node(label, **attrs)
        labels = self.labels
        g.add_weighted_edges_from(
            (labels[j], labels[i], x) for j, i, x in zip(src.tolist(), dst.tolist(), w.tolist())
        )
        return g

    # ---------------------------------------------------------------- applying scales
    def factors(self, scale: np.ndarray) -> dict:
        """``{parameter: factor}``: the rescaled parameter is ``parameter * factor`` (broadcast).

        Linear: ``W[r, s] · λ_out[r] / λ_in[s]``, bias ``· λ_out``; Conv: the same per kernel
        slice; BatchNorm: ``γ · λ_out/λ_in``, ``β · λ_out`` (and ``running_mean · λ_in``, a
        buffer, see :meth:`apply_scales_`). ``scale`` is ``Λ`` per unit (1 on fixed units).
        """
        out = {}
        for lm in self.layers:
            mod = lm.module
            lam_out = scale[lm.out_units]
            if lm.kind == "bn":
                out[mod.weight] = lam_out / scale[lm.in_units]
                out[mod.bias] = lam_out
                continue
            lam_in = scale[lm.in_units] if lm.kind == "linear" else scale[self.conv_sources(lm)]
            f = lam_out[:, None] / (lam_in[None, :] if lm.kind == "linear" else lam_in)
            out[mod.weight] = f.reshape(f.shape + (1,) * (mod.weight.ndim - 2))
            if mod.bias is not None:
                out[mod.bias] = lam_out
        return out

    def apply_scales_(self, scale: np.ndarray, factors: dict | None = None) -> None:
        """Rescale the model's parameters in place by per-unit scales ``Λ`` (vectorized per layer)."""
        factors = self.factors(scale) if factors is None else factors
        with torch.no_grad():
            for param, f in factors.items():
                param.mul_(torch.as_tensor(f, dtype=param.dtype, device=param.device))
            for lm in self.layers:
                if lm.kind == "bn":
                    mean = lm.module.running_mean
                    mean.mul_(torch.as_tensor(scale[lm.in_units], dtype=mean.dtype, device=mean.device))
