"""The paper's iterative balancing schedules (Section 8): one loop, five ways to pick what to balance.

Every step balances one coordinate exactly (a unit, or a tie group as one, Def. 4.5): it is
coordinate descent on the convex cost ``R`` (Osborne's matrix-balancing iteration), so the cost
never increases and every schedule that keeps visiting every variable reaches the one balanced
state (Theorem 9.1).

- ``stochastic``: a uniformly random variable each step (Section 8.1); a sweep is ``n_vars`` steps.
- ``random_sweep``: a random permutation per sweep; ``cyclic``: a fixed order.
- ``parallel``: independent sets balanced at once (Prop. 4.4), in depth order — the layers of
  layer matrices (BLAS, :mod:`balgraph.costs.layersweeps`), else the depth levels of a DAG, else
  the classes of a colouring.
- ``alternating``: the same sets, odd-numbered ones then even-numbered ones (Section 8.2).

Convergence is checked once per sweep on ``max |P − N|/(P + N) ≤ tol``. Without ``max_iter`` a
run stops after a default budget of sweeps and says how far it got and how many more sweeps
the current rate would need (:func:`budget_message`).

Examples
--------
>>> import numpy as np, balgraph
>>> rng = np.random.default_rng(0)
>>> pb = balgraph.Problem.from_layers([rng.normal(size=(5, 3)), rng.normal(size=(2, 5))])
>>> res = balgraph.solve(pb, method="parallel", tol=1e-12)
>>> res.converged, res.max_imbalance <= 1e-12
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_choice
from ..costs import LogDomainCosts, build_model
from ..errors import RangeExceeded
from ..model import Problem
from ..regularizers import MaxNorm, Regularizer
from .base import Method, Monitor, Run, SolverOutput, register

__all__ = ["SweepOptions", "run_sweeps", "budget_message", "sweeps_needed", "DEFAULT_SWEEPS"]

DEFAULT_SWEEPS = 10_000


@dataclass(frozen=True)
class SweepOptions:
    """Options of the parallel schedules: ``model`` insists on a cost model (``"layered"`` for
    BLAS layer sweeps, ``"log-domain"`` for the per-edge ones); default: the fastest exact one."""

    model: str | None = None

    def __post_init__(self):
        check_choice(self.model, "model", (None, "layered", "sparse", "log-domain"))


def sweeps_needed(history: dict, tol: float) -> float:
    """More sweeps the recent linear rate (over the last half of the run) needs to reach ``tol``."""
    r = history["max_imbalance"]
    k = max(1, len(r) // 2)
    if len(r) <= 10 or not 0 < r[-1] < r[-k]:
        return np.inf
    rate = (r[-1] / r[-k]) ** (1.0 / (k - 1 if k > 1 else 1))
    return float(np.log(tol / r[-1]) / np.log(rate)) if r[-1] > tol else 0.0


def budget_message(history: dict, tol: float, sweeps: int) -> str:
    """How far a run got, and how many more sweeps its recent rate would need to reach ``tol``."""
    now = history["max_imbalance"][-1]
    text = f"stopped after {sweeps} sweeps (the default budget is {DEFAULT_SWEEPS}) at max relative imbalance {now:.3g}"
    more = sweeps_needed(history, tol)
    text += (f"; at the current rate about {more:.3g} more sweeps would reach tol={tol:g}" if np.isfinite(more)
             else "; the imbalance has stopped falling")
    return text + ": pass max_iter to go on, or use method='newton' (exact, fast)"


def run_sweeps(state, problem_state, run: Run, method: str, info: dict, fallback=None) -> SolverOutput:
    """Sweep until ``max |r| <= tol`` or the budget; one history row per sweep.

    ``state`` is a :class:`~balgraph.costs.Sweeper` of the model ``problem_state``; when a sweep
    raises :class:`RangeExceeded` (the state is back at the start of that sweep), ``fallback(z)``
    gives the sweeper to go on with.
    """
    budget = DEFAULT_SWEEPS if run.max_iter is None else run.max_iter
    model = problem_state
    monitor = Monitor(run, unit="sweep", total=budget, desc=f"balgraph {method}")
    rmax = state.worst
    it = 0
    try:
        monitor.record(0, state.log_cost, rmax, model.passes, lambda: model.potentials(state.coordinates()))
        while rmax > run.tol and it < budget and not monitor.stopped:
            try:
                state.sweep()
            except RangeExceeded as exc:
                if fallback is None:
                    raise
                info["fallback"] = f"{model.name} -> log-domain: {exc}"
                state, model = fallback(model.potentials(state.coordinates()))
                continue
            it += 1
            rmax = state.worst
            monitor.record(it, state.log_cost, rmax, model.passes, lambda: model.potentials(state.coordinates()))
            # Without max_iter, a run the default budget cannot finish stops early and says so.
            if run.max_iter is None and it >= 500 and it % 100 == 0 and rmax > run.tol \
                    and sweeps_needed(monitor.history, run.tol) > 4 * (budget - it):
                break
    finally:
        monitor.close()
    u = model.potentials(state.coordinates())
    info["matvec_passes"] = model.passes
    if rmax <= run.tol:
        status, message = "done", f"max relative imbalance {rmax:.3g} <= tol after {it} sweeps"
    elif monitor.stopped:
        status, message = "callback", f"stopped by the callback after {it} sweeps"
    elif run.max_iter is None:
        status, message = "budget", budget_message(monitor.history, run.tol, it)
    else:
        status, message = "max_iter", f"stopped after max_iter={budget} sweeps at max relative imbalance {rmax:.3g}"
    return SolverOutput(u, it, message, monitor.history, info, status)


class _Schedule(Method):
    """Shared checks of the iterative schedules."""

    def supports(self, problem: Problem, reg: Regularizer) -> str | None:
        if isinstance(reg, MaxNorm):
            return "p=inf is max-balancing: use method='max_balance'"
        if problem.share is not None:
            return ("shared weights cannot be kept equal by balancing one unit at a time (Section 8.3:"
                    " balancing one unit moves every copy of a shared weight); use method='newton'")
        return None


class _Parallel(_Schedule):
    Options = SweepOptions
    order = "parallel"

    def solve(self, problem: Problem, reg: Regularizer, run: Run, opts: SweepOptions) -> SolverOutput:
        model = build_model(problem, reg, device=run.device, kind=opts.model)
        state = model.sweeper(model.start(np.zeros(problem.n_vars)), self.order, run.seed)
        if not state.exact:  # the sparse model's sweeps skip self-loops: go edge by edge
            model = LogDomainCosts.build(problem, reg)
            state = model.sweeper(model.start(np.zeros(problem.n_vars)), self.order, run.seed)
        info = {"model": model.name, "schedule": self.order}

        def fallback(u):
            m = LogDomainCosts.build(problem, reg)
            return m.sweeper(m.start(u), self.order, run.seed), m

        return run_sweeps(state, model, run, self.name, info, fallback)


class Parallel(_Parallel):
    """Independent subset balancing (Prop. 4.4, Section 8.2): each independent set at once, in depth order."""

    name = "parallel"
    summary = "independent sets (layers, depth levels, colours) balanced at once, in order (Prop. 4.4)"


class Alternating(_Parallel):
    """Alternating balancing (Section 8.2): odd-numbered sets (layers 1, 3, …), then even ones."""

    name = "alternating"
    summary = "odd layers (independent sets), then even ones (Section 8.2)"
    order = "alternating"


class _Sequential(_Schedule):
    def order_fn(self, n: int, rng: np.random.Generator):
        raise NotImplementedError

    def solve(self, problem: Problem, reg: Regularizer, run: Run, opts) -> SolverOutput:
        model = LogDomainCosts.build(problem, reg)
        rng = np.random.default_rng(run.seed)
        state = model.sequential(model.start(np.zeros(problem.n_vars)), self.order_fn(model.n, rng))
        info = {"model": model.name, "schedule": self.name}
        return run_sweeps(state, model, run, self.name, info)


class Stochastic(_Sequential):
    """Basic stochastic balancing (Section 8.1): a uniformly random variable each step."""

    name = "stochastic"
    summary = "a uniformly random unit per step (Section 8.1); a sweep is n_vars steps"

    def order_fn(self, n, rng):
        return lambda: rng.integers(n, size=n)


class RandomSweep(_Sequential):
    """Every variable once per sweep, in a fresh random order each sweep."""

    name = "random_sweep"
    summary = "every unit once per sweep, in a new random order"

    def order_fn(self, n, rng):
        return lambda: rng.permutation(n)


class Cyclic(_Sequential):
    """The variables in a fixed order, sweep after sweep (Section 8.1)."""

    name = "cyclic"
    summary = "every unit once per sweep, in a fixed order"

    def order_fn(self, n, rng):
        order = np.arange(n)
        return lambda: order


for _m in (Parallel(), Alternating(), Stochastic(), RandomSweep(), Cyclic()):
    register(_m)
