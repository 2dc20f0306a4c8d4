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
# one unit at a time (a Python-level step each), and cvxpy (about 20 s on W1): the small net
SMALL_METHODS = ("random_sweep", "cyclic", "cvxpy", "cvxpy_dgp")
AGREE_RTOL = 1e-6
FUNCTION_RTOL = 1e-9
TOL = 1e-10


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


def _run(net: str, problem: Problem, method: str) -> _Row:
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # a method that stops early is shown as not converged, not raised
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            res = solve(problem, p=2.0, method=method, tol=TOL)
    except ImportError as exc:
        return _Row(net, method, f"skipped: {exc}")
    except Exception as exc:  # noqa: BLE001 - the demo reports any method failure and goes on
        return _Row(net, method, f"FAILED: {type(exc).__name__}: {exc}")
    return _Row(net, method, "ok", res, time.perf_counter() - start)


def run_demo(file: TextIO = sys.stdout, seed: int = 0) -> int:
    """Balance W1 with every available method, print a comparison table, check the function.

    Parameters
    ----------
    file : text stream
        Where the report goes.
    seed : int
        Seed of the weights and of the random test inputs.

    Returns
    -------
    int
        0 when every method that converged agrees with the reference (the first available of
        ``newton``, ``parallel``, ``alternating``) to ``1e-6`` relative (``max |ΔW| / max |W|``)
        and every balanced network computes the same outputs as the original to ``1e-9``
        relative on random inputs; 1 otherwise (or when a method crashed, the reference did not
        converge, or none is available). Methods that stop before ``tol`` are marked ``NO``.

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
        f" exp(U(-2, 2)), seed {seed}")
    say(f"  {w1.n_edges:,} weights, {w1.n_vars} free units; L2 cost; every unit balanced to a"
        f" relative imbalance <= {TOL:g}")
    say(f"  'small' is the same architecture at {'-'.join(map(str, SMALL_SIZES))}")
    say()

    missing = {m: why for m in W1_METHODS + SMALL_METHODS if (why := _availability(m))}
    ref_method = next((m for m in W1_METHODS if m not in missing), None)
    if ref_method is None:
        say("no global or layer-parallel balancing method is available: "
            + "; ".join(f"{m}: {why}" for m, why in missing.items()))
        return 1
    plan = [("W1", m) for m in W1_METHODS if m not in missing]
    plan += [("small", ref_method)] + [("small", m) for m in SMALL_METHODS if m not in missing]
    rows = [_run(net, nets[net], m) for net, m in plan]

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

    say(f"{'net':<6} {'method':<13} {'cost before':>12} {'cost after':>12} {'max imbalance':>13}"
        f" {'iterations':>10} {'converged':>9} {'time [s]':>9}  max|ΔW|/max|W| vs {ref_method}")
    for row in rows:
        if row.result is None:
            say(f"{row.net:<6} {row.method:<13} {row.status}")
            continue
        r = row.result
        dw = "(reference)" if row.method == ref_method else f"{row.dw:.1e}"
        say(f"{row.net:<6} {row.method:<13} {r.cost_before:>12.6e} {r.cost_after:>12.6e}"
            f" {r.max_imbalance:>13.1e} {r.iterations:>10d} {'yes' if r.converged else 'NO':>9}"
            f" {row.seconds:>9.3f}  {dw}")
    for m, why in missing.items():
        say(f"  {m}: not available ({why})")
    say("  sequential schedules (one unit per step, about 3 s each on W1) and cvxpy (about 20 s on"
        " W1) run on 'small' only")

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
    return 1 if failed else 0
