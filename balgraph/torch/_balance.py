"""Balance PyTorch models in place, during training, and monitor their balance.

A rescaling by unit scales ``Λ`` maps each parameter ``θ`` to ``θ' = F ∘ θ`` (a per-entry factor,
``F = λ_out/λ_in`` on a weight, ``λ_out`` on a bias) and leaves the model's function unchanged:
``loss(θ') = loss(θ)`` along the whole orbit, so the gradients obey ``∇loss(θ') = ∇loss(θ) / F``.
Optimizer state made of gradient statistics must follow the gradients, not the parameters:
SGD's ``momentum_buffer`` and Adam's ``exp_avg`` become ``/ F``, Adam's ``exp_avg_sq`` ``/ F²``.
Then the state is exactly what the same optimizer would have accumulated along the mapped
trajectory ``F ∘ θ_t`` (every past gradient mapped by ``1/F``), and new gradients of the
balanced model mix with it consistently. (Scaling the state *like* the parameter would add
``F·m`` to ``g/F``: quantities of different scale.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..api import imbalance, solve
from ..errors import NetworkError
from ..model import Problem
from ..regularizers import Lp
from ..result import BalanceResult
from ._network import TorchNetwork
from ._trace import trace

__all__ = ["to_problem", "to_graph", "balance_", "BalanceEvery", "imbalance_report", "ImbalanceReport"]

# Exponent e of F in the rescaled state ``state · F**e``, per optimizer and state key.
_STATE_EXPONENTS = {
    "SGD": {"momentum_buffer": -1},
    "Adam": {"exp_avg": -1, "exp_avg_sq": -2, "max_exp_avg_sq": -2},
    "AdamW": {"exp_avg": -1, "exp_avg_sq": -2, "max_exp_avg_sq": -2},
    "NAdam": {"exp_avg": -1, "exp_avg_sq": -2},
    "RAdam": {"exp_avg": -1, "exp_avg_sq": -2},
    "Adamax": {"exp_avg": -1, "exp_inf": -1},
    "Adagrad": {"sum": -2},
    # RMSprop's momentum accumulates g / sqrt(v), which does not change under rescaling.
    "RMSprop": {"square_avg": -2, "grad_avg": -1, "momentum_buffer": 0},
}


def to_problem(model: torch.nn.Module, example_inputs, p: float = 2.0) -> tuple[Problem, TorchNetwork]:
    """Trace ``model`` into a balancing :class:`~balgraph.Problem` and the map back to its parameters.

    One unit per Linear output neuron and per Conv / BatchNorm output channel; a Conv edge
    (in channel -> out channel) carries the slice's p-norm, so that ``|weight|^p`` is the exact
    L_p cost of the kernel slice: the problem depends on ``p``. Biases are edges from a bias
    unit; residual additions tie the units they add (Section 8.2); BatchNorm (eval mode) is an
    affine layer ``γ/σ`` with bias ``β − γμ/σ``; ReLU, LeakyReLU, PReLU, Identity, Dropout,
    pooling, Flatten, reshapes and scalar multiples pass units through; any other op keeps the
    units it touches at scale 1 and warns (:class:`UnsupportedOpWarning`). The model's inputs
    and outputs are fixed.

    Parameters
    ----------
    model : torch.nn.Module
        A model that ``torch.fx.symbolic_trace`` can trace.
    example_inputs : Tensor or tuple of Tensor
        Inputs used to propagate shapes (any batch size).
    p : float
        The exponent of the L_p cost.

    Returns
    -------
    (Problem, TorchNetwork)

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> pb, mapping = bt.to_problem(net, torch.zeros(1, 3))
    >>> pb.n_vars, pb.n_edges
    (4, 26)
    """
    network = TorchNetwork(model, trace(model, example_inputs))
    return network.problem(p), network


def to_graph(model: torch.nn.Module, example_inputs, p: float = 2.0):
    """The model as a networkx DiGraph of units (for small models; see :func:`to_problem`)."""
    return TorchNetwork(model, trace(model, example_inputs)).to_graph(p)


def _optimizer_updates(optimizer, factors: dict) -> list:
    """Pair each optimizer state tensor with its factor; raise before anything is changed."""
    if optimizer is None:
        return []
    table = _STATE_EXPONENTS.get(type(optimizer).__name__)
    updates = []
    for param, f in factors.items():
        state = optimizer.state.get(param, {})
        for key, value in state.items():
            if not isinstance(value, torch.Tensor) or value.shape != param.shape:
                continue
            if table is None or key not in table:
                raise NetworkError(
                    f"balance_ does not know how {type(optimizer).__name__} state {key!r} transforms"
                    " under rescaling: pass optimizer=None and reset that optimizer's state, or use"
                    f" one of {', '.join(sorted(_STATE_EXPONENTS))}"
                )
            if table[key]:
                updates.append((value, np.asarray(f, dtype=np.float64) ** table[key]))
    return updates


def balance_(
    model: torch.nn.Module,
    p: float = 2.0,
    example_inputs=None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    network: TorchNetwork | None = None,
    unreachable: str = "fix",
    **solve_options,
) -> BalanceResult:
    """Balance ``model``'s parameters in place (Theorem 9.1); its function is unchanged.

    Solves ``min_Λ Σ |θ'|^p`` over the rescalings of the model's units (see :func:`to_problem`)
    with :func:`balgraph.solve` and writes ``θ' = F ∘ θ`` back, one broadcast multiply per
    tensor. With ``optimizer``, its gradient statistics are rescaled consistently (module
    docstring): SGD momentum and Adam's ``exp_avg`` by ``1/F``, ``exp_avg_sq`` by ``1/F²``.

    Parameters
    ----------
    model : torch.nn.Module
        BatchNorm layers must be in eval mode to be balanced (otherwise their inputs are fixed).
    p : float
        The exponent of the L_p cost.
    example_inputs : Tensor or tuple of Tensor
        Inputs for tracing (not needed when ``network`` is given).
    optimizer : torch.optim.Optimizer, optional
        Its state is rescaled along with the parameters.
    network : TorchNetwork, optional
        A structure traced before (by :func:`to_problem`), to skip tracing.
    unreachable : str
        Passed to :func:`balgraph.solve`; the default ``"fix"`` leaves units that reach no output
        (unused or pruned units) as they are.
    **solve_options
        Passed to :func:`balgraph.solve` (``method``, ``tol``, ``max_iter``, ...).

    Returns
    -------
    BalanceResult

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> res = bt.balance_(net, 2.0, torch.zeros(1, 3))
    >>> res.cost_after <= res.cost_before
    True
    """
    if network is None:
        if example_inputs is None:
            raise NetworkError("balance_ needs example_inputs to trace the model (or a network=)")
        network = TorchNetwork(model, trace(model, example_inputs))
    result = solve(network.problem(p), p=p, unreachable=unreachable, **solve_options)
    factors = network.factors(result.scale_array)
    updates = _optimizer_updates(optimizer, factors)
    network.apply_scales_(result.scale_array, factors)
    with torch.no_grad():
        for tensor, f in updates:
            tensor.mul_(torch.as_tensor(f, dtype=tensor.dtype, device=tensor.device))
    return result


class BalanceEvery:
    """Balance a model every ``k`` optimizer steps: call it right after ``optimizer.step()``.

    The model is traced once; each balancing reads the current parameters.

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> every = bt.BalanceEvery(net, 2, 2.0, torch.zeros(1, 3))
    >>> every() is None, every() is not None
    (True, True)
    """

    def __init__(self, model, k: int, p: float = 2.0, example_inputs=None, optimizer=None, **solve_options):
        if int(k) < 1:
            raise NetworkError(f"k must be a positive number of steps, got {k!r}")
        self.model, self.k, self.p, self.optimizer = model, int(k), p, optimizer
        self.solve_options = solve_options
        self.network = TorchNetwork(model, trace(model, example_inputs))
        self.steps = 0
        self.last: BalanceResult | None = None

    def __call__(self) -> BalanceResult | None:
        """Count a step; balance (and return the result) on every ``k``-th call, else None."""
        self.steps += 1
        if self.steps % self.k:
            return None
        self.last = balance_(self.model, self.p, optimizer=self.optimizer, network=self.network,
                             **self.solve_options)
        return self.last


@dataclass
class ImbalanceReport:
    """Balance of a model (Remark 7.2: a model still far from balance has not converged).

    ``layers`` lists per module: units, ``in_cost`` and ``out_cost`` summed over its units
    (eq. 8.1 holds when they are equal), ``deficit = in − out`` and ``relative = (in − out)/(in + out)``.
    ``unit_imbalance`` is ``(P − N)/(P + N)`` per free variable (eq. 5.8; a tie group counts once).
    """

    p: float
    layers: list = field(default_factory=list)
    unit_imbalance: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def max_imbalance(self) -> float:
        return float(np.max(np.abs(self.unit_imbalance), initial=0.0))

    @property
    def median_imbalance(self) -> float:
        return float(np.median(np.abs(self.unit_imbalance))) if self.unit_imbalance.size else 0.0

    def __str__(self) -> str:
        rows = [f"{'layer':<24} {'units':>6} {'in cost':>12} {'out cost':>12} {'relative':>9}"]
        rows += [
            f"{d['name']:<24} {d['units']:>6} {d['in_cost']:>12.5g} {d['out_cost']:>12.5g} {d['relative']:>9.3g}"
            for d in self.layers
        ]
        rows.append(f"units: max |imbalance| {self.max_imbalance:.3g}, median {self.median_imbalance:.3g}")
        return "\n".join(rows)


def imbalance_report(model: torch.nn.Module, p: float = 2.0, example_inputs=None, *,
                     network: TorchNetwork | None = None) -> ImbalanceReport:
    """Per-layer deficit (eq. 8.1) and per-unit relative imbalance (eq. 5.8) of ``model``.

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> [d["name"] for d in bt.imbalance_report(net, 2.0, torch.zeros(1, 3)).layers]
    ['0']
    """
    if network is None:
        network = TorchNetwork(model, trace(model, example_inputs))
    pb = network.problem(p)
    cost = np.abs(pb.weight) ** p
    n = pb.n_nodes
    in_cost = np.bincount(pb.dst, weights=cost, minlength=n)
    out_cost = np.bincount(pb.src, weights=cost, minlength=n)
    free = ~pb.fixed
    layers = []
    for lm in network.layers:
        units = lm.out_units[free[lm.out_units]]
        if not units.size:
            continue
        a, b = float(in_cost[units].sum()), float(out_cost[units].sum())
        layers.append(dict(name=lm.name, units=int(units.size), in_cost=a, out_cost=b,
                           deficit=a - b, relative=(a - b) / (a + b) if a + b > 0 else 0.0))
    r = imbalance(pb, Lp(p), np.zeros(pb.n_vars))
    return ImbalanceReport(p=float(p), layers=layers, unit_imbalance=r)
