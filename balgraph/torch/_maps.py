"""Layer maps: which parameter entries are the edges between which units, and how they rescale.

A :class:`LayerMap` is one parametrized op of a traced model. Its edges go from ``in_units`` to
``out_units`` (and from a bias unit); its factors say how each parameter entry changes when the
units are scaled by ``Λ`` (``θ' = θ · mul / div``, both broadcast to the parameter's shape):

============  ==========================================  ===========================================
kind          edges                                       factors
============  ==========================================  ===========================================
``linear``    ``W[r, s]``: ``in[s] -> out[r]``            ``W · λ_out[r] / λ_in[s]``, ``b · λ_out``
``conv``      kernel slice ``W[o, i]``: one edge          ``W[o, i] · λ_out[o] / λ_in[src(o, i)]``
``bn``        ``a = γ/σ``: ``in[c] -> out[c]``,            ``γ · λ_out/λ_in``, ``β · λ_out``,
              bias ``β − a μ``                            ``running_mean · λ_in``
``diag``      ``P[c, ...]``: ``in[c] -> out[c]``           ``P · λ_out / λ_in``, bias ``· λ_out``
``bias``      ``P[c, ...]``: bias unit ``-> units[c]``     ``P · λ[c]``
============  ==========================================  ===========================================

Several entries on one pair of units (a kernel slice, the ``H·W`` columns that one channel feeds
after ``Flatten``, an embedding column) are one edge whose weight is their p-norm
``(Σ |w|^p)^{1/p}`` (their max at ``p = ∞``): then ``|weight|^p`` is their exact L_p cost. A
single entry keeps its sign. ``p="max"`` and ``p="min"`` merge to the signed largest and smallest
entry instead: two parallel edges that carry a channel's ``max w − min w`` (torch.ao's range). Merging is done by reshaping and reducing, in row chunks, never by
sorting the weights.

Examples
--------
>>> import numpy as np
>>> merge_plan(np.array([4, 4, 4, 7, 7, 7]))[0]
('equal', 3)
>>> reduce_rows(np.array([[3.0, -4.0, 0.0, 1.0]]), ('equal', 2), 2.0).tolist()
[[5.0, 1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ._values import ParamRef

__all__ = ["LayerMap", "merge_plan", "reduce_rows"]

CHUNK = 1 << 20  # entries converted to float64 at a time
# ``p="max"`` / ``"min"``: merged entries keep their signed extreme (torch.ao's range at p = ∞)
_SIGNED = {"max": np.maximum, "min": np.minimum}


def _np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def merge_plan(units: np.ndarray) -> tuple[tuple | None, np.ndarray]:
    """How to merge the columns of a matrix whose column ``s`` feeds unit ``units[s]``.

    Returns ``(plan, merged_units)``: ``None`` (no unit repeats), ``("equal", k)`` (runs of ``k``
    equal units, e.g. after Flatten), ``("runs", starts)`` (runs of unequal length) or
    ``("general", order, starts)`` (repeats anywhere; ``order`` sorts the columns).
    """
    units = np.asarray(units, dtype=np.int64)
    n = units.size
    if n == 0:
        return None, units
    starts = np.flatnonzero(np.r_[True, units[1:] != units[:-1]])
    heads = units[starts]
    if np.unique(heads).size == heads.size:
        if starts.size == n:
            return None, units
        sizes = np.diff(np.r_[starts, n])
        if np.all(sizes == sizes[0]):
            return ("equal", int(sizes[0])), heads
        return ("runs", starts), heads
    order = np.argsort(units, kind="stable")
    sorted_units = units[order]
    starts = np.flatnonzero(np.r_[True, sorted_units[1:] != sorted_units[:-1]])
    return ("general", order, starts), sorted_units[starts]


def reduce_rows(block: np.ndarray, plan: tuple | None, p: float) -> np.ndarray:
    """Merge the columns of ``block`` (float64) group by group: p-norm, max at p = ∞, sign if single."""
    if plan is None:
        return block
    if plan[0] == "equal":
        k = plan[1]
        grouped = block.reshape(block.shape[0], -1, k)
        if k == 1:
            return grouped[:, :, 0]
        if p in _SIGNED:
            return _SIGNED[p].reduce(grouped, axis=2)
        if not np.isfinite(p):
            return np.abs(grouped).max(axis=2)
        return _group_norms(grouped, p)
    if plan[0] == "runs":
        starts, cols = plan[1], block
    else:
        starts, cols = plan[2], block[:, plan[1]]
    if p in _SIGNED:
        return _SIGNED[p].reduceat(cols, starts, axis=1)
    mag = np.abs(cols)
    top = np.maximum.reduceat(mag, starts, axis=1)
    single = np.diff(np.r_[starts, cols.shape[1]]) == 1
    if np.isfinite(p):
        group = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, cols.shape[1]]))
        safe = np.where(top > 0, top, 1.0)
        with np.errstate(over="ignore"):
            top = top * np.add.reduceat((mag / safe[:, group]) ** p, starts, axis=1) ** (1.0 / p)
    top[:, single] = cols[:, starts[single]]
    return top


def _group_norms(g: np.ndarray, p: float) -> np.ndarray:
    """p-norms over the last axis of ``g``: one pass, rescaled where ``Σ|w|^p`` leaves float64."""
    with np.errstate(over="ignore", under="ignore"):
        if p == 2.0:
            total = np.einsum("ijk,ijk->ij", g, g)
        elif p == 1.0:
            total = np.abs(g).sum(axis=2)
        else:
            total = (np.abs(g) ** p).sum(axis=2)
        out = total ** (1.0 / p)
    bad = ~np.isfinite(total) | (total < np.finfo(np.float64).tiny)
    if bad.any():
        i, j = np.nonzero(bad)
        mag = np.abs(g[i, j])
        top = mag.max(axis=1)
        safe = np.where(top > 0, top, 1.0)
        with np.errstate(over="ignore", under="ignore"):
            out[i, j] = top * ((mag / safe[:, None]) ** p).sum(axis=1) ** (1.0 / p)
    return out


@dataclass(eq=False)
class LayerMap:
    """One parametrized op: its units, its parameters, and the layout of its edges (module doc).

    ``in_units``/``out_units`` are 1-D unit index arrays. For ``linear`` the weight is
    ``(n_out, n_in)`` (``transposed``: ``(n_in, n_out)``, as in ``x @ W``); for ``conv`` it is
    ``(O, I/groups, *kernel)`` (``transposed``: a ConvTranspose, ``(I, O/groups, *kernel)``).
    ``diag`` and ``bias`` maps read channel ``c`` from ``P`` along ``axis`` (other axes merged), or
    from the flat entries ``entries[c, :]``. ``skip`` names parameters counted by another map
    (a shared parameter: its edges and its rescaling appear once).
    """

    name: str
    kind: str
    out_units: np.ndarray
    in_units: np.ndarray | None = None
    weight: ParamRef | None = None
    bias: ParamRef | None = None
    groups: int = 1
    transposed: bool = False
    axis: int | None = None
    entries: np.ndarray | None = None
    mean: ParamRef | None = None
    var: ParamRef | None = None
    eps: float = 0.0
    module: object = None
    bias_unit: int = -1
    skip: set = field(default_factory=set)
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ parameters
    def params(self) -> list[tuple[str, ParamRef]]:
        """``(role, ref)`` of every tensor this map rescales."""
        roles = (("weight", self.weight), ("bias", self.bias), ("mean", self.mean))
        return [(r, ref) for r, ref in roles if ref is not None]

    def layout(self, role: str) -> tuple:
        """What determines the factor of ``role``: maps with equal layouts may share a tensor."""
        return (self.kind, role, self.groups, self.transposed, self.axis,
                None if self.entries is None else self.entries.tobytes())

    def factor_units(self, role: str) -> list[np.ndarray]:
        """The unit arrays whose scales make the factor of ``role`` (tie them to share it)."""
        if role == "mean":
            return [self.in_units]
        if role == "bias" or self.kind == "bias":
            return [self.out_units]
        return [self.out_units, self.in_units]

    # ------------------------------------------------------------------ structure
    def conv_sources(self) -> np.ndarray:
        """``(O, I/groups)`` units feeding kernel slice ``[o, i]`` (input channel of group o)."""
        n_out, n_in = self.out_units.size, self.in_units.size
        per_in, per_out = n_in // self.groups, n_out // self.groups
        group = np.arange(n_out) // per_out
        return self.in_units[group[:, None] * per_in + np.arange(per_in)[None, :]]

    def _prepare(self) -> dict:
        """The merge plan of the weight edges (cached: it depends on the structure only)."""
        c = self._cache
        if "n" in c:
            return c
        c["plan"], c["cols"], c["pairs"] = None, None, None
        if "weight" in self.skip or self.weight is None or self.kind == "bias":
            c["n"] = 0
        elif self.kind == "linear" or (self.kind == "conv" and self.groups == 1):
            c["plan"], c["cols"] = merge_plan(self.in_units)
            c["n"] = self.out_units.size * c["cols"].size
        elif self.kind == "conv":
            srcs = self.conv_sources()
            src, dst = srcs.ravel(), np.repeat(self.out_units, srcs.shape[1])
            key = src * (int(max(src.max(), dst.max())) + 1) + dst
            uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
            if uniq.size < key.size:
                c["plan"] = ("general", inv.ravel(), uniq.size)
                src, dst = src[first], dst[first]
            c["pairs"], c["n"] = (src, dst), src.size
        else:  # bn, diag: one edge per channel
            c["pairs"], c["n"] = (self.in_units, self.out_units), self.out_units.size
        return c

    @property
    def n_weight_edges(self) -> int:
        return self._prepare()["n"]

    def dense_columns(self) -> np.ndarray | None:
        """The in units of a dense ``(n_out, n_cols)`` weight block (row-major edges), else None.

        A diag map from one fixed unit (a norm's affine weight, an embedding) is an
        ``(n_out, 1)`` block."""
        c = self._prepare()
        if c["cols"] is None and self.kind == "diag" and c["n"] and np.all(self.in_units == self.in_units[0]):
            return self.in_units[:1]
        return c["cols"]

    def write_structure(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Fill the weight edges' ``src``/``dst`` (views of the network's arrays), no temporaries."""
        c = self._prepare()
        if c["cols"] is not None:
            src.reshape(self.out_units.size, -1)[:] = c["cols"][None, :]
            dst.reshape(self.out_units.size, -1)[:] = self.out_units[:, None]
        elif c["pairs"] is not None:
            src[:], dst[:] = c["pairs"]

    def structure(self) -> tuple[np.ndarray, np.ndarray]:
        """``(src, dst)`` of the weight edges, as new arrays."""
        n = self.n_weight_edges
        src, dst = np.empty(n, np.int64), np.empty(n, np.int64)
        self.write_structure(src, dst)
        return src, dst

    def bias_structure(self) -> tuple[np.ndarray, np.ndarray]:
        """``(src, dst)`` of the bias edges: from this map's bias unit (one per distinct unit)."""
        units = np.unique(self.out_units) if self.kind == "bias" else self.out_units
        if not self.has_bias_edges:
            units = units[:0]
        return np.full(units.size, self.bias_unit, np.int64), units

    @property
    def has_bias_edges(self) -> bool:
        if self.kind == "bias":
            return "weight" not in self.skip
        if self.kind == "bn":
            return self.weight is not None and "weight" not in self.skip
        return self.bias is not None and "bias" not in self.skip

    # ------------------------------------------------------------------ weights
    def _conv_slices(self, p: float) -> np.ndarray:
        """``(O, I/groups)`` slice norms (signed when the kernel has one entry)."""
        w = self.weight.view()
        if self.transposed:  # (I, O/g, *k) -> (O, I/g, *k)
            g, n_in = self.groups, w.shape[0]
            w = w.reshape(g, n_in // g, w.shape[1], -1).permute(0, 2, 1, 3)
            w = w.reshape(g * w.shape[1], n_in // g, -1)
        rows, per_in = w.shape[0], w.shape[1]
        k = int(np.prod(w.shape[2:], dtype=np.int64)) if w.ndim > 2 else 1
        return _rowwise(w.reshape(rows, per_in * k), ("equal", k) if k > 1 else None, p,
                        np.empty((rows, per_in)))

    def _channels(self, ref: ParamRef, p: float) -> np.ndarray:
        """Per channel (in ``out_units`` order), the merged entries of a diag or bias parameter."""
        t = ref.view()
        if self.entries is not None:
            vals = _np64(t.reshape(-1))[self.entries]
            k = self.entries.shape[1]
            return vals[:, 0] if k == 1 else reduce_rows(vals, ("equal", k), p)[:, 0]
        mat = t.movedim(self.axis, -1).reshape(-1, t.shape[self.axis])
        return _np64(mat[0]) if mat.shape[0] == 1 else _column_norms(mat, p)

    def weight_values(self, p: float, out: np.ndarray | None = None) -> np.ndarray:
        """The weight edges' values at the current parameters (order of :meth:`structure`)."""
        c = self._prepare()
        out = np.empty(c["n"]) if out is None else out
        if not c["n"]:
            return out
        plan = c["plan"]
        if self.kind == "bn":
            out[:] = _np64(self.weight.view()) / np.sqrt(_np64(self.var.view()) + self.eps)
        elif self.kind == "diag":
            out[:] = self._channels(self.weight, p)
        elif self.kind == "linear":
            w = self.weight.view()
            _rowwise(w.t() if self.transposed else w, plan, p, out.reshape(self.out_units.size, -1))
        elif self.groups == 1:
            out[:] = reduce_rows(self._conv_slices(p), plan, p).ravel()
        elif plan is None:
            out[:] = self._conv_slices(p).ravel()
        else:
            out[:] = _merge_by(plan[1], plan[2], self._conv_slices(p).ravel(), p)
        return out

    def bias_values(self, p: float) -> np.ndarray:
        """The bias edges' values (same order as :meth:`bias_structure`)."""
        if not self.has_bias_edges:
            return np.zeros(0)
        if self.kind == "bn":
            a = _np64(self.weight.view()) / np.sqrt(_np64(self.var.view()) + self.eps)
            beta = _np64(self.bias.view()) if self.bias is not None else 0.0
            return beta - a * _np64(self.mean.view())
        if self.kind == "bias":
            uniq, inv = np.unique(self.out_units, return_inverse=True)
            return _merge_by(inv.ravel(), uniq.size, self._channels(self.weight, p), p)
        if self.kind == "diag":
            return self._channels(self.bias, p)
        return _np64(self.bias.view()).ravel()

    # ------------------------------------------------------------------ factors
    def factors(self, scale: np.ndarray) -> list[tuple[ParamRef, np.ndarray | None, np.ndarray | None]]:
        """``(ref, mul, div)``: the rescaled tensor is ``ref.view() * mul / div`` (broadcast)."""
        out = []
        lam_out = scale[self.out_units]
        lam_in = scale[self.in_units] if self.in_units is not None else None
        w = self.weight
        if w is not None and "weight" not in self.skip:
            if self.kind == "linear":
                m, d = lam_out[:, None], lam_in[None, :]
                out.append((w, m.T, d.T) if self.transposed else (w, m, d))
            elif self.kind == "conv":
                extra = (1,) * (len(w.shape) - 2)
                if self.transposed:
                    g, n_in = self.groups, self.in_units.size
                    per_out = lam_out.size // g
                    m = np.broadcast_to(lam_out.reshape(g, 1, per_out), (g, n_in // g, per_out))
                    out.append((w, m.reshape(n_in, per_out, *extra), lam_in.reshape(n_in, 1, *extra)))
                else:
                    src = scale[self.conv_sources()]
                    out.append((w, lam_out.reshape(-1, 1, *extra), src.reshape(*src.shape, *extra)))
            elif self.kind == "bn":
                out.append((w, lam_out, lam_in))
            elif self.kind == "diag":
                out.append((w, *self._spread(w, lam_out, lam_in)))
            else:  # bias
                out.append((w, self._spread(w, lam_out, None)[0], None))
        if self.mean is not None and "mean" not in self.skip:
            out.append((self.mean, lam_in, None))
        if self.bias is not None and "bias" not in self.skip:
            mul = self._spread(self.bias, lam_out, None)[0] if self.kind == "diag" else lam_out
            out.append((self.bias, mul, None))
        return out

    def _spread(self, ref: ParamRef, mul: np.ndarray, div: np.ndarray | None):
        """Per-channel factors laid out over a diag/bias parameter's shape."""
        shape = ref.shape
        if self.entries is None:
            lay = [1] * len(shape)
            lay[self.axis] = shape[self.axis]
            return mul.reshape(lay), None if div is None else div.reshape(lay)
        n = int(np.prod(shape, dtype=np.int64))
        outs = []
        for f in (mul, div):
            if f is None:
                outs.append(None)
                continue
            flat = np.ones(n)
            flat[self.entries] = f[:, None]
            outs.append(flat.reshape(shape))
        return outs[0], outs[1]


def _rowwise(mat: torch.Tensor, plan, p: float, out: np.ndarray) -> np.ndarray:
    """``reduce_rows`` over a (possibly huge, low-precision) matrix, a row chunk at a time."""
    step = max(1, CHUNK // max(1, mat.shape[1]))
    direct = plan is None and mat.device.type == "cpu" and mat.dtype in (torch.float32, torch.float64)
    for r in range(0, mat.shape[0], step):
        if direct:  # NumPy casts the parameter's own rows into place: no temporary tensors
            out[r:r + step] = mat[r:r + step].detach().numpy()
        else:
            out[r:r + step] = reduce_rows(_np64(mat[r:r + step]), plan, p)
    return out


def _column_norms(mat: torch.Tensor, p: float) -> np.ndarray:
    """Per column of ``mat`` (rows chunked): p-norm, or max at p = ∞ (two passes, scaled)."""
    step = max(1, CHUNK // max(1, mat.shape[1]))
    if p in _SIGNED:
        ufunc = _SIGNED[p]
        return ufunc.reduce([ufunc.reduce(_np64(mat[r:r + step]), axis=0) for r in range(0, mat.shape[0], step)])
    top = np.zeros(mat.shape[1])
    for r in range(0, mat.shape[0], step):
        top = np.maximum(top, np.abs(_np64(mat[r:r + step])).max(axis=0))
    if not np.isfinite(p):
        return top
    safe = np.where(top > 0, top, 1.0)
    acc = np.zeros(mat.shape[1])
    for r in range(0, mat.shape[0], step):
        acc += ((np.abs(_np64(mat[r:r + step])) / safe) ** p).sum(axis=0)
    return top * acc ** (1.0 / p)


def _merge_by(inv: np.ndarray, n: int, vals: np.ndarray, p: float) -> np.ndarray:
    if p in _SIGNED:
        top = np.full(n, -np.inf if p == "max" else np.inf)
        _SIGNED[p].at(top, inv, vals)
        return top
    mag = np.abs(vals)
    top = np.zeros(n)
    np.maximum.at(top, inv, mag)
    if not np.isfinite(p):
        return top
    safe = np.where(top > 0, top, 1.0)
    counts = np.bincount(inv, minlength=n)
    merged = top * np.bincount(inv, (mag / safe[inv]) ** p, minlength=n) ** (1.0 / p)
    signed = np.zeros(n)
    signed[inv] = vals
    return np.where(counts == 1, signed, merged)
