"""Weight regularizers, written as functions of the log-scale of each edge.

Scaling moves edge ``e`` to ``w_e · exp(t_e)`` with ``t = G u``. A regularizer gives each edge a
cost ``φ_e(t_e) = g_e(|w_e| e^{t_e})`` and balgraph needs ``φ``, ``φ'`` and ``φ''`` in ``t``, in the
log domain so that weights spanning 1e-300..1e300 neither overflow nor underflow. For
``L_p`` (eq. 9.6), ``φ_e(t) = |w_e|^p e^{p t}``: ``log φ = p log|w| + p t``,
``log φ' = log p + log φ``, ``log φ'' = 2 log p + log φ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NetworkError

__all__ = ["Regularizer", "Lp", "as_regularizer"]


class Regularizer:
    """Interface: an additive weight cost, convex in the log-scale of each edge."""

    def edge_terms(
        self, log_abs_w: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(log φ, log φ', log φ'')`` per edge at log-scales ``t``."""
        raise NotImplementedError

    def log_cost(self, log_abs_w: np.ndarray, t: np.ndarray | float = 0.0) -> float:
        """``log Σ_e φ_e(t_e)`` (``-inf`` when every weight is zero)."""
        from ._logsum import logsumexp

        return logsumexp(self.edge_terms(log_abs_w, np.broadcast_to(t, log_abs_w.shape))[0])


@dataclass(frozen=True)
class Lp(Regularizer):
    """The ``L_p`` cost ``R(W) = Σ |w|^p`` for any ``p > 0`` (Theorem 5.6, eq. 9.6).

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> float(np.exp(balgraph.Lp(2).log_cost(np.log(np.array([3.0, 4.0])))))
    25.0
    """

    p: float = 2.0

    def __post_init__(self):
        try:
            p = float(self.p)
        except (TypeError, ValueError):
            raise NetworkError(f"p must be a number > 0, got {self.p!r}") from None
        if not (np.isfinite(p) and p > 0):
            raise NetworkError(f"p must be a finite number > 0, got {self.p!r}")
        object.__setattr__(self, "p", p)

    def edge_terms(self, log_abs_w, t):
        log_phi = self.p * (log_abs_w + t)
        log_p = np.log(self.p)
        return log_phi, log_phi + log_p, log_phi + 2.0 * log_p


def as_regularizer(p: float | None = 2.0, regularizer: Regularizer | None = None) -> Regularizer:
    """Resolve the ``p=`` / ``regularizer=`` arguments of the public functions."""
    if regularizer is not None:
        if not isinstance(regularizer, Regularizer):
            raise NetworkError(
                f"regularizer must be a balgraph.Regularizer such as balgraph.Lp(2), not {regularizer!r}"
            )
        return regularizer
    return Lp(2.0 if p is None else p)
