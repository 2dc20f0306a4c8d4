"""balgraph: the unique balanced state of a neural network.

In a network of positively homogeneous units, scaling a hidden unit's incoming weights by
``λ > 0`` and its outgoing weights by ``1/λ^c`` leaves the function unchanged. Among these
rescalings exactly one minimizes an L_p weight cost; there every hidden unit is balanced.
balgraph finds it by the paper's local balancing algorithms and by a global convex solver.
"""

from .api import imbalance, solve
from .closed_forms import TiedLayerBalance, tied_layer_scales
from .dense import LayerBalance, balance_layers
from .errors import (
    BalgraphError,
    ConvergenceWarning,
    NetworkError,
    NoFiniteOptimumError,
    SolverError,
)
from .forward import forward
from .gallery import workload
from .layers import problem_from_layers
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
from .maxnorm import max_balance
from .measures import balance_deficit, group_imbalance, lp_cost, unit_imbalance
from .network import compile_network
from .problem import Layer, Problem
from .regularizers import ElasticNet, Lp, PowerSum, Regularizer
from .result import BalanceResult
from .structure import Diagnosis, diagnose

__version__ = "0.1.0"

__all__ = [
    "BalanceResult",
    "BalgraphError",
    "ConvergenceWarning",
    "Diagnosis",
    "ElasticNet",
    "Layer",
    "LayerBalance",
    "LoadBalance",
    "Lp",
    "Manifold",
    "NetworkError",
    "NoFiniteOptimumError",
    "PowerSum",
    "Problem",
    "Regularizer",
    "SolverError",
    "TiedLayerBalance",
    "activation_cv",
    "activation_entropy",
    "balance_deficit",
    "balance_layers",
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
    "max_balance",
    "optimal_scale",
    "problem_from_layers",
    "scale_units",
    "scale_weights",
    "solve",
    "tie_layers",
    "tied_layer_scales",
    "unit_imbalance",
    "workload",
]
