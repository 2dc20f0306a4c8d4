"""balgraph: the unique balanced state of a neural network.

In a network of positively homogeneous units, scaling a hidden unit's incoming weights by
``λ > 0`` and its outgoing weights by ``1/λ^c`` leaves the function unchanged. Among these
rescalings exactly one minimizes an L_p weight cost; there every hidden unit is balanced.
balgraph finds it by the paper's local balancing algorithms and by a global convex solver.

Examples
--------
>>> import numpy as np, balgraph
>>> res = balgraph.solve(balgraph.Problem.from_layers([np.array([[4.0]]), np.array([[1.0]])]))
>>> res.success, [W.tolist() for W in res.layer_weights()]
(True, [[[2.0]], [[2.0]]])
"""

from .api import imbalance, methods, solve
from .closed_forms import TiedLayerBalance, tied_layer_scales
from .errors import (
    BalgraphError,
    ConvergenceWarning,
    NetworkError,
    NoFiniteOptimumError,
    OptionError,
    RangeWarning,
    SolverError,
)
from .forward import forward
from .gallery import workload
from .loadbalance import LoadBalance, activation_cv, activation_entropy, load_balance
from .local import (
    balance_units,
    balance_weights,
    favourable_scales,
    optimal_scale,
    scale_units,
    scale_weights,
    tie_layers,
)
from .manifold import Manifold, manifold
from .measures import balance_deficit, group_imbalance, lp_cost, unit_imbalance
from .model import DenseBlock, Diagnosis, EdgeBlock, Problem, compile_network, diagnose
from .regularizers import ElasticNet, Lp, MaxNorm, PowerSum, Regularizer
from .result import BalanceResult

__version__ = "0.2.0"

__all__ = [
    "BalanceResult",
    "BalgraphError",
    "ConvergenceWarning",
    "DenseBlock",
    "Diagnosis",
    "EdgeBlock",
    "ElasticNet",
    "LoadBalance",
    "Lp",
    "Manifold",
    "MaxNorm",
    "NetworkError",
    "NoFiniteOptimumError",
    "OptionError",
    "PowerSum",
    "Problem",
    "RangeWarning",
    "Regularizer",
    "SolverError",
    "TiedLayerBalance",
    "activation_cv",
    "activation_entropy",
    "balance_deficit",
    "balance_units",
    "balance_weights",
    "compile_network",
    "diagnose",
    "favourable_scales",
    "forward",
    "group_imbalance",
    "imbalance",
    "load_balance",
    "lp_cost",
    "manifold",
    "methods",
    "optimal_scale",
    "scale_units",
    "scale_weights",
    "solve",
    "tie_layers",
    "tied_layer_scales",
    "unit_imbalance",
    "workload",
]
