"""Scale-out: the same layer chain balanced in NumPy and on Dask (threads, 1 and 2 worker processes).

    python benchmarks/dask_scaleout.py                       # 1024-2048-2048-2048-2048-10, 14.7 M weights
    python benchmarks/dask_scaleout.py --widths 512,1024,1024,10 --out benchmarks/results/dask-scaleout.md

The chain is generated on the workers (``dask.array.random``, per-layer scales e^-1, 1, e) and
persisted there: the driver never holds it. The NumPy row balances a gathered copy; every Dask
row must reach the NumPy potentials to 1e-8. Rows: Dask's threaded scheduler in this process,
then a cluster laid out as a real one, a ``dask scheduler`` process and a ``dask worker``
process with 1 or 2 workers (one thread each) on this machine, each with ``|W|^p`` recomputed
from the chunks on every pass (``storage=None``, the default) and persisted on the workers
(``storage="float64"``). (The tests use a ``LocalCluster``, whose scheduler runs inside the
driver's process.)

Columns:

- ``time``: wall time of ``Problem.from_layers`` + ``solve`` (best of ``--repeat``);
- ``round trips``: ``dask.compute`` calls (one per cost evaluation, Hessian product, sweep phase);
- ``worker out``: bytes the workers sent (``Worker.transfer_outgoing_bytes_total``: chunks and partial
  sums to other workers, results to the scheduler and client);
- ``to driver``: bytes of the values ``dask.compute`` returned to the driver (per-unit vectors and
  scalars; the vectors the driver sends in the task graphs are of the same sizes);
- ``driver peak``: ``tracemalloc`` peak during a second, measured run (Python and NumPy
  allocations of the driver process), as a fraction of the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

import balgraph

HERE = Path(__file__).resolve().parent


def _nbytes(value) -> int:
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return int(np.asarray(value).nbytes)


def _worker_out(client) -> int:
    if client is None:
        return 0
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())


def _chain(widths, rows):
    import dask.array as da

    rs = da.random.default_rng(0)
    return [(rs.standard_normal(size=(m, n), chunks=(rows, -1)) * float(np.exp(k % 3 - 1))).persist()
            for k, (n, m) in enumerate(zip(widths, widths[1:]))]


def _run(mats, storage, repeat):
    """Best time of from_layers + solve, round trips, bytes, then a tracemalloc-measured run."""
    import dask

    calls, back = [0], [0]
    real = dask.compute

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        calls[0] += 1
        back[0] += _nbytes(out)
        return out

    dask.compute = counted
    try:
        best, res = np.inf, None
        for _ in range(repeat):
            calls[0] = back[0] = 0
            gc.collect()
            client = _client()
            out0 = _worker_out(client)
            start = time.perf_counter()
            res = balgraph.solve(balgraph.Problem.from_layers(mats), storage=storage)
            elapsed = time.perf_counter() - start
            if elapsed < best:
                best, trips, returned = elapsed, calls[0], back[0]
                moved = _worker_out(client) - out0
        gc.collect()
        tracemalloc.start()
        balgraph.solve(balgraph.Problem.from_layers(mats), storage=storage)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        dask.compute = real
    return res, dict(time=best, trips=trips, worker_out=moved, returned=returned, peak=peak)


@contextlib.contextmanager
def _cluster(n_workers: int):
    """A scheduler process and a worker process with ``n_workers`` workers, and a client to them."""
    import distributed

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", str(n_workers),
                                       "--nthreads", "1", "--no-dashboard"], **quiet))
        client = distributed.Client(address, timeout=60)
        client.wait_for_workers(n_workers, timeout=120)
        try:
            yield client
        finally:
            client.close()
    finally:
        for proc in procs[::-1]:
            proc.terminate()
            proc.wait(timeout=60)


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="1024,2048,2048,2048,2048,10", help="layer widths, input first")
    parser.add_argument("--rows", type=int, default=512, help="rows per chunk (chunks span all columns)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", default="0,1,2", help="runs: 0 for Dask's threads, n for n worker processes")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)

    import dask
    import distributed

    widths = [int(w) for w in args.widths.split(",")]
    n_weights = sum(n * m for n, m in zip(widths, widths[1:]))
    nbytes = 8 * n_weights
    lines = [f"# Scale-out on Dask: chain {'-'.join(map(str, widths))} ({n_weights / 1e6:.1f} M weights,"
             f" {nbytes / 1e6:.0f} MB float64), p = 2, tol 1e-10", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()},"
             f" numpy {np.__version__}, dask {dask.__version__}, distributed {distributed.__version__}.",
             f"Chunks: {args.rows} rows x all columns. Command: python benchmarks/dask_scaleout.py"
             f" --widths {args.widths} --rows {args.rows}", "",
             "| run | \\|W\\|^p | time (s) | Newton it. | round trips | worker out (MB) | to driver (MB) |"
             " driver peak (MB) | peak / weights | max abs Δx vs NumPy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)

    def row(name, storage, res, m, ref_x):
        dx = float(np.max(np.abs(res.x - ref_x))) if ref_x is not None else 0.0
        text = (f"| {name} | {storage} | {m['time']:.2f} | {res.iterations} | {m['trips']} |"
                f" {m['worker_out'] / 1e6:.2f} | {m['returned'] / 1e6:.3f} | {m['peak'] / 1e6:.1f} |"
                f" {m['peak'] / nbytes:.3f} | {dx:.1e} |")
        lines.append(text)
        print(text, flush=True)
        assert dx < 1e-8, f"{name}: the potentials differ from NumPy's by {dx}"

    ref_x = None
    for workers in (int(w) for w in args.workers.split(",")):
        with contextlib.nullcontext() if workers == 0 else _cluster(workers):
            mats = _chain(widths, args.rows)
            if ref_x is None:
                host = [np.asarray(W) for W in mats]
                gc.collect()
                tracemalloc.start()
                start = time.perf_counter()
                ref = balgraph.solve(balgraph.Problem.from_layers(host))
                elapsed = time.perf_counter() - start
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                ref_x = ref.x
                row("NumPy", "float64 copy", ref, dict(time=elapsed, trips=0, worker_out=0, returned=0, peak=peak), None)
                del host
            name = "Dask threads (no cluster)" if workers == 0 else f"Dask, {workers} worker process{'es' if workers > 1 else ''}"
            for storage in (None, "float64"):
                res, m = _run(mats, storage, args.repeat)
                row(name, "persisted" if storage else "from chunks", res, m, ref_x)
            del mats
    lines += ["", "NumPy's driver peak is its own copy of |W|^p (the weights are the caller's). With Dask's threads",
              "the chunks are computed in the driver's process (its peak holds chunk temporaries, and the",
              "persisted |W|^p); on a cluster the driver holds per-unit vectors and task graphs only."]
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
