"""``balgraph.solve``: graph -> Problem -> structure check -> solver -> result -> labels."""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable

import networkx as nx
import numpy as np

from ._evaluate import evaluate
from ._logsum import VariableSides
from .errors import ConvergenceWarning, NetworkError
from .network import WeightSpec, compile_network
from .problem import Problem
from .regularizers import Regularizer, as_regularizer
from .result import BalanceResult, SolverOutput

__all__ = ["solve", "as_problem", "imbalance", "METHODS"]

# method name -> "module:function"; solvers are imported on first use so that optional
# dependencies (cvxpy) cost nothing until asked for.
METHODS: dict[str, str] = {
    "newton": "balgraph.newton:solve_newton",
    "stochastic": "balgraph.iterative:solve_stochastic",
    "random_sweep": "balgraph.iterative:solve_random_sweep",
    "cyclic": "balgraph.iterative:solve_cyclic",
    "parallel": "balgraph.iterative:solve_parallel",
    "alternating": "balgraph.iterative:solve_alternating",
    "cvxpy": "balgraph.cvx:solve_cvxpy",
    "cvxpy_dgp": "balgraph.cvx:solve_cvxpy_dgp",
}


def as_problem(network: nx.DiGraph | Problem, weights: WeightSpec = "weight") -> Problem:
    """Compile ``network`` unless it already is a :class:`Problem`."""
    if isinstance(network, Problem):
        return network
    return compile_network(network, weights)


def _solver(method: str) -> Callable[..., SolverOutput]:
    try:
        target = METHODS[method]
    except KeyError:
        raise NetworkError(
            f"unknown method {method!r}: choose one of {', '.join(sorted(METHODS))}"
        ) from None
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def imbalance(problem: Problem, regularizer: Regularizer, u: np.ndarray) -> np.ndarray:
    """Relative imbalance ``(P_k − N_k)/(P_k + N_k)`` of every variable at potentials ``u``.

    For an untied unit with the L_p cost this is ``(in − c·out)/(in + c·out)`` with
    ``in = Σ_IN |w|^p`` and ``out = Σ_OUT |w|^p`` (eqs. 5.8 and 6.7); 0 means balanced.
    """
    t = problem.edge_log_scale(u)
    _, log_d1, _ = regularizer.edge_terms(problem.log_abs_weight, t)
    sides = _sides(problem)
    return sides.relative_imbalance(*sides.log_sides(log_d1))


def _sides(problem: Problem) -> VariableSides:
    cached = problem.__dict__.get("_variable_sides")
    if cached is None:
        cached = VariableSides(problem.G)
        object.__setattr__(problem, "_variable_sides", cached)
    return cached


def _bind_coefficients(reg: Regularizer, network, problem: Problem) -> Regularizer:
    """Resolve edge-attribute / mapping / callable coefficients into per-edge arrays."""
    specs = reg.coefficient_specs()
    if not specs:
        return reg
    if not isinstance(network, nx.DiGraph):
        raise NetworkError(
            "regularizer coefficients given as an attribute name, mapping or callable need a"
            " networkx network; for a Problem pass per-edge arrays in the compiled edge order"
        )
    from .network import edge_values

    return reg.bind({p: edge_values(network, spec, problem) for p, spec in specs.items()})


def _sharing_setup(problem: Problem, reg: Regularizer, groups, method: str, options: dict):
    """Count each shared parameter once and hand the groups to the constrained Newton solver."""
    from .sharing import shared_regularizer, solve_shared

    if method != "newton":
        raise NetworkError(
            f"method {method!r} cannot keep shared weights equal (Section 8.3: balancing one unit"
            " moves every copy of a shared weight): use method='newton', which solves the"
            " constrained problem exactly, or pass share=None to ignore the sharing"
        )
    return shared_regularizer(problem, reg, groups), solve_shared, dict(options, share=groups)


def _max_balance(network, weights, method, tol, max_iter, unreachable, share, options):
    """``p = inf``: max-balancing (:mod:`balgraph.maxnorm`), CLE's fixed point."""
    from .maxnorm import max_balance

    if method not in ("newton", "parallel") or options:
        raise NetworkError(
            f"p=inf is solved by layer-parallel max-balancing (balgraph.max_balance) only: drop"
            f" method={method!r} and extra options {sorted(options)}"
        )
    return max_balance(network, weights, tol=tol, max_iter=max_iter, unreachable=unreachable,
                       share=share)


