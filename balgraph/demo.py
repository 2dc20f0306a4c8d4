"""A few-second tour: balance the paper's MNIST autoencoder with every available method.

``balgraph demo`` (see :mod:`balgraph.cli`) calls :func:`run_demo`. It builds W1, the
784-200-100-50-100-200-784 ReLU autoencoder with biases (Section 10 of the paper), with
Gaussian weights at per-layer scales ``exp(U(-2, 2))``, balances it for the L2 cost with each
method registered in :func:`balgraph.methods` that is installed, and checks what the theory
says (Theorem 9.1): every method reaches the same unique balanced weights, and the network
computes the same function before and after (scaling invariance, Section 3).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from .api import solve
from .solvers import REGISTRY
from .errors import ConvergenceWarning
from .forward import forward
from .gallery import autoencoder
from .model import Problem

__all__ = ["run_demo"]

W1_SIZES = (784, 200, 100, 50, 100, 200, 784)
SMALL_SIZES = (20, 10, 5, 10, 20)
# global and layer-parallel methods run on W1 itself; the first available one is the reference
W1_METHODS = ("newton", "parallel", "alternating")
# one unit at a time (a Python-level step each, about 3 s per method on W1) and cvxpy (about
# 20 s on W1): the small net
SMALL_METHODS = ("stochastic", "random_sweep", "cyclic", "cvxpy", "cvxpy_dgp")
AGREE_RTOL = 1e-6
FUNCTION_RTOL = 1e-9
TOL = 1e-10
# what one iteration of each method is
STEP_UNITS = {"newton": "Newton steps", "cvxpy": "interior-point its", "cvxpy_dgp": "interior-point its"}
SWEEPS = "sweeps"


def accepted(method: str) -> float:
    """The imbalance up to which ``method`` reports convergence when asked for ``TOL``.

    cvxpy's interior point resolves the balance to about the square root of its duality gap,
    so the cvxpy methods accept up to their ``accept`` option (1e-6 by default) when ``tol`` is tighter.
    """
    if _availability(method) is not None:
        return TOL
    m = REGISTRY[method]
    return max(TOL, m.accuracy(m.options()))


@dataclass
class _Row:
    net: str
    method: str
    status: str
    result: object = None
    seconds: float = 0.0
    dw: float = float("nan")


def _availability(method: str) -> str | None:
    """None if ``method`` can be imported, else why not."""
    if method not in REGISTRY:
        return "not registered (balgraph.methods())"
    if method.startswith("cvxpy"):
        try:
            importlib.import_module("cvxpy")
        except ImportError as exc:
            return f"cvxpy cannot be imported ({exc})"
    return None


def _run(net: str, problem: Problem, method: str, seed: int) -> _Row:
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # a method that stops early is shown as not converged, not raised
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            res = solve(problem, p=2.0, method=method, tol=TOL, seed=seed)
    except ImportError as exc:
        return _Row(net, method, f"skipped: {exc}")
    except Exception as exc:  # noqa: BLE001 - the demo reports any method failure and goes on
        return _Row(net, method, f"FAILED: {type(exc).__name__}: {exc}")
    return _Row(net, method, "ok", res, time.perf_counter() - start)


def _row_line(row: _Row, ref_method: str) -> str:
    if row.result is None:
        return f"{row.net:<6} {row.method:<13} {row.status}"
    r = row.result
    dw = "(reference)" if row.method == ref_method else f"{row.dw:.1e}"
    steps = f"{r.iterations:>5d} {STEP_UNITS.get(row.method, SWEEPS):<18}"
    return (f"{row.net:<6} {row.method:<13} {r.cost_before:>12.6e} {r.cost_after:>12.6e}"
            f" {r.max_imbalance:>9.1e} {accepted(row.method):>8.0e} {'yes' if r.converged else 'NO':>4}"
            f" {steps} {dw:>11}  {row.seconds:.3f} s")


def _say_gain(say, rows, nets) -> None:
    """What balancing bought: W1's L2 cost before and after, and what to try next."""
    best = next((row.result for row in rows if row.net == "W1" and row.result is not None
                 and row.result.converged), None)
    if best is not None:
        gain = -math.expm1(best.log_cost_after - best.log_cost_before)
        say(f"gained: W1's L2 weight cost {best.cost_before:.4g} -> {best.cost_after:.4g} (-{100 * gain:.1f} %),"
            f" the same function, every hidden unit balanced (in-cost = out-cost)")
    say("next:")
    say("  balgraph solve model.safetensors             # balance your MLP (.pt, .npz, .graphml too)")
    say("  balgraph check net.graphml --fail-above 1e-6  # exit status 1 when out of balance (CI)")
    say("  balgraph solve model.pt -p inf                # max-balance (absmax cross-layer equalization)")


