"""GraphML reading and writing: balgraph's streaming reader/writer against networkx's, one run.

    python benchmarks/graphml_speed.py            # the 243k-edge MLP of the issue (784-300-25-10, biases)
    python benchmarks/graphml_speed.py --repeat 5 --out benchmarks/results/graphml-speed.log

Same file, same process, best of ``--repeat`` runs each. Rows:

- read to a Problem: ``compile_network(nx.read_graphml(f))`` vs ``balgraph.io.open_network(f).problem``
  (the ``balgraph solve`` path);
- read to a DiGraph: ``nx.read_graphml(f)`` vs ``balgraph.io.read_network(f)`` (the Python API);
- write balanced weights: ``nx.write_graphml(result.to_graph(), f)`` vs ``NetworkFile.write``;
- ``balgraph solve`` end to end: networkx read + compile + solve + ``to_graph`` + networkx write,
  against ``balgraph.cli.main(["solve", f])``.

Every pair is checked to give the same answer (problem arrays, graphs, balanced weights).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import tempfile
import time

import networkx as nx
import numpy as np

import balgraph
import balgraph.io as bio
from balgraph.cli import main


def _best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def _network(sizes, seed=0) -> balgraph.Problem:
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=(m, n)) * np.exp(rng.uniform(-2, 2)) for n, m in zip(sizes, sizes[1:])]
    biases = [rng.normal(size=m) for m in sizes[1:-1]] + [None]
    return balgraph.Problem.from_layers(mats, biases)


def _edges(problem, weight=None):
    weight = problem.weight if weight is None else weight
    nodes = problem.nodes
    return {(str(nodes[j]), str(nodes[i])): w for j, i, w in zip(problem.src.tolist(), problem.dst.tolist(),
                                                                  np.asarray(weight).tolist())}


def run(sizes, repeat: int, folder: str) -> list[str]:
    path = os.path.join(folder, "net.graphml")
    bio.write_network(bio.graph_of(_network(sizes)), path)
    size = os.path.getsize(path)
    rows = []

    t_nx, ref = _best(lambda: balgraph.compile_network(nx.read_graphml(path)), repeat)
    t_bg, nf = _best(lambda: bio.open_network(path), repeat)
    assert ref.nodes == nf.problem.nodes and _edges(ref) == _edges(nf.problem)
    np.testing.assert_array_equal(ref.fixed, nf.problem.fixed)
    rows.append(("read to a Problem (balgraph solve)", t_nx, t_bg))

    t_nx, g_nx = _best(lambda: nx.read_graphml(path), repeat)
    t_bg, g_bg = _best(lambda: bio.read_network(path), repeat)
    assert list(g_nx.nodes(data=True)) == list(g_bg.nodes(data=True)) and g_nx.adj == g_bg.adj
    rows.append(("read to a DiGraph (read_network)", t_nx, t_bg))

    res = balgraph.solve(nf.problem)
    out_nx, out_bg = os.path.join(folder, "nx.graphml"), os.path.join(folder, "bg.graphml")
    res_graph = balgraph.solve(g_nx)
    t_nx, _ = _best(lambda: nx.write_graphml(res_graph.to_graph(), out_nx), repeat)
    t_bg, _ = _best(lambda: nf.write(res.weight_array, out_bg), repeat)
    a, b = nx.read_graphml(out_nx), nx.read_graphml(out_bg)
    assert {e: d["weight"] for e, d in a.edges.items()} == {e: d["weight"] for e, d in b.edges.items()}
    rows.append(("write the balanced network", t_nx, t_bg))

    def old_cli():
        g = nx.read_graphml(path)
        r = balgraph.solve(g)
        nx.write_graphml(r.to_graph(), out_nx)

    def new_cli():
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["solve", path, "-o", out_bg]) == 0

    t_nx, _ = _best(old_cli, repeat)
    t_bg, _ = _best(new_cli, repeat)
    rows.append(("balgraph solve, end to end", t_nx, t_bg))

    lines = [f"GraphML speed: MLP {'-'.join(map(str, sizes))} with biases, {nf.problem.n_edges:,} edges,"
             f" {size / 2**20:.1f} MiB; best of {repeat}; {platform.processor() or platform.machine()},"
             f" {os.cpu_count()} CPUs, networkx {nx.__version__}",
             f"{'':<38} {'networkx [s]':>12} {'balgraph [s]':>12} {'ratio':>7}"]
    lines += [f"{name:<38} {a:>12.3f} {b:>12.3f} {a / b:>6.1f}x" for name, a, b in rows]
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[784, 300, 25, 10])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        lines = run(args.sizes, args.repeat, folder)
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    cli()
