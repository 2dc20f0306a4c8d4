"""The ``balgraph`` command: balance network files, check their balance, run the demo.

::

    balgraph solve NETWORK [-p P] [--method M] [--tol T] [-o OUT] [--json] [--allow-unconverged]
                   [--chunks SIZE] [--scheduler ADDRESS]
    balgraph check NETWORK [-p P] [--top K] [--fail-above TOL] [--plot FILE.png] [--json]
    balgraph demo [--seed S]
    balgraph --version

NETWORK is a ``.graphml``, ``.gml``, ``.npz``, ``.pt``/``.pth`` (PyTorch state dict),
``.safetensors`` or sharded ``.safetensors.index.json`` file (see :mod:`balgraph.io`). Sharded
files (and, with ``--chunks``, ``.safetensors``) are read chunk-wise into Dask arrays, balanced
where the chunks are and written back shard by shard; ``--scheduler`` runs that work on a Dask
cluster. Errors print one line on stderr and exit with
status 1 (2 for bad options); no traceback. ``check --fail-above TOL`` exits 1 when a unit's
imbalance exceeds ``TOL``, for CI pipelines. Progress bars appear on stderr when it is a terminal.

Examples
--------
>>> from balgraph.cli import main
>>> main(["solve", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import warnings
import xml.etree.ElementTree as ET
import zipfile

import networkx as nx
import numpy as np

from . import io as bio
from ._cli_report import check_report, print_check
from .api import solve
from .solvers import REGISTRY
from .errors import BalgraphError

__all__ = ["main", "build_parser", "cli_message", "json_safe"]

PLOT_HINT = 'pip install "balgraph[plot]"'


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("balgraph")
    except Exception:  # noqa: BLE001 - not installed: the package's own number
        from . import __version__

        return __version__


def _number(kind: str, low: float, strict: bool):
    def parse(text: str) -> float:
        try:
            value = kind(text) if kind is int else float(text)
        except ValueError:
            value = None
        if value is None or (kind is float and math.isnan(value)) or value < low or (strict and value == low):
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what} {'>' if strict else '>='} {low:g}, got {text!r}")
        return value

    return parse


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("network", metavar="NETWORK")
    sub.add_argument("-p", type=_number(float, 0, True), default=2.0,
                     help="exponent of the L_p cost, > 0, or inf (max-balance; default 2)")
    sub.add_argument("--weight-attr", metavar="NAME", default="weight",
                     help="GraphML/GML edge attribute holding the weights (default: weight)")
    sub.add_argument("--activation", metavar="NAME", default="relu",
                     help="hidden activation of a .pt/.pth/.safetensors layer chain (default: relu)")
    sub.add_argument("--layer-order", metavar="M1,M2,...",
                     help="module paths of a model file's layers in chain order (default: module order)")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")
    sub.add_argument("--progress", action="store_true",
                     help="always show progress bars on stderr (default: only on a terminal)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="balgraph", description="The unique balanced state of a neural network.")
    parser.add_argument("--version", action="version", version=f"balgraph {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("solve", help="balance a network file and write the balanced network",
                       description="Balance NETWORK and write it in the same form (names, attributes,"
                                   " dtypes kept). Exit status 1 when it does not converge.")
    _common(s)
    s.add_argument("--method", default=None, choices=sorted(REGISTRY),
                   help="solver (default newton; max_balance for -p inf)")
    s.add_argument("--tol", type=_number(float, 0, True), default=1e-10,
                   help="max relative imbalance per unit (default 1e-10)")
    s.add_argument("--max-iter", type=_number(int, 1, False), default=None, help="iteration limit of the method")
    s.add_argument("--seed", type=_number(int, 0, False), default=None,
                   help="seed of the random schedules (stochastic, random_sweep)")
    s.add_argument("--unreachable", default="raise", choices=["raise", "fix", "prune"],
                   help="units with no finite optimum: raise (default), fix at scale 1, or prune")
    s.add_argument("-o", "--output", metavar="OUT",
                   help="output file (default NETWORK with .balanced before the suffix); its suffix picks the format")
    s.add_argument("--allow-unconverged", action="store_true",
                   help="write the result even when the method stops before --tol (exit status stays 1)")
    s.add_argument("--chunks", metavar="SIZE",
                   help="read a .safetensors chain chunk-wise into Dask arrays of about SIZE (auto, 256MiB);"
                        " sharded .safetensors.index.json files always are (needs balgraph[dask])")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the Dask work on the distributed scheduler at ADDRESS (tcp://host:8786);"
                        " default: threads in this process")
    c = sub.add_parser("check", help="report the imbalance of a network file",
                       description="Per-unit (top offenders) and per-depth imbalance of NETWORK.")
    _common(c)
    c.add_argument("--top", type=_number(int, 0, False), default=10,
                   help="number of worst units listed (default 10; 0: none)")
    c.add_argument("--fail-above", metavar="TOL", type=_number(float, 0, False),
                   help="exit with status 1 when the max |imbalance| is above TOL (for CI)")
    c.add_argument("--plot", metavar="FILE.png",
                   help=f"write a histogram of log10 |imbalance| (needs matplotlib: {PLOT_HINT})")
    d = sub.add_parser("demo", help="run the demonstration", description="Run balgraph's demonstration.")
    d.add_argument("--seed", type=_number(int, 0, False), default=0, help="random seed, >= 0 (default 0)")
    return parser


# ------------------------------------------------------------------ helpers
def json_safe(obj):
    """``obj`` with non-finite floats replaced by ``None`` (JSON has no Infinity or NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _p_json(p: float):
    """``p`` for JSON: a number, or the string ``"inf"`` (JSON has no Infinity)."""
    return "inf" if math.isinf(p) else p


def _print_json(obj) -> None:
    print(json.dumps(json_safe(obj), allow_nan=False))


_ADVICE = [
    (r"(?:call |use )?solve\(\.\.\., unreachable=['\"](\w+)['\"]\)", r"pass --unreachable \1"),
    (r"\bunreachable=['\"](\w+)['\"]", r"--unreachable \1"),
    (r"pass weights= the attribute that holds it \(or a mapping or a callable\)",
     "name the attribute that holds the weights with --weight-attr NAME"),
    (r"\(?weight_attr=\.\.\.\)?", "(--weight-attr NAME)"),
    (r"\bmethod=['\"](\w+)['\"]", r"--method \1"),
    (r"\bbalgraph\.io\.read_layer_chain\(path, order=\[\.\.\.\]\)", "--layer-order M1,M2,..."),
    (r"\btol=(?=\S)", "--tol "),
    (r"\bmax_iter=(?=\d)", "--max-iter "),
    (r"\bp=(?=[\d.]|inf)", "-p "),
]


def cli_message(message: str) -> str:
    """A library message with its Python advice (``unreachable='fix'``) turned into CLI flags."""
    message = " ".join(str(message).split())
    for pattern, repl in _ADVICE:
        message = re.sub(pattern, repl, message)
    return message


def _default_output(path: str) -> str:
    if path.lower().endswith(bio.INDEX_SUFFIX):  # model.safetensors.index.json -> model.balanced.safetensors.index.json
        return f"{path[:-len(bio.INDEX_SUFFIX)]}.balanced{path[-len(bio.INDEX_SUFFIX):]}"
    stem, suffix = os.path.splitext(path)
    return f"{stem}.balanced{suffix}"


def _open(args):
    order = [m.strip() for m in args.layer_order.split(",")] if args.layer_order else None
    return bio.open_network(args.network, weight_attr=args.weight_attr, activation=args.activation,
                            show_progress=True if args.progress else None, order=order,
                            chunks=getattr(args, "chunks", None))


def _dask_client(address: str | None):
    """A distributed client for ``--scheduler`` (closed on exit), or nothing."""
    if address is None:
        return contextlib.nullcontext()
    try:
        from distributed import Client
    except ImportError:
        raise BalgraphError('--scheduler needs dask.distributed: pip install "balgraph[dask]"') from None
    return Client(address)


# ------------------------------------------------------------------ commands
def _cmd_solve(args) -> int:
    out_path = args.output or _default_output(args.network)
    out_format = bio.detect_format(out_path)  # fail on a bad output name before reading
    nf = _open(args)
    if out_format in ("npz", "torch", "safetensors", "safetensors-index") and not nf.problem.dense:
        raise BalgraphError(f"{nf.path} is a general graph: write it as .graphml or .gml, not {out_path}")
    show = True if args.progress else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = solve(nf.problem, p=args.p, method=args.method, tol=args.tol, max_iter=args.max_iter,
                        unreachable=args.unreachable, seed=args.seed, progress=show)
        except (ValueError, IndexError) as exc:
            if nf.problem.n_vars == 0:
                raise BalgraphError(f"{nf.path}: no free hidden unit to rescale (no hidden layer, or only"
                                    " fixed activations): the network has nothing to balance") from None
            raise BalgraphError(f"{type(exc).__name__}: {exc}") from exc
    shown = set()
    for w in caught:
        if not issubclass(w.category, UserWarning):
            continue  # deprecations of dependencies are not the user's business here
        text = cli_message(str(w.message))
        if text not in shown:
            shown.add(text)
            print(f"balgraph: warning: {text}", file=sys.stderr)
    written = res.converged or args.allow_unconverged
    if written:
        nf.write(res, out_path, show_progress=show)
    else:
        print(f"balgraph: error: not written: {res.method} stopped at max imbalance {res.max_imbalance:.3g}"
              f" > --tol {args.tol:g}; raise --max-iter, try --method newton, or pass --allow-unconverged"
              " to write it anyway", file=sys.stderr)
    pb = res.problem
    summary = {
        "network": args.network, "output": out_path if written else None, "written": written,
        "p": _p_json(args.p), "method": res.method, "converged": res.converged, "iterations": res.iterations,
        "max_imbalance": res.max_imbalance, "cost_before": res.cost_before, "cost_after": res.cost_after,
        "log_cost_before": res.log_cost_before, "log_cost_after": res.log_cost_after,
        "time": float(res.info.get("time", float("nan"))),
        "units": pb.n_nodes, "edges": pb.n_edges, "free_variables": pb.n_vars,
    }
    if args.json:
        _print_json(summary)
    else:
        p = "∞" if math.isinf(args.p) else f"{args.p:g}"
        print(
            f"{args.network}: {summary['units']} units, {summary['edges']} edges,"
            f" {summary['free_variables']} free scales\n"
            f"  cost (L{p})  {res.cost_before:.6g} -> {res.cost_after:.6g}\n"
            f"  max imbalance  {res.max_imbalance:.3g} ({'converged' if res.converged else 'NOT converged'})\n"
            f"  {res.method}: {res.iterations} iterations, {summary['time']:.3g} s\n"
            + (f"  wrote {out_path}" if written else "  nothing written")
        )
    return 0 if res.converged else 1


def _cmd_check(args) -> int:
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BalgraphError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}") from None
    nf = _open(args)
    report = check_report(nf.problem, args.p, args.top)
    report["network"] = args.network
    report["p"] = _p_json(args.p)
    if args.plot:
        _plot(np.asarray(report.pop("_imbalance")), args.plot, args.p)
        report["plot"] = args.plot
    report.pop("_imbalance", None)
    failed = args.fail_above is not None and report["max_imbalance"] > args.fail_above
    if args.fail_above is not None:
        report["fail_above"] = args.fail_above
        report["passed"] = not failed
    if args.json:
        _print_json(report)
    else:
        print_check(report, args.p)
        if args.plot:
            print(f"wrote {args.plot}")
    if failed:
        print(f"balgraph: check failed: max |imbalance| {report['max_imbalance']:.3g} > --fail-above"
              f" {args.fail_above:g}", file=sys.stderr)
        return 1
    return 0


def _plot(r: np.ndarray, path: str, p: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
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
    """Run the command line; return the exit status (0 ok, 1 error, not converged or check failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    command = {"solve": _cmd_solve, "check": _cmd_check, "demo": _cmd_demo}[args.command]
    try:
        with _dask_client(getattr(args, "scheduler", None)):
            return command(args)
    except _EXPECTED as exc:
        message = cli_message(str(exc)) or type(exc).__name__
        print(f"balgraph: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
