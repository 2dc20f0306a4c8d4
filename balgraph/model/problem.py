"""The compiled form of a network: units, variables and edge blocks that every solver works on.

A :class:`Problem` is what lies past the boundary where a networkx graph, a set of edge arrays
or a list of layer matrices becomes arrays (:mod:`balgraph.model.network`,
:meth:`Problem.from_arrays`, :meth:`Problem.from_layers`). Nothing downstream touches networkx.

Notation (docs/design.md §1). Nodes ``0..n-1``; edges ``e = j -> i`` with ``src[e] = j`` and
``dst[e] = i``, stored in blocks (:mod:`balgraph.model.blocks`). Free units are grouped into
*variables* (a tie group is one). With potentials ``u`` per variable (``u = log Λ``), edge ``e``
becomes ``w_e · exp((G u)_e)`` where row ``e`` of the sparse matrix ``G`` holds ``+1`` at the
variable of ``i`` and ``-c_j`` at the variable of ``j`` (entries add up for self-loops and edges
inside a tie group). The paper's ``L_ij`` (Section 9) are ``G u``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..backend import module_of
from ..checks import real_weights
from ..errors import NetworkError
from ..graphs import merged_adjacency
from ..lazy import is_lazy
from .blocks import DenseBlock, EdgeBlock
from .units import assign_variables

__all__ = ["Problem"]


@dataclass(frozen=True, eq=False)
class Problem:
    """A network compiled to units, variables and edge blocks.

    Build one with :meth:`from_arrays`, :meth:`from_layers`, :meth:`from_blocks` or
    :func:`balgraph.compile_network`; they check every input.

    Attributes
    ----------
    nodes : tuple
        Unit labels; unit ``k`` of the arrays is ``nodes[k]``.
    roles : tuple of str
        ``"input"``, ``"output"``, ``"hidden"`` or ``"bias"`` per unit.
    fixed : ndarray of bool
        Units whose scale is 1 (visible units, bias units, non-homogeneous activations).
    degree : ndarray of float64
        The homogeneity degree ``c`` of each unit (1 for BiLU and for fixed units).
    var : ndarray of int64
        Variable of each free unit (tied units share one), ``-1`` for fixed units.
    blocks : tuple of DenseBlock or EdgeBlock
        The edges; :attr:`src`, :attr:`dst`, :attr:`weight` concatenate them on demand.
    activation : tuple or None
        The activation of each unit as compiled (names or callables; ``None`` for the
        default), used by :func:`balgraph.forward`.
    activation_args : mapping
        ``{unit index: {"slope"|"a"|"b"|...: value}}`` for parametrized activations.
    edge_data : mapping
        Per-edge arrays read when compiling (regularizer coefficients named by attribute).
    share : ndarray of int64 or None
        Shared-weight group of each edge (``-1``: not shared), None when nothing is shared.
    source : object or None
        What :meth:`BalanceResult.to_graph` rebuilds a graph from (a snapshot of the input).
    """

    nodes: tuple
    roles: tuple
    fixed: np.ndarray
    degree: np.ndarray
    var: np.ndarray
    blocks: tuple
    activation: tuple | None = None
    activation_args: Mapping = field(default_factory=dict)
    edge_data: Mapping = field(default_factory=dict)
    share: np.ndarray | None = None
    source: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, src, dst, weight, **kwargs) -> Problem:
        """Build a problem from edge arrays, without networkx.

        Parameters
        ----------
        src, dst : array_like of int
            Edge ``e`` goes from unit ``src[e]`` into unit ``dst[e]`` (``j -> i``).
        weight : array_like of float
            Finite real weights; zeros are allowed (they stay zero, Remark 5.5).
        nodes : sequence, optional
            Labels of the units (default ``range(n_nodes)``).
        n_nodes : int, optional
            Number of units (default: from ``nodes`` or the largest index + 1).
        roles : sequence of str, optional
            Per-unit role; default: in-degree 0 -> ``"input"``, out-degree 0 -> ``"output"``,
            otherwise ``"hidden"`` (edges of weight 0 count here).
        fixed : sequence of bool, optional
            Hidden units that keep scale 1. Visible and bias units are always fixed.
        degree : sequence of float, optional
            BiPU degree ``c > 0`` per unit (default 1).
        tie : sequence, optional
            Tie label per unit (``None`` for untied); free units with equal labels share a scale.
        activation : sequence, optional
            Activation per unit (names or callables); non-homogeneous ones fix their unit.
        share : sequence, optional
            Shared-weight label per edge (``None`` for unshared): equal labels are one parameter.

        Examples
        --------
        >>> import balgraph
        >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
        >>> pb.n_vars, pb.roles
        (1, ('input', 'hidden', 'output'))
        """
        from .build import problem_from_arrays

        return problem_from_arrays(cls, src, dst, weight, **kwargs)

    @classmethod
    def from_layers(cls, matrices, biases=None, **kwargs) -> Problem:
        """Build an MLP problem ``x_k = f_k(W_k x_{k-1} + b_k)`` from its layer matrices.

        The matrices are kept as they are (no copy; NumPy, CuPy or Dask arrays): each is one
        dense block, and per-edge arrays are built only if a method asks for them.

        Parameters
        ----------
        matrices : sequence of 2-D arrays
            ``W_k`` of shape ``(n_k, n_{k-1})`` (PyTorch's ``Linear.weight`` layout).
        biases : sequence of 1-D arrays or None, optional
            ``b_k`` of shape ``(n_k,)``; each is a block of edges from a bias unit
            ``("bias", k)`` clamped to 1.
        activations : str or sequence of str
            Activation of each hidden layer (``len(matrices) - 1`` of them); homogeneous ones
            (``relu``, ``leaky_relu``, ``linear``, ...) make the layer's units free.
        degrees : float or sequence of float
            BiPU degree of each hidden layer.

        Returns
        -------
        Problem
            Units ``(k, r)`` (layer ``k``, index ``r``; layer 0 is the input) and ``("bias", k)``;
            blocks: the weights, then the biases.

        Examples
        --------
        >>> import numpy as np, balgraph
        >>> pb = balgraph.Problem.from_layers([np.ones((3, 2)), np.ones((1, 3))], [np.zeros(3), None])
        >>> pb.n_vars, pb.n_edges, len(pb.blocks)
        (3, 12, 3)
        """
        from .build import problem_from_layers

        return problem_from_layers(cls, matrices, biases, **kwargs)

    @classmethod
    def from_blocks(cls, blocks, **kwargs) -> Problem:
        """Build a problem from :class:`DenseBlock` and :class:`EdgeBlock` objects.

        Takes ``nodes`` (required) and the per-unit and per-edge keywords of
        :meth:`from_arrays`. Used by adapters (PyTorch) whose layers are dense blocks.
        """
        from .build import problem_from_blocks

        return problem_from_blocks(cls, blocks, **kwargs)

    # ------------------------------------------------------------------ sizes and maps
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @cached_property
    def block_offsets(self) -> np.ndarray:
        """Edge index where each block starts, and the total at the end."""
        return np.concatenate([[0], np.cumsum([b.n_edges for b in self.blocks])]).astype(np.int64)

    @property
    def n_edges(self) -> int:
        return int(self.block_offsets[-1])

    @cached_property
    def n_vars(self) -> int:
        return int(self.var.max(initial=-1)) + 1

    @cached_property
    def dense(self) -> bool:
        """Whether every block is a :class:`DenseBlock` (layer matrices)."""
        return bool(self.blocks) and all(isinstance(b, DenseBlock) for b in self.blocks)

    @cached_property
    def lazy(self) -> bool:
        """Whether some layer matrix is a Dask array (kept where its chunks live, never gathered)."""
        return any(isinstance(b, DenseBlock) and is_lazy(b.weight) for b in self.blocks)

    @cached_property
    def xp(self):
        """The array module of the dense blocks (NumPy when there are none)."""
        mods = {module_of(b.weight) for b in self.blocks if isinstance(b, DenseBlock)}
        return mods.pop() if len(mods) == 1 else np

    @cached_property
    def node_index(self) -> dict:
        """Map from node label to array index."""
        return {label: k for k, label in enumerate(self.nodes)}

    @cached_property
    def var_degree(self) -> np.ndarray:
        """Degree ``c`` of each variable (uniform within a tie group)."""
        out = np.ones(self.n_vars)
        free = ~self.fixed
        out[self.var[free]] = self.degree[free]
        return out

    @cached_property
    def var_size(self) -> np.ndarray:
        """Number of units in each variable (1 unless tied)."""
        return np.bincount(self.var[~self.fixed], minlength=self.n_vars)

    # ------------------------------------------------------------------ per-edge arrays (on demand)
    def _edges(self):
        ends = [b.edge_ends() for b in self.blocks]
        if len(ends) == 1:
            return ends[0]
        if not ends:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([e[0] for e in ends]), np.concatenate([e[1] for e in ends])

    @cached_property
    def src(self) -> np.ndarray:
        """Source unit of every edge (built from the blocks on first use)."""
        src, dst = self._edges()
        self.__dict__["dst"] = _frozen(dst)
        return _frozen(src)

    @cached_property
    def dst(self) -> np.ndarray:
        """Target unit of every edge."""
        src, dst = self._edges()
        self.__dict__["src"] = _frozen(src)
        return _frozen(dst)

    @cached_property
    def weight(self) -> np.ndarray:
        """Signed float64 weight of every edge, on the host (zeros stay zero, Remark 5.5)."""
        parts = [b.host_weights() for b in self.blocks]
        w = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0)
        return _frozen(np.asarray(w, dtype=np.float64))

    @cached_property
    def log_abs_weight(self) -> np.ndarray:
        """``log |w_e|`` with ``-inf`` for zero weights."""
        with np.errstate(divide="ignore"):
            return _frozen(np.log(np.abs(self.weight)))

    @cached_property
    def G(self) -> sp.csr_matrix:
        """The sparse edge-by-variable matrix ``G`` (docs/design.md §1), shape ``(m, n_vars)``."""
        vi, vj = self.var[self.dst], self.var[self.src]
        rows = np.concatenate([np.flatnonzero(vi >= 0), np.flatnonzero(vj >= 0)])
        cols = np.concatenate([vi[vi >= 0], vj[vj >= 0]])
        vals = np.concatenate([np.ones(int((vi >= 0).sum())), -self.degree[self.src][vj >= 0]])
        g = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_edges, self.n_vars))
        g.sum_duplicates()
        g.eliminate_zeros()
        return g

    @cached_property
    def variable_graph(self) -> sp.csr_matrix:
        """0/1 adjacency between variables over the non-zero edges, ``(n_vars + 1)²``: tie groups
        are one node and every fixed unit is the ground, index ``n_vars`` (built once, shared by
        the structure check, the depth levels and the colourings)."""
        nv = self.n_vars
        node_of = np.where(self.fixed, nv, self.var)
        keep = self.weight != 0
        return merged_adjacency(node_of[self.src[keep]], node_of[self.dst[keep]], nv + 1)

    def edge_label(self, e: int) -> tuple:
        """The ``(j, i)`` label pair of edge ``e``."""
        return (self.nodes[self.src[e]], self.nodes[self.dst[e]])

    def describe_edge(self, e: int) -> str:
        """``"edge ('x', 'h')"``, with its block and entry for a dense block."""
        b = int(np.searchsorted(self.block_offsets, e, side="right")) - 1
        block = self.blocks[b]
        k = int(e - self.block_offsets[b])
        if isinstance(block, DenseBlock):
            r, s = divmod(k, block.shape[1])
            j, i = block.in_units[s], block.out_units[r]
            return f"edge {(self.nodes[j], self.nodes[i])!r} ({block.name} [{r}, {s}])"
        return f"edge {(self.nodes[block.src[k]], self.nodes[block.dst[k]])!r}"

    # ------------------------------------------------------------------ potentials
    def node_potentials(self, u: np.ndarray) -> np.ndarray:
        """Per-unit potentials ``log Λ`` from per-variable ``u`` (0 on fixed units)."""
        u = np.asarray(u, dtype=np.float64)
        return np.where(self.fixed, 0.0, u[np.maximum(self.var, 0)] if u.size else 0.0)

    def variable_potentials(self, node_u: np.ndarray) -> np.ndarray:
        """Per-variable ``u`` from per-unit potentials (one value per tie group)."""
        u = np.zeros(self.n_vars)
        free = ~self.fixed
        u[self.var[free]] = np.asarray(node_u, dtype=np.float64)[free]
        return u

    def edge_log_scale(self, u: np.ndarray) -> np.ndarray:
        """``t = G u``: the log of the factor that scaling multiplies each edge's weight by."""
        un = self.node_potentials(u)
        return un[self.dst] - self.degree[self.src] * un[self.src]

    def scaled_weights(self, u: np.ndarray) -> np.ndarray:
        """``w_e · exp((G u)_e)`` per edge (zeros stay zero)."""
        with np.errstate(over="ignore"):
            return np.where(self.weight == 0, 0.0, self.weight * np.exp(self.edge_log_scale(u)))

    # ------------------------------------------------------------------ variants
    def with_weights(self, weight: np.ndarray) -> Problem:
        """The same network with per-edge weights ``weight`` (host, compiled edge order)."""
        w = np.asarray(real_weights(weight, "weights", self.describe_edge), dtype=np.float64).ravel()
        if w.size != self.n_edges:
            raise NetworkError(f"expected one weight per edge ({self.n_edges}), got {w.size}")
        blocks = []
        for b, start, stop in zip(self.blocks, self.block_offsets[:-1], self.block_offsets[1:]):
            part = w[start:stop]
            if isinstance(b, DenseBlock):
                blocks.append(DenseBlock(part.reshape(b.shape), b.out_units, b.in_units, b.name))
            else:
                blocks.append(EdgeBlock(b.src, b.dst, part, b.name))
        return replace(self, blocks=tuple(blocks))

    def with_fixed(self, units) -> Problem:
        """The same network with the given unit indices made fixed (scale 1); ties are kept."""
        fixed = self.fixed.copy()
        fixed[np.asarray(units, dtype=np.int64)] = True
        tie = [None if f else int(v) for v, f in zip(self.var.tolist(), fixed.tolist())]
        deg = np.where(fixed, 1.0, self.degree)
        var = assign_variables(self.nodes, fixed, deg, tie)
        return replace(self, fixed=_frozen(fixed), degree=_frozen(deg), var=_frozen(var))

    def __repr__(self) -> str:
        kinds = sum(isinstance(b, DenseBlock) for b in self.blocks)
        return (f"Problem({self.n_nodes} units, {self.n_edges} edges, {self.n_vars} free variables,"
                f" {kinds} dense blocks)")


def _frozen(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable and a.flags.owndata:
        a.setflags(write=False)
    return a
