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

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..api import imbalance, solve
from ..errors import NetworkError
from ..model import Problem
from ..errors import OptionError
from ..regularizers import MaxNorm, Regularizer, as_regularizer
from ..result import BalanceResult
from ._apply import apply_checked, optimizer_writes
from ._network import TorchNetwork
from ._report import announce
from ._trace import FixedUnitsWarning, UnsupportedOpWarning

__all__ = ["to_problem", "to_graph", "balance_", "BalanceEvery", "imbalance_report", "ImbalanceReport"]


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not p > 0:
        raise NetworkError(f"p must be a number > 0 (or float('inf')), got {p!r}")
    return float(p)


def _regularizer(p: float, regularizer: Regularizer | None, range: str | None,  # noqa: A002
                 biases: str | None) -> Regularizer:
    """``regularizer=``, or ``p`` with CLE's ``range=`` / ``biases=`` (p = ∞ only; as in CLE,
    biases stay out of the ranges unless ``biases="include"``)."""
    if range is None and biases is None:
        return as_regularizer(p, regularizer)
    if regularizer is not None or not math.isinf(p):
        raise OptionError("range= and biases= choose how p=inf measures a channel (MaxNorm): pass"
                          " p=float('inf') and no regularizer")
    return MaxNorm(range or "absmax", biases=biases or "exclude")


def _channel_range(reg: Regularizer) -> str:
    return reg.range if isinstance(reg, MaxNorm) else "absmax"


def _announce(network: TorchNetwork) -> None:
    r = network.report
    announce(r, UnsupportedOpWarning if (r.unsupported or r.train_bn) else FixedUnitsWarning, 4)


