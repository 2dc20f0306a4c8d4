"""The exception hierarchy of balgraph.

Every error balgraph raises on purpose derives from :class:`BalgraphError`, and each one is
also a subclass of the matching builtin (``ValueError``, ``TypeError``, ``RuntimeError``) so
that generic handlers keep working. Messages name the node, edge, array or option at fault and
say what to do.

- :class:`NetworkError`: the network, its weights or its attributes are not valid input.
- :class:`OptionError`: an argument of a function (``p``, ``tol``, ``method``, a method's
  option, ``device``, ...) is not valid.
- :class:`NoFiniteOptimumError`: some free units have no finite balanced scale.
- :class:`SolverError`: a solver could not run.
- :class:`ConvergenceWarning`: a solver stopped short of its tolerance (``converged=False``).
- :class:`RangeWarning`: the balanced state leaves float64's range (``converged=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BalgraphError",
    "NetworkError",
    "OptionError",
    "NoFiniteOptimumError",
    "SolverError",
    "RangeExceeded",
    "ConvergenceWarning",
    "RangeWarning",
    "name_some",
]


class BalgraphError(Exception):
    """Base class of every error raised by balgraph."""


class NetworkError(BalgraphError, ValueError):
    """The network, its weights or its node and edge attributes are not valid input.

    Raised for complex, non-numeric, NaN or infinite weights, an unknown ``role``, a ``degree``
    that is not positive, a tie group that mixes units of different kinds, arrays whose lengths
    do not match the network, or a graph that is not a ``networkx.DiGraph``.
    """


class OptionError(BalgraphError, ValueError, TypeError):
    """An argument or a method option is not valid (wrong type, out of range, unknown name).

    A subclass of both ``ValueError`` and ``TypeError``: ``tol="1e-3"`` is a wrong type,
    ``tol=-1`` a wrong value, and either handler catches both.
    """


class NoFiniteOptimumError(BalgraphError, ValueError):
    """Some free units have no finite balanced scale.

    A free unit has a finite optimum only if, using non-zero edges, it lies in the strongly
    connected component of the merged fixed node (docs/design.md §1). A unit that reaches no
    output, or that no input reaches, can have its dangling weights driven to 0 without changing
    the network function, so the infimum of the cost is not attained.

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


class RangeExceeded(BalgraphError, ArithmeticError):
    """Costs or scales left what a cost model's float64 mat-vecs can hold.

    Raised inside the solvers and handled there: the solver continues on a cost model that
    works edge by edge in the log domain (:mod:`balgraph.costs`). Users see it only as
    ``result.info["fallback"]``.
    """


class ConvergenceWarning(UserWarning):
    """A solver stopped before reaching its tolerance; the result says ``converged=False``."""


class RangeWarning(ConvergenceWarning):
    """The balanced scales or weights leave float64's range (overflow, or a nonzero weight that
    would become 0): the result says ``converged=False`` and keeps the exact potentials."""


def name_some(labels: Sequence, limit: int = 10) -> str:
    """Return ``"a, b, c (and 7 more)"`` naming at most ``limit`` labels."""
    labels = list(labels)
    shown = ", ".join(repr(x) for x in labels[:limit])
    if len(labels) > limit:
        shown += f" (and {len(labels) - limit} more)"
    return shown
