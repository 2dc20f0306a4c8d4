"""The global solver: damped Newton on the potentials ``u = log Λ`` (design.md §2).

Minimizes the strictly convex ``R(u) = Σ_e φ_e((G u)_e)`` (for L_p, ``φ_e(t) = |w_e|^p e^{p t}``,
eq. 9.6 with ``L = G u``). Its gradient ``g = Gᵀ φ'`` has components ``P_k − N_k`` (incoming
cost minus ``c ×`` outgoing cost: zero gradient is every unit balanced, eqs. 5.8 and 6.7) and its
Hessian is ``Gᵀ diag(φ'') G``. Each iteration

1. evaluates ``log φ, log φ', log φ''`` per edge (``reg.edge_terms``) and the per-variable sides
   ``log P, log N``: everything in the log domain, so weights may span 1e-300..1e300;
2. stops when every variable's relative imbalance ``|P − N|/(P + N)`` is ``<= tol``;
3. solves the Newton equation in Jacobi-scaled form (:mod:`balgraph._hessian`): dense Cholesky
   for small problems, CG with a per-level coarse correction for large ones (inexact Newton:
   relative residual ``0.1·min(1, r)``);
4. backtracks on ``log R`` (Armijo). Near the optimum the decrease of ``R`` falls below its
   floating-point resolution (about ``R r²``): when the predicted relative decrease
   ``−gᵀd / R`` is below 1e-12 the step is judged by the largest imbalance instead.

Before the first iteration a few exact local balancing sweeps (eqs. 5.6, 6.6; see
:mod:`balgraph._warmup`) bring far-off scales close, where Newton converges quadratically.

For the L_p cost the sums over edges are sparse mat-vecs with ``A = |w|^p`` under diagonal
scalings (:mod:`balgraph._scaled`): a point costs two passes over the weights, a Hessian
product two, and no per-edge ``exp`` is taken after the first. Whenever a product could leave
float64 (costs spanning more than about 1e±280) the iteration uses the per-edge log-domain
sums above instead, point by point.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import _hessian as hz
from ._line import _restrict, single_power
from ._logsum import VariableSides, logsumexp
from ._scaled import ScaledOperator, ScalingForm
from ._warmup import colour_classes, variable_levels, warm_up, warm_up_scaled
from .errors import NetworkError
from .problem import Problem
from .regularizers import Lp, Regularizer
from .result import SolverOutput

__all__ = ["solve_newton"]

# Below this predicted relative decrease −gᵀd/R, R cannot resolve the step any more.
_FLAT = 1e-12
_ARMIJO = 1e-4
_MAX_BACKTRACKS = 40
_MAX_STEP = 30.0
_FAR = 8.0


class _Point:
    """Costs and sides at one ``u``: the log-domain quantities every step needs."""

    def __init__(self, G, law, reg: Regularizer, sides: VariableSides, u: np.ndarray, t=None):
        self.u = u
        self.t = G @ u if t is None else t
        self.log_phi, self.log_d1, self.log_d2 = reg.edge_terms(law, self.t)
        self.log_cost = logsumexp(self.log_phi)
        self.log_p, self.log_n = sides.log_sides(self.log_d1)
        self.r = VariableSides.relative_imbalance(self.log_p, self.log_n)
        self.worst = float(np.max(np.abs(self.r), initial=0.0))
        # The log-gap still ranks points where tanh has saturated at |r| = 1.
        gap = np.abs(self.log_p - self.log_n)
        self.gap = float(np.max(np.where(np.isnan(gap), 0.0, gap), initial=0.0))

    def gradient_over(self, log_scale: np.ndarray | float) -> np.ndarray:
        """``g_k / e^{log_scale_k} = (P_k − N_k) / e^{log_scale_k}`` without forming ``g``."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_p - log_scale) - np.exp(self.log_n - log_scale)


