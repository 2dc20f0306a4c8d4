"""``balgraph.solve``: validate once -> Problem -> structure check -> method -> independent report.

Every entry point (graphs, edge arrays, layer matrices, the PyTorch adapter, the command line)
comes through :func:`solve`: the same checks, the same solver interface
(:mod:`balgraph.solvers`), the same result (:class:`~balgraph.result.BalanceResult`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np

from .backend import check_device
from .checks import check_count, check_seed, check_tol
from .errors import ConvergenceWarning, OptionError, RangeWarning
from .evaluate import channel_mask, evaluate, imbalance
from .model import Problem, WeightSpec, as_problem, ensure_finite_optimum
from .regularizers import MaxNorm, Regularizer, as_regularizer
from .result import BalanceResult
from .solvers import REGISTRY, Run, SolverOutput, get_method, methods

__all__ = ["solve", "imbalance", "methods", "ACCEPT"]

# The independent evaluation and the solver round differently (log-sums of ~1e-13 relative):
# an answer within 0.1 % of tol counts as meeting it.
ACCEPT = 1.001

_STATUS = {"done": 0, "max_iter": 1, "budget": 1, "stalled": 2, "callback": 4}


def _pick_method(method, problem: Problem, reg: Regularizer):
    if method is None:
        method = "max_balance" if isinstance(reg, MaxNorm) else "newton"
    m = get_method(method)
    why = m.supports(problem, reg)
    if why is not None:
        able = [name for name, other in sorted(REGISTRY.items()) if other.supports(problem, reg) is None]
        raise OptionError(f"method {method!r} cannot solve this problem: {why}"
                          + (f" (methods that can: {', '.join(able)})" if able else ""))
    return m


def solve(
    network,
    weights: WeightSpec | None = None,
    p: float = 2.0,
    *,
    weight: WeightSpec | None = None,
    method: str | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    maxiter: int | None = None,
    regularizer: Regularizer | None = None,
    unreachable: str = "raise",
    share: str | None = "share",
    seed: int | None = None,
    callback: Callable | None = None,
    device: str | None = None,
    progress: bool | None = None,
    **options,
) -> BalanceResult:
    """Find the balanced state: the rescaling that minimizes the weight cost (Theorem 9.1).

    Minimizes ``R(u) = Σ_e |w_e|^p exp(p (G u)_e)`` over potentials ``u = log Λ`` of the free
    units (eq. 9.6 with ``L = G u``). At the minimum every free unit is balanced,
    ``Σ_IN |w|^p = c Σ_OUT |w|^p`` (eqs. 5.8, 6.7), and the network function is unchanged.

    Parameters
    ----------
    network : networkx.DiGraph or Problem
        The network (see :mod:`balgraph.model.network` for the attributes read), or a compiled
        :class:`Problem` (e.g. from :meth:`Problem.from_layers`).
    weights, weight : str, mapping or callable
        Edge weights, networkx's ``weight=`` convention (either keyword; default ``"weight"``).
        Ignored for a ``Problem``.
    p : float
        The exponent of the L_p cost, ``p > 0``; ``p=inf`` max-balances the network (max incoming
        |w| = max outgoing |w| per unit: cross-layer equalization's fixed point, absmax form).
    method : str, optional
        ``"newton"`` (default for finite ``p``), an iterative schedule (``"parallel"``,
        ``"alternating"``, ``"stochastic"``, ``"random_sweep"``, ``"cyclic"``), ``"max_balance"``
        (default for ``p=inf``) or ``"cvxpy"`` / ``"cvxpy_dgp"`` (small graphs). See
        :func:`balgraph.methods` for each method's options.
    tol : float
        Stop when every free unit's relative imbalance ``|in − c·out|/(in + c·out)`` is ``<= tol``.
    max_iter, maxiter : int, optional
        Newton iterations or sweeps (scipy's name ``maxiter`` is accepted too); the method's
        default if omitted.
    regularizer : Regularizer, optional
        A cost other than L_p (overrides ``p``).
    unreachable : {"raise", "fix", "prune"}
        Free units with no finite optimum (:func:`balgraph.diagnose`): raise
        :class:`NoFiniteOptimumError`, keep them at scale 1, or zero their weights (the infimum;
        the function is unchanged) and keep them at scale 1.
    share : str, optional
        The edge attribute marking shared weights (Section 8.3): edges with equal values are one
        parameter that must stay one. Solved exactly by ``method="newton"``. ``None`` ignores it.
    seed : int, optional
        Seed of the random schedules and colourings.
    callback : callable, optional
        scipy's protocol: ``callback(intermediate_result)`` after every iteration or sweep, with
        ``intermediate_result.x`` (potentials), ``.fun``, ``.nit`` and ``.max_imbalance``; raise
        ``StopIteration`` to stop.
    device : {None, "cpu", "cuda"}
        Where the cost model runs; ``None``: where the layer matrices live.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal and the run is long).
    **options
        The method's own options (:func:`balgraph.methods` lists them); unknown names are refused.

    Returns
    -------
    BalanceResult

    Examples
    --------
    >>> import networkx as nx, balgraph
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> res = balgraph.solve(g, p=2)
    >>> round(res.weights[("x", "h")], 12), round(res.weights[("h", "y")], 12)
    (2.0, 2.0)
    """
    reg = as_regularizer(p, regularizer)
    tol = check_tol(tol)
    if maxiter is not None:
        if max_iter is not None:
            raise OptionError("give max_iter or maxiter, not both")
        max_iter = maxiter
    run = Run(tol=tol, max_iter=check_count(max_iter, "max_iter"), seed=check_seed(seed),
              callback=_checked_callback(callback), device=check_device(device), progress=progress)
    if weights is not None and weight is not None:
        raise OptionError("give weights= or weight= (networkx's name), not both")
    spec = weight if weight is not None else weights if weights is not None else "weight"
    problem = as_problem(network, spec, coefficients=reg.coefficient_specs(), share=share)
    reg = reg.bind(problem.edge_data)
    m = _pick_method(method, problem, reg)
    opts = m.options(**options)
    if isinstance(reg, MaxNorm):
        active = None if reg.biases == "include" else channel_mask(problem, reg)
    else:
        active = None if reg.all_active() else reg.active(problem.n_edges)
    solvable = ensure_finite_optimum(problem, unreachable, active=active)
    start = time.perf_counter()
    if solvable.n_vars:
        out = m.solve(solvable, reg, run, opts)
    else:  # no hidden unit can be scaled: the network is its own (trivially) balanced state
        out = SolverOutput(np.zeros(0), 0, "nothing to balance: the network has no free hidden unit", None, {})
    elapsed = time.perf_counter() - start
    u = np.asarray(out.u, dtype=np.float64)
    if u.shape != (solvable.n_vars,) or not np.all(np.isfinite(u)):
        raise RuntimeError(f"method {m.name!r} returned {u.size} potentials, some non-finite; this is a bug")
    # Judged by arithmetic the solver did not do: converged comes from this report.
    report = evaluate(solvable, reg, u, reference=problem)
    max_imb = report.max_imbalance
    converged = max_imb <= max(tol, m.accuracy(opts)) * ACCEPT and report.out_of_range is None
    status, message = (0 if converged else _STATUS.get(out.status, 1)), out.message
    if report.out_of_range is not None:
        status = 3
        message = (f"the balanced state leaves float64's range: {report.out_of_range}. The potentials"
                   " (result.x, log-scales) are exact; weights formed from them are not")
        warnings.warn(message, RangeWarning, stacklevel=2)
    elif not converged:
        if out.status == "done":
            status, message = 2, (f"{out.message}, but the independent evaluation finds {max_imb:.3g} >"
                                  f" tol={tol:g}: tol may be below what float64 resolves here")
        warnings.warn(f"{m.name} did not reach tol={tol:g} (max relative imbalance {max_imb:.3g} after"
                      f" {out.iterations} iterations): {message}", ConvergenceWarning, stacklevel=2)
    elif max_imb > tol:
        message += f" (tol={tol:g} is below {m.name}'s accuracy; accepted up to {m.accuracy(opts):g})"
    info = dict(out.info, time=elapsed)
    # Stated on the problem that was solved: pruned weights are zeros there, unreachable units fixed.
    return BalanceResult(problem=solvable, potentials=u, converged=converged, status=status, message=message,
                         iterations=out.iterations, method=m.name, max_imbalance=max_imb,
                         log_cost_before=report.log_cost_before, log_cost_after=report.log_cost_after,
                         history=out.history, info=info)


def _checked_callback(callback):
    if callback is not None and not callable(callback):
        raise OptionError(f"callback must be callable (scipy's callback(intermediate_result)), got {callback!r}")
    return callback

