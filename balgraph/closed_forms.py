"""Closed-form balanced states: tied-layer balancing of a chain (Appendix B, Theorem 12.2).

In a chain ``x_k = f(A_k x_{k-1})`` of BiLU layers (no biases), tying every hidden layer to one
scale ``Λ_k`` (``Λ_0 = Λ_N = 1``) turns ``A_k`` into ``M_k A_k`` with ``M_k = Λ_k / Λ_{k-1}``, and
the admissible multipliers are exactly those with ``∏_k M_k = 1``. The L_p cost is
``Σ_k M_k^p ‖A_k‖_p^p`` (entrywise norm), and its Lagrangian (eq. 12.3 for ``p = 2``) gives
``p M_k^p ‖A_k‖_p^p = μ`` for every ``k``: every layer ends with the same norm, and

    M_k = (∏_j ‖A_j‖_p)^{1/N} / ‖A_k‖_p,       ‖M_k A_k‖_p = (∏_j ‖A_j‖_p)^{1/N}.

(Eq. 12.7 as printed reads ``M_i = ∏‖A_j‖^{2/N} / ‖A_i‖²``: that is ``M_i²``; eq. 12.5
``μ = 2 M_i² ‖A_i‖²`` gives the square root above.) The answer does not depend on ``p``
beyond the norms. Biases break this product form: a bias edge into layer ``k`` is scaled by
``Λ_k`` alone, not by a product of the ``M``, so a chain with biases has no such closed form
(solve it with :func:`balgraph.solve` and one ``tie`` per layer instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import NetworkError
from .model.build import checked_chain
from .regularizers import Lp

__all__ = ["TiedLayerBalance", "tied_layer_scales"]


@dataclass(frozen=True)
class TiedLayerBalance:
    """The tied-layer balanced state of a chain (Theorem 12.2).

    Attributes
    ----------
    multipliers : ndarray, shape (N,)
        ``M_k = Λ_k / Λ_{k-1}``, with ``∏ M_k = 1``.
    layer_scales : ndarray, shape (N - 1,)
        ``Λ_k = M_1 ⋯ M_k`` of the hidden layers ``k = 1..N-1``.
    matrices : list of ndarray
        The balanced matrices ``M_k A_k`` (new arrays).
    norm : float
        The common entrywise L_p norm ``‖M_k A_k‖_p = (∏_j ‖A_j‖_p)^{1/N}``.
    """

    multipliers: np.ndarray
    layer_scales: np.ndarray
    matrices: list
    norm: float


def tied_layer_scales(matrices: Sequence[np.ndarray], p: float = 2.0) -> TiedLayerBalance:
    """Balance a bias-free chain with one scale per hidden layer, in closed form (eq. 12.7).

    Parameters
    ----------
    matrices : sequence of 2-D arrays
        ``A_1, ..., A_N`` with ``A_k`` of shape ``(n_k, n_{k-1})``; not modified.
    p : float
        Exponent of the entrywise L_p cost, ``p > 0``.

    Returns
    -------
    TiedLayerBalance

    Raises
    ------
    NetworkError
        If shapes do not chain, a matrix is all zero (its layer could shrink to 0: no finite
        optimum) or holds non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> out = tied_layer_scales([np.full((1, 1), 4.0), np.full((1, 1), 1.0)], p=2)
    >>> out.multipliers.tolist(), out.norm
    ([0.5, 2.0], 2.0)
    """
    p = Lp(p).p
    mats = [np.asarray(a, dtype=np.float64) for a in checked_chain(matrices)]
    # Norms in the log domain so that weights of 1e±300 keep a finite product.
    with np.errstate(divide="ignore"):
        log_norms = np.array([_log_norm(a, p) for a in mats])
    dead = np.flatnonzero(np.isneginf(log_norms))
    if dead.size:
        raise NetworkError(
            f"matrix {int(dead[0])} is all zero: every layer after it computes 0 and the scales"
            " have no finite optimum; remove the dead layers"
        )
    log_common = float(np.mean(log_norms))
    log_m = log_common - log_norms
    return TiedLayerBalance(
        multipliers=np.exp(log_m),
        layer_scales=np.exp(np.cumsum(log_m)[:-1]),
        matrices=[a * np.exp(lm) for a, lm in zip(mats, log_m)],
        norm=float(np.exp(log_common)),
    )


def _log_norm(a: np.ndarray, p: float) -> float:
    """``log ‖a‖_p`` (entrywise), computed as ``log max + log (Σ (|a|/max)^p)^{1/p}``."""
    top = float(np.max(np.abs(a), initial=0.0))
    if top == 0.0:
        return -np.inf
    return np.log(top) + np.log(np.sum((np.abs(a) / top) ** p)) / p
