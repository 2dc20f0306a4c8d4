"""The benchmark suite: every balancing method on the workloads W1–W6, side by side in one run.

    python benchmarks/run.py --quick          # under ~5 minutes on 2 cores
    python benchmarks/run.py                  # the full suite
    python benchmarks/run.py -w W1 W3 -m newton parallel

Writes ``results.md`` and ``results.json`` (with machine information) and figures to ``--out``
(default ``benchmarks/results``): cost excess and max imbalance against wall time and against
weight-passes, one panel per workload, and a time-vs-size scaling curve.

Units. A *weight-pass* is one matrix-vector product over all weights (BLAS for dense layers,
CSR for the rest), timed in the same run; ``sum|w|^p`` is the time numpy takes to compute
``Σ|w|^p`` once (the speed issue's definition: about 10× slower than a BLAS pass, so it flatters).
Every method is run to the same per-unit relative imbalance ``--tol`` (1e-10).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import balgraph
from balgraph.gallery import workload

HERE = Path(__file__).resolve().parent
ITERATIVE = ("parallel", "alternating", "random_sweep")


def weight_pass_seconds(problem: balgraph.Problem, repeat: int = 5) -> float:
    """Best time of one mat-vec over all weights (layer matrices through BLAS, edge lists CSR)."""
    mats, rest = [], []
    for b in problem.blocks:
        if isinstance(b, balgraph.DenseBlock):
            mats.append((np.abs(np.asarray(b.weight)), b))
        else:
            rest.append(b)
    n = problem.n_nodes
    src = np.concatenate([b.src for b in rest]) if rest else np.zeros(0, np.int64)
    dst = np.concatenate([b.dst for b in rest]) if rest else np.zeros(0, np.int64)
    w = np.concatenate([np.abs(b.weight) for b in rest]) if rest else np.zeros(0)
    csr = sp.csr_matrix((w, (dst, src)), shape=(n, n))
    x = np.ones(n)
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        y = csr @ x
        for a, b in mats:
            y[b.out_units] += a @ x[b.in_units]
        best = min(best, time.perf_counter() - start)
    return best


def sum_power_seconds(problem: balgraph.Problem, p: float, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        np.sum(np.abs(problem.weight) ** p)
        best = min(best, time.perf_counter() - start)
    return best


def run_method(problem, method: str, p: float, tol: float, budget: float) -> dict:
    """Run one method to ``tol``; iterative methods are capped at about ``budget`` seconds."""
    options = {}
    if method in ITERATIVE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            probe = balgraph.solve(problem, p=p, method=method, tol=tol, max_iter=6, seed=0)
            elapsed = time.perf_counter() - start
        stamps = (probe.history or {}).get("time", [])
        # Sweep cost from the history's time stamps: the first call also pays for set-up
        # (colouring, layouts), which would make the budget far too small.
        per_sweep = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 2 else elapsed / 6
        options["max_iter"] = int(max(10, budget / max(per_sweep, 1e-6)))
    if method == "cvxpy":
        options["max_edges"] = None

    def once():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            res = balgraph.solve(problem, p=p, method=method, tol=tol, seed=0, **options)
            return res, time.perf_counter() - start

    try:
        res, elapsed = once()
        if elapsed < 2.0:  # first calls pay one-off costs (imports, caches): time a second run
            res, elapsed = min(once(), (res, elapsed), key=lambda pair: pair[1])
        # Memory is measured on a separate run: tracemalloc slows code that allocates a lot.
        tracemalloc.start()
        peak = None
        if problem.n_edges > 1_000_000 and method == "newton":
            once()
            peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    except (balgraph.SolverError, ImportError, MemoryError) as exc:
        tracemalloc.stop()
        return {"method": method, "error": f"{type(exc).__name__}: {exc}"}
    hist = res.history or {}
    return {
        "method": method,
        "time": elapsed,
        "converged": res.converged,
        "iterations": res.iterations,
        "max_imbalance": res.max_imbalance,
        "log_cost": res.log_cost_after,
        "peak_bytes": peak,
        "info": {k: v for k, v in res.info.items() if isinstance(v, (int, float, str, bool))},
        "history": {k: [float(x) for x in v] for k, v in hist.items() if k in ("time", "log_cost", "max_imbalance")},
        "weights": res.weight_array,
    }


def run_gebal(problem, p: float) -> dict:
    """LAPACK gebal (scipy.linalg.matrix_balance) on the merged dense matrix.

    LAPACK >= 3.5 balances the 2-norms of rows and columns, so the matrix holds ``|w|^(p/2)``:
    a row's squared 2-norm is then the unit's incoming L_p cost. gebal scales by powers of 2 and
    stops early, so its answer is approximate by design.
    """
    from scipy.linalg import matrix_balance

    nv = problem.n_vars
    if nv + 1 > 5000 or np.any(problem.degree != 1.0) or np.any(problem.var_size > 1):
        return {"method": "gebal", "error": "skipped (dense n > 5000, BiPU or ties)"}
    node = np.where(problem.fixed, nv, problem.var)
    m = np.zeros((nv + 1, nv + 1))
    np.add.at(m, (node[problem.dst], node[problem.src]), np.abs(problem.weight) ** p)
    m = np.sqrt(m)  # edges merged into the fixed node add their costs, not their |w|^(p/2)
    start = time.perf_counter()
    _, (scale, _) = matrix_balance(m, permute=False, separate=True)
    elapsed = time.perf_counter() - start
    # gebal returns B = D^-1 M D: entry (i, j) scales by d_j / d_i, i.e. Λ_i^(p/2) = 1/d_i,
    # relative to the merged fixed node, whose scale is 1.
    log_d = np.log(scale) - np.log(scale[nv])
    u = -2.0 * log_d[:nv] / p
    r = balgraph.imbalance(problem, balgraph.Lp(p), u)
    log_cost = balgraph.Lp(p).log_cost(problem.log_abs_weight, problem.edge_log_scale(u))
    return {"method": "gebal", "time": elapsed, "converged": False, "iterations": 1,
            "max_imbalance": float(np.max(np.abs(r))), "log_cost": log_cost, "history": {}}


def machine_info() -> dict:
    info = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform(),
            "processor": platform.processor(), "cpus": os.cpu_count(), "balgraph": balgraph.__version__}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [f"{d.get('internal_api')} {d.get('version')} ({d.get('num_threads')} threads)" for d in threadpool_info()]
    except ImportError:
        pass
    return info


QUICK = {
    "W1": ("full", ("newton", "parallel", "alternating", "random_sweep", "gebal", "cvxpy")),
    "W2": ("full", ("newton", "parallel")),
    "W3": ("full", ("newton", "parallel", "alternating")),
    "W4": ("full", ("newton", "parallel")),
    "W5": ("full", ("newton", "parallel")),
    "W6": ("full", ("newton", "parallel", "random_sweep")),
}
FULL = {
    "W1": ("full", ("newton", "parallel", "alternating", "random_sweep", "gebal", "cvxpy")),
    "W2": ("full", ("newton", "parallel", "alternating")),
    "W3": ("full", ("newton", "parallel", "alternating", "random_sweep", "gebal")),
    "W4": ("full", ("newton", "parallel", "random_sweep")),
    "W5": ("full", ("newton", "parallel", "alternating")),
    "W6": ("full", ("newton", "parallel", "random_sweep", "cvxpy")),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the short suite (under ~5 minutes)")
    ap.add_argument("-w", "--workloads", nargs="*", help="subset of W1..W6")
    ap.add_argument("-m", "--methods", nargs="*", help="subset of methods")
    ap.add_argument("-p", type=float, default=2.0)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--budget", type=float, default=None, help="seconds per iterative method")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    budget = args.budget or (20.0 if args.quick else 120.0)
    names = args.workloads or list(plan)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(), "p": args.p, "tol": args.tol, "quick": args.quick, "workloads": {}}
    for name in names:
        size, methods = plan[name]
        if args.methods:
            methods = [m for m in methods if m in args.methods]
        print(f"[{name}] building ({size}) ...", flush=True)
        problem = workload(name, seed=0, size=size)
        entry = {
            "size": size, "units": problem.n_nodes, "free": problem.n_vars, "edges": problem.n_edges,
            "weight_bytes": problem.weight.nbytes,
            "weight_pass": weight_pass_seconds(problem), "sum_power_pass": sum_power_seconds(problem, args.p),
            "runs": [],
        }
        print(f"[{name}] {problem}; weight-pass {entry['weight_pass'] * 1e3:.2f} ms,"
              f" sum|w|^p {entry['sum_power_pass'] * 1e3:.2f} ms", flush=True)
        reference = None
        for method in methods:
            print(f"[{name}] {method} ...", end=" ", flush=True)
            if method == "gebal":
                run = run_gebal(problem, args.p)
            elif method == "cvxpy_small":
                small = workload(name, seed=0, size="small")
                run = run_method(small, "cvxpy", args.p, 1e-8, budget)
                run["method"] = "cvxpy (small variant)"
                newton_small = run_method(small, "newton", args.p, args.tol, budget)
                run["newton_time_same_size"] = newton_small.get("time")
            else:
                run = run_method(problem, method, args.p, args.tol if method != "cvxpy" else 1e-8, budget)
            weights = run.pop("weights", None)
            if method == "newton" and weights is not None:
                reference = weights
            elif reference is not None and weights is not None and weights.shape == reference.shape:
                run["max_rel_dw_vs_newton"] = float(np.max(np.abs(weights - reference) / np.maximum(np.abs(reference), 1e-300)))
            if "time" in run:
                run["weight_passes"] = run["time"] / entry["weight_pass"]
                run["sum_power_passes"] = run["time"] / entry["sum_power_pass"]
                print(f"{run['time']:.3f} s, imbalance {run['max_imbalance']:.1e},"
                      f" {run['iterations']} it", flush=True)
            else:
                print(run.get("error"), flush=True)
            entry["runs"].append(run)
        report["workloads"][name] = entry
        del problem
    report["scaling"] = scaling_curve(args.p, args.tol, quick=args.quick)
    (args.out / "results.json").write_text(json.dumps(report, indent=1, default=float))
    (args.out / "results.md").write_text(to_markdown(report))
    try:
        from plots import plot_report

        plot_report(report, args.out)
    except ImportError as exc:
        print(f"no figures ({exc})")
    print((args.out / "results.md").read_text())
    return 0


def scaling_curve(p: float, tol: float, quick: bool) -> list:
    """Newton's time to tol against the number of weights, on deep MLPs of growing width."""
    from balgraph.gallery.workloads import deep_mlp

    widths = (16, 32, 64, 128) if quick else (16, 32, 64, 128, 256, 512)
    rows = []
    for width in widths:
        problem = deep_mlp(0, depth=50, width=width)
        run = run_method(problem, "newton", p, tol, budget=0)
        rows.append({"width": width, "edges": problem.n_edges, "time": run["time"],
                     "weight_passes": run["time"] / weight_pass_seconds(problem)})
        print(f"[scaling] width {width}: {problem.n_edges} edges, {run['time']:.3f} s", flush=True)
    return rows


