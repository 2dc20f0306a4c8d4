"""The global solver: damped Newton on a cost model (docs/design.md §2), one loop for every model.

Minimizes the strictly convex ``R`` (eq. 9.6 with ``L = G u``) in the model's coordinates. Each
iteration

1. evaluates the gradient parts ``log P``, ``log N`` per coordinate and ``log R`` (the model's
   :meth:`~balgraph.costs.CostModel.point`, all in the log domain);
2. stops when every relative imbalance ``|P − N|/(P + N)`` is ``<= tol``;
3. solves the Newton equation in Jacobi-scaled form (:mod:`.linalg`): dense LU for small
   problems, CG with a coarse correction on one scale per level for large ones;
4. backtracks on ``log R`` (Armijo). Near the optimum the decrease of ``R`` falls below its
   floating-point resolution (about ``R r²``): when the predicted relative decrease ``−gᵀd/R``
   is below 1e-12 a step is judged by the largest log-imbalance instead.

Before the first iteration a few exact local balancing sweeps (eqs. 5.6, 6.6) bring far-off
scales close, where Newton converges quadratically. A model that meets costs beyond its
float64 mat-vecs hands over to its fallback (layered → sparse → log-domain) at the current
point; ``info["fallback"]`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_choice, check_count
from ..costs import CostModel, Point, build_model
from ..errors import OptionError, RangeExceeded, SolverError
from ..model import Problem
from ..regularizers import MaxNorm, Regularizer
from .base import Method, Monitor, Run, SolverOutput, register
from .linalg import cg_step, dense_step

__all__ = ["Newton", "NewtonOptions", "warm_up"]

_FLAT = 1e-12
_ARMIJO = 1e-4
_MAX_BACKTRACKS = 40
_MAX_STEP = 30.0
# Graphs with cycles need a colouring for their sweeps (a pass over the edges per colour):
# they are warmed up only when some unit is this far off in log-imbalance.
_FAR = 8.0


@dataclass(frozen=True)
class NewtonOptions:
    """Options of ``method="newton"``.

    Attributes
    ----------
    warmup : int
        Most exact local balancing sweeps before Newton (0 disables).
    linear_solver : {"auto", "dense", "cg"}
        ``"auto"``: dense LU up to ``dense_max`` coordinates (models that allow it), CG beyond.
    dense_max : int
        Largest problem solved densely by ``"auto"``.
    cg_maxiter : int
        Most CG iterations per Newton step.
    coarse : bool
        Use the one-scale-per-level coarse correction in CG.
    u0 : array, optional
        Starting potentials per free variable (default 0: the network as given).
    model : {"layered", "sparse", "log-domain"}, optional
        Insist on one cost model (:mod:`balgraph.costs`); default: the first that applies.
    storage : {"float64", "float32"}, optional
        Storage of ``|W|^p`` in the layered model (default float64). float32 halves its memory
        (for a billion weights on a GPU) and limits the balance to about 1e-7: such runs count as
        converged at 1e-6 (``accuracy``).
    max_vars : int or None
        Shared weights: largest number of free variables for the dense basis.
    """

    warmup: int = 10
    linear_solver: str = "auto"
    dense_max: int = 2000
    cg_maxiter: int = 1000
    coarse: bool = True
    u0: Any = None
    model: str | None = None
    storage: str | None = None
    max_vars: int | None = 4000

    def __post_init__(self):
        check_count(self.warmup, "warmup", allow_none=False)
        check_choice(self.linear_solver, "linear_solver", ("auto", "dense", "cg"))
        check_count(self.dense_max, "dense_max", allow_none=False)
        check_count(self.cg_maxiter, "cg_maxiter", minimum=1, allow_none=False)
        check_choice(self.coarse, "coarse", (True, False))
        check_choice(self.model, "model", (None, "layered", "sparse", "log-domain"))
        check_choice(self.storage, "storage", (None, "float64", "float32"))
        check_count(self.max_vars, "max_vars", minimum=1)


def warm_up(model: CostModel, z, max_sweeps: int, tol: float, order: str = "alternating"):
    """Up to ``max_sweeps`` exact sweeps; stop when the log-imbalance shrinks < 30 % in a sweep.

    Returns ``(z, sweeps, exceeded)``: a sweep that leaves the model's range ends the warm-up
    where the last complete sweep left it, with ``exceeded`` True (the model cannot follow the
    scales to where they belong, and the caller moves to the fallback model).
    """
    try:
        state = model.sweeper(z, order)
    except OptionError:
        return z, 0, False
    except RangeExceeded:
        return z, 0, True
    worst, done = state.gap, 0
    while done < max_sweeps and state.gap > 2.0 * tol:
        try:
            state.sweep()
        except RangeExceeded:
            return state.coordinates(), done, True
        done += 1
        if state.gap > 0.7 * worst:
            break
        worst = state.gap
    return state.coordinates(), done, False


def line_search(model: CostModel, pt: Point, d, log_d):
    """Backtrack from the full step (capped at ``_MAX_STEP`` in log-scale); ``(point, backtracks)``.

    Armijo on ``log R`` while ``−gᵀd/R`` is resolvable, else a step must lower the largest
    log-imbalance. A direction spoilt by rounding gives way to the Jacobi step ``−g/D``. Raises
    :class:`RangeExceeded` when the full step leaves the model's range.
    """
    xp = model.xp
    grad = xp.exp(pt.log_p - pt.log_cost) - xp.exp(pt.log_n - pt.log_cost)  # g / R
    slope, big = model.host([grad @ d, xp.abs(d).max()])
    if not slope < 0.0:
        d = xp.exp(pt.log_n - log_d) - xp.exp(pt.log_p - log_d)
        slope, big = model.host([grad @ d, xp.abs(d).max()])
    floor = max(_FLAT, 64 * np.finfo(float).eps * max(1.0, abs(pt.log_cost)))
    flat = not -slope > floor
    alpha = min(1.0, _MAX_STEP / max(big, 1e-300))
    for b in range(_MAX_BACKTRACKS):
        try:
            new = model.point(pt.z + alpha * d)
        except RangeExceeded:
            if b == 0:  # Newton asks for scales the model cannot hold: hand over to the fallback
                raise
            new = None
        if new is not None and np.isfinite(new.log_cost) and not np.isnan(new.gap):
            ok = new.gap < pt.gap if flat else new.log_cost - pt.log_cost <= np.log1p(_ARMIJO * alpha * slope)
            if ok:
                return new, b
        alpha *= 0.5
    return None, _MAX_BACKTRACKS


def _blas_threads(limit: int | None):
    """A context limiting BLAS to ``limit`` threads (None: no limit)."""
    if limit is None:
        import contextlib

        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limit, user_api="blas")


class _State:
    """Where the loop is, so that a fallback model can take over at the current point."""

    def __init__(self, z):
        self.z, self.k, self.status, self.warmed = z, 0, "done", False


def _iterate(model: CostModel, state: _State, run: Run, opts: NewtonOptions, monitor: Monitor, info: dict,
             max_iter: int):
    tol = run.tol
    if opts.warmup > 0 and model.n and not state.warmed:
        state.warmed = True
        if getattr(model, "acyclic", True) or model.point(state.z).gap > _FAR:
            state.z, done, exceeded = warm_up(model, state.z, opts.warmup, tol)
            info["warmup_sweeps"] += done
            if exceeded:
                raise RangeExceeded("the warm-up sweeps left the model's float64 range")
    pt = model.point(state.z)
    state.z = pt.z
    if state.k == 0 and monitor.history["iteration"] == []:
        monitor.record(0, pt.log_cost, pt.worst, model.passes, lambda: model.potentials(pt.z))
    dense = opts.linear_solver == "dense" or (opts.linear_solver == "auto" and model.dense_ok
                                              and model.n <= opts.dense_max)
    info["linear_solver"] = "dense" if dense else "cg"
    while pt.worst > tol and state.k < max_iter and not monitor.stopped:
        state.k += 1
        H = model.hessian(pt)
        if dense:
            d = dense_step(model, pt, H)
        else:
            d, its = cg_step(model, pt, H, rtol=0.1 * min(1.0, pt.worst), maxiter=opts.cg_maxiter,
                             coarse=opts.coarse)
            info["cg_iterations"] += its
        new, backtracks = line_search(model, pt, d, H.log_d)
        info["backtracks"] += backtracks
        if new is None:
            state.status = "stalled"
            return pt
        pt = new
        state.z = pt.z
        monitor.record(state.k, pt.log_cost, pt.worst, model.passes, lambda: model.potentials(pt.z))
    if monitor.stopped:
        state.status = "callback"
    elif pt.worst > tol:
        state.status = "max_iter"
    return pt


class Newton(Method):
    """Damped Newton with log-domain costs (the default for finite ``p``)."""

    name = "newton"
    summary = "global Newton solver on the cost model of the problem (default)"
    Options = NewtonOptions

    def supports(self, problem: Problem, reg: Regularizer) -> str | None:
        if isinstance(reg, MaxNorm):
            return "p=inf is max-balancing: use method='max_balance' (the default for p=inf)"
        return None

    def accuracy(self, options: NewtonOptions) -> float:
        return 1e-6 if options.storage == "float32" else 0.0

    def solve(self, problem: Problem, reg: Regularizer, run: Run, opts: NewtonOptions) -> SolverOutput:
        notes: list = []
        kw = {"max_vars": opts.max_vars} if problem.share is not None else {}
        model = build_model(problem, reg, device=run.device, storage=opts.storage, kind=opts.model, notes=notes, **kw)
        info: dict = dict(model=model.name, newton_iterations=0, cg_iterations=0, backtracks=0, warmup_sweeps=0)
        if getattr(model, "storage", None) is not None:
            info["storage"] = model.storage.name
        u0 = np.zeros(problem.n_vars) if opts.u0 is None else np.asarray(opts.u0, dtype=np.float64).ravel()
        if u0.shape != (problem.n_vars,) or not np.all(np.isfinite(u0)):
            raise OptionError(f"u0 must hold one finite potential per free variable ({problem.n_vars}), got {u0.size}")
        state = _State(model.start(u0))
        max_iter = 100 if run.max_iter is None else run.max_iter
        monitor = Monitor(run, desc=f"balgraph newton ({model.name})")
        try:
            while True:
                try:
                    # Sparse and per-edge models make small BLAS calls (dots of n-vectors, LU of at
                    # most dense_max unknowns): OpenBLAS threads spin-wait on them, which on a
                    # loaded machine costs far more than the work (measured: LU of 448 × 448 in
                    # 0.17 s on 2 threads, 0.01 s on one). Layer matrices keep every thread.
                    with _blas_threads(None if model.name == "layered" else 1):
                        pt = _iterate(model, state, run, opts, monitor, info, max_iter)
                    break
                except RangeExceeded as exc:
                    nxt = model.fallback()
                    if nxt is None:
                        raise SolverError(f"the {model.name} model left float64's range and has no fallback: {exc}") from None
                    info["fallback"] = f"{model.name} -> {nxt.name} at iteration {state.k}: {exc}"
                    state.z = nxt.start(model.potentials(state.z))
                    state.warmed = False  # the new model warms up from where the old one stopped
                    model = nxt
                    info["model"] = model.name
        finally:
            monitor.close()
        info.update(newton_iterations=state.k, matvec_passes=model.passes)
        if notes:
            info["skipped_models"] = notes
        u = model.potentials(pt.z)
        if problem.share is not None:
            info.update(n_directions=model.n, n_shared_groups=getattr(model, "n_groups", 0))
        message = {
            "done": f"every coordinate balanced to {pt.worst:.3g} <= tol={run.tol:g} after {state.k} Newton iterations",
            "max_iter": f"max_iter={max_iter} Newton iterations reached (max relative imbalance {pt.worst:.3g})",
            "stalled": f"line search found no acceptable step at Newton iteration {state.k} (max relative"
                       f" imbalance {pt.worst:.3g}); the tolerance may be below what float64 resolves",
            "callback": f"stopped by the callback after {state.k} Newton iterations",
        }[state.status]
        return SolverOutput(u, state.k, message, monitor.history, info, state.status)


register(Newton())