def solve_newton(
    problem: Problem,
    reg: Regularizer,
    *,
    tol: float = 1e-10,
    max_iter: int | None = None,
    seed: int | None = None,
    callback: Callable | None = None,
    warmup: int = 10,
    linear_solver: str = "auto",
    dense_max: int = 2000,
    cg_maxiter: int = 1000,
    coarse: bool = True,
    u0: np.ndarray | None = None,
    fast: bool | None = None,
    device: str | None = None,
) -> SolverOutput:
    """Balance by Newton's method on ``u = log Λ`` with a log-domain line search.

    Parameters
    ----------
    problem : Problem
        A problem whose free variables all have a finite optimum (balgraph.structure).
    reg : Regularizer
        Any regularizer with ``edge_terms`` (convex in the edge log-scale).
    tol : float
        Stop when ``max_k |P_k − N_k| / (P_k + N_k) <= tol`` (VariableSides semantics).
    max_iter : int, optional
        Newton iterations (default 100).
    seed : int, optional
        Unused (the method is deterministic); accepted for the common solver interface.
    callback : callable, optional
        Called as ``callback(iteration, u)`` after every Newton iteration.
    warmup : int
        Maximum exact local balancing sweeps before Newton (L_p only; 0 disables).
    linear_solver : {"auto", "dense", "cg"}
        ``"auto"``: dense Cholesky up to ``dense_max`` variables, CG beyond.
    dense_max : int
        Largest number of variables solved densely by ``"auto"``.
    cg_maxiter : int
        Maximum CG iterations per Newton step.
    coarse : bool
        Use the per-depth-level coarse correction in CG.
    u0 : ndarray, optional
        Starting potentials (default 0: the network as given).
    fast : bool, optional
        Dense layered problems (all edges in ``problem.layers``, L_p, no ties) take the
        BLAS fast path of :mod:`balgraph.dense` by default; ``False`` forces the general
        path, ``True`` insists on the fast one.
    device : str, optional
        ``"cuda"`` runs the fast path on the GPU with CuPy (implies ``fast``).

    Returns
    -------
    SolverOutput
        ``info`` holds ``newton_iterations``, ``cg_iterations``, ``backtracks``,
        ``warmup_sweeps`` and ``linear_solver``; ``history`` has per-iteration ``iteration``,
        ``cost`` (the log of ``R``), ``max_imbalance`` and ``time`` (seconds since the start).

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_arrays([0, 1], [1, 2], [4.0, 1.0])
    >>> out = solve_newton(pb, balgraph.Lp(2))
    >>> out.converged, float(np.exp(out.u[0]))  # λ* = (1/16)^(1/4), eq. 5.6
    (True, 0.5)
    """
    del seed
    if fast is not False:
        from .dense import dispatch

        out = dispatch(problem, reg, fast=fast, device=device, tol=tol, max_iter=max_iter,
                       callback=callback, warmup=warmup, cg_maxiter=cg_maxiter, coarse=coarse, u0=u0)
        if out is not None:
            return out
    start = time.perf_counter()
    max_iter = 100 if max_iter is None else int(max_iter)
    if linear_solver not in ("auto", "dense", "cg"):
        raise NetworkError(f"linear_solver must be 'auto', 'dense' or 'cg', not {linear_solver!r}")
    nv = problem.n_vars
    # Zero weights stay zero and edges between fixed units never change: neither belongs in
    # R, whose relative decrease judges the steps.
    full = problem.G.tocsr()
    nz = np.flatnonzero((problem.weight != 0) & (np.diff(full.indptr) > 0))
    G = full[nz].tocsr() if nz.size < full.shape[0] else full
    if not G.has_sorted_indices:
        G = G.copy()  # problem.G is the caller's
        G.sort_indices()
    law = problem.log_abs_weight[nz]
    # Per-edge coefficient arrays must follow the same edge subset as law.
    reg = _restrict(reg, nz)
    u = np.zeros(nv) if u0 is None else np.array(u0, dtype=np.float64).ravel()
    if u.shape != (nv,):
        raise NetworkError(f"u0 must hold one potential per free variable ({nv}), got {u.size}")
    with hz.one_blas_thread():
        return _iterate(problem, G, law, reg, u, nz, start, tol=tol, max_iter=max_iter,
                        callback=callback, warmup=warmup, linear_solver=linear_solver,
                        dense_max=dense_max, cg_maxiter=cg_maxiter, coarse=coarse)


