"""Which unit scales each entry of a traced tensor: unit arrays carried through shape ops.

A traced tensor of shape ``S`` is described by a :class:`Val`: an integer array ``units`` over
some of its dimensions ``dims`` (ascending; every one of size > 1), so that entry ``x[i]`` is
multiplied by the scale of unit ``units[i[dims]]`` when the network is rescaled. ``dims == ()``
means one unit for every entry. A ``Linear`` output has ``dims == (ndim - 1,)``; splitting the
channel dimension into heads gives ``dims`` over two dimensions; concatenation along the batch
or sequence dimension can make units vary along that dimension.

Shape ops move the array without looking at values: :func:`reshape` groups dimensions into
blocks of equal size product and reshapes the unit array block by block (so channel identity
survives ``view``, ``flatten``, head splitting and merging), :func:`permute` reorders it,
:func:`index` applies basic indexing. All functions here are pure numpy.

Examples
--------
>>> import numpy as np
>>> v = Val(np.arange(6), (2,))                      # (B, N, 6): 6 channels on the last dim
>>> heads = reshape(v, (2, 5, 6), (2, 5, 2, 3))      # (B, N, H, Dh)
>>> heads.dims, heads.units.tolist()
((2, 3), [[0, 1, 2], [3, 4, 5]])
>>> reshape(permute(heads, (0, 2, 1, 3)), (2, 2, 5, 3), (2, 2, 15)).dims
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Val", "PVal", "ParamRef", "normalized", "expand", "reshape", "permute", "index",
           "shifted", "blocks"]


@dataclass
class Val:
    """Units of a traced tensor (module docstring). ``const``: not computed from the inputs."""

    units: np.ndarray
    dims: tuple = ()
    const: bool = False
    lazy_input: str | None = None  # a model input, given per-channel units on demand


@dataclass(frozen=True, eq=False)
class ParamRef:
    """A parameter (or buffer) of the model, or a basic-slicing view of one (``index``)."""

    name: str
    tensor: object  # torch.Tensor; typed loosely to keep this module free of torch
    index: tuple | None = None
    is_parameter: bool = True

    def view(self):
        """The tensor the map rescales (a view sharing memory with the parameter)."""
        return self.tensor if self.index is None else self.tensor[self.index]

    @property
    def key(self) -> tuple:
        return (id(self.tensor), repr(self.index))

    @property
    def shape(self) -> tuple:
        return tuple(self.view().shape)


MAX_IDS = 1 << 22  # parameters larger than this are never laid out entry by entry


@dataclass
class PVal:
    """A tensor made of one parameter's entries by views: ``idval.units`` are flat entry indices.

    ``idval is None`` is the parameter itself (``t``: its 2-D transpose), kept implicit so that
    big weights are never laid out entry by entry.
    """

    ref: ParamRef
    idval: Val | None = None
    t: bool = False

    @property
    def identity(self) -> bool:
        return self.idval is None and not self.t

    def ids(self, shape: tuple) -> Val | None:
        """Entry indices over the dimensions of ``shape`` along which they vary (None if too big)."""
        if self.idval is not None:
            return self.idval
        n = int(np.prod(self.ref.shape, dtype=np.int64))
        if n > MAX_IDS:
            return None
        ids = np.arange(n).reshape(self.ref.shape)
        if self.t:
            ids = ids.T
        return normalized(ids, tuple(range(len(shape))), shape)


def normalized(units: np.ndarray, dims: tuple, shape: tuple, **kw) -> Val:
    """A :class:`Val`, dropping dimensions along which the units do not vary."""
    units = np.asarray(units, dtype=np.int64)
    keep = []
    for axis, d in enumerate(dims):
        if shape[d] == 1:
            continue
        first = np.take(units, [0], axis=axis)
        if units.shape[axis] > 1 and np.array_equal(np.broadcast_to(first, units.shape), units):
            continue
        keep.append(axis)
    drop = tuple(a for a in range(units.ndim) if a not in keep)
    units = units[tuple(0 if a in drop else slice(None) for a in range(units.ndim))]
    return Val(np.ascontiguousarray(units), tuple(dims[a] for a in keep), **kw)


def expand(val: Val, shape: tuple, dims: tuple) -> np.ndarray:
    """The units of ``val`` broadcast over ``dims`` (a superset of ``val.dims``), in that order."""
    dims = tuple(dims)
    src = val.units.reshape([shape[d] if d in val.dims else 1 for d in dims])
    return np.broadcast_to(src, tuple(shape[d] for d in dims))


def shifted(val: Val, offset: int, **kw) -> Val:
    """``val`` with every dim moved by ``offset`` (leading dimensions added by broadcasting)."""
    return Val(val.units, tuple(d + offset for d in val.dims), val.const, **kw)


def blocks(a: tuple, b: tuple) -> list | None:
    """Group the non-1 dimensions of shapes ``a`` and ``b`` into blocks of equal size product."""
    ia = [k for k, s in enumerate(a) if s != 1]
    ib = [k for k, s in enumerate(b) if s != 1]
    out, i, j = [], 0, 0
    while i < len(ia):
        if j >= len(ib):
            return None
        pa, pb, ga, gb = a[ia[i]], b[ib[j]], [ia[i]], [ib[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i >= len(ia):
                    return None
                pa *= a[ia[i]]
                ga.append(ia[i])
                i += 1
            else:
                if j >= len(ib):
                    return None
                pb *= b[ib[j]]
                gb.append(ib[j])
                j += 1
        out.append((ga, gb))
    return out if j == len(ib) else None


def reshape(val: Val, in_shape: tuple, out_shape: tuple) -> Val | None:
    """Units after ``reshape(in_shape -> out_shape)``; None if the shapes do not match."""
    if tuple(in_shape) == tuple(out_shape):
        return val
    groups = blocks(tuple(in_shape), tuple(out_shape))
    if groups is None:
        return None
    if not val.dims:
        return Val(val.units, (), val.const, val.lazy_input)
    involved = [g for g in groups if any(d in val.dims for d in g[0])]
    in_dims = tuple(d for g in involved for d in g[0])
    arr = expand(val, in_shape, in_dims)
    out_dims = tuple(d for g in involved for d in g[1])
    arr = arr.reshape([out_shape[d] for d in out_dims])
    return normalized(arr, out_dims, out_shape, const=val.const)


def permute(val: Val, order: tuple) -> Val:
    """Units after ``x.permute(order)`` (``order[new] = old``)."""
    nd = len(order)
    order = [d % nd for d in order]
    new = [order.index(d) for d in val.dims]
    axes = np.argsort(new)
    return Val(np.ascontiguousarray(np.transpose(val.units, axes)) if val.units.ndim else val.units,
               tuple(sorted(new)), val.const)


def index(val: Val, shape: tuple, out_shape: tuple, idx) -> Val | None:
    """Units after basic indexing ``x[idx]`` (ints, slices, None, Ellipsis); None otherwise."""
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) or isinstance(i, bool)
           for i in idx):
        return None
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if idx.count(Ellipsis) > 1:
        return None
    full = []
    for i in idx:
        if i is Ellipsis:
            full += [slice(None)] * (len(shape) - n_real)
        else:
            full.append(i)
    full += [slice(None)] * (len(shape) - sum(1 for i in full if i is not None))
    units, new_dims, out_d, in_d = val.units, [], 0, 0
    sel = [slice(None)] * units.ndim
    for i in full:
        if i is None:
            out_d += 1
            continue
        if in_d in val.dims:
            axis = val.dims.index(in_d)
            sel[axis] = i
            if not isinstance(i, int):
                new_dims.append(out_d)
        if not isinstance(i, int):
            out_d += 1
        in_d += 1
    units = units[tuple(sel)] if units.ndim else units
    return normalized(units, tuple(new_dims), out_shape, const=val.const)
