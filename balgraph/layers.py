"""Multilayer perceptrons as problems, straight from layer matrices (no networkx).

W5 (55 M weights) as a networkx graph would need tens of GB; here the edges of each layer are
laid out contiguously in row-major order and recorded as :class:`~balgraph.problem.Layer`
blocks, so fast paths can treat a layer's costs as a dense matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import NetworkError
from .problem import Layer, Problem

__all__ = ["problem_from_layers", "checked_chain"]


def checked_chain(matrices: Sequence[np.ndarray], dtype=None) -> list[np.ndarray]:
    """The matrices as 2-D arrays ``W_k`` of shape ``(n_k, n_{k-1})`` that chain, else an error."""
    mats = [np.asarray(w, dtype=dtype) for w in matrices]
    if not mats or any(w.ndim != 2 for w in mats):
        raise NetworkError("matrices must be a non-empty list of 2-D arrays")
    for k in range(1, len(mats)):
        if mats[k].shape[1] != mats[k - 1].shape[0]:
            raise NetworkError(
                f"layer {k + 1} expects {mats[k].shape[1]} inputs (columns) but layer {k} has"
                f" {mats[k - 1].shape[0]} outputs (rows): W_k must map layer k-1 to layer k"
            )
    return mats


def problem_from_layers(
    matrices: Sequence[np.ndarray],
    biases: Sequence[np.ndarray | None] | None = None,
    *,
    activations: str | Sequence[str] = "relu",
    degrees: float | Sequence[float] = 1.0,
) -> Problem:
    """Compile an MLP ``x_k = f_k(W_k x_{k-1} + b_k)`` into a :class:`Problem`.

    Parameters
    ----------
    matrices : sequence of 2-D arrays
        ``W_k`` of shape ``(n_k, n_{k-1})`` (PyTorch's ``Linear.weight`` layout).
    biases : sequence of 1-D arrays or None, optional
        ``b_k`` of shape ``(n_k,)``; each layer's bias is an edge from a bias unit
        ``("bias", k)`` clamped to 1.
    activations : str or sequence of str
        Activation of each hidden layer (``len(matrices) - 1`` of them); homogeneous ones
        (``relu``, ``leaky_relu``, ``linear``, ...) make the layer's units free.
    degrees : float or sequence of float
        BiPU degree of each hidden layer.

    Returns
    -------
    Problem
        Units are labelled ``(k, r)`` (layer ``k``, index ``r``; layer 0 is the input) and
        ``("bias", k)``. ``problem.layers`` lists the dense blocks (weights first, then biases).

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.ones((3, 2)), np.ones((1, 3))], [np.zeros(3), None])
    >>> pb.n_vars, pb.n_edges, len(pb.layers)
    (3, 12, 3)
    """
    from .network import HOMOGENEOUS_ACTIVATIONS

    mats = checked_chain(matrices)
    n_hidden = len(mats) - 1
    acts = [activations] * n_hidden if isinstance(activations, str) else list(activations)
    degs = np.broadcast_to(np.asarray(degrees, dtype=np.float64), (n_hidden,)) if n_hidden else []
    if len(acts) != n_hidden:
        raise NetworkError(f"give one activation per hidden layer ({n_hidden}), got {len(acts)}")
    biases = [None] * len(mats) if biases is None else list(biases)
    if len(biases) != len(mats):
        raise NetworkError(f"give one bias (or None) per layer ({len(mats)}), got {len(biases)}")

    sizes = [mats[0].shape[1]] + [w.shape[0] for w in mats]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    nodes = [(k, r) for k, n in enumerate(sizes) for r in range(n)]
    roles = ["input"] * sizes[0]
    fixed, degree = [False] * sizes[0], [1.0] * sizes[0]
    for k in range(1, len(sizes)):
        hidden = k < len(sizes) - 1
        roles += ["hidden" if hidden else "output"] * sizes[k]
        homogeneous = hidden and str(acts[k - 1]).lower() in HOMOGENEOUS_ACTIVATIONS
        fixed += [not homogeneous] * sizes[k]
        degree += [float(degs[k - 1]) if hidden else 1.0] * sizes[k]

    src_parts, dst_parts, w_parts, blocks = [], [], [], []
    edge_start = 0
    for k, w in enumerate(mats, start=1):
        n_out, n_in = w.shape
        rows, cols = np.divmod(np.arange(n_out * n_in, dtype=np.int64), n_in)
        src_parts.append(starts[k - 1] + cols)
        dst_parts.append(starts[k] + rows)
        w_parts.append(np.asarray(w, dtype=np.float64).ravel())
        blocks.append(Layer(int(starts[k - 1]), n_in, int(starts[k]), n_out, edge_start))
        edge_start += n_out * n_in
    for k, b in enumerate(biases, start=1):
        if b is None:
            continue
        b = np.asarray(b, dtype=np.float64).ravel()
        if b.size != sizes[k]:
            raise NetworkError(f"bias {k} has {b.size} entries, layer {k} has {sizes[k]} units")
        bias_node = len(nodes)
        nodes.append(("bias", k))
        roles.append("bias")
        fixed.append(True)
        degree.append(1.0)
        src_parts.append(np.full(sizes[k], bias_node, dtype=np.int64))
        dst_parts.append(starts[k] + np.arange(sizes[k], dtype=np.int64))
        w_parts.append(b)
        blocks.append(Layer(bias_node, 1, int(starts[k]), sizes[k], edge_start))
        edge_start += sizes[k]
    return Problem.from_arrays(
        np.concatenate(src_parts), np.concatenate(dst_parts), np.concatenate(w_parts),
        nodes=nodes, roles=roles, fixed=np.asarray(fixed), degree=np.asarray(degree),
        layers=blocks,
    )
