"""Checked construction of a :class:`~balgraph.Problem` from edge arrays, layer matrices or blocks.

Every constructor runs the same checks (:mod:`balgraph.checks`, :mod:`balgraph.model.units`):
real finite weights, integer indices in range, one entry per unit or per edge, known roles,
positive degrees, hashable tie and share labels. Layer matrices are kept as they are (no copy).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from ..backend import to_host
from ..checks import check_indices, check_length, ensure_finite, real_weights
from ..lazy import is_lazy
from ..errors import NetworkError, name_some
from .blocks import DenseBlock, EdgeBlock
from .units import unit_data

__all__ = ["checked_chain", "problem_from_arrays", "problem_from_layers", "problem_from_blocks", "share_groups"]


def _owned(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _labels(nodes, n_nodes, n_max):
    if nodes is None:
        n = n_max if n_nodes is None else int(n_nodes)
        return tuple(range(n))
    nodes = tuple(nodes)
    if n_nodes is not None and int(n_nodes) != len(nodes):
        raise NetworkError(f"n_nodes={n_nodes} but {len(nodes)} node labels were given")
    if len(set(nodes)) != len(nodes):
        seen, dup = set(), []
        for x in nodes:
            if x in seen:
                dup.append(x)
            seen.add(x)
        raise NetworkError(f"node labels {name_some(dup)} appear twice: give every unit its own label")
    return nodes


def problem_from_arrays(cls, src, dst, weight, *, nodes=None, n_nodes=None, roles=None, fixed=None,
                        degree=None, tie=None, activation=None, activation_args=None, share=None,
                        edge_data=None, source=None):
    """See :meth:`balgraph.Problem.from_arrays`."""
    src_arr, dst_arr = np.asarray(src), np.asarray(dst)
    if src_arr.size != dst_arr.size:
        raise NetworkError(f"src and dst must have the same length, got {src_arr.size} and {dst_arr.size}")
    n_max = int(max(src_arr.max(initial=-1), dst_arr.max(initial=-1))) + 1 if src_arr.size else 0
    if src_arr.size and src_arr.dtype.kind not in "iu" or dst_arr.size and dst_arr.dtype.kind not in "iu":
        n_max = 0
    nodes = _labels(nodes, n_nodes, n_max)
    n = len(nodes)
    src_arr = _owned(check_indices(src_arr, n, "src"))
    dst_arr = _owned(check_indices(dst_arr, n, "dst"))

    def where(e: int) -> str:
        return f"edge {(nodes[src_arr[e]], nodes[dst_arr[e]])!r}"

    w = real_weights(weight, "the edge weights", where)
    w = _owned(np.asarray(to_host(w), dtype=np.float64).ravel())
    if w.size != src_arr.size:
        raise NetworkError(f"src, dst and weight must have the same length, got {src_arr.size}, {src_arr.size}, {w.size}")
    block = EdgeBlock(src_arr, dst_arr, w)
    return problem_from_blocks(cls, (block,), nodes=nodes, roles=roles, fixed=fixed, degree=degree, tie=tie,
                               activation=activation, activation_args=activation_args, share=share,
                               edge_data=edge_data, source=source, _checked=True)


def _matrix(W, what: str, deferred: list | None = None):
    """``W`` checked (real, 2-D, finite); a Dask array's finiteness goes to ``deferred`` when given,
    for one round trip over every matrix (:func:`~balgraph.checks.ensure_finite`)."""
    if not (hasattr(W, "shape") and hasattr(W, "dtype")):
        W = real_weights(W, what)
    if W.ndim != 2:
        raise NetworkError(f"{what} must be a 2-D matrix (n_out, n_in), got shape {tuple(W.shape)}")
    n_in = max(int(W.shape[1]), 1)

    def describe(k):
        return f"[{k // n_in}, {k % n_in}]"

    later = deferred is not None and is_lazy(W)
    W = real_weights(W, what, describe, finite=not later)
    if later:
        deferred.append((W, what, describe))
    return W


def _per_hidden(values, n_hidden: int, what: str) -> list:
    if isinstance(values, str) or np.ndim(values) == 0:
        return [values] * n_hidden
    values = list(values)
    if len(values) != n_hidden:
        raise NetworkError(f"give one {what} per hidden layer ({n_hidden}), or one for all; got {len(values)}")
    return values


def checked_chain(matrices, deferred: list | None = None) -> list:
    """The layer matrices, checked: a non-empty list of real finite 2-D arrays that chain.

    The finiteness of Dask matrices is checked in one round trip at the end, or left to the
    caller in ``deferred`` (see :func:`_matrix`).
    """
    if isinstance(matrices, np.ndarray) or not isinstance(matrices, Sequence) or not len(matrices):
        raise NetworkError("matrices must be a non-empty list of 2-D arrays W_k of shape (n_k, n_{k-1})")
    own = deferred is None
    deferred = [] if own else deferred
    mats = [_matrix(W, f"layer {k} (matrices[{k - 1}])", deferred) for k, W in enumerate(matrices, start=1)]
    for k in range(1, len(mats)):
        if mats[k].shape[1] != mats[k - 1].shape[0]:
            raise NetworkError(
                f"layer {k + 1} expects {mats[k].shape[1]} inputs (columns) but layer {k} has"
                f" {mats[k - 1].shape[0]} outputs (rows): W_k must map layer k-1 to layer k")
    if own:
        ensure_finite(deferred)
    return mats


def problem_from_layers(cls, matrices, biases=None, *, activations="relu", degrees=1.0):
    """See :meth:`balgraph.Problem.from_layers`."""
    deferred: list = []
    mats = checked_chain(matrices, deferred)
    n_hidden = len(mats) - 1
    acts = _per_hidden(activations, n_hidden, "activation")
    degs = _per_hidden(degrees, n_hidden, "degree")
    biases = [None] * len(mats) if biases is None else list(biases)
    if len(biases) != len(mats):
        raise NetworkError(f"give one bias (or None) per layer ({len(mats)}), got {len(biases)}")
    sizes = [int(mats[0].shape[1])] + [int(W.shape[0]) for W in mats]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    units = [np.arange(starts[k], starts[k + 1]) for k in range(len(sizes))]
    nodes = [(k, r) for k, size in enumerate(sizes) for r in range(size)]
    roles = ["input"] * sizes[0]
    activation, degree = [None] * sizes[0], [1.0] * sizes[0]
    for k in range(1, len(sizes)):
        hidden = k < len(sizes) - 1
        roles += ["hidden" if hidden else "output"] * sizes[k]
        activation += [acts[k - 1] if hidden else None] * sizes[k]
        degree += [degs[k - 1] if hidden else 1.0] * sizes[k]
    blocks = [DenseBlock(W, units[k], units[k - 1], f"layer {k}") for k, W in enumerate(mats, start=1)]
    for k, b in enumerate(biases, start=1):
        if b is None:
            continue
        if not hasattr(b, "ndim"):
            b = np.asarray(b)
        if b.ndim != 1 or int(b.shape[0]) != sizes[k]:
            raise NetworkError(f"bias {k} (biases[{k - 1}]) must be a vector of the {sizes[k]} units of layer"
                               f" {k}, got shape {tuple(b.shape)}")
        b = _matrix(b.reshape(-1, 1), f"bias {k} (biases[{k - 1}])", deferred)
        nodes.append(("bias", k))
        roles.append("bias")
        activation.append(None)
        degree.append(1.0)
        blocks.append(DenseBlock(b, units[k], np.array([len(nodes) - 1]), f"bias {k}"))
    ensure_finite(deferred)  # the Dask matrices and biases: one round trip
    return problem_from_blocks(cls, tuple(blocks), nodes=nodes, roles=roles, degree=degree,
                               activation=activation, _checked=True)


def problem_from_blocks(cls, blocks, *, nodes, roles=None, fixed=None, degree=None, tie=None,
                        activation=None, activation_args=None, share=None, edge_data=None, source=None,
                        _checked=False):
    """See :meth:`balgraph.Problem.from_blocks`."""
    nodes = _labels(nodes, None, 0)
    n = len(nodes)
    blocks = tuple(blocks)
    if not _checked:
        blocks = tuple(_checked_block(b, n, nodes) for b in blocks)
    indeg, outdeg = np.zeros(n, np.int64), np.zeros(n, np.int64)
    if roles is None:
        for b in blocks:
            if isinstance(b, DenseBlock):
                n_out, n_in = b.shape
                np.add.at(indeg, b.out_units, n_in)
                np.add.at(outdeg, b.in_units, n_out)
            else:
                indeg += np.bincount(b.dst, minlength=n)
                outdeg += np.bincount(b.src, minlength=n)
    units = unit_data(nodes, roles, fixed, degree, tie, indeg=indeg, outdeg=outdeg, activation=activation)
    m = sum(b.n_edges for b in blocks)
    groups = None
    if share is not None:
        groups = share_groups(check_length(list(share), m, "share", "edge"), blocks, nodes)
    data = {}
    for key, values in dict(edge_data or {}).items():
        data[key] = _owned(np.asarray(check_length(np.asarray(values, dtype=np.float64).ravel(), m,
                                                   f"edge data {key!r}", "edge")))
    return cls(nodes, units.roles, units.fixed, units.degree, units.var, blocks,
               None if activation is None else tuple(activation), dict(activation_args or {}), data, groups, source)


def _checked_block(b, n: int, nodes):
    if isinstance(b, DenseBlock):
        W = _matrix(b.weight, b.name)
        out_units = check_indices(b.out_units, n, f"{b.name}: out_units")
        in_units = check_indices(b.in_units, n, f"{b.name}: in_units")
        if W.shape != (out_units.size, in_units.size):
            raise NetworkError(f"{b.name}: a {tuple(W.shape)} matrix needs {W.shape[0]} out_units and"
                               f" {W.shape[1]} in_units, got {out_units.size} and {in_units.size}")
        return DenseBlock(W, _owned(out_units), _owned(in_units), b.name)
    if isinstance(b, EdgeBlock):
        src, dst = check_indices(b.src, n, f"{b.name}: src"), check_indices(b.dst, n, f"{b.name}: dst")
        w = real_weights(b.weight, b.name, lambda e: f"edge {(nodes[src[e]], nodes[dst[e]])!r}")
        w = np.asarray(to_host(w), dtype=np.float64).ravel()
        if not (src.size == dst.size == w.size):
            raise NetworkError(f"{b.name}: src, dst and weight must have the same length")
        return EdgeBlock(_owned(src), _owned(dst), _owned(w), b.name)
    raise NetworkError(f"blocks must be DenseBlock or EdgeBlock objects, got {type(b).__name__}")


def share_groups(labels: Sequence[Hashable | None], blocks, nodes) -> np.ndarray | None:
    """Group index per edge (``-1`` for unshared edges), or None when nothing is shared.

    Edges with equal labels are one parameter (Section 8.3): they must carry equal weights.
    """
    ids: dict = {}
    groups = np.full(len(labels), -1, dtype=np.int64)
    for e, x in enumerate(labels):
        if x is None:
            continue
        try:
            groups[e] = ids.setdefault(x, len(ids))
        except TypeError:
            raise NetworkError(f"share label {x!r} of edge {e} is not hashable: use strings, numbers or tuples") from None
    if not ids:
        return None
    parts = [b.edge_ends() for b in blocks]
    src = np.concatenate([p[0] for p in parts])
    dst = np.concatenate([p[1] for p in parts])
    w = np.concatenate([np.asarray(to_host(b.host_weights()), dtype=np.float64) for b in blocks])
    order = np.argsort(groups, kind="stable")
    g, v = groups[order], w[order]
    same = (g[1:] == g[:-1]) & (g[1:] >= 0)
    bad = np.flatnonzero(same & (np.abs(v[1:] - v[:-1]) > 1e-12 * np.maximum(np.abs(v[1:]), np.abs(v[:-1]))))
    if bad.size:
        e, f = int(order[bad[0]]), int(order[bad[0] + 1])
        raise NetworkError(
            f"shared edges {(nodes[src[e]], nodes[dst[e]])!r} and {(nodes[src[f]], nodes[dst[f]])!r} carry"
            f" different weights ({w[e]!r} and {w[f]!r}): give every edge of a shared parameter the same weight")
    groups.setflags(write=False)
    return groups

