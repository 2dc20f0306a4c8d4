"""The exception hierarchy of balgraph.

Every error balgraph raises on purpose derives from :class:`BalgraphError`, and each one is
also a subclass of the matching builtin (``ValueError``, ``RuntimeError``) so that generic
handlers keep working. Messages name the node or edge at fault and say what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BalgraphError",
    "NetworkError",
    "NoFiniteOptimumError",
    "SolverError",
    "ConvergenceWarning",
]


class BalgraphError(Exception):
    """Base class of every error raised by balgraph."""


class NetworkError(BalgraphError, ValueError):
    """The network, its weights or its node attributes are not valid input.

    Raised for non-numeric, NaN or infinite weights, an unknown ``role``, a ``degree`` that
    is not positive, a tie group that mixes units of different kinds, a graph that is not a
    ``networkx.DiGraph``, or a ``p`` that is not positive.
    """


class NoFiniteOptimumError(BalgraphError, ValueError):
    """Some free units have no finite balanced scale.

    A free unit has a finite optimum only if, using non-zero edges, it lies in the strongly
    connected component of the merged fixed node (design.md §1). A unit that reaches no output,
    or that no input reaches, can have its dangling weights driven to 0 without changing the
    network function, so the infimum of the cost is not attained.

    Attributes
    ----------
    units : list
        Labels of the offending units (all of them, not only those named in the message).
    """

    def __init__(self, message: str, units: Sequence = ()):
        super().__init__(message)
        self.units = list(units)


class SolverError(BalgraphError, RuntimeError):
    """A solver could not run (for example an external cvxpy solver failed)."""


class ConvergenceWarning(UserWarning):
    """A solver stopped before reaching its tolerance; the result says ``converged=False``."""


def name_some(labels: Sequence, limit: int = 10) -> str:
    """Return ``"a, b, c (and 7 more)"`` naming at most ``limit`` labels."""
    labels = list(labels)
    shown = ", ".join(repr(x) for x in labels[:limit])
    if len(labels) > limit:
        shown += f" (and {len(labels) - limit} more)"
    return shown


def positive_number(value, what: str) -> float:
    """``value`` as a finite float ``> 0``, else a :class:`NetworkError` naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number > 0 and number != float("inf")):
        raise NetworkError(f"{what} must be a finite number > 0, got {value!r}")
    return number
