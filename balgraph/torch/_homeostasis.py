"""Synaptic-scaling-style homeostasis for PyTorch models, and load-balance monitors.

Homeostatic synaptic scaling (Turrigiano et al., Nature 391, 1998; van Rossum, Bi & Turrigiano,
J. Neurosci. 20, 2000) multiplies all the excitatory synapses onto a neuron by a common factor
that moves its average activity toward a set point. Shen, Wang & Navlakha (Neural Computation
33(12), 2021) relate such rules to normalization in deep learning through *load balancing*
(every unit of a layer about equally used, :mod:`balgraph.loadbalance`). :class:`SynapticScaling`
is the standard multiplicative form of that rule; it is *synaptic-scaling-style*, not that
paper's exact algorithm (of which only the abstract was available).

Contrast with balancing (:func:`balgraph.torch.balance_`): balancing scales a unit's incoming
weights by ``λ`` *and* its outgoing weights by ``1/λ`` (eq. 5.1), so the network function is
unchanged and the unit's incoming and outgoing costs become equal (eq. 5.8). Synaptic scaling
scales only the incoming weights, to equalize activity: it changes the function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..errors import NetworkError
from ..loadbalance import load_balance

__all__ = ["HiddenLayer", "SynapticScaling", "hidden_layers", "layer_mean_activations", "load_balance_report"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus, nn.Sigmoid)
# Positively homogeneous activations: scaling a unit's incoming weights and bias by f scales its
# output by f exactly, which SynapticScaling relies on to keep its running mean current.
_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.PReLU)
# Per-unit modules that may sit between a weighted layer and its activation when only measuring.
_BETWEEN = (nn.Dropout, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class HiddenLayer:
    """A weighted module and the activation module whose outputs are its units' activity.

    ``name`` is the weighted module's name in the model. Units are the output features of a
    Linear (last dimension) or the output channels of a Conv (dimension 1).
    """

    name: str
    module: nn.Module
    activation: nn.Module

    @property
    def unit_dim(self) -> int:
        return -1 if isinstance(self.module, nn.Linear) else 1


def hidden_layers(model: nn.Module, *, between: tuple = _BETWEEN) -> list[HiddenLayer]:
    """The hidden layers of ``model``: in every ``nn.Sequential``, a Linear or Conv whose next
    module (after any of ``between``) is an activation module (ReLU, LeakyReLU, ...).

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> [h.name for h in hidden_layers(net)]
    ['0']
    """
    names = {id(m): n for n, m in model.named_modules()}
    found = []
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq)  # children() would drop a module used twice
        for k, mod in enumerate(children):
            if not isinstance(mod, _WEIGHTED):
                continue
            j = k + 1
            while j < len(children) and isinstance(children[j], between):
                j += 1
            if j < len(children) and isinstance(children[j], _ACTIVATIONS):
                found.append(HiddenLayer(names[id(mod)], mod, children[j]))
    shared = {id(h.activation) for h in found}
    if len(shared) < len(found):
        dup = [h.name for h in found if sum(g.activation is h.activation for g in found) > 1]
        raise NetworkError(
            f"layers {dup} share one activation module, so its outputs cannot be told apart:"
            " give each layer its own nn.ReLU() instance"
        )
    return found


def _batch_mean(out: torch.Tensor, unit_dim: int) -> torch.Tensor:
    out = out.detach().to(torch.float64)
    dims = [d for d in range(out.ndim) if d != unit_dim % out.ndim]
    return out.mean(dim=dims) if dims else out


def layer_mean_activations(model: nn.Module, inputs, layers: list[HiddenLayer] | None = None) -> dict:
    """Mean activation of every hidden unit on one batch: ``{layer name: ndarray}``.

    Runs ``model(inputs)`` once without gradients, in the model's current mode (put it in
    ``eval()`` mode first if BatchNorm running statistics must not move), and averages each
    activation module's output over the batch (and over positions, per conv channel).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> means = layer_mean_activations(net, torch.randn(8, 3))
    >>> list(means), means["0"].shape
    (['0'], (4,))
    """
    layers = hidden_layers(model) if layers is None else layers
    result, handles = {}, []
    for h in layers:
        def hook(_mod, _inp, out, h=h):
            result[h.name] = _batch_mean(out, h.unit_dim).cpu().numpy()
        handles.append(h.activation.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return result


def load_balance_report(model: nn.Module, inputs, layers: list[HiddenLayer] | None = None) -> dict:
    """:class:`~balgraph.loadbalance.LoadBalance` (CV, normalized entropy) of every hidden layer.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> 0.0 <= load_balance_report(net, torch.randn(8, 3))["0"].entropy <= 1.0
    True
    """
    means = layer_mean_activations(model, inputs, layers)
    return {name: load_balance(m) for name, m in means.items()}


class SynapticScaling:
    """Homeostatic synaptic scaling of hidden units: call :meth:`step` after ``optimizer.step()``.

    Each hidden unit ``i`` keeps a running mean activation, an exponential moving average over
    training batches (the first batch initializes it)::

        ā_i ← m ā_i + (1 − m) mean_batch(a_i)

    and :meth:`step` multiplies its incoming weights and bias (a row of a Linear weight, an output
    channel of a Conv kernel) by ``f_i = (a* / ā_i)^γ``, with ``a*`` a fixed target or the mean of
    ``ā`` over the layer.

    Two details keep the rule stable on ReLU units. (1) The activation is positively homogeneous,
    so the scaled unit's activity is exactly ``f_i`` times what it was: the running mean is
    multiplied by ``f_i`` too (as :func:`~balgraph.torch.balance_` carries optimizer state along),
    and with a fixed input ``log ā_i`` then moves to ``log a*`` by the factor ``1 − γ`` per step,
    without the overshoot of a lagging average. (2) A unit that was silent on the last training
    batch (or has ``ā_i <= eps``) is not scaled: a positive factor cannot make a ReLU unit with a
    negative pre-activation fire, and scaling it up batch after batch would inflate its weights
    without bound while its average decays.

    **Unlike balancing** (:func:`balgraph.torch.balance_`, eq. 5.1: incoming ×λ, outgoing ÷λ),
    this changes the network function: it equalizes the units' *activity* (load balancing),
    while balancing equalizes each unit's incoming and outgoing weight *cost* (eq. 5.8) and
    keeps the function. This is the standard multiplicative rule (Turrigiano 1998; van Rossum,
    Bi & Turrigiano 2000) in the spirit of Shen, Wang & Navlakha (2021), not their exact algorithm.

    Activity is recorded by forward hooks on the activation modules, only in training mode (as
    BatchNorm's running statistics). Optimizer state is left as it is. Works on ``nn.Sequential``
    MLPs and CNNs where a Linear / Conv is directly followed by a ReLU, LeakyReLU or PReLU module
    (see :func:`hidden_layers`); a BatchNorm in between would undo the scaling and is refused.

    Parameters
    ----------
    model : torch.nn.Module
    target : "layer_mean" or float
        The set point ``a*``.
    gamma : float
        Exponent ``γ > 0``: the fraction of the log-distance to the target closed per step.
    momentum : float
        ``m`` in ``[0, 1)`` of the running mean.
    eps : float
        Units with ``ā_i <= eps`` (or silent on the last batch) are not scaled.
    layers : list of HiddenLayer, optional
        The layers to scale (default: :func:`hidden_layers` without BatchNorm in between).

    Attributes
    ----------
    running_mean : dict of str to Tensor
        ``ā`` per layer (float64), absent until the layer has seen a training batch; it follows
        the scaling.
    last_factors : dict of str to Tensor
        The factors applied by the last :meth:`step`.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> scaling = SynapticScaling(net, target="layer_mean", gamma=0.5)
    >>> _ = net(torch.randn(16, 3))
    >>> a = scaling.running_mean["0"].clone()
    >>> scaling.step()
    >>> alive = a > 0
    >>> bool(torch.allclose(scaling.last_factors["0"][alive], (a.mean() / a[alive]) ** 0.5))
    True
    """

    def __init__(self, model: nn.Module, target="layer_mean", gamma: float = 0.1, momentum: float = 0.9,
                 eps: float = 1e-8, layers: list[HiddenLayer] | None = None):
        if isinstance(target, str):
            if target != "layer_mean":
                raise NetworkError(f"target must be 'layer_mean' or a positive number, got {target!r}")
        elif not (np.isfinite(target) and target > 0):
            raise NetworkError(f"target must be 'layer_mean' or a positive number, got {target!r}")
        if not (np.isfinite(gamma) and gamma > 0):
            raise NetworkError(f"gamma must be a positive number, got {gamma!r}")
        if not 0.0 <= momentum < 1.0:
            raise NetworkError(f"momentum must lie in [0, 1), got {momentum!r}")
        if not eps >= 0.0:
            raise NetworkError(f"eps must be a non-negative number, got {eps!r}")
        self.model, self.target, self.gamma, self.momentum, self.eps = model, target, float(gamma), float(momentum), float(eps)
        if layers is None:
            layers = hidden_layers(model, between=(nn.Dropout, nn.Identity))
            direct = {h.name for h in layers}
            normalized = [h.name for h in hidden_layers(model) if h.name not in direct]
            if normalized:
                raise NetworkError(
                    f"layers {normalized} are followed by BatchNorm, which would undo their scaling:"
                    " remove the BatchNorm or pass layers= without them"
                )
        self.layers = list(layers)
        if not self.layers:
            raise NetworkError(
                "found no Linear/Conv directly followed by an activation module in an nn.Sequential:"
                " pass layers=[HiddenLayer(name, module, activation), ...]"
            )
        for h in self.layers:
            if parametrize.is_parametrized(h.module, "weight") or not isinstance(h.module, _WEIGHTED):
                raise NetworkError(
                    f"layer {h.name!r} must be a plain nn.Linear or nn.ConvNd (its weight is scaled in"
                    " place): remove its parametrization (weight_norm, ...) first"
                )
        for h in self.layers:
            if not isinstance(h.activation, _HOMOGENEOUS):
                raise NetworkError(
                    f"layer {h.name!r} is followed by {type(h.activation).__name__}: synaptic scaling here"
                    " needs a positively homogeneous activation (ReLU, LeakyReLU, PReLU)"
                )
        self.running_mean: dict[str, torch.Tensor] = {}
        self._fired: dict[str, torch.Tensor] = {}
        self.last_factors: dict[str, torch.Tensor] = {}
        self._handles = [h.activation.register_forward_hook(self._hook(h)) for h in self.layers]

    def _hook(self, h: HiddenLayer):
        def hook(mod, _inp, out):
            if not mod.training:
                return
            batch = _batch_mean(out, h.unit_dim)
            self._fired[h.name] = batch > 0
            old = self.running_mean.get(h.name)
            self.running_mean[h.name] = batch if old is None else old * self.momentum + batch * (1.0 - self.momentum)
        return hook

    @torch.no_grad()
    def step(self) -> None:
        """Scale each active hidden unit's incoming weights, bias and running mean by ``(a*/ā_i)^γ``."""
        for h in self.layers:
            a = self.running_mean.get(h.name)
            if a is None:
                continue
            target = a.mean() if self.target == "layer_mean" else a.new_tensor(float(self.target))
            alive = (a > self.eps) & self._fired[h.name]
            if not bool(target > self.eps):
                factor = torch.ones_like(a)
            else:
                factor = torch.where(alive, (target / torch.where(alive, a, target)) ** self.gamma, torch.ones_like(a))
            self.last_factors[h.name] = factor
            self.running_mean[h.name] = a * factor
            w = h.module.weight
            shape = [1] * w.ndim
            shape[0] = -1
            w.mul_(factor.to(device=w.device, dtype=w.dtype).view(shape))
            if h.module.bias is not None:
                h.module.bias.mul_(factor.to(device=w.device, dtype=w.dtype))

    def remove(self) -> None:
        """Remove the forward hooks (the model no longer records activity)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
