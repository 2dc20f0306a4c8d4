"""Entry points of the dense fast path: the Newton dispatch, the sweeps, ``balance_layers``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NetworkError, SolverError
from ..problem import Problem
from ..regularizers import Regularizer
from ..result import SolverOutput
from ._costs import LayeredCosts, RangeExceeded
from ._plan import plan_layers, plan_problem
from ._solve import newton_cg
from ._sweep import LayerSweeps
from ._xp import array_module, module_of, to_host

__all__ = ["LayerBalance", "balance_layers", "dispatch", "layer_sweeps", "solve_dense_sweeps"]


def _costs(problem: Problem, reg: Regularizer, plan, device, storage) -> LayeredCosts:
    xp = array_module(device)
    blocks = ((xp.asarray(W), gi, go, name) for W, gi, go, name in plan.blocks)
    return LayeredCosts(xp, reg.p, plan.sizes, xp.asarray(plan.degree), blocks, np.dtype(storage))


def _x0(costs: LayeredCosts, u0, n: int):
    if u0 is None:
        return costs.xp.zeros(n)
    u0 = np.array(u0, dtype=np.float64).ravel()
    if u0.shape != (n,):
        raise NetworkError(f"u0 must hold one potential per free variable ({n}), got {u0.size}")
    return costs.xp.asarray(u0 * costs.p)


def dispatch(
    problem: Problem,
    reg: Regularizer,
    *,
    fast: bool | None,
    device: str | None,
    tol: float,
    max_iter: int | None,
    callback: Callable | None,
    warmup: int,
    cg_maxiter: int,
    coarse: bool,
    u0,
    storage: str = "float64",
) -> SolverOutput | None:
    """Run the dense Newton–CG when ``problem`` qualifies (:func:`plan_problem`), else ``None``.

    ``fast=True`` or a GPU ``device`` insist: a problem that does not qualify raises. When the
    costs outgrow float64 mat-vecs (:class:`RangeExceeded`) the general solver takes over
    (on the CPU), and ``info["fast_path"]`` says why.
    """
    insist = bool(fast) or device not in (None, "cpu", "numpy")
    plan = plan_problem(problem, reg)
    if isinstance(plan, str):
        if insist:
            raise NetworkError(
                f"the dense fast path cannot take this problem: {plan}; pass fast=False"
                " (and no device) to use the general Newton solver"
            )
        return None
    start = time.perf_counter()
    info: dict[str, Any] = {"fast_path": "dense", "device": device or "cpu", "linear_solver": "cg"}
    try:
        costs = _costs(problem, reg, plan, device, storage)
        info["setup_time"] = time.perf_counter() - start
        x, converged, k, message, history = newton_cg(
            costs, _x0(costs, u0, problem.n_vars), tol=tol,
            max_iter=100 if max_iter is None else int(max_iter), warmup=warmup,
            cg_maxiter=cg_maxiter, coarse=coarse, callback=callback, info=info, start=start,
        )
    except RangeExceeded as exc:
        from ..newton import solve_newton

        out = solve_newton(
            problem, reg, tol=tol, max_iter=max_iter, callback=callback, warmup=warmup,
            cg_maxiter=cg_maxiter, coarse=coarse, u0=u0, fast=False,
        )
        out.info["fast_path"] = f"fallback to the general solver: {exc}"
        return out
    info["matvec_passes"] = costs.work / max(costs.total, 1)
    return SolverOutput(to_host(x) / costs.p, converged, k, message, history, info)


def layer_sweeps(
    problem: Problem, reg: Regularizer, order: str = "parallel", *, u0=None, device: str | None = None
) -> LayerSweeps | str:
    """The sweep state of ``problem`` at ``u0`` (zeros by default), or why it has none.

    Any one-term cost ``Σ_e b_e |w_e|^p`` qualifies (:func:`plan_problem` with
    ``coefficients=True``). Raises :class:`RangeExceeded` when the costs outgrow float64 mat-vecs.
    """
    plan = plan_problem(problem, reg, coefficients=True)
    if isinstance(plan, str):
        return plan
    xp = array_module(device)
    blocks = [(xp.asarray(W), gi, go, name) for W, gi, go, name in plan.blocks]
    costs = LayeredCosts(xp, next(iter(reg.terms)), plan.sizes, xp.asarray(plan.degree), blocks)
    return LayerSweeps(costs, _x0(costs, u0, problem.n_vars), order)


def solve_dense_sweeps(
    problem: Problem,
    reg: Regularizer,
    *,
    tol: float = 1e-10,
    max_iter: int | None = None,
    seed: int | None = None,
    callback: Callable | None = None,
    u0=None,
    device: str | None = None,
    order: str = "alternating",
) -> SolverOutput:
    """Exact layer sweeps (Prop. 4.4, eqs. 5.6, 6.6, Section 8.2) on dense blocks, to ``tol``.

    The loop of :func:`balgraph.solve`'s ``"parallel"``/``"alternating"`` methods on
    :class:`LayerSweeps`, here also from ``u0`` and on a GPU ``device``; ``order`` as there
    (2 weight-passes per sweep and check). Default ``max_iter``: 100 000 sweeps.
    Raises :class:`~balgraph.errors.NetworkError` when the problem is not layered
    (:func:`plan_problem`) and :class:`RangeExceeded` when its costs outgrow float64 mat-vecs.

    Examples
    --------
    >>> import numpy as np, balgraph
    >>> pb = balgraph.Problem.from_layers([np.array([[4.0]]), np.array([[1.0]])])
    >>> out = solve_dense_sweeps(pb, balgraph.Lp(2))
    >>> out.converged, round(float(np.exp(out.u[0])), 12)   # λ* = (1/16)^(1/4), eq. 5.6
    (True, 0.5)
    """
    from ..iterative import run_sweeps

    del seed
    state = layer_sweeps(problem, reg, order, u0=u0, device=device)
    if isinstance(state, str):
        raise NetworkError(f"the dense sweeps cannot take this problem: {state}")
    out = run_sweeps(state, tol=tol, max_iter=100_000 if max_iter is None else int(max_iter),
                     callback=callback, method=f"dense {order} sweeps",
                     info={"fast_path": "dense", "schedule": "dense layers", "order": order})
    out.info["matvec_passes"] = state.costs.work / max(state.costs.total, 1)
    return out


@dataclass
class LayerBalance:
    """Scales of the hidden layers of an MLP, from :func:`balance_layers`.

    ``scales[k]`` holds ``Λ`` of hidden layer ``k + 1`` on the array module of the input.
    """

    scales: list
    degrees: np.ndarray
    converged: bool
    iterations: int
    max_imbalance: float
    message: str
    history: dict
    info: dict[str, Any] = field(default_factory=dict)

    def apply(self, weights: Sequence, biases: Sequence | None = None) -> tuple[list, list]:
        """The balanced ``(weights, biases)``: ``W_k ← diag(Λ_k) W_k diag(Λ_{k−1}^{−c_{k−1}})``,
        ``b_k ← Λ_k b_k`` (new arrays; the network function is unchanged)."""
        L = len(weights)
        biases = [None] * L if biases is None else list(biases)
        out_w, out_b = [], []
        for k, (W, b) in enumerate(zip(weights, biases)):
            row = self.scales[k] if k < L - 1 else None
            col = self.scales[k - 1] ** -self.degrees[k - 1] if k > 0 else None
            W = W * row[:, None] if row is not None else W.copy()
            out_w.append(W * col[None, :] if col is not None else W)
            out_b.append(None if b is None else (b * row if row is not None else b.copy()))
        return out_w, out_b


def balance_layers(
    weights: Sequence,
    biases: Sequence | None = None,
    p: float = 2.0,
    *,
    degrees: float | Sequence[float] = 1.0,
    tol: float = 1e-10,
    max_iter: int | None = None,
    device: str | None = None,
    storage: str | None = None,
    warmup: int = 10,
    cg_maxiter: int = 1000,
    coarse: bool = True,
) -> LayerBalance:
    """Balance an MLP given as matrices (NumPy or CuPy), without building a :class:`Problem`.

    The L_p balanced state of ``x_k = f_k(W_k x_{k−1} + b_k)`` with homogeneous hidden
    activations of degree ``c_k`` (Theorems 5.6 and 9.1): the scales ``Λ_k`` minimizing
    ``Σ_k Σ |W_k|^p`` after ``W_k ← diag(Λ_k) W_k diag(Λ_{k−1}^{−c})``, found by Newton–CG on
    dense blocks (:mod:`balgraph.dense`). For a billion weights on a GPU, pass CuPy float32
    matrices: ``|W|^p`` is then stored in float32 and every sum is taken in float64.

    Parameters
    ----------
    weights : sequence of 2-D arrays
        ``W_k`` of shape ``(n_k, n_{k−1})``.
    biases : sequence of 1-D arrays or None, optional
    p : float
    degrees : float or sequence of float
        Homogeneity degree of each hidden layer.
    tol : float
        Per-unit relative imbalance ``|in − c·out|/(in + c·out)`` to reach.
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default: where ``weights`` live.
    storage : {"float64", "float32"}, optional
        Storage of ``|W|^p`` (default float32 for float32 weights, else float64).

    Examples
    --------
    >>> import numpy as np
    >>> res = balance_layers([np.array([[4.0]]), np.array([[1.0]])], p=2)
    >>> res.converged, round(float(res.scales[0][0]), 12)
    (True, 0.5)
    """
    xp = module_of(weights[0]) if device is None else array_module(device)
    weights = [xp.asarray(W) for W in weights]
    if any(W.ndim != 2 for W in weights) or any(
        a.shape[0] != b.shape[1] for a, b in itertools.pairwise(weights)
    ):
        raise NetworkError("weights must be 2-D matrices W_k of shape (n_k, n_{k-1}) that chain")
    for k, W in enumerate(weights, start=1):
        if not bool(xp.isfinite(W).all()):
            raise NetworkError(f"layer {k} has NaN or infinite weights: replace them with finite numbers")
    if storage is None:
        storage = "float32" if weights[0].dtype == np.float32 else "float64"
    start = time.perf_counter()
    plan = plan_layers(weights, biases, degrees, xp)
    try:
        costs = LayeredCosts(xp, p, plan.sizes, xp.asarray(plan.degree), plan.blocks, np.dtype(storage))
        info: dict[str, Any] = {"setup_time": time.perf_counter() - start, "storage": str(storage)}
        x, converged, k, message, history = newton_cg(
            costs, xp.zeros(costs.n), tol=tol, max_iter=100 if max_iter is None else max_iter,
            warmup=warmup, cg_maxiter=cg_maxiter, coarse=coarse, info=info, start=start,
        )
    except RangeExceeded as exc:
        raise SolverError(
            f"{exc}: balance through balgraph.solve(balgraph.Problem.from_layers(...)), whose"
            " general solver works in the log domain edge by edge"
        ) from None
    info["matvec_passes"] = costs.work / max(costs.total, 1)
    info["time"] = time.perf_counter() - start
    scales = [xp.exp(x[s] / costs.p) for s in costs.slices]
    worst = history["max_imbalance"][-1]
    return LayerBalance(scales, plan.degree[[s.start for s in costs.slices]] if costs.slices else
                        np.zeros(0), converged, k, worst, message, history, info)
