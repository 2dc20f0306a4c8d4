"""PyTorch adapter: balance ``torch.nn`` models in place (optional: needs torch).

``to_problem`` traces a model with torch.fx into a :class:`balgraph.Problem` (one unit per
channel of every parametrized op: Linear, Conv, BatchNorm, the affine outputs of LayerNorm /
RMSNorm / GroupNorm, attention value channels, layer scales, embeddings; residual streams are tie
groups) and a :class:`TorchNetwork` that maps units and edges back to parameter entries;
``balance_`` rescales the parameters (and an optimizer's state) in place, after checking every
new value; ``BalanceEvery`` balances during training; ``imbalance_report`` monitors balance.
``TorchNetwork.report`` (a :class:`UnitReport`) says in one line how many units are free and what
fixed the others. ``SynapticScaling`` is a homeostatic (function-changing) contrast to
balancing, and ``load_balance_report`` monitors how equally hidden units are used.
Cross-layer equalization for quantization is ``balance_(model, float("inf"), x, range="minmax")``
(or ``"absmax"``) after ``fold_batchnorm``.

Examples
--------
>>> import torch, balgraph.torch as bt
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> x = torch.randn(5, 3)
>>> before = net(x)
>>> res = bt.balance_(net, p=2.0, example_inputs=x)
>>> bool(torch.allclose(net(x), before, atol=1e-5)), res.converged
(True, True)
"""

try:
    import torch  # noqa: F401
    import torch.fx  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "balgraph.torch needs PyTorch: pip install torch==2.13.0 (CPU wheel), or"
        ' pip install "balgraph[torch]"'
    ) from exc

from ._balance import BalanceEvery, ImbalanceReport, balance_, imbalance_report, to_graph, to_problem
from ._fold import fold_batchnorm
from ._homeostasis import HiddenLayer, SynapticScaling, hidden_layers, layer_mean_activations, load_balance_report
from ._maps import LayerMap
from ._network import TorchNetwork
from ._report import UnitReport
from ._trace import FixedUnitsWarning, UnsupportedOpWarning

__all__ = [
    "BalanceEvery",
    "FixedUnitsWarning",
    "HiddenLayer",
    "ImbalanceReport",
    "LayerMap",
    "SynapticScaling",
    "TorchNetwork",
    "UnitReport",
    "UnsupportedOpWarning",
    "balance_",
    "fold_batchnorm",
    "hidden_layers",
    "imbalance_report",
    "layer_mean_activations",
    "load_balance_report",
    "to_graph",
    "to_problem",
]
