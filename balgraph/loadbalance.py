"""Load balancing: how equally the hidden units of a layer are used.

Shen, Wang & Navlakha (Neural Computation 33(12), 2021) argue that normalization in deep learning
and homeostatic plasticity in the brain both push hidden units toward *load balancing*: every unit
of a layer about equally active. Two measures of it from the mean activations ``ā_i`` of the
``n`` units of a layer:

* the coefficient of variation ``CV = std(ā) / mean(ā)`` (population std): 0 when every unit is
  equally used, ``sqrt(n − 1)`` when a single unit carries the whole layer;
* the normalized entropy of the shares ``p_i = ā_i / Σ_j ā_j``:
  ``H(p) / log n = −Σ_i p_i log p_i / log n`` (``0 log 0 = 0``): 1 for equal use, 0 for one unit.

They are not balance in the sense of the paper this package implements: a balanced unit has equal
incoming and outgoing weight cost (eq. 5.8) and balancing keeps the network function, while load
balance compares the *activity* of units. Use both as training monitors; for PyTorch models,
:func:`balgraph.torch.load_balance_report` collects the mean activations of every hidden layer.

Examples
--------
>>> import numpy as np
>>> from balgraph.loadbalance import load_balance
>>> lb = load_balance(np.array([[1.0, 0.0], [1.0, 2.0]]))  # samples x units: both means are 1
>>> float(lb.cv), float(lb.entropy)
(0.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NetworkError, name_some

__all__ = ["LoadBalance", "activation_cv", "activation_entropy", "load_balance", "mean_activations"]


def mean_activations(activations) -> np.ndarray:
    """Mean activation per unit: the column means of ``samples × units``, or a 1-D array as is.

    Parameters
    ----------
    activations : array_like
        Either a 2-D array of activations (one row per sample, one column per unit) or a 1-D array
        of mean activations. Convolutional feature maps: average each channel over its positions
        first (one unit per channel).

    Returns
    -------
    ndarray
        ``ā`` (float64, one entry per unit, non-negative and finite).

    Raises
    ------
    NetworkError
        If the array is not 1-D or 2-D, has no unit, holds NaN or infinity, or a unit's mean
        activation is negative (the shares ``ā_i / Σ ā`` need a non-negative usage: pass
        ``|activations|`` for signed units).

    Examples
    --------
    >>> mean_activations([[0.0, 2.0], [1.0, 4.0]]).tolist()
    [0.5, 3.0]
    """
    a = np.asarray(activations, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise NetworkError(
            f"activations must be samples x units (2-D) or mean activations (1-D), got shape {a.shape}:"
            " average convolutional channels over their positions first"
        )
    if a.shape[-1] == 0 or (a.ndim == 2 and a.shape[0] == 0):
        raise NetworkError(f"activations of shape {a.shape} hold no unit or no sample")
    if not np.all(np.isfinite(a)):
        raise NetworkError("activations must be finite numbers (found NaN or infinity)")
    mean = a.mean(axis=0) if a.ndim == 2 else a.copy()
    negative = np.flatnonzero(mean < 0)
    if negative.size:
        raise NetworkError(
            f"units {name_some(negative.tolist())} have a negative mean activation: load balance"
            " measures shares of non-negative usage, pass |activations| (or ReLU-like outputs)"
        )
    return mean


def activation_cv(activations) -> float:
    """Coefficient of variation ``std(ā) / mean(ā)`` of the units' mean activations.

    ``0`` when all units are used equally (also when all are silent), ``sqrt(n − 1)`` when one of
    ``n`` units carries all the activity.

    Parameters
    ----------
    activations : array_like
        ``samples × units`` activations or 1-D mean activations (see :func:`mean_activations`).

    Examples
    --------
    >>> activation_cv([1.0, 1.0, 1.0]), round(activation_cv([0.0, 0.0, 0.0, 5.0]), 12)
    (0.0, 1.732050807569)
    """
    mean = mean_activations(activations)
    top = float(mean.max())
    if top == 0.0:
        return 0.0
    # CV is scale-free: dividing by the largest mean keeps tiny (subnormal) activities from underflowing
    mean = mean / top
    return float(mean.std() / mean.mean())


def activation_entropy(activations) -> float:
    """Normalized entropy ``H(p) / log n`` of the activity shares ``p_i = ā_i / Σ_j ā_j``.

    ``1`` for equal use (by convention also for ``n = 1`` and for a layer whose units are all
    silent, where every share is the same), ``0`` when one unit carries all the activity.

    Parameters
    ----------
    activations : array_like
        ``samples × units`` activations or 1-D mean activations (see :func:`mean_activations`).

    Examples
    --------
    >>> activation_entropy([2.0, 2.0]), activation_entropy([0.0, 3.0])
    (1.0, 0.0)
    """
    mean = mean_activations(activations)
    n = mean.size
    total = float(mean.sum())
    if n == 1 or total == 0.0:
        return 1.0
    p = mean / total
    pos = p > 0
    h = -float(np.sum(p[pos] * np.log(p[pos])))
    # + 0.0 turns the -0.0 of a single active unit into 0.0
    return float(min(max(h / np.log(n), 0.0), 1.0)) + 0.0


@dataclass(frozen=True)
class LoadBalance:
    """Load balance of one layer.

    Attributes
    ----------
    mean : ndarray
        Mean activation per unit.
    cv : float
        Coefficient of variation of ``mean`` (:func:`activation_cv`).
    entropy : float
        Normalized entropy of the shares (:func:`activation_entropy`).
    silent : int
        Units whose mean activation is exactly 0 (dead ReLU units on these samples).
    """

    mean: np.ndarray
    cv: float
    entropy: float
    silent: int

    @property
    def n_units(self) -> int:
        return int(self.mean.size)


def load_balance(activations) -> LoadBalance:
    """CV, normalized entropy and silent units of a layer's mean activations.

    Parameters
    ----------
    activations : array_like
        ``samples × units`` activations or 1-D mean activations (see :func:`mean_activations`).

    Examples
    --------
    >>> lb = load_balance([0.0, 1.0, 1.0])
    >>> lb.silent, round(lb.entropy, 6), round(lb.cv, 6)
    (1, 0.63093, 0.707107)
    """
    mean = mean_activations(activations)
    return LoadBalance(mean=mean, cv=activation_cv(mean), entropy=activation_entropy(mean),
                       silent=int(np.count_nonzero(mean == 0.0)))