class _Evaluator:
    """Points and Hessians: mat-vecs with the scaling-vector form of L_p costs
    (:mod:`balgraph._scaled`) where float64 allows, per-edge log-domain sums otherwise."""

    def __init__(self, problem, G, law, reg, nz):
        self.G, self.law, self.reg = G, law, reg
        p = single_power(reg)
        log_a = reg.edge_terms(law, np.zeros_like(law))[0] if p is not None else None
        self.form = ScalingForm.build(problem, nz, log_a, p) if G.shape[1] else None
        self._sides = self._structure = None

    @property
    def sides(self) -> VariableSides:
        if self._sides is None:
            self._sides = VariableSides(self.G)
        return self._sides

    def point(self, u: np.ndarray):
        pt = self.form.point(u) if self.form is not None else None
        return pt if pt is not None else _Point(self.G, self.law, self.reg, self.sides, u)

    def hessian(self, pt):
        """``(point, S)``: the scaled Hessian at ``pt`` (re-evaluated per edge if needed)."""
        if self.form is not None and not hasattr(pt, "log_l"):
            # Once per iteration, try to bring the scaled form back (a rebase at pt).
            self.form.allow_rebase = True
            pt = self.form.point(pt.u) or pt
        if self.form is not None and hasattr(pt, "log_l"):
            S = ScaledOperator.at(self.form, pt)
            if S is not None:
                return pt, S
        if not hasattr(pt, "log_d2"):
            pt = _Point(self.G, self.law, self.reg, self.sides, pt.u)
        if self._structure is None:
            self._structure = hz.structure_of(self.G)
        return pt, hz.ScaledHessian(self.G, pt.log_d2, self._structure)


def _iterate(problem, G, law, reg, u, nz, start, *, tol, max_iter, callback, warmup,
             linear_solver, dense_max, cg_maxiter, coarse) -> SolverOutput:
    """The Newton loop of :func:`solve_newton` on the non-zero edges ``nz``."""
    nv = problem.n_vars
    ev = _Evaluator(problem, G, law, reg, nz)
    info = dict(newton_iterations=0, cg_iterations=0, backtracks=0, warmup_sweeps=0)
    history: dict[str, list] = {"iteration": [], "log_cost": [], "max_imbalance": [], "time": []}

    levels, acyclic = variable_levels(problem) if nv else (np.zeros(0, np.int64), True)
    pt = ev.point(u)
    if isinstance(reg, Lp) and nv and warmup > 0:
        # Depth levels of a DAG, colour classes otherwise: independent sets either way. A
        # colouring costs one pass over the edges per colour (hundreds on W4), so graphs with
        # cycles are warmed up only when some unit is far off (in/out ratio beyond e^_FAR).
        if acyclic or pt.gap > _FAR:
            blocks = levels if acyclic else colour_classes(problem)
            done, wpt = 0, None
            if ev.form is not None:
                u, done, wpt = warm_up_scaled(ev.form, u, blocks, warmup, tol)
            if wpt is None:
                u, more = warm_up(G, law, reg.p, u, blocks, warmup - done, tol, sides=ev.sides)
                done += more
            info["warmup_sweeps"] = done
            pt = wpt if wpt is not None else ev.point(u)
    use_dense = linear_solver == "dense" or (linear_solver == "auto" and nv <= dense_max)
    info["linear_solver"] = "dense" if use_dense else "cg"
    n_levels = int(levels.max(initial=-1)) + 1
    space = hz.CoarseSpace(G, levels, n_levels) if coarse and not use_dense and n_levels < nv else None

    def record(k: int, pt) -> None:
        history["iteration"].append(k)
        history["log_cost"].append(pt.log_cost)
        history["max_imbalance"].append(pt.worst)
        history["time"].append(time.perf_counter() - start)

    record(0, pt)
    message = ""
    converged = pt.worst <= tol
    k = 0
    while not converged and k < max_iter:
        k += 1
        pt, S = ev.hessian(pt)
        h = S.half_log_d
        # γ = g / D is the relative gradient, O(r); the symmetric system's right side is −γ√D'.
        gamma = pt.gradient_over(S.log_d)
        if use_dense:
            d = hz.dense_newton_step(S, gamma)
        else:
            cc = hz.CoarseCorrection(S, space) if space is not None else None
            rtol = 0.1 * min(1.0, pt.worst)
            y, its = hz.pcg(S, -gamma * np.exp(h), rtol=rtol, maxiter=cg_maxiter, coarse=cc)
            info["cg_iterations"] += its
            d = y * np.exp(-h)
        new, backtracks, ok = _search(ev.point, pt, d, gamma)
        info["backtracks"] += backtracks
        if not ok:
            message = stalled_message(k, pt.worst)
            break
        pt = new
        record(k, pt)
        if callback is not None:
            callback(k, pt.u.copy())
        converged = pt.worst <= tol
    info["newton_iterations"] = k
    message = final_message(converged, pt.worst, tol, max_iter, message)
    return SolverOutput(pt.u, converged, k, message, history, info)


