"""The dense-layer fast path: Newton–CG and exact sweeps on layered nets, NumPy or CuPy.

Problems whose edges all lie in dense layer blocks (:meth:`balgraph.Problem.from_layers`,
:func:`balgraph.gallery.dense_mlp`) with an L_p cost are solved here by
:func:`balgraph.newton.solve_newton` unless ``fast=False``: a layer's scaled costs are
``diag(e^{x_out}) |W|^p diag(e^{−c·x_in})``, so every sum and Hessian product is a BLAS mat-vec
(design.md §2). ``device="cuda"`` runs the same code on CuPy arrays (:mod:`._xp`).

Examples
--------
>>> import numpy as np, balgraph
>>> pb = balgraph.gallery.dense_mlp([8, 16, 16, 4], seed=0)
>>> res = balgraph.solve(pb, p=2)
>>> res.info["fast_path"], res.max_imbalance <= 1e-10
('dense', True)
"""

from ._api import (
    LayerBalance,
    balance_layers,
    dispatch,
    layer_sweeps,
    solve_dense_sweeps,
)
from ._costs import LayeredCosts, RangeExceeded
from ._plan import plan_problem
from ._sweep import LayerSweeps
from ._xp import array_module

__all__ = [
    "LayerBalance",
    "LayerSweeps",
    "LayeredCosts",
    "RangeExceeded",
    "array_module",
    "balance_layers",
    "dispatch",
    "layer_sweeps",
    "plan_problem",
    "solve_dense_sweeps",
]