def run_demo(file: TextIO = sys.stdout, seed: int = 0) -> int:
    """Balance W1 with every available method, print a comparison table, check the function.

    Parameters
    ----------
    file : text stream
        Where the report goes.
    seed : int
        Seed of the weights, of the random schedules (``solve(seed=...)``) and of the random
        test inputs: two runs with one seed print the same rows (but for the times).

    Returns
    -------
    int
        0 when every method that converged agrees with the reference (the first available of
        ``newton``, ``parallel``, ``alternating``) to ``1e-6`` relative (``max |ΔW| / max |W|``)
        and every balanced network computes the same outputs as the original to ``1e-9``
        relative on random inputs; 1 otherwise (or when a method crashed, the reference did not
        converge, or none is available). Methods that stop before their accepted imbalance
        (``TOL``; cvxpy's ``accept``) are marked ``NO``.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> run_demo(out)  # doctest: +SKIP
    0
    >>> "unchanged" in out.getvalue()  # doctest: +SKIP
    True
    """
    def say(line: str = "") -> None:
        print(line, file=file)

    nets = {"W1": autoencoder(seed, W1_SIZES), "small": autoencoder(seed, SMALL_SIZES)}
    w1 = nets["W1"]
    say("balgraph demo: the balanced state of the paper's MNIST autoencoder (W1)")
    say(f"  {'-'.join(map(str, W1_SIZES))}, ReLU, biases; Gaussian weights at per-layer scales"
        f" exp(U(-2, 2)), seed {seed} (weights, random schedules, test inputs)")
    say(f"  {w1.n_edges:,} weights, {w1.n_vars} free units; L2 cost; 'small' is the same architecture"
        f" at {'-'.join(map(str, SMALL_SIZES))}")

    missing = {m: why for m in W1_METHODS + SMALL_METHODS if (why := _availability(m))}
    ref_method = next((m for m in W1_METHODS if m not in missing), None)
    if ref_method is None:
        say("no global or layer-parallel balancing method is available: "
            + "; ".join(f"{m}: {why}" for m, why in missing.items()))
        return 1
    cvx = [m for m in SMALL_METHODS if m.startswith("cvxpy") and m not in missing]
    say(f"  asked: every unit's relative imbalance <= {TOL:g}; Newton and the paper's schedules"
        " reach it" + (f"; cvxpy ({', '.join(cvx)}): interior point, accepted <= {accepted(cvx[0]):g}"
                       " (column 'accepted')" if cvx else ""))
    say()
    plan = [("W1", m) for m in W1_METHODS if m not in missing]
    plan += [("small", ref_method)] + [("small", m) for m in SMALL_METHODS if m not in missing]
    rows = [_run(net, nets[net], m, seed) for net, m in plan]

    refs = {row.net: row.result for row in rows if row.method == ref_method}
    failed = False
    for row in rows:
        ref = refs.get(row.net)
        if row.result is None:
            failed |= row.status.startswith("FAILED")
            continue
        if ref is None or not ref.converged:
            failed = True
            continue
        if not row.result.converged:
            continue  # its distance to the optimum says nothing about uniqueness
        scale = max(float(np.max(np.abs(ref.weight_array), initial=0.0)), np.finfo(float).tiny)
        row.dw = float(np.max(np.abs(row.result.weight_array - ref.weight_array), initial=0.0)) / scale
        failed |= not row.dw <= AGREE_RTOL

    say(f"{'net':<6} {'method':<13} {'cost before':>12} {'cost after':>12} {'max imb.':>9} {'accepted':>8}"
        f" {'conv':>4} {'iterations':<24} {'max|ΔW|/max|W|':>11}  time")
    for row in rows:
        say(_row_line(row, ref_method))
    for m, why in missing.items():
        say(f"  {m}: not available ({why})")
    say(f"  max|ΔW|/max|W| is against {ref_method}; the sequential schedules (one unit per step,"
        " about 3 s each on W1) and cvxpy (about 20 s on W1) run on 'small' only")

    rng = np.random.default_rng(seed)
    inputs = {net: rng.standard_normal((64, pb.roles.count("input"))) for net, pb in nets.items()}
    worst, n_checked = 0.0, 0
    for row in rows:
        if row.result is None:
            continue
        before = forward(nets[row.net], inputs[row.net])
        after = forward(nets[row.net], inputs[row.net], weights=row.result.weight_array)
        scale = max(float(np.max(np.abs(before))), np.finfo(float).tiny)
        worst = max(worst, float(np.max(np.abs(after - before))) / scale)
        n_checked += 1
    say()
    agree = [row for row in rows if row.result is not None and row.method != ref_method]
    stopped = [row for row in agree if not row.result.converged]
    if stopped:
        say("did not converge (left out of the agreement check): "
            + ", ".join(f"{row.method} on {row.net}" for row in stopped))
    agree = [row for row in agree if row.result.converged]
    if agree:
        ok = all(row.dw <= AGREE_RTOL for row in agree)
        say(f"methods {'agree' if ok else 'DISAGREE'}: largest max|ΔW|/max|W| against {ref_method}"
            f" is {max(row.dw for row in agree):.1e} (limit {AGREE_RTOL:g})")
    if worst <= FUNCTION_RTOL:
        say(f"network function unchanged: max |Δoutput| / max |output| = {worst:.1e} on 64 random"
            f" inputs, for all {n_checked} balanced networks")
    else:
        failed = True
        say(f"network function CHANGED: max |Δoutput| / max |output| = {worst:.1e}"
            f" (limit {FUNCTION_RTOL:g})")
    _say_gain(say, rows, nets)
    return 1 if failed else 0
