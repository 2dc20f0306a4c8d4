"""Weight regularizers, written as functions of the log-scale of each edge.

Scaling moves edge ``e`` to ``w_e · exp(t_e)`` with ``t = G u``. A regularizer gives each edge a
cost ``φ_e(t_e) = g_e(|w_e| e^{t_e})`` and balgraph needs ``φ``, ``φ'`` and ``φ''`` in ``t``, in the
log domain so that weights spanning 1e-300..1e300 neither overflow nor underflow. For
``L_p`` (eq. 9.6), ``φ_e(t) = |w_e|^p e^{p t}``: ``log φ = p log|w| + p t``,
``log φ' = log p + log φ``, ``log φ'' = 2 log p + log φ``. ``p = ∞`` is max-balancing
(:class:`MaxNorm`), which no ``φ`` describes.
"""

from __future__ import annotations

import abc

import numpy as np

from .checks import check_choice, check_p, positive_number
from .errors import NetworkError, OptionError
from .kernels import logsumexp

__all__ = ["Regularizer", "Lp", "PowerSum", "ElasticNet", "MaxNorm", "as_regularizer"]


class Regularizer(abc.ABC):
    """Interface: an additive weight cost, convex in the log-scale of each edge.

    ``R = Σ_e g_e(|w_e|)`` is convex in the log-scales exactly when every ``x g_e'(x)`` is
    non-decreasing (Theorem 5.6's setting); the sums of powers below always are.
    """

    def coefficient_specs(self) -> dict:
        """``{key: spec}`` of coefficients given as edge attributes, mappings or callables: the
        compile step reads them into ``problem.edge_data[key]`` (:meth:`bind` then uses them)."""
        return {}

    def bind(self, edge_data) -> Regularizer:
        """A copy whose coefficient specs are replaced by the per-edge arrays in ``edge_data``."""
        return self

    def active(self, m: int) -> np.ndarray:
        """Edges whose cost is not identically zero (zero coefficients play no role)."""
        return np.ones(m, dtype=bool)

    def all_active(self) -> bool:
        """Whether every edge carries cost (no zero coefficient), without a per-edge array."""
        return True

    def power(self) -> float | None:
        """``p`` when every edge costs ``b_e |w_e|^p`` (one power, any coefficients), else None."""
        return None

    def uniform_coefficient(self) -> float | None:
        """The coefficient ``b`` when the cost is ``b Σ |w|^p`` (one power, one coefficient), else None."""
        return None

    def restrict(self, rows: np.ndarray) -> Regularizer:
        """The regularizer of the edges ``rows`` (per-edge coefficients are sliced)."""
        return self

    @abc.abstractmethod
    def edge_terms(self, log_abs_w: np.ndarray, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(log φ, log φ', log φ'')`` per edge at log-scales ``t``."""

    def log_cost(self, log_abs_w: np.ndarray, t=0.0) -> float:
        """``log Σ_e φ_e(t_e)`` (``-inf`` when every weight is zero)."""
        return logsumexp(self.edge_terms(log_abs_w, np.broadcast_to(t, log_abs_w.shape))[0])


def _check_coefficient(value, what: str):
    if isinstance(value, (str, dict)) or callable(value):
        return value
    if value is None:
        raise OptionError(f"{what} is None: give a number >= 0, a per-edge array, or an edge attribute name")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptionError(f"{what} must be a number >= 0 or a per-edge array, got {value!r}") from None
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise OptionError(f"{what} must be finite and >= 0: a negative coefficient makes the cost"
                          " non-convex in log-scale (x·g'(x) must be non-decreasing, Theorem 5.6)")
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
        edges has no finite optimum (:func:`balgraph.diagnose` reports it).

    Examples
    --------
    >>> reg = PowerSum({1: 0.5, 2: 1.0})
    >>> round(float(np.exp(reg.log_cost(np.log(np.array([2.0]))))), 12)
    5.0
    """

    def __init__(self, terms: dict):
        if not isinstance(terms, dict) or not terms:
            raise OptionError("PowerSum needs a dict of at least one term {p: coefficient}")
        self.terms = {positive_number(p, "p"): _check_coefficient(b, f"the coefficient of |w|^{p}")
                      for p, b in terms.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.terms!r})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    __hash__ = None

    def _rebuild(self, terms: dict) -> PowerSum:
        return PowerSum(terms)

    def coefficient_specs(self) -> dict:
        return {p: b for p, b in self.terms.items() if not isinstance(b, (float, np.ndarray))}

    def bind(self, edge_data) -> PowerSum:
        specs = self.coefficient_specs()
        if not specs:
            return self
        missing = [p for p in specs if p not in edge_data]
        if missing:
            raise OptionError(f"the coefficients of |w|^{missing[0]:g} are {specs[missing[0]]!r}: edge-attribute,"
                              " mapping or callable coefficients need a networkx network (pass per-edge arrays"
                              " in the compiled edge order for a Problem)")
        for p, spec in specs.items():
            if np.any(np.asarray(edge_data[p]) < 0):
                raise NetworkError(f"the coefficients of |w|^{p:g} read from {spec!r} must be >= 0: a negative"
                                   " coefficient makes the cost non-convex in log-scale (Theorem 5.6)")
        return self._rebuild({p: edge_data[p] if p in specs else b for p, b in self.terms.items()})

    def power(self) -> float | None:
        return next(iter(self.terms)) if len(self.terms) == 1 else None

    def uniform_coefficient(self) -> float | None:
        if len(self.terms) != 1:
            return None
        b = next(iter(self.terms.values()))
        return b if isinstance(b, float) else None

    def restrict(self, rows: np.ndarray) -> PowerSum:
        if not any(isinstance(b, np.ndarray) and b.ndim for b in self.terms.values()):
            return self
        return self._rebuild({p: b[rows] if isinstance(b, np.ndarray) and b.ndim else b for p, b in self.terms.items()})

    def _log_coefficients(self) -> list:
        out = []
        for p, b in self.terms.items():
            if not isinstance(b, (float, np.ndarray)):
                raise OptionError(f"the coefficient of |w|^{p:g} is {b!r}: bind it to the network first"
                                  " (balgraph.solve does this for a networkx network)")
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

    def all_active(self) -> bool:
        return all(isinstance(b, float) and b > 0 for b in self.terms.values())

    def active(self, m: int) -> np.ndarray:
        out = np.zeros(m, dtype=bool)
        for b in self.terms.values():
            if isinstance(b, np.ndarray) and b.ndim and b.size != m:
                raise NetworkError(f"per-edge coefficients hold {b.size} values for {m} edges: give one per edge")
            out |= np.broadcast_to(np.asarray(b) > 0, (m,))
        return out


class Lp(PowerSum):
    """The ``L_p`` cost ``R(W) = Σ_e b_e |w_e|^p`` for any ``p > 0`` (Theorem 5.6, eq. 9.6).

    ``coefficient`` is 1 by default, or per edge as in :class:`PowerSum`.

    Examples
    --------
    >>> round(float(np.exp(Lp(2).log_cost(np.log(np.array([3.0, 4.0]))))), 12)
    25.0
    """

    def __init__(self, p: float = 2.0, coefficient=1.0):
        self.p = positive_number(p, "p")
        self.coefficient = _check_coefficient(coefficient, "the Lp coefficient")
        super().__init__({self.p: self.coefficient})

    def __repr__(self) -> str:
        if isinstance(self.coefficient, float) and self.coefficient == 1.0:
            return f"Lp({self.p:g})"
        return f"Lp({self.p:g}, coefficient={self.coefficient!r})"

    def _rebuild(self, terms: dict) -> Lp:
        return Lp(self.p, terms[self.p])


def ElasticNet(l1: float = 1.0, l2: float = 1.0) -> PowerSum:  # noqa: N802
    """``l1 Σ|w| + l2 Σ w²``, i.e. ``PowerSum({1: l1, 2: l2})`` (coefficients as in PowerSum)."""
    return PowerSum({1.0: l1, 2.0: l2})


class MaxNorm(Regularizer):
    """``p = ∞``: max-balancing, the fixed point of cross-layer equalization.

    Balance means that every free unit's incoming and outgoing channels have the same size
    (the ``p → ∞`` limit of eq. 5.8 for ``range="absmax"``); :mod:`balgraph.solvers.maxnorm`
    solves it.

    Parameters
    ----------
    range : {"absmax", "minmax"}
        How a channel is measured: ``max |w|`` (the ``p → ∞`` limit; AIMET's and Brevitas' CLE)
        or ``max w − min w`` (torch.ao's ``_equalize``). Scaling a unit by ``λ`` multiplies
        either size of its incoming channel by ``λ`` and of its outgoing one by ``1/λ``.
    biases : {"include", "exclude"}
        Whether bias edges count in a channel's size. They are rescaled either way; CLE
        excludes them (biases are kept at a higher precision when quantized).

    Examples
    --------
    >>> MaxNorm("minmax", biases="exclude")
    MaxNorm(range='minmax', biases='exclude')
    """

    p = float("inf")

    def __init__(self, range: str = "absmax", biases: str = "include"):  # noqa: A002 - CLE's name
        self.range = check_choice(range, "range", ("absmax", "minmax"))
        self.biases = check_choice(biases, "biases", ("include", "exclude"))

    def __repr__(self) -> str:
        if self.range == "absmax" and self.biases == "include":
            return "MaxNorm()"
        return f"MaxNorm(range={self.range!r}, biases={self.biases!r})"

    def edge_terms(self, log_abs_w, t):
        raise OptionError("p=inf (max-balancing) has no per-edge cost terms: use method='max_balance'")

    def log_cost(self, log_abs_w: np.ndarray, t=0.0) -> float:
        """``log max_e |w_e e^{t_e}|``: the largest weight, which the absmax balance minimizes."""
        v = log_abs_w + t
        return float(np.max(v, initial=-np.inf))


def as_regularizer(p=2.0, regularizer: Regularizer | None = None) -> Regularizer:
    """Resolve the ``p=`` / ``regularizer=`` arguments of the public functions (``p=inf``: :class:`MaxNorm`)."""
    if regularizer is not None:
        if not isinstance(regularizer, Regularizer):
            raise OptionError(f"regularizer must be a balgraph.Regularizer such as balgraph.Lp(2), not {regularizer!r}")
        return regularizer
    p = check_p(2.0 if p is None else p)
    return MaxNorm() if p == np.inf else Lp(p)
