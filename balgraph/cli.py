"""The ``balgraph`` command: balance network files, check their balance, run the demo.

::

    balgraph solve NETWORK [-p P] [--method M] [--tol T] [-o OUT] [--json]
    balgraph check NETWORK [-p P] [--top K] [--plot FILE.png] [--json]
    balgraph demo [--seed S]

NETWORK is a ``.graphml``, ``.gml`` or ``.npz`` file (see :mod:`balgraph.io`). Errors print one
line on stderr and exit with status 1 (2 for bad options); no traceback.

Examples
--------
>>> from balgraph.cli import main
>>> main(["solve", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
import xml.etree.ElementTree as ET
import zipfile

import networkx as nx
import numpy as np

from . import io as bio
from .api import imbalance, solve
from .model import as_problem
from .solvers import REGISTRY
from .errors import BalgraphError, ConvergenceWarning
from .regularizers import Lp

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="balgraph", description="The unique balanced state of a neural network.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("solve", help="balance a network file and write the balanced network",
                       description="Balance NETWORK (.graphml, .gml, .npz) and write it in the same format.")
    s.add_argument("network", metavar="NETWORK")
    s.add_argument("-p", type=float, default=2.0, help="exponent of the L_p cost (default 2)")
    s.add_argument("--method", default="newton", choices=sorted(REGISTRY), help="solver (default newton)")
    s.add_argument("--tol", type=float, default=1e-10, help="max relative imbalance per unit (default 1e-10)")
    s.add_argument("--max-iter", type=int, default=None, help="iteration limit of the method")
    s.add_argument("--unreachable", default="raise", choices=["raise", "fix", "prune"],
                   help="units with no finite optimum: raise (default), fix at scale 1, or prune")
    s.add_argument("-o", "--output", metavar="OUT",
                   help="output file (default NETWORK with .balanced before the suffix); its suffix picks the format")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--progress", action="store_true", help="show progress on stderr (default: when a terminal)")
    c = sub.add_parser("check", help="report the imbalance of a network file",
                       description="Per-unit (top offenders) and per-depth imbalance of NETWORK.")
    c.add_argument("network", metavar="NETWORK")
    c.add_argument("-p", type=float, default=2.0, help="exponent of the L_p cost (default 2)")
    c.add_argument("--top", type=int, default=10, help="number of worst units listed (default 10)")
    c.add_argument("--plot", metavar="FILE.png", help="write a histogram of log10 |imbalance| (matplotlib)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    d = sub.add_parser("demo", help="run the demonstration", description="Run balgraph's demonstration.")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def _default_output(path: str) -> str:
    stem, suffix = os.path.splitext(path)
    return f"{stem}.balanced{suffix}"


def _cmd_solve(args) -> int:
    network = bio.read_network(args.network)
    activations = bio.read_layers(args.network)[2] if bio.detect_format(args.network) == "npz" else None
    out_path = args.output or _default_output(args.network)
    bio.detect_format(out_path)  # fail on a bad output name before solving
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        res = solve(network, p=args.p, method=args.method, tol=args.tol, max_iter=args.max_iter,
                    unreachable=args.unreachable, progress=True if args.progress else None)
    for w in caught:
        print(f"balgraph: warning: {w.message}", file=sys.stderr)
    bio.write_network(res, out_path, activations=activations)
    summary = {
        "network": args.network, "output": out_path, "p": args.p, "method": res.method,
        "converged": res.converged, "iterations": res.iterations, "max_imbalance": res.max_imbalance,
        "cost_before": res.cost_before, "cost_after": res.cost_after,
        "time": float(res.info.get("time", float("nan"))),
        "units": res.problem.n_nodes, "edges": res.problem.n_edges, "free_variables": res.problem.n_vars,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.network}: {summary['units']} units, {summary['edges']} edges,"
            f" {summary['free_variables']} free scales\n"
            f"  cost (L{args.p:g})  {res.cost_before:.6g} -> {res.cost_after:.6g}\n"
            f"  max imbalance  {res.max_imbalance:.3g} ({'converged' if res.converged else 'NOT converged'})\n"
            f"  {res.method}: {res.iterations} iterations, {summary['time']:.3g} s\n"
            f"  wrote {out_path}"
        )
    return 0 if res.converged else 1


def _depths(problem) -> np.ndarray:
    """Edges on the shortest path from an input or bias unit (-1 if unreachable)."""
    import scipy.sparse as sp
    from scipy.sparse import csgraph

    n = problem.n_nodes
    sources = np.flatnonzero(np.isin(np.array(problem.roles), ["input", "bias"]))
    src = np.concatenate([problem.src, np.full(sources.size, n)])
    dst = np.concatenate([problem.dst, sources])
    adj = sp.csr_matrix((np.ones(src.size), (src, dst)), shape=(n + 1, n + 1))
    dist = csgraph.shortest_path(adj, unweighted=True, indices=n)[:n] - 1
    return np.where(np.isfinite(dist), dist, -1).astype(int)


def _cmd_check(args) -> int:
    problem = as_problem(bio.read_network(args.network))
    reg = Lp(args.p)
    cost = np.abs(problem.weight) ** args.p
    n = problem.n_nodes
    in_cost = np.bincount(problem.dst, weights=cost, minlength=n)
    out_cost = problem.degree * np.bincount(problem.src, weights=cost, minlength=n)
    r_var = imbalance(problem, reg, np.zeros(problem.n_vars))
    free = np.flatnonzero(~problem.fixed)
    r_unit = r_var[problem.var[free]] if free.size else np.zeros(0)
    order = free[np.argsort(-np.abs(r_unit), kind="stable")][: max(args.top, 0)]
    depth = _depths(problem)
    per_depth = []
    for d in np.unique(depth[free]).tolist():
        units = free[depth[free] == d]
        a, b = float(in_cost[units].sum()), float(out_cost[units].sum())
        per_depth.append({"depth": d, "units": int(units.size), "in_cost": a, "out_cost": b,
                          "relative": (a - b) / (a + b) if a + b > 0 else 0.0,
                          "max_unit": float(np.max(np.abs(r_var[problem.var[units]])))})
    top = [{"unit": str(problem.nodes[k]), "imbalance": float(r_var[problem.var[k]]),
            "in_cost": float(in_cost[k]), "out_cost": float(out_cost[k])} for k in order.tolist()]
    report = {"network": args.network, "p": args.p, "free_units": int(free.size),
              "max_imbalance": float(np.max(np.abs(r_var), initial=0.0)),
              "median_imbalance": float(np.median(np.abs(r_var))) if r_var.size else 0.0,
              "top": top, "depths": per_depth}
    if args.plot:
        _plot(r_var, args.plot, args.p)
        report["plot"] = args.plot
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.network}: {free.size} free units, max |imbalance| {report['max_imbalance']:.3g},"
          f" median {report['median_imbalance']:.3g} (L{args.p:g}; 0 = balanced)")
    print(f"worst units:\n  {'unit':<24} {'imbalance':>10} {'in cost':>12} {'c*out cost':>12}")
    for t in top:
        print(f"  {t['unit']:<24} {t['imbalance']:>10.3g} {t['in_cost']:>12.5g} {t['out_cost']:>12.5g}")
    print(f"per depth (eq. 8.1: layer in-cost vs out-cost):\n  {'depth':>5} {'units':>6} {'in cost':>12}"
          f" {'c*out cost':>12} {'relative':>9} {'max unit':>9}")
    for d in per_depth:
        print(f"  {d['depth']:>5} {d['units']:>6} {d['in_cost']:>12.5g} {d['out_cost']:>12.5g}"
              f" {d['relative']:>9.3g} {d['max_unit']:>9.3g}")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _plot(r: np.ndarray, path: str, p: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    with np.errstate(divide="ignore"):
        logs = np.log10(np.maximum(np.abs(r), 1e-17))
    ax.hist(logs, bins=40)
    ax.set_xlabel("log10 |relative imbalance| per free unit")
    ax.set_ylabel("units")
    ax.set_title(f"L{p:g} imbalance")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cmd_demo(args) -> int:
    try:
        from .demo import run_demo
    except ImportError as exc:
        raise BalgraphError(f"the demo is not available in this installation ({exc})") from None
    return int(run_demo(file=sys.stdout, seed=args.seed) or 0)


_EXPECTED = (BalgraphError, OSError, ValueError, KeyError, nx.NetworkXError, ET.ParseError,
             zipfile.BadZipFile)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 error or not converged, 2 usage)."""
    args = build_parser().parse_args(argv)
    command = {"solve": _cmd_solve, "check": _cmd_check, "demo": _cmd_demo}[args.command]
    try:
        return command(args)
    except _EXPECTED as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"balgraph: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
