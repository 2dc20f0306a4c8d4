"""The map between a traced PyTorch model and a balgraph :class:`~balgraph.Problem`.

Units are channels (and bias, input, fixed placeholder units); edges are layer-map entries
(:mod:`balgraph.torch._maps`: a Linear weight, a kernel slice's p-norm, a BatchNorm multiplier
``γ/σ``, a norm's or layer scale's per-channel weight, a bias). The structure — unit arrays, edge
endpoints, merge plans, dense blocks — is built once and cached; :meth:`TorchNetwork.problem`
only reads the current parameters (a row chunk at a time), so ``BalanceEvery`` pays for the
structure once.

Units whose incoming or outgoing weights are all zero at the current parameters (a
zero-initialised last BatchNorm of a residual block makes three such layers per block) have no
finite balanced scale; by default they keep scale 1 and are counted as *dead ends* in
:attr:`TorchNetwork.report`.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import torch

from ..errors import NetworkError
from ..model import DenseBlock, EdgeBlock, Problem
from ._maps import LayerMap
from ._report import UnitReport
from ._trace import Traced, trace

__all__ = ["TorchNetwork"]


def _hits(nz: np.ndarray | None, on: np.ndarray, n_rows: int) -> np.ndarray:
    """Rows of a zero pattern ``nz`` (None: no zeros) with a non-zero entry in an ``on`` column."""
    if not on.any():
        return np.zeros(n_rows, dtype=bool)
    if nz is None:
        return np.ones(n_rows, dtype=bool)
    return nz.any(axis=1) if on.all() else nz[:, on].any(axis=1)


class _Edges:
    def __init__(self, src: np.ndarray, dst: np.ndarray, weight: np.ndarray):
        self.src, self.dst, self.weight = src, dst, weight


class TorchNetwork:
    """A traced model: its units, and which parameter entries each edge and unit stands for.

    Built by :func:`balgraph.torch.to_problem` (or :meth:`trace`). :meth:`problem` reads the
    current parameters; :attr:`report` says how many channel units are free and what fixed
    the others.

    Attributes
    ----------
    labels : tuple of str
        Unit labels: ``"fc1[3]"`` (output 3 of module ``fc1``), ``"input:x[0]"``,
        ``"bias:fc1"``, ``"blocks.0.attn.v[5]"`` (a value channel), or the name of an fx node.
    layers : list of LayerMap
        One entry per parametrized op, with unit index arrays and parameter references.
    report : UnitReport
        ``N of M units free; fixed by ...`` (updated by every :meth:`problem` call).

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), torch.nn.Linear(4, 5),
    ...                           torch.nn.ReLU(), torch.nn.Linear(5, 2))
    >>> network = bt.TorchNetwork.trace(net, torch.zeros(1, 3))
    >>> str(network.report)
    '5 of 9 units free; fixed by GELU ×4'
    """

    def __init__(self, model: torch.nn.Module, traced: Traced):
        self.model = model
        self.labels = tuple(traced.labels)
        self.roles = tuple(traced.roles)
        self.owner = tuple(traced.owner)
        self.fixed = traced.fixed
        self.tie = traced.tie
        self.layers: list[LayerMap] = traced.layers
        self.reason = traced.reason
        self.channel = traced.channel
        self.group_of = traced.group
        self.unsupported = traced.unsupported
        self.train_bn = traced.train_bn
        self._struct: dict | None = None
        self.report = UnitReport.build(self, np.zeros(self.n_units, dtype=bool))

    @classmethod
    def trace(cls, model: torch.nn.Module, example_inputs) -> TorchNetwork:
        """Trace ``model`` (torch.fx) on ``example_inputs``."""
        return cls(model, trace(model, example_inputs))

    @property
    def n_units(self) -> int:
        return len(self.labels)

    @property
    def free(self) -> np.ndarray:
        """Units that are free by structure (before dead ends at the current weights)."""
        return ~self.fixed

    def groups(self) -> list[np.ndarray]:
        """The free variables by structure: arrays of unit indices (a tie group is one)."""
        free = np.flatnonzero(~self.fixed)
        labels = np.array([-1 if self.tie[k] is None else self.tie[k] for k in free], dtype=np.int64)
        out = list(free[labels == -1].reshape(-1, 1))
        tied = labels >= 0
        order = np.argsort(labels[tied], kind="stable")
        _, starts = np.unique(labels[tied][order], return_index=True)
        return out + np.split(free[tied][order], starts[1:]) if tied.any() else out

    # ---------------------------------------------------------------- structure (cached)
    def _structure(self) -> dict:
        """Parts ``(lm, which, a, b, ends)``: edges ``a:b`` are map ``lm``'s weight or bias edges;
        ``ends`` is ``(src, dst)``, or None for a dense weight block (its ends are implied)."""
        if self._struct is not None:
            return self._struct
        parts, m = [], 0
        for lm in self.layers:
            n = lm.n_weight_edges
            ends = None
            if n and lm.dense_columns() is None:
                ends = (np.empty(n, np.int64), np.empty(n, np.int64))
                lm.write_structure(*ends)
            parts.append((lm, "weight", m, m + n, ends))
            m += n
        for lm in self.layers:
            ends = lm.bias_structure()
            parts.append((lm, "bias", m, m + ends[0].size, ends))
            m += ends[0].size
        self._struct = dict(parts=parts, n_edges=m)
        return self._struct

    @staticmethod
    def _ends(part) -> tuple[np.ndarray, np.ndarray]:
        lm, which, a, b, ends = part
        if ends is not None:
            return ends
        cols = lm.dense_columns()
        return np.tile(cols, lm.out_units.size), np.repeat(lm.out_units, cols.size)

    def edge_weights(self, p: float = 2.0) -> np.ndarray:
        """Every edge's weight at the current parameters (the order of :meth:`edges`)."""
        st = self._structure()
        w = np.empty(st["n_edges"])
        for lm, which, a, b, _ in st["parts"]:
            if which == "weight":
                lm.weight_values(p, w[a:b])
            elif b > a:
                w[a:b] = lm.bias_values(p)
        return w

    def edges(self, p: float = 2.0) -> _Edges:
        """All edges (weights first, map by map, then biases), read from the parameters."""
        st = self._structure()
        ends = [self._ends(part) for part in st["parts"]]
        src = np.concatenate([e[0] for e in ends]) if ends else np.zeros(0, np.int64)
        dst = np.concatenate([e[1] for e in ends]) if ends else np.zeros(0, np.int64)
        return _Edges(src, dst, self.edge_weights(p))

    def _edge_target(self, e: int) -> str:
        """The label of edge ``e``'s target unit."""
        for part in self._structure()["parts"]:
            if part[2] <= e < part[3]:
                return self.labels[self._ends(part)[1][e - part[2]]]
        raise IndexError(e)

    # ---------------------------------------------------------------- dead ends
    def dead_units(self, weight: np.ndarray) -> np.ndarray:
        """Free units with no finite balanced scale at these weights (reach no output through
        non-zero edges, or are reached from no input), as a boolean mask over units.

        Without zero weights the answer depends on the structure only (computed once)."""
        st = self._structure()
        if "static_dead" not in st:
            st["static_dead"] = self._unreachable(None)
        if np.count_nonzero(weight) == weight.size:
            return st["static_dead"].copy()
        return self._unreachable(weight)

    def _unreachable(self, weight: np.ndarray | None) -> np.ndarray:
        """Reachability from and to the ground (all fixed units) over non-zero edges, by sweeps
        over the layer maps in forward and backward order (dense blocks by their zero pattern,
        never one sparse matrix of all edges)."""
        st = self._structure()
        free = ~self.fixed
        _, node = np.unique(self.group_of, return_inverse=True)
        node = np.where(free, node.ravel() + 1, 0)  # 0: the ground (every fixed unit)
        parts = []
        for lm, which, a, b, ends in st["parts"]:
            if a == b:
                continue
            cols = lm.dense_columns() if which == "weight" else None
            if cols is not None:
                nz = None if weight is None else weight[a:b].reshape(lm.out_units.size, cols.size) != 0
                parts.append(("dense", node[lm.out_units], node[cols], nz))
            else:
                s, d = node[ends[0]], node[ends[1]]
                keep = (s != d) if weight is None else (s != d) & (weight[a:b] != 0)
                parts.append(("sparse", s[keep], d[keep], None))
        n = int(node.max(initial=0)) + 1
        fwd, bwd = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        fwd[0] = bwd[0] = True
        for _ in range(len(parts) + 2):
            before = int(fwd.sum()) + int(bwd.sum())
            for kind, out_n, in_n, nz in parts:
                if kind == "sparse":
                    fwd[in_n[fwd[out_n]]] = True  # (src, dst) stored as (out_n, in_n) here
                else:
                    fwd[out_n[_hits(nz, fwd[in_n], out_n.size)]] = True
            for kind, out_n, in_n, nz in reversed(parts):
                if kind == "sparse":
                    bwd[out_n[bwd[in_n]]] = True
                else:
                    bwd[in_n[_hits(None if nz is None else nz.T, bwd[out_n], in_n.size)]] = True
            if int(fwd.sum()) + int(bwd.sum()) == before:
                break
        return free & ~(fwd & bwd)[node]

    # ---------------------------------------------------------------- the problem
    def problem(self, p: float = 2.0, unreachable: str = "fix", range: str = "absmax") -> Problem:  # noqa: A002
        """The balancing problem at the model's current parameters (weights depend on ``p``).

        ``unreachable="fix"`` keeps dead-end units at scale 1 (counted in :attr:`report`), so
        the problem's free variables are exactly the units a solve balances; ``"raise"`` leaves
        them free for :func:`balgraph.solve` to name. At ``p = ∞`` with ``range="minmax"``
        every merged edge (a kernel slice) becomes two parallel edges, its signed largest and
        smallest entry, so that a channel's ``max w − min w`` is that of the tensor's entries.
        """
        w = self.edge_weights(p)
        # two reductions (NaN propagates through max), not a per-edge mask: once freed, such a
        # mask (a quarter of a float32 model's bytes) stays in the process's heap
        if w.size and not (np.isfinite(w.max()) and np.isfinite(w.min())):
            bad = np.flatnonzero(~np.isfinite(w))
            e = int(bad[0])
            raise NetworkError(
                f"{bad.size} edge weight(s) are not finite at p={p!r}, e.g. into unit"
                f" {self._edge_target(e)!r}: the parameters hold NaN/inf, or the p-norm of a"
                " kernel slice overflows at this p. Fix the parameters or use a moderate p."
            )
        dead = self.dead_units(w) if unreachable == "fix" else np.zeros(self.n_units, dtype=bool)
        self.report = UnitReport.build(self, dead)
        fixed = self.fixed | dead
        tie = [None if fixed[k] else t for k, t in enumerate(self.tie)]
        weights = [w]
        if range == "minmax" and np.isinf(p):
            weights = [self.edge_weights("max"), self.edge_weights("min")]
        return self._make_problem(weights, fixed, tie)

    def _make_problem(self, weights: list, fixed: np.ndarray, tie: list) -> Problem:
        """The one place that builds the core's :class:`Problem`: a map whose edges form a
        dense ``(n_out, n_in)`` block (Linear, a 1×1 conv, a norm's affine weight, biases)
        becomes :class:`DenseBlock` views of ``weight``, split where fixedness changes along
        the rows (a fused qkv: q, k fixed, v free) so every block side is one kind; any other
        map an :class:`EdgeBlock`. A second weight vector (signed minima) adds the parallel
        edges where it differs from the first."""
        st = self._structure()
        blocks = []
        for (lm, which, a, b, ends), weight in itertools.product(st["parts"], weights):
            if a == b or (weight is not weights[0] and np.array_equal(weight[a:b], weights[0][a:b])):
                continue
            name = f"{lm.name} {which}"
            cols = lm.dense_columns() if ends is None else ends[0][:1]
            out = lm.out_units if ends is None else ends[1]
            if ends is not None and (which == "weight" or np.any(ends[0] != cols[0])):
                blocks.append(EdgeBlock(ends[0], ends[1], weight[a:b], name))
                continue
            W = weight[a:b].reshape(out.size, cols.size)
            cut = np.flatnonzero(np.diff(fixed[out].astype(np.int8))) + 1
            blocks += [DenseBlock(W[r0:r1], out[r0:r1], cols, name) for r0, r1 in zip(np.r_[0, cut], np.r_[cut, out.size])]
        ties = tie if any(t is not None for t in tie) else None
        return Problem.from_blocks(blocks, nodes=self.labels, roles=self.roles, fixed=fixed, tie=ties)

    def to_graph(self, p: float = 2.0) -> nx.DiGraph:
        """A networkx DiGraph of the units (attributes ``role``, ``activation``, ``tie``).

        Free hidden units get ``activation="linear"`` (they are positively homogeneous), fixed
        hidden units ``activation="opaque"``; parallel edges are merged by their p-norm.
        """
        from ._maps import _merge_by

        e = self.edges(p)
        key = e.src * self.n_units + e.dst
        uniq, inv = np.unique(key, return_inverse=True)
        w = _merge_by(inv.ravel(), uniq.size, e.weight, p)
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
            (labels[j], labels[i], x)
            for j, i, x in zip((uniq // self.n_units).tolist(), (uniq % self.n_units).tolist(), w.tolist())
        )
        return g

    # ---------------------------------------------------------------- applying scales
    def factors(self, scale: np.ndarray) -> list:
        """``[(ParamRef, mul, div)]``: each tensor becomes ``tensor * mul / div`` (broadcast)."""
        return [f for lm in self.layers for f in lm.factors(np.asarray(scale, dtype=np.float64))]

    def apply_scales_(self, scale: np.ndarray, optimizer=None) -> None:
        """Rescale the model's parameters in place by per-unit scales ``Λ``, after checking that
        every new value is finite and no non-zero entry becomes 0 (else nothing is written)."""
        from ._apply import apply_checked

        apply_checked(self.factors(scale), optimizer)