def to_problem(model: torch.nn.Module, example_inputs, p: float = 2.0) -> tuple[Problem, TorchNetwork]:
    """Trace ``model`` into a balancing :class:`~balgraph.Problem` and the map back to its parameters.

    One unit per channel of every parametrized op: Linear neurons, Conv and BatchNorm channels,
    the affine channels of LayerNorm/RMSNorm/GroupNorm, layer-scale channels, attention value
    channels (``nn.MultiheadAttention``, or projections around
    ``F.scaled_dot_product_attention`` / a softmax-weighted ``matmul``), embedding channels.
    A Conv edge (in channel -> out channel) carries the kernel slice's p-norm, so that
    ``|weight|^p`` is the slice's exact L_p cost: the problem depends on ``p``. Biases are edges
    from a bias unit; residual additions tie the units they add (Section 8.2); BatchNorm in eval
    mode is an affine layer ``γ/σ`` with bias ``β − γμ/σ``; ReLU, LeakyReLU, PReLU, pooling,
    reshapes, permutes, splits, concatenation and scalar multiples carry units through; a
    product with a value no rescaling changes (a sigmoid gate, attention weights) passes the
    other factor's units. Any other op keeps the units it touches at scale 1: one summary line
    (``network.report``) counts them by reason, and a warning is issued only for unknown ops,
    BatchNorm in training mode and dead ends. The model's inputs and outputs are fixed.

    Parameters
    ----------
    model : torch.nn.Module
        A model that ``torch.fx.symbolic_trace`` can trace.
    example_inputs : Tensor or tuple of Tensor
        Inputs used to propagate shapes (any batch size).
    p : float
        The exponent of the L_p cost (``float("inf")``: edges carry the max over kernel slices).

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
    p = _check_p(p)
    network = TorchNetwork.trace(model, example_inputs)
    pb = network.problem(p)
    _announce(network)
    return pb, network


def to_graph(model: torch.nn.Module, example_inputs, p: float = 2.0):
    """The model as a networkx DiGraph of units (for small models; see :func:`to_problem`)."""
    return TorchNetwork.trace(model, example_inputs).to_graph(_check_p(p))


def balance_(
    model: torch.nn.Module,
    p: float = 2.0,
    example_inputs=None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    network: TorchNetwork | None = None,
    unreachable: str = "fix",
    regularizer: Regularizer | None = None,
    range: str | None = None,  # noqa: A002 - CLE's name
    biases: str | None = None,
    **solve_options,
) -> BalanceResult:
    """Balance ``model``'s parameters in place (Theorem 9.1); its function is unchanged.

    Solves ``min_Λ Σ |θ'|^p`` over the rescalings of the model's units (see :func:`to_problem`)
    with :func:`balgraph.solve` and writes ``θ' = F ∘ θ`` back, one broadcast multiply per
    tensor, after checking that every new value is finite and in range (else nothing is
    written). With ``optimizer``, its gradient statistics are rescaled consistently (module
    docstring): SGD momentum and Adam's ``exp_avg`` by ``1/F``, ``exp_avg_sq`` by ``1/F²``.

    Parameters
    ----------
    model : torch.nn.Module
        BatchNorm layers should be in eval mode (``model.eval()``); in training mode the
        channels feeding them keep scale 1 (with a warning).
    p : float
        The exponent of the L_p cost; ``float("inf")`` max-balances (cross-layer equalization).
    example_inputs : Tensor or tuple of Tensor
        Inputs for tracing (not needed when ``network`` is given).
    optimizer : torch.optim.Optimizer, optional
        Its state is rescaled along with the parameters.
    network : TorchNetwork, optional
        A structure traced before (by :func:`to_problem`), to skip tracing.
    unreachable : {"fix", "raise"}
        ``"fix"`` (default) keeps units without a finite balanced scale (dead ends, e.g. behind
        a zero-initialised BatchNorm) at scale 1 and counts them in the summary; ``"raise"``
        raises :class:`~balgraph.NoFiniteOptimumError` naming them.
    regularizer : Regularizer, optional
        Another cost (:class:`balgraph.ElasticNet`, :class:`balgraph.MaxNorm`, ...).
    range, biases : str, optional
        Cross-layer equalization (CLE) at ``p = ∞``: shorthand for
        ``regularizer=MaxNorm(range, biases=biases)``, channels measured by ``max |w|``
        (``"absmax"``, default; AIMET, Brevitas) or ``max w − min w`` (``"minmax"``; torch.ao),
        biases rescaled but left out of the ranges (``"exclude"``, default here, as in CLE) or
        counted (``"include"``, the default of plain ``p=inf``: the limit of eq. 5.8). Fold
        BatchNorm first (:func:`fold_batchnorm`), as DFQ does.
    **solve_options
        Passed to :func:`balgraph.solve` (``method``, ``tol``, ``max_iter``, ...).

    Returns
    -------
    BalanceResult
        Its ``max_imbalance`` covers exactly the units balanced (dead ends excluded), like
        :func:`imbalance_report` right after; ``info["units"]`` is the :class:`UnitReport`.

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> res = bt.balance_(net, 2.0, torch.zeros(1, 3))
    >>> res.cost_after <= res.cost_before, res.info["units"].n_free
    (True, 4)
    """
    p = _check_p(p)
    if unreachable not in ("fix", "raise"):
        raise NetworkError(
            f"balance_ supports unreachable='fix' or 'raise', not {unreachable!r}: pruning would"
            " zero weights the model keeps; prune them yourself, then balance"
        )
    if network is None:
        if example_inputs is None:
            raise NetworkError("balance_ needs example_inputs to trace the model (or a network=)")
        network = TorchNetwork.trace(model, example_inputs)
    reg = _regularizer(p, regularizer, range, biases)
    problem = network.problem(p, unreachable, range=_channel_range(reg))
    _announce(network)
    result = solve(problem, regularizer=reg, unreachable=unreachable, **solve_options)
    factors = network.factors(result.scale_array)
    optimizer_writes(optimizer, factors)  # refuse unknown optimizer state before any change
    apply_checked(factors, optimizer)
    result.info["units"] = network.report
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
        self.network = TorchNetwork.trace(model, example_inputs)
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
    ``units`` is the network's :class:`UnitReport` (which units are free, what fixed the others).
    """

    p: float
    layers: list = field(default_factory=list)
    unit_imbalance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    units: object = None

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
                     network: TorchNetwork | None = None, regularizer: Regularizer | None = None,
                     range: str | None = None, biases: str | None = None) -> ImbalanceReport:  # noqa: A002
    """Per-layer deficit (eq. 8.1) and per-unit relative imbalance (eq. 5.8) of ``model``.

    The units are those :func:`balance_` balances: free by structure and not dead ends at the
    current weights, so ``balance_(...).max_imbalance`` and this report's ``max_imbalance``
    agree. At ``p = ∞`` the imbalance is ``(size_in − size_out)/(size_in + size_out)`` of the
    channels as ``range``/``biases`` measure them (see :func:`balance_`); the per-layer costs
    are then the largest ``|w|``.

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> [d["name"] for d in bt.imbalance_report(net, 2.0, torch.zeros(1, 3)).layers]
    ['0']
    """
    p = _check_p(p)
    if network is None:
        network = TorchNetwork.trace(model, example_inputs)
    reg = _regularizer(p, regularizer, range, biases)
    pb = network.problem(p, range=_channel_range(reg))
    n = pb.n_nodes
    free = ~pb.fixed
    r = imbalance(pb, reg, np.zeros(pb.n_vars))
    if math.isinf(p):
        cost = np.abs(pb.weight)
        in_cost, out_cost = np.zeros(n), np.zeros(n)
        np.maximum.at(in_cost, pb.dst, cost)
        np.maximum.at(out_cost, pb.src, cost)
    else:
        cost = np.abs(pb.weight) ** p
        in_cost = np.bincount(pb.dst, weights=cost, minlength=n)
        out_cost = np.bincount(pb.src, weights=cost, minlength=n)
    layers = []
    for lm in network.layers:
        units = np.unique(lm.out_units[free[lm.out_units]])
        if not units.size or lm.kind == "bias":
            continue
        agg = np.max if math.isinf(p) else np.sum
        a, b = float(agg(in_cost[units])), float(agg(out_cost[units]))
        layers.append(dict(name=lm.name, units=int(units.size), in_cost=a, out_cost=b,
                           deficit=a - b, relative=(a - b) / (a + b) if a + b > 0 else 0.0))
    return ImbalanceReport(p=p, layers=layers, unit_imbalance=np.asarray(r), units=network.report)