def to_markdown(report: dict) -> str:
    lines = [f"# balgraph benchmarks (p = {report['p']:g}, per-unit tolerance {report['tol']:g})", ""]
    m = report["machine"]
    lines += [f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, numpy {m['numpy']}.", ""]
    for name, entry in report["workloads"].items():
        lines += [f"## {name}: {entry['units']} units, {entry['free']} free, {entry['edges']:,} edges",
                  f"weight-pass {entry['weight_pass'] * 1e3:.3f} ms (BLAS/CSR mat-vec); "
                  f"Σ|w|^p {entry['sum_power_pass'] * 1e3:.3f} ms", "",
                  "| method | time (s) | weight-passes | Σ|w|^p passes | iterations | max imbalance | converged | peak extra MB | time / newton's |",
                  "|---|---|---|---|---|---|---|---|---|"]
        newton = next((r for r in entry["runs"] if r["method"] == "newton" and "time" in r), None)
        for r in entry["runs"]:
            if "time" not in r:
                lines.append(f"| {r['method']} | {r.get('error')} | | | | | | | |")
                continue
            ratio = f"{r['time'] / newton['time']:.1f}×" if newton and r is not newton else ""
            if r["method"] == "gebal":
                ratio = f"{ratio} (approximate by design: powers of 2)"
            elif ratio and not r["converged"]:
                ratio = f"> {ratio} (stopped early)"
            lines.append(
                f"| {r['method']} | {r['time']:.3f} | {r['weight_passes']:.0f} | {r['sum_power_passes']:.1f} |"
                f" {r['iterations']} | {r['max_imbalance']:.1e} | {r['converged']} |"
                f" {'' if r.get('peak_bytes') is None else round(r['peak_bytes'] / 2**20)} | {ratio} |"
            )
        lines.append("")
    if report.get("scaling"):
        lines += ["## Scaling (Newton, 50 hidden layers)", "", "| width | edges | time (s) | weight-passes |", "|---|---|---|---|"]
        lines += [f"| {r['width']} | {r['edges']:,} | {r['time']:.3f} | {r['weight_passes']:.0f} |" for r in report["scaling"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