def solve(
    network: nx.DiGraph | Problem,
    weights: WeightSpec = "weight",
    p: float = 2.0,
    *,
    method: str = "newton",
    tol: float = 1e-10,
    max_iter: int | None = None,
    regularizer: Regularizer | None = None,
    unreachable: str = "raise",
    share: str | list | None = "share",
    seed: int | None = None,
    callback: Callable | None = None,
    **options,
) -> BalanceResult:
    """Find the balanced state: the rescaling that minimizes the weight cost (Theorem 9.1).

    Minimizes ``R(u) = Σ_e |w_e|^p exp(p (G u)_e)`` over potentials ``u = log Λ`` of the free
    units (eq. 9.6 with ``L = G u``). At the minimum every free unit is balanced,
    ``Σ_IN |w|^p = c Σ_OUT |w|^p`` (eqs. 5.8, 6.7), and the network function is unchanged.

    Parameters
    ----------
    network : networkx.DiGraph or Problem
        The network (see :mod:`balgraph.network` for the node attributes read), or an already
        compiled :class:`Problem` (e.g. from :meth:`Problem.from_layers`).
    weights : str, mapping or callable
        Edge weights, networkx's ``weight=`` convention. Ignored for a ``Problem``.
    p : float
        The exponent of the L_p cost, ``p > 0``. ``p=np.inf`` max-balances the network
        (max incoming |w| = max outgoing |w| per unit, the fixed point of cross-layer
        equalization; see :func:`balgraph.maxnorm.max_balance`).
    method : str
        ``"newton"`` (global, default), an iterative schedule (``"stochastic"``, ``"random_sweep"``,
        ``"cyclic"``, ``"parallel"``, ``"alternating"``) or ``"cvxpy"`` / ``"cvxpy_dgp"`` (small graphs).
    tol : float
        Stop when every free unit's relative imbalance ``|in − c·out|/(in + c·out)`` is ``<= tol``.
    max_iter : int, optional
        Newton iterations or sweeps; the method's default if omitted.
    regularizer : Regularizer, optional
        A cost other than L_p (overrides ``p``).
    unreachable : {"raise", "fix", "prune"}
        What to do with free units that have no finite optimum (balgraph.structure): raise
        :class:`NoFiniteOptimumError`, keep them at scale 1, or zero their weights (the infimum;
        the function is unchanged) and keep them at scale 1.
    share : str or sequence, optional
        Shared weights (Section 8.3, :mod:`balgraph.sharing`): edges with equal values of this
        edge attribute (or, for a Problem, equal labels in a per-edge sequence) are one
        parameter; they must carry equal weights, stay equal, and cost once. Solved exactly by
        ``method="newton"``; the other methods refuse. ``None`` ignores the attribute.
    seed : int, optional
        Seed of the random schedules.
    callback : callable, optional
        Called by iterative methods with ``(iteration, u)``.
    **options
        Passed on to the method.

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
    if regularizer is None and isinstance(p, (int, float)) and p == np.inf:
        return _max_balance(network, weights, method, tol, max_iter, unreachable, share, options)
    reg = as_regularizer(p, regularizer)
    if tol is None or not tol > 0:
        raise NetworkError(f"tol must be > 0, got {tol!r}")
    problem = as_problem(network, weights)
    reg = _bind_coefficients(reg, network, problem)
    from .structure import ensure_finite_optimum

    solvable = ensure_finite_optimum(problem, unreachable, active=reg.active(problem.n_edges))
    solver = _solver(method)
    from .sharing import share_groups

    groups = share_groups(network, problem, share)
    if groups is not None:
        reg, solver, options = _sharing_setup(problem, reg, groups, method, options)
    start = time.perf_counter()
    out = solver(
        solvable, reg, tol=tol, max_iter=max_iter, seed=seed, callback=callback, **options
    )
    elapsed = time.perf_counter() - start
    u = np.asarray(out.u, dtype=np.float64)
    if not np.all(np.isfinite(u)):
        raise RuntimeError(f"method {method!r} returned non-finite potentials; this is a bug")
    # Results are stated on the caller's problem: pruned edges come back as zeros.
    node_u = solvable.node_potentials(u)
    u_orig = problem.variable_potentials(node_u) if problem.n_vars else u[:0]
    report = evaluate(solvable, reg, u, reference=problem)
    max_imb = float(np.max(np.abs(report.relative_imbalance), initial=0.0))
    if not out.converged:
        warnings.warn(
            f"{method} did not reach tol={tol:g} (max relative imbalance {max_imb:.3g} after"
            f" {out.iterations} iterations): {out.message}",
            ConvergenceWarning,
            stacklevel=2,
        )
    info = dict(out.info, time=elapsed)
    return BalanceResult(
        problem=problem,
        potentials=u_orig,
        weight_array=report.weight_array,
        log_cost_before=report.log_cost_before,
        log_cost_after=report.log_cost_after,
        converged=bool(out.converged),
        iterations=int(out.iterations),
        max_imbalance=max_imb,
        method=method,
        message=out.message,
        history=out.history,
        info=info,
        graph=network if isinstance(network, nx.DiGraph) else None,
        weight_attr=weights if isinstance(weights, str) else "weight",
    )
