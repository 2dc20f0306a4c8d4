"""GPU figures, side by side with the CPU in one run (called by ``benchmarks/gpu.sh``).

    python benchmarks/gpu.py                   # on a machine with CuPy and an NVIDIA GPU
    python benchmarks/gpu.py --device cpu --small   # smoke run of this script without a GPU

1. W5 (58.7 M weights): ``solve(Problem.from_layers(Ws, bs))`` on the CPU; with
   ``device="cuda"`` (matrices copied to the GPU); with the matrices already on the GPU.
2. W4 (general sparse graph, 1 M edges): the same ``solve`` on the CPU and with
   ``device="cuda"`` (the sparse cost model on ``cupyx.scipy.sparse``).
3. An MLP of ~1e9 float32 weights generated on the device, ``storage="float32"``, tol 1e-8,
   twice (the first call compiles CuPy's kernels).

Every run prints its time, its largest per-unit imbalance from the independent evaluation, and the
largest difference of the potentials from the CPU answer.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import balgraph
from balgraph.gallery import workload
from balgraph.gallery.workloads import wide_mlp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--width", type=int, default=11000)
    ap.add_argument("--layers", type=int, default=8)
    args = ap.parse_args(argv)
    gpu = args.device != "cpu"
    if gpu:
        import cupy as xp

        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, (lambda: None)

    def clock(fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - start, out

    def line(what, seconds, res, ref=None):
        gap = "" if ref is None else f", max |u - u_cpu| {np.max(np.abs(res.potentials - ref.potentials)):.1e}"
        print(f"{what}: {seconds:.3f} s, converged {res.converged}, max imbalance {res.max_imbalance:.1e}"
              f", model {res.info.get('model')}{gap}", flush=True)

    # CuPy compiles its kernels on first use: warm both storages up on a small net first.
    for storage in ("float64", "float32"):
        small = balgraph.gallery.dense_mlp([64, 64, 64, 64], seed=1)
        balgraph.solve(small, device=args.device if gpu else None, storage=storage, tol=1e-6)

    pb = wide_mlp(0, sizes=(64, 256, 256, 10)) if args.small else workload("W5")
    mats = [b.weight for b in pb.blocks if b.name.startswith("layer")]
    biases = [b.weight[:, 0] for b in pb.blocks if b.name.startswith("bias")]
    t_cpu, cpu = clock(lambda: balgraph.solve(balgraph.Problem.from_layers(mats, biases), tol=1e-10))
    line("W5 CPU", t_cpu, cpu)
    t_copy, res = clock(lambda: balgraph.solve(balgraph.Problem.from_layers(mats, biases), tol=1e-10,
                                               device=args.device))
    line(f"W5 device={args.device!r} (copied there)", t_copy, res, cpu)
    d_mats, d_bias = [xp.asarray(m) for m in mats], [xp.asarray(b) for b in biases]
    t_dev, res = clock(lambda: balgraph.solve(balgraph.Problem.from_layers(d_mats, d_bias), tol=1e-10))
    line("W5 matrices already on the device", t_dev, res, cpu)
    print(f"W5 ratios: CPU / copied {t_cpu / t_copy:.2f}x, CPU / on device {t_cpu / t_dev:.2f}x", flush=True)
    del pb, mats, biases, d_mats, d_bias, res

    g = workload("W4", size="small" if args.small else "full")
    t_cpu, cpu = clock(lambda: balgraph.solve(g, tol=1e-10))
    line("W4 CPU", t_cpu, cpu)
    t_dev, res = clock(lambda: balgraph.solve(g, tol=1e-10, device=args.device, model="sparse"))
    line(f"W4 device={args.device!r}", t_dev, res, cpu)
    print(f"W4 ratio: CPU / device {t_cpu / t_dev:.2f}x", flush=True)

    n, depth = (256, 3) if args.small else (args.width, args.layers)
    rng = xp.random.default_rng(0)
    scales = np.exp(np.random.default_rng(0).uniform(-2, 2, depth))
    big = []
    for k in range(depth):
        W = rng.standard_normal((n, n), dtype=xp.float32)
        W *= np.float32(scales[k] / np.sqrt(n))
        big.append(W)
    print(f"MLP {depth} x {n}x{n}: {depth * n * n / 1e9:.3f}e9 float32 weights ({depth * n * n * 4 / 2**30:.1f} GiB)")
    for attempt in (1, 2):
        t_big, res = clock(lambda: balgraph.solve(balgraph.Problem.from_layers(big), tol=1e-8, storage="float32"))
        line(f"  run {attempt}", t_big, res)
    if gpu:
        print(f"GPU memory pool: {xp.get_default_memory_pool().total_bytes() / 2**30:.1f} GiB held")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
