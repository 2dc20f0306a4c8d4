"""Weight regularizers, written as functions of the log-scale of each edge.

Scaling moves edge ``e`` to ``w_e · exp(t_e)`` with ``t = G u``. A regularizer gives each edge a
cost ``φ_e(t_e) = g_e(|w_e| e^{t_e})`` and balgraph needs ``φ``, ``φ'`` and ``φ''`` in ``t``, in the
log domain so that weights spanning 1e-300..1e300 neither overflow nor underflow. For
``L_p`` (eq. 9.6), ``φ_e(t) = |w_e|^p e^{p t}``: ``log φ = p log|w| + p t``,
``log φ' = log p + log φ``, ``log φ'' = 2 log p + log φ``.
"""

from __future__ import annotations

import abc

import numpy as np

from .errors import NetworkError, positive_number

__all__ = ["Regularizer", "Lp", "PowerSum", "ElasticNet", "as_regularizer"]


class Regularizer(abc.ABC):
    """Interface: an additive weight cost, convex in the log-scale of each edge.

    ``R = Σ_e g_e(|w_e|)`` is convex in the log-scales exactly when every ``x g_e'(x)`` is
    non-decreasing (Theorem 5.6's setting); the sums of powers below always are.
    """

    def coefficient_specs(self) -> dict:
        """Per-edge coefficient specs still to be resolved against a network (see ``bind``)."""
        return {}

    def bind(self, arrays: dict) -> "Regularizer":
        """Return a copy whose coefficient specs are replaced by per-edge arrays."""
        return self

    def active(self, m: int) -> np.ndarray:
        """Edges whose cost is not identically zero (zero coefficients play no role)."""
        return np.ones(m, dtype=bool)

    @abc.abstractmethod
    def edge_terms(
        self, log_abs_w: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(log φ, log φ', log φ'')`` per edge at log-scales ``t``."""

    def log_cost(self, log_abs_w: np.ndarray, t: np.ndarray | float = 0.0) -> float:
        """``log Σ_e φ_e(t_e)`` (``-inf`` when every weight is zero)."""
        from ._logsum import logsumexp

        return logsumexp(self.edge_terms(log_abs_w, np.broadcast_to(t, log_abs_w.shape))[0])


def _check_coefficient(value, what: str):
    if isinstance(value, (str, dict)) or callable(value) or value is None:
        return value
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise NetworkError(
            f"{what} must be finite and >= 0: a negative coefficient makes the cost"
            " non-convex in log-scale (x·g'(x) must be non-decreasing, Theorem 5.6)"
        )
    return arr if arr.ndim else float(arr)


class PowerSum(Regularizer):
    """A sum of powers ``R(W) = Σ_e Σ_k b_{k,e} |w_e|^{p_k}`` (Section 5, Remark 5.8).

    In log-scale each edge costs ``φ_e(t) = Σ_k b_{k,e} |w_e|^{p_k} e^{p_k t}``: a sum of
    exponentials, so the balancing problem stays a strictly convex geometric program.

    Parameters
    ----------
    terms : mapping
        ``{p_k: b_k}`` with ``p_k > 0``. Each ``b_k`` is a number ``>= 0``, a per-edge array in the
        compiled edge order, or, for a networkx network, an edge-attribute name, a mapping
        ``{(j, i): b}`` or a callable ``(j, i, data) -> b`` (networkx's ``weight=`` convention).
        A zero coefficient on every term of an edge (no decay on biases, say) removes the edge
        from the cost: it no longer helps pin its units' scales, and a unit pinned only by such
        edges has no finite optimum (balgraph.structure reports it).

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> reg = balgraph.PowerSum({1: 0.5, 2: 1.0})
    >>> round(float(np.exp(reg.log_cost(np.log(np.array([2.0]))))), 12)
    5.0
    """

    def __init__(self, terms: dict):
        if not terms:
            raise NetworkError("PowerSum needs at least one term {p: coefficient}")
        self.terms = {
            _checked_p(p): _check_coefficient(b, f"the coefficient of |w|^{p}")
            for p, b in dict(terms).items()
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.terms!r})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def coefficient_specs(self) -> dict:
        return {p: b for p, b in self.terms.items() if not isinstance(b, (float, np.ndarray))}

    def bind(self, arrays: dict) -> "PowerSum":
        return PowerSum({p: arrays.get(p, b) for p, b in self.terms.items()})

    def _log_coefficients(self) -> list:
        out = []
        for p, b in self.terms.items():
            if not isinstance(b, (float, np.ndarray)):
                raise NetworkError(
                    f"the coefficient of |w|^{p} is {b!r}: edge-attribute or mapping coefficients"
                    " need a networkx network (pass arrays for a Problem)"
                )
            with np.errstate(divide="ignore"):
                out.append((p, np.log(b)))
        return out

    def edge_terms(self, log_abs_w, t):
        base = log_abs_w + t
        parts = self._log_coefficients()
        if len(parts) == 1:
            p, lb = parts[0]
            log_phi = lb + p * base
            return log_phi, log_phi + np.log(p), log_phi + 2.0 * np.log(p)
        terms = np.stack([np.broadcast_to(lb + p * base, base.shape) for p, lb in parts])
        log_p = np.log([p for p, _ in parts])[:, None]
        return tuple(np.logaddexp.reduce(terms + k * log_p, axis=0) for k in range(3))

    def active(self, m: int) -> np.ndarray:
        out = np.zeros(m, dtype=bool)
        for b in self.terms.values():
            out |= np.broadcast_to(np.asarray(b) > 0, (m,))
        return out


class Lp(PowerSum):
    """The ``L_p`` cost ``R(W) = Σ_e b_e |w_e|^p`` for any ``p > 0`` (Theorem 5.6, eq. 9.6).

    ``coefficient`` is 1 by default, or per edge as in :class:`PowerSum`.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> round(float(np.exp(balgraph.Lp(2).log_cost(np.log(np.array([3.0, 4.0]))))), 12)
    25.0
    """

    def __init__(self, p: float = 2.0, coefficient=1.0):
        self.p = _checked_p(p)
        self.coefficient = coefficient
        super().__init__({self.p: coefficient})

    def __repr__(self) -> str:
        if isinstance(self.coefficient, (int, float)) and self.coefficient == 1.0:
            return f"Lp({self.p:g})"
        return f"Lp({self.p:g}, coefficient={self.coefficient!r})"

    def bind(self, arrays: dict) -> "Lp":
        return Lp(self.p, arrays.get(self.p, self.terms[self.p]))


def ElasticNet(l1: float = 1.0, l2: float = 1.0) -> "PowerSum":  # noqa: N802
    """``l1 Σ|w| + l2 Σ w²``, i.e. ``PowerSum({1: l1, 2: l2})`` (coefficients as in PowerSum)."""
    return PowerSum({1.0: l1, 2.0: l2})


def _checked_p(p) -> float:
    return positive_number(p, "p")


def as_regularizer(p: float | None = 2.0, regularizer: Regularizer | None = None) -> Regularizer:
    """Resolve the ``p=`` / ``regularizer=`` arguments of the public functions."""
    if regularizer is not None:
        if not isinstance(regularizer, Regularizer):
            raise NetworkError(
                f"regularizer must be a balgraph.Regularizer such as balgraph.Lp(2), not {regularizer!r}"
            )
        return regularizer
    return Lp(2.0 if p is None else p)
