"""The workloads W1–W6 of docs/design.md §4, built straight as :class:`Problem` arrays.

Weights are Gaussian times a per-layer scale ``exp(U(-2, 2))`` (:func:`layer_scales`), so every
network starts far from its balanced state. Use :func:`balgraph.gallery.workload` to get them by
name, with a ``size="small"`` variant of each for tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import NetworkError
from ..model import Problem

__all__ = [
    "autoencoder",
    "deep_mlp",
    "dense_mlp",
    "layer_scales",
    "locally_connected",
    "recurrent",
    "resnet_channels",
    "wide_mlp",
]


def layer_scales(n_layers: int, rng: np.random.Generator, spread: float = 2.0) -> np.ndarray:
    """Per-layer weight scales ``exp(U(-spread, spread))``: far from balanced (docs/design.md §4)."""
    return np.exp(rng.uniform(-spread, spread, size=n_layers))


def dense_mlp(
    sizes: Sequence[int], seed: int = 0, *, bias: bool = True, activation: str = "relu"
) -> Problem:
    """A random MLP as layer matrices (:meth:`Problem.from_layers`), far from balanced.

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first.
    seed : int
        Seed of the weights; layer ``k`` is ``N(0, 1) · s_k`` with ``s_k = exp(U(-2, 2))``, and
        its bias ``N(0, 1) · s_k`` too.
    bias : bool
        Give every non-input layer a bias unit.
    activation : str
        Hidden activation; homogeneous ones make the hidden units free.

    Examples
    --------
    >>> pb = dense_mlp([3, 4, 2], seed=0)
    >>> pb.n_edges, pb.n_vars, [blk.n_edges for blk in pb.blocks]
    (26, 4, [12, 8, 4, 2])
    """
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in sizes]
    scales = layer_scales(len(sizes) - 1, rng)
    mats = []
    for k in range(1, len(sizes)):
        W = rng.standard_normal((sizes[k], sizes[k - 1]))
        W *= scales[k - 1]
        mats.append(W)
    biases = [rng.standard_normal(sizes[k]) * scales[k - 1] for k in range(1, len(sizes))] if bias else None
    return Problem.from_layers(mats, biases, activations=activation)


def autoencoder(seed: int = 0, sizes: Sequence[int] = (784, 200, 100, 50, 100, 200, 784)) -> Problem:
    """W1: the paper's MNIST autoencoder 784-200-100-50-100-200-784, ReLU, biases (0.36 M weights).

    Examples
    --------
    >>> autoencoder(0, sizes=(20, 10, 5, 10, 20)).n_vars
    25
    """
    return dense_mlp(sizes, seed)


def deep_mlp(seed: int = 0, depth: int = 100, width: int = 64) -> Problem:
    """W3: ``depth`` hidden ReLU layers of ``width`` units, ``width`` inputs and outputs, biases.

    Depth is the hard part for local balancing (its slow modes run along the depth).

    Examples
    --------
    >>> deep_mlp(0, depth=3, width=4).n_vars
    12
    """
    return dense_mlp([width] * (depth + 2), seed)


def wide_mlp(seed: int = 0, sizes: Sequence[int] = (1024, 4096, 4096, 4096, 4096, 1000)) -> Problem:
    """W5: the wide MLP 1024-4096-4096-4096-4096-1000, ReLU, biases (58.7 M weights, 470 MB).

    Built by :func:`dense_mlp`: the matrices are the problem's blocks (no per-edge copies).

    Examples
    --------
    >>> wide_mlp(0, sizes=(8, 16, 4)).n_edges
    212
    """
    return dense_mlp(sizes, seed)


def locally_connected(
    seed: int = 0,
    image: tuple[int, int, int] = (3, 32, 32),
    lc: Sequence[tuple[int, int]] = ((8, 8), (8, 8), (16, 10)),
    fc: Sequence[int] = (300, 100, 10),
) -> Problem:
    """W2: the paper's locally connected CIFAR net, leaky ReLU, biases on every unit.

    A locally connected layer is a convolution whose kernels are *not* shared: every output
    position ``(y, x)`` of channel ``o`` has its own ``C_in × k × k`` kernel over the window at
    ``(y, x)`` (valid, stride 1). Defaults: LC 3→8 k8 (32×32 → 25×25), LC 8→8 k8 (→ 18×18),
    LC 8→16 k10 (→ 9×9), then FC 1296-300-100-10: 3.74 M weights. Units are ``(k, r)`` with
    ``r`` the row-major ``(channel, y, x)`` index, and ``("bias", k)``. Evaluate it with
    ``forward(..., activations="leaky_relu")``: a Problem does not record activations.

    Parameters
    ----------
    image : (channels, height, width)
    lc : sequence of (out_channels, kernel)
    fc : sequence of int
        Widths of the dense layers after the last LC layer (the last is the output).

    Examples
    --------
    >>> pb = locally_connected(0, image=(1, 4, 4), lc=[(2, 3)], fc=[3])
    >>> pb.n_edges  # 2 ch x 2 x 2 positions x 9, then 8 x 3, plus 8 + 3 biases
    107
    """
    rng = np.random.default_rng(seed)
    c, h, w = image
    shapes = [(c, h, w)]
    for co, k in lc:
        shapes.append((co, shapes[-1][1] - k + 1, shapes[-1][2] - k + 1))
    sizes = [int(np.prod(s)) for s in shapes] + [int(n) for n in fc]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    scales = layer_scales(len(sizes) - 1, rng)
    src, dst = [], []
    for k, (co, ker) in enumerate(lc, start=1):
        ci, hi, wi = shapes[k - 1]
        _, ho, wo = shapes[k]
        shape = (co, ho, wo, ci, ker, ker)
        o, y, x, i, dy, dx = np.ix_(*(np.arange(n) for n in shape))
        dst.append(np.broadcast_to(starts[k] + (o * ho + y) * wo + x, shape).ravel())
        src.append(np.broadcast_to(starts[k - 1] + (i * hi + y + dy) * wi + x + dx, shape).ravel())
    for k in range(len(lc) + 1, len(sizes)):
        n_in, n_out = sizes[k - 1], sizes[k]
        dst.append(np.repeat(starts[k] + np.arange(n_out), n_in))
        src.append(np.tile(starts[k - 1] + np.arange(n_in), n_out))
    weight = [rng.standard_normal(s.size) * scales[k] for k, s in enumerate(src)]
    nodes = [(k, r) for k, n in enumerate(sizes) for r in range(n)]
    for k in range(1, len(sizes)):
        nodes.append(("bias", k))
        src.append(np.full(sizes[k], len(nodes) - 1, dtype=np.int64))
        dst.append(starts[k] + np.arange(sizes[k]))
        weight.append(rng.standard_normal(sizes[k]) * scales[k - 1])
    roles = ["input"] * sizes[0] + ["hidden"] * (int(starts[-2]) - sizes[0]) + ["output"] * sizes[-1]
    roles += ["bias"] * (len(sizes) - 1)
    return Problem.from_arrays(
        np.concatenate(src), np.concatenate(dst), np.concatenate(weight), nodes=nodes, roles=roles
    )


def recurrent(
    seed: int = 0, n_hidden: int = 20_000, n_edges: int = 1_000_000, n_inputs: int = 50,
    n_outputs: int = 10, self_loops: float = 0.5,
) -> Problem:
    """W4: a random recurrent ReLU network with self-loops, exactly ``n_edges`` edges, no bias.

    Units are ``0..n_inputs-1`` (inputs), then the hidden units, then the outputs. Every hidden
    unit lies on an input → output path (so it has a finite optimum): in a random order, each
    hidden unit receives an edge from an input or an earlier hidden unit and sends one to a
    later hidden unit or an output. A fraction ``self_loops`` of the hidden units get a
    self-loop; the remaining edges are uniform over (input or hidden) → (hidden or output),
    distinct, so the graph is full of directed cycles. Weights are ``N(0, 1) · s_i`` with a
    scale ``s_i = exp(U(-2, 2))`` per receiving unit.

    Examples
    --------
    >>> pb = recurrent(0, n_hidden=30, n_edges=200, n_inputs=3, n_outputs=2)
    >>> pb.n_edges, pb.n_vars, bool((pb.src == pb.dst).any())
    (200, 30, True)
    """
    rng = np.random.default_rng(seed)
    n = n_inputs + n_hidden + n_outputs
    hidden = n_inputs + rng.permutation(n_hidden)  # hidden[q]: the unit at position q
    q = np.arange(n_hidden)
    r = rng.integers(0, n_inputs + q)
    feed = np.where(r < n_inputs, r, hidden[np.maximum(r - n_inputs, 0)])
    r = rng.integers(0, n_hidden - q - 1 + n_outputs)
    later = n_hidden - q - 1
    drain = np.where(r < later, hidden[np.minimum(q + 1 + r, n_hidden - 1)], n_inputs + n_hidden + r - later)
    loops = hidden[rng.random(n_hidden) < self_loops]
    must_src = np.concatenate([feed, hidden, loops])
    must_dst = np.concatenate([hidden, drain, loops])
    possible = (n_inputs + n_hidden) * (n_hidden + n_outputs)
    if n_edges > possible or n_edges < np.unique(must_src * n + must_dst).size:
        raise NetworkError(
            f"n_edges={n_edges} is out of reach: the guaranteed edges need at least"
            f" {np.unique(must_src * n + must_dst).size} and only {possible} distinct edges exist"
        )
    src, dst = must_src, must_dst
    while True:
        _, first = np.unique(src * n + dst, return_index=True)
        if first.size >= n_edges:
            break
        extra = int(1.1 * (n_edges - first.size)) + 16
        src = np.concatenate([src[np.sort(first)], rng.integers(0, n_inputs + n_hidden, extra)])
        dst = np.concatenate([dst[np.sort(first)], rng.integers(n_inputs, n, extra)])
    # the guaranteed edges come first, so they survive the cut
    keep = np.sort(first)[:n_edges]
    src, dst = src[keep], dst[keep]
    weight = rng.standard_normal(n_edges) * layer_scales(n, rng)[dst]
    roles = ["input"] * n_inputs + ["hidden"] * n_hidden + ["output"] * n_outputs
    return Problem.from_arrays(src, dst, weight, roles=roles)


def resnet_channels(
    seed: int = 0, widths: Sequence[int] = (16, 32, 64), blocks: int = 3, *, in_channels: int = 3,
    n_classes: int = 10, kernel: int = 3, p: float = 2.0,
) -> Problem:
    """W6: a ResNet-style CNN as a *channel graph*, with its identity skips as ties.

    A convolution's kernels are shared over positions, so the only rescalings that keep the
    function are one scale per channel (Section 8.3). Each channel is a unit; the kernel
    ``K_oi`` (``k × k``) from input channel ``i`` to output channel ``o`` becomes one edge whose
    weight is its L_p norm ``w_oi = (Σ |K_oi|^p)^{1/p}``: scaling multiplies every entry by
    ``Λ_o / Λ_i``, so ``Σ |K_oi Λ_o/Λ_i|^p = |w_oi Λ_o/Λ_i|^p`` and the channel graph's L_p cost
    equals the CNN's for every rescaling. That holds for the ``p`` given here only: solve with
    the same ``p``.

    Architecture: stem conv ``in_channels → widths[0]``, then one stage per width of ``blocks``
    residual blocks ``y = relu(conv2(relu(conv1(x))) + skip(x))``, global average pooling and a
    dense layer to ``n_classes`` outputs; every conv has a per-channel bias (one bias unit).
    An identity skip (same width) is an edge ``x_c → y_c`` of weight 1 that no rescaling may
    change, so the two ends share one scale: they carry the same ``tie`` label, and the whole
    residual stream of a stage is one tie group. Where the width changes, the skip is a 1×1
    convolution (ordinary edges) and a new stream starts. Units are ``("x", c)``, ``("stem", c)``,
    ``("h", s, b, c)`` (inner channels of block ``b`` of stage ``s``), ``("y", s, b, c)``,
    ``("out", j)`` and ``"bias"``.

    Examples
    --------
    >>> pb = resnet_channels(0, widths=(2, 4), blocks=1, in_channels=1, n_classes=2)
    >>> len(pb.nodes), int(pb.var_size.max())  # the stem and block output share a scale
    (18, 2)
    """
    rng = np.random.default_rng(seed)
    nodes, roles, ties = [], [], []
    index: dict = {}

    def units(labels, role, tie=None):
        for k, lab in enumerate(labels):
            index[lab] = len(nodes)
            nodes.append(lab)
            roles.append(role)
            ties.append(None if tie is None else tie + (k,))
        return [index[lab] for lab in labels]

    src, dst, weight = [], [], []

    def connect(a, b, ker, scale):
        kernels = rng.standard_normal((len(b), len(a), ker * ker)) * scale
        w = np.sum(np.abs(kernels) ** p, axis=2) ** (1.0 / p)
        dst.append(np.repeat(b, len(a)))
        src.append(np.tile(a, len(b)))
        weight.append(w.ravel())

    def scale() -> float:
        return float(layer_scales(1, rng)[0])

    x = units([("x", c) for c in range(in_channels)], "input")
    bias = units(["bias"], "bias")[0]

    def add_bias(b):
        src.append(np.full(len(b), bias))
        dst.append(np.asarray(b))
        weight.append(rng.standard_normal(len(b)) * scale())

    stream_tie = ("stream", 0, 0)
    stream = units([("stem", c) for c in range(widths[0])], "hidden", tie=stream_tie)
    connect(x, stream, kernel, scale())
    add_bias(stream)
    for s, width in enumerate(widths):
        for b in range(blocks):
            h = units([("h", s, b, c) for c in range(width)], "hidden")
            connect(stream, h, kernel, scale())
            add_bias(h)
            identity = len(stream) == width
            stream_tie = stream_tie if identity else ("stream", s, b)
            y = units([("y", s, b, c) for c in range(width)], "hidden", tie=stream_tie)
            connect(h, y, kernel, scale())
            add_bias(y)
            if identity:
                src.append(np.asarray(stream))
                dst.append(np.asarray(y))
                weight.append(np.ones(width))
            else:
                connect(stream, y, 1, scale())
            stream = y
    out = units([("out", j) for j in range(n_classes)], "output")
    connect(stream, out, 1, scale())
    add_bias(out)
    return Problem.from_arrays(
        np.concatenate(src), np.concatenate(dst), np.concatenate(weight), nodes=nodes,
        roles=roles, tie=ties,
    )
