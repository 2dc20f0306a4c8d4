"""Balancing methods behind one interface (:mod:`.base`): a registry of objects with options.

====================  =====================================================================
method                what
====================  =====================================================================
``newton``            global Newton on the problem's cost model (default for finite ``p``)
``parallel``          independent sets at once, in depth order (Prop. 4.4)
``alternating``       odd layers, then even ones (Section 8.2)
``stochastic``        a random unit per step (Section 8.1)
``random_sweep``      every unit once per sweep, random order
``cyclic``            every unit once per sweep, fixed order
``max_balance``       ``p = inf``: max-balancing, absmax CLE's fixed point (default for ``p = inf``)
``cvxpy``             the paper's exponential-cone program (cross-check, small graphs)
``cvxpy_dgp``         the geometric program in cvxpy's DGP mode (cross-check, small graphs)
====================  =====================================================================
"""

from . import cvx, maxnorm, newton, sweeps  # noqa: F401  (registration)
from .base import REGISTRY, Method, Monitor, Run, SolverOutput, get_method, methods, register

__all__ = ["REGISTRY", "Method", "Monitor", "Run", "SolverOutput", "get_method", "methods", "register"]
