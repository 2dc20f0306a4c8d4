"""The solver interface: a method is an object with an options dataclass, ``supports`` and ``solve``.

Every method is registered in :data:`REGISTRY` under its name. :func:`balgraph.solve` validates
the common arguments once (:class:`Run`), builds the method's options from the keywords it was
given (an unknown keyword is refused by name, with the list of the method's options), asks
``supports(problem, regularizer)`` (a reason string when it cannot, ``None`` when it can), then
calls ``solve`` and judges the answer by an independent evaluation (:mod:`balgraph.evaluate`):
``converged`` never comes from the solver's own claim.

Iterative loops report through one :class:`Monitor`: the history (one row per iteration or
sweep), scipy's callback protocol (``callback(intermediate_result)``; raising ``StopIteration``
stops the run) and a progress bar.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import OptimizeResult

from ..errors import OptionError
from ..model import Problem
from ..progress import progress
from ..regularizers import Regularizer

__all__ = ["Method", "NoOptions", "Run", "SolverOutput", "Monitor", "REGISTRY", "register", "get_method",
           "methods"]


@dataclass
class SolverOutput:
    """What a method hands back: potentials ``u`` per variable (host) and how it got there.

    ``status`` is ``"done"`` (the method met its own tolerance), ``"max_iter"``, ``"stalled"``,
    ``"callback"`` (the callback stopped it) or ``"budget"`` (a default budget ran out).
    """

    u: np.ndarray
    iterations: int
    message: str = ""
    history: dict | None = None
    info: dict[str, Any] = field(default_factory=dict)
    status: str = "done"


@dataclass(frozen=True)
class Run:
    """The common, validated arguments of a solve."""

    tol: float = 1e-10
    max_iter: int | None = None
    seed: int | None = None
    callback: Callable | None = None
    device: str | None = None
    progress: bool | None = False


@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own."""


class Method(abc.ABC):
    """A balancing method (see the module docstring)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def supports(self, problem: Problem, reg: Regularizer) -> str | None:
        """``None`` when the method can solve ``problem`` with ``reg``, else the reason it cannot."""
        return None

    def accuracy(self, options) -> float:
        """The imbalance below which the method cannot certify an answer (0: any ``tol``)."""
        return 0.0

    @abc.abstractmethod
    def solve(self, problem: Problem, reg: Regularizer, run: Run, options) -> SolverOutput:
        """Balance ``problem`` (every free unit has a finite optimum) for ``reg``."""

    def options(self, **given):
        """The method's options from keywords; unknown names are refused, naming the valid ones."""
        names = [f.name for f in dataclasses.fields(self.Options)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            valid = ", ".join(names) if names else "none"
            raise OptionError(f"method {self.name!r} has no option {', '.join(map(repr, unknown))};"
                              f" its options are: {valid} (see balgraph.methods())")
        return self.Options(**given)


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry under ``method.name``."""
    REGISTRY[method.name] = method
    return method


def get_method(name) -> Method:
    """The registered method ``name``, else an :class:`OptionError` listing them."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise OptionError(f"unknown method {name!r}: choose one of {', '.join(sorted(REGISTRY))}") from None


def methods() -> dict[str, dict]:
    """Every registered method: its summary and its options with their defaults.

    Examples
    --------
    >>> import balgraph
    >>> sorted(balgraph.methods()["newton"]["options"])[:3]
    ['cg_maxiter', 'coarse', 'dense_max']
    """
    out = {}
    for name, m in sorted(REGISTRY.items()):
        opts = {f.name: (f.default if f.default is not dataclasses.MISSING else None)
                for f in dataclasses.fields(m.Options)}
        out[name] = {"summary": m.summary, "options": opts}
    return out


class Monitor:
    """History rows, the scipy-style callback and the progress bar of one iterative run.

    ``record(k, log_cost, worst, passes, potentials)`` appends a row and returns True when the
    callback asked to stop; ``potentials`` is a function giving the host potentials, called
    only when a callback needs them.
    """

    COLUMNS = ("iteration", "log_cost", "max_imbalance", "time", "passes")

    def __init__(self, run: Run, *, unit: str = "it", total: int | None = None, desc: str = "balgraph"):
        self.run, self.start = run, time.perf_counter()
        self.history: dict[str, list] = {c: [] for c in self.COLUMNS}
        self.bar = progress(total, desc=desc, unit=unit, enabled=run.progress)
        self.stopped = False

    def record(self, k: int, log_cost: float, worst: float, passes: float, potentials: Callable | None = None) -> bool:
        h = self.history
        for key, value in zip(self.COLUMNS, (int(k), float(log_cost), float(worst),
                                             time.perf_counter() - self.start, float(passes))):
            h[key].append(value)
        if k:
            self.bar.update()
            self.bar.set_postfix(imbalance=f"{worst:.2e}")
        if self.run.callback is not None and potentials is not None:
            with np.errstate(over="ignore"):
                fun = float(np.exp(log_cost))
            state = OptimizeResult(x=potentials(), fun=fun, nit=int(k), log_cost=float(log_cost),
                                   max_imbalance=float(worst))
            try:
                self.run.callback(state)
            except StopIteration:
                self.stopped = True
        return self.stopped

    def close(self) -> None:
        self.bar.close()