def stalled_message(k: int, worst: float) -> str:
    """Why a Newton loop stopped early when no step was acceptable."""
    return (
        f"line search found no acceptable step at Newton iteration {k} (max relative"
        f" imbalance {worst:.3g}); the tolerance may be below what float64 resolves"
    )


def final_message(converged: bool, worst: float, tol: float, max_iter: int, message: str) -> str:
    """The closing message of a Newton loop (general or dense path)."""
    if converged:
        return f"every free variable balanced to {worst:.3g} <= tol={tol:g}"
    return message or f"max_iter={max_iter} Newton iterations reached (max relative imbalance {worst:.3g})"


def _line_search(G, law, reg, sides, pt: _Point, d: np.ndarray, gamma: np.ndarray):
    """:func:`_search` with per-edge points ``_Point(G, law, reg, sides, u)``."""
    return _search(lambda u: _Point(G, law, reg, sides, u), pt, d, gamma)


def _search(make: Callable, pt, d: np.ndarray, gamma: np.ndarray):
    """Backtrack from the full step; return ``(new point, backtracks, success)``.

    ``make(u)`` evaluates a point. Armijo on ``log R`` while the predicted relative decrease
    ``−gᵀd/R`` is resolvable; below that floor, a step is accepted when it lowers the largest
    relative imbalance.
    """
    slope = float(pt.gradient_over(pt.log_cost) @ d)  # gᵀd / R
    if not slope < 0.0:
        # A direction spoilt by rounding: fall back on the Jacobi-scaled gradient step.
        d = -gamma
        slope = float(pt.gradient_over(pt.log_cost) @ d)
    floor = max(_FLAT, 64 * np.finfo(float).eps * max(1.0, abs(pt.log_cost)))
    flat = not -slope > floor
    # Far from the optimum a nearly flat mode (units tied strongly to each other and weakly to
    # the rest) can ask for steps of e^70: cap the first trial at _MAX_STEP in log-scale.
    alpha = min(1.0, _MAX_STEP / max(float(np.max(np.abs(d), initial=0.0)), 1e-300))
    for b in range(_MAX_BACKTRACKS):
        u = pt.u + alpha * d
        new = make(u)
        if np.all(np.isfinite(u)) and np.isfinite(new.log_cost) and not np.isnan(new.worst):
            if flat:
                ok = new.gap < pt.gap
            else:
                ok = new.log_cost - pt.log_cost <= np.log1p(_ARMIJO * alpha * slope)
            if ok:
                return new, b, True
        alpha *= 0.5
    return pt, _MAX_BACKTRACKS, False
