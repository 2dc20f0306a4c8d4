"""The cvxpy cross-checks: the paper's convex program solved by a generic conic solver.

Two formulations of the same minimum (Theorem 9.1):

- ``"cvxpy"``: the paper's own form (eq. 9.6 on the manifold of Prop. 9.4). One variable ``L_e``
  per edge, ``min Σ_e a_e exp(p L_e)`` subject to ``C L = 0`` with ``C`` from
  :func:`balgraph.manifold.manifold`, written with exponential cones and solved by Clarabel
  (SCS when Clarabel fails or is missing). ``Λ`` is recovered from ``L`` by propagation from
  the ground along the spanning tree (proof of Prop. 9.4).
- ``"cvxpy_dgp"``: the geometric program in the scales themselves (eq. 9.5), one positive
  variable ``Λ_k`` per free variable, ``min Σ_e a_e Λ_i^p Λ_j^{-p c_j}`` (a posynomial),
  solved in cvxpy's DGP mode.

Both accept any regularizer that is a sum of powers ``Σ_k b_k |w|^{p_k}``: :class:`balgraph.Lp`,
:class:`balgraph.PowerSum`, or any object whose ``terms`` maps ``p_k`` to ``b_k`` (or lists
``(p_k, b_k)`` pairs) with ``b_k`` a number or one coefficient per edge. Costs are normalized
by their largest term, and ``log a_e`` stays inside the exponential, so weights spanning many
orders of magnitude do not overflow.

Accuracy. An interior-point solver resolves the optimal ``L`` to about the square root of its
duality gap, and a unit's relative imbalance to that divided by the unit's share of the total
cost. With Clarabel's gap tolerance at 1e-12 (measured on 60 small random networks, p from 0.5
to 3): median imbalance 2e-10, worst 3e-7; costs agree with Newton's to 1e-14 and weights to
4e-8 (norm-relative). A unit carrying a tiny share of the cost can stay further off, more so
in the DGP form (seen: 4e-5 imbalance where the L form reached 1e-7). At such
tight tolerances Clarabel often ends "almost solved" (cvxpy's ``"optimal_inaccurate"``) with a
better answer than "solved" at its defaults. So the solver's status (``info["status"]``)
only decides whether there is an answer at all; the run counts as *converged* when the
independently measured max relative imbalance is at most ``max(tol, accept)`` (``accept=1e-6``
by default). The achieved imbalance is in the message and in ``info["max_imbalance"]``.

These methods are cross-checks for small graphs: above ``max_edges`` (20 000 edges) they refuse
to run and point to ``method="newton"``. (W1, 0.36 M edges, with ``max_edges=None``: 47 s and
39 Clarabel iterations on 2 shared cores, against 0.8 s for Newton.)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import check_count, positive_number
from ..errors import OptionError, SolverError
from ..evaluate import imbalance
from ..model import Problem
from ..regularizers import MaxNorm, Regularizer
from .base import Method, Run, SolverOutput, register

__all__ = ["power_terms", "CvxOptions", "CvxpyL", "CvxpyDGP"]

INSTALL_HINT = 'pip install "balgraph[cvx]"'
MAX_EDGES = 20_000
_ITER_OPTION = {"CLARABEL": "max_iter", "SCS": "max_iters"}
_DEFAULTS: dict[str, dict[str, Any]] = {
    # The optimal L is only resolved to about sqrt(duality gap), and a unit's relative
    # imbalance to that divided by its share of the cost: ask for the tightest gap that
    # Clarabel still reaches; tighter ones end "almost solved" with nothing gained.
    "CLARABEL": {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9},
}
# The L form's KKT system needs less static regularization than Clarabel's 1e-8 to resolve L
# (measured on 60 random nets: worst weight error vs Newton 2e-6 -> 3e-8); the DGP form gets
# worse with it (up to 1e-4 imbalance), so it keeps the default.
_L_FORM = {"CLARABEL": {"static_regularization_constant": 1e-12}}


def _cvxpy():
    try:
        import cvxpy
    except ImportError as exc:
        raise ImportError(f"the cvxpy methods need cvxpy and Clarabel: {INSTALL_HINT}") from exc
    return cvxpy


def power_terms(problem: Problem, reg: Regularizer) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """The cost as ``Σ_k Σ_e exp(log_a_ke + p_k t_e)`` over edges ``e`` with a positive term.

    Returns ``(p_k, edges, log_a)`` per power, with ``log a_ke = log b_ke + p_k log|w_e|``
    shifted so that the largest is 0 (the minimizer does not change).

    Examples
    --------
    >>> import balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> [(p, e.tolist(), a.round(4).tolist()) for p, e, a in power_terms(pb, balgraph.Lp(2))]
    [(2.0, [0, 1], [0.0, -2.7726])]
    """
    terms = getattr(reg, "terms", None)
    if isinstance(terms, Mapping):
        raw = list(terms.items())
    elif terms is not None:
        raw = list(terms)
    else:
        raise OptionError(
            f"the cvxpy methods solve sums of powers Σ b_k |w|^p_k only, not {reg!r}: use"
            " balgraph.Lp or balgraph.PowerSum, or method='newton'"
        )
    m = problem.n_edges
    out = []
    for p, coef in raw:
        if not isinstance(coef, (int, float, np.ndarray)):
            raise OptionError(
                f"the coefficient of |w|^{p} is {coef!r}: resolve it to numbers per edge first"
                " (balgraph.solve does this for a networkx network)"
            )
        coef = np.broadcast_to(np.asarray(coef, dtype=np.float64), (m,))
        if not (np.isfinite(p) and p > 0) or np.any(~np.isfinite(coef) | (coef < 0)):
            raise OptionError(f"power term ({p!r}, ...) needs p > 0 and finite coefficients >= 0")
        with np.errstate(divide="ignore"):
            log_a = np.log(coef) + p * problem.log_abs_weight
        edges = np.flatnonzero(np.isfinite(log_a))
        if edges.size:
            out.append((float(p), edges, log_a[edges]))
    top = max((t[2].max() for t in out), default=0.0)
    return [(p, e, a - top) for p, e, a in out]


def _check_size(problem: Problem, max_edges: int | None):
    if max_edges is not None and problem.n_edges > max_edges:
        raise SolverError(
            f"the network has {problem.n_edges} edges; the cvxpy methods are cross-checks for"
            f" small graphs (max_edges={max_edges}). Use method='newton', or pass"
            " max_edges=None to run cvxpy anyway (slow, memory hungry)."
        )


def _run(cp, prob, solver: str | None, max_iter: int | None, options: dict, gp: bool = False,
         extra: dict | None = None) -> str:
    """Solve with ``solver``, or Clarabel then SCS; return the name of the solver that ran."""
    names = [solver.upper()] if solver else ["CLARABEL", "SCS"]
    failures = []
    for name in names:
        if name not in cp.installed_solvers():
            failures.append(f"{name} is not installed")
            continue
        opts = {**_DEFAULTS.get(name, {}), **(extra or {}).get(name, {}), **options}
        if max_iter is not None and name in _ITER_OPTION:
            opts[_ITER_OPTION[name]] = int(max_iter)
        try:
            with warnings.catch_warnings():
                # "optimal_inaccurate" is judged by the measured imbalance instead (module doc).
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                prob.solve(solver=name, gp=gp, **opts)
        except cp.error.SolverError as exc:
            failures.append(f"{name} failed: {exc}")
            continue
        if prob.status in ("optimal", "optimal_inaccurate"):
            return name
        failures.append(f"{name} ended with status {prob.status!r}")
    raise SolverError(
        "cvxpy could not solve the balancing problem (" + "; ".join(failures) + ")."
        f" Install Clarabel ({INSTALL_HINT}) or use method='newton'."
    )


def _output(problem, reg, u, prob, name, tol, accept, extra) -> SolverOutput:
    r = imbalance(problem, reg, u)
    worst = float(np.max(np.abs(r), initial=0.0))
    status = prob.status
    converged = worst <= max(tol, accept)
    stats = prob.solver_stats
    iters = int(stats.num_iters or 0) if stats is not None else 0
    message = (
        f"{name} status {status!r} after {iters} iterations; max relative imbalance {worst:.3g}"
    )
    if converged and worst > tol:
        message += f" (tol={tol:g} is below {name}'s accuracy; accepted up to accept={accept:g})"
    info = {"status": status, "solver": name, "max_imbalance": worst,
            "solve_time": getattr(stats, "solve_time", None), **extra}
    return SolverOutput(u=u, iterations=iters, message=message, info=info, status="done" if converged else "max_iter")


@dataclass(frozen=True)
class CvxOptions:
    """Options of the cvxpy methods.

    Attributes
    ----------
    solver : str, optional
        A cvxpy solver name; default Clarabel, then SCS if Clarabel fails or is missing.
    max_edges : int or None
        Refuse larger networks (``None``: no limit).
    accept : float
        Largest relative imbalance still reported as converged when ``tol`` is tighter than the
        solver's accuracy (an interior point resolves about 1e-7).
    solver_options : dict
        Passed to ``cvxpy.Problem.solve`` (e.g. Clarabel's ``tol_feas``).
    """

    solver: str | None = None
    max_edges: int | None = MAX_EDGES
    accept: float = 1e-6
    solver_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.solver is not None and not isinstance(self.solver, str):
            raise OptionError(f"solver must be a cvxpy solver name (a str), got {self.solver!r}")
        check_count(self.max_edges, "max_edges", minimum=1)
        positive_number(self.accept, "accept")
        if not isinstance(self.solver_options, dict):
            raise OptionError(f"solver_options must be a dict of cvxpy solve() keywords, got {self.solver_options!r}")


class _Cvx(Method):
    Options = CvxOptions

    def supports(self, problem: Problem, reg: Regularizer) -> str | None:
        if isinstance(reg, MaxNorm):
            return "p=inf is max-balancing: use method='max_balance'"
        if problem.share is not None:
            return "shared weights are not part of the cvxpy programs: use method='newton'"
        return None

    def accuracy(self, options: CvxOptions) -> float:
        return options.accept


class CvxpyL(_Cvx):
    """The paper's program on the manifold: ``min Σ_e a_e e^{p L_e}`` s.t. ``C L = 0``.

    Eq. 9.6 over the self-consistent ``L`` of Prop. 9.4, with ``a_e = |w_e|^p`` (normalized by the
    largest) and one exponential cone per non-zero edge; ``Λ`` is recovered from ``L`` by
    propagation from the ground along the spanning tree (proof of Prop. 9.4).

    Examples
    --------
    >>> import networkx as nx, balgraph
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> res = balgraph.solve(g, p=2, method="cvxpy", tol=1e-8)
    >>> round(res.weights[("x", "h")], 6), res.converged, res.info["solver"]
    (2.0, True, 'CLARABEL')
    """

    name = "cvxpy"
    summary = "the paper's exponential-cone program on the manifold C L = 0 (small graphs, a cross-check)"

    def solve(self, problem: Problem, reg: Regularizer, run: Run, opts: CvxOptions) -> SolverOutput:
        cp = _cvxpy()
        _check_size(problem, opts.max_edges)
        from ..manifold import manifold

        M = manifold(problem)
        terms = power_terms(problem, reg)
        L = cp.Variable(problem.n_edges)
        objective = sum(cp.sum(cp.exp(log_a + p * L[edges])) for p, edges, log_a in terms)
        constraints = [M.constraints @ L == 0] if M.n_constraints else []
        prob = cp.Problem(cp.Minimize(objective), constraints)
        best = None
        # Neither static regularization wins everywhere (1e-12 on most random nets, Clarabel's own
        # 1e-8 on the small W1): keep the answer whose measured imbalance is smaller.
        for extra in (_L_FORM, {}):
            name = _run(cp, prob, opts.solver, run.max_iter, opts.solver_options, extra=extra)
            L_opt = np.asarray(L.value, dtype=np.float64)
            u = M.potential_map @ L_opt
            residual = float(np.max(np.abs(M.residual(L_opt)), initial=0.0))
            out = _output(problem, reg, u, prob, name, run.tol, opts.accept,
                          {"constraint_residual": residual, "n_constraints": M.n_constraints})
            if best is None or out.info["max_imbalance"] < best.info["max_imbalance"]:
                best = out
            if best.info["max_imbalance"] <= run.tol or name != "CLARABEL":
                break
        return best


class CvxpyDGP(_Cvx):
    """The geometric program ``min_Λ Σ_e a_e Λ_i^p Λ_j^{-p c_j}`` in cvxpy's DGP mode (eq. 9.5).

    One positive variable per free variable and one for the merged fixed units, pinned to 1; the
    objective is a posynomial, so ``problem.solve(gp=True)`` turns it into a convex program in
    ``log Λ``. Terms whose normalized coefficient underflows below 1e-308 are left out.

    Examples
    --------
    >>> import networkx as nx, balgraph
    >>> g = nx.DiGraph([("x", "h", {"weight": 4.0}), ("h", "y", {"weight": 1.0})])
    >>> res = balgraph.solve(g, p=2, method="cvxpy_dgp", tol=1e-8)
    >>> round(res.scales["h"], 6)
    0.5
    """

    name = "cvxpy_dgp"
    summary = "the geometric program in the scales, cvxpy's DGP mode (small graphs, a cross-check)"

    def solve(self, problem: Problem, reg: Regularizer, run: Run, opts: CvxOptions) -> SolverOutput:
        cp = _cvxpy()
        _check_size(problem, opts.max_edges)
        nv = problem.n_vars
        node = np.where(problem.fixed, nv, problem.var)
        lam = cp.Variable(nv + 1, pos=True)
        parts = []
        for p, edges, log_a in power_terms(problem, reg):
            coef = np.exp(log_a)
            keep = coef > 0
            edges, coef = edges[keep], coef[keep]
            c_src = problem.degree[problem.src[edges]]
            # cvxpy's power takes one exponent per call: group edges by the degree of their source.
            for c in np.unique(c_src):
                sel = c_src == c
                i, j = node[problem.dst[edges[sel]]], node[problem.src[edges[sel]]]
                parts.append(cp.sum(cp.multiply(
                    coef[sel], cp.multiply(cp.power(lam[i], p), cp.power(lam[j], -p * float(c))))))
        prob = cp.Problem(cp.Minimize(sum(parts)), [lam[nv] == 1.0])
        name = _run(cp, prob, opts.solver, run.max_iter, opts.solver_options, gp=True)
        u = np.log(np.asarray(lam.value, dtype=np.float64)[:nv])
        return _output(problem, reg, u, prob, name, run.tol, opts.accept, {})


register(CvxpyL())
register(CvxpyDGP())
