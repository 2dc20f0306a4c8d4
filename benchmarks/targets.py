"""The one-core targets (issue 12), side by side in one run, per-unit tolerance 1e-10.

    python benchmarks/targets.py            # about 6 minutes on 2 cores
    python benchmarks/targets.py --quick    # W5 left out

MLPs: ``balgraph.solve(balgraph.Problem.from_layers(Ws, bs))`` end to end (construction, checks,
the independent final evaluation and first-call costs included: each path is timed once, in a
fresh interpreter of its own; the two paths alternate, ``--repeats`` times, and the medians
are reported)
against :func:`baselines.layer_parallel`, plain NumPy layer-parallel exact balancing written
independently of balgraph. The first call in a fresh process is the headline (a user's call);
the second call in the same process shows what first-touch page faults and first-call costs
were. The ratio is the baseline's time over balgraph's, and both answers are
compared (largest relative difference of the scales). Peak memory is the resident set's peak
during a third call above its size at the call's start (``memory.py``), in units of the weights'
bytes.

General graphs (W2, W4): Newton's time in weight-passes, a weight-pass being the best time of one
CSR mat-vec over all weights (BLAS for dense blocks), measured in the same run.

Writes ``results/targets.md`` and ``results/targets.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import balgraph
from balgraph.gallery import workload
from balgraph.gallery.workloads import deep_mlp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from baselines import layer_parallel  # noqa: E402
from memory import peak_above_start  # noqa: E402
from run import machine_info, weight_pass_seconds  # noqa: E402

TOL = 1e-10


def layer_arrays(problem: balgraph.Problem):
    """The caller's matrices and biases back from a ``Problem.from_layers`` (the same arrays)."""
    mats = [b.weight for b in problem.blocks if b.name.startswith("layer")]
    biases = [b.weight[:, 0] for b in problem.blocks if b.name.startswith("bias")]
    assert len(mats) == len(biases) == len(problem.blocks) // 2
    return mats, biases


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


MLPS = {
    "W1 autoencoder": lambda: workload("W1"),
    "deep MLP 60 × 40": lambda: deep_mlp(0, depth=60, width=40),
    "W3 deep MLP 100 × 64": lambda: workload("W3"),
    "W5 wide MLP": lambda: workload("W5"),
}


def mlp_path(name: str, path: str, memory: bool) -> dict:
    """One path on one MLP, in this (fresh) process: time, answer and peak memory."""
    mats, biases = layer_arrays(MLPS[name]())
    weight_bytes = sum(m.nbytes for m in mats) + sum(b.nbytes for b in biases)

    def ours():
        return balgraph.solve(balgraph.Problem.from_layers(mats, biases), p=2, tol=TOL)

    def baseline():
        return layer_parallel(mats, biases, 2.0, TOL)

    fn = ours if path == "balgraph" else baseline
    out, elapsed = timed(fn)
    row = {"time": elapsed, "time_again": timed(fn)[1], "weights": sum(m.size for m in mats) + sum(b.size for b in biases),
           "weight_bytes": weight_bytes}
    if path == "balgraph":
        row.update(imbalance=out.max_imbalance, converged=bool(out.converged), iterations=out.iterations,
                   scales=[[out.scales[(k, r)] for r in range(m.shape[0])] for k, m in enumerate(mats[:-1], 1)])
    else:
        scales, sweeps, worst = out
        row.update(imbalance=worst, sweeps=sweeps, scales=[s.tolist() for s in scales])
    if memory:
        row["peak_x"] = peak_above_start(fn)[1] / weight_bytes
    return row


def in_fresh_process(name: str, path: str, memory: bool) -> dict:
    """Run :func:`mlp_path` in a new interpreter: both paths pay first-touch page faults and
    first-call costs alike (on this machine a fresh 400 MB buffer costs 0.9 s the first time)."""
    cmd = [sys.executable, __file__, "--one", name, path] + (["--memory"] if memory else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mlp_row(name: str, memory: bool, repeats: int) -> dict:
    """Both paths on one MLP, alternating, each run in ``repeats`` fresh processes: median times."""
    runs = {"balgraph": [], "baseline": []}
    for k in range(repeats):
        for path in runs:
            runs[path].append(in_fresh_process(name, path, memory and k == 0))
    ours, base = runs["balgraph"][0], runs["baseline"][0]

    def median(path, key):
        return float(np.median([r[key] for r in runs[path]]))

    row = {
        "workload": name, "weights": ours["weights"], "weight_bytes": ours["weight_bytes"], "repeats": repeats,
        "balgraph_s": median("balgraph", "time"), "baseline_s": median("baseline", "time"),
        "balgraph_again_s": median("balgraph", "time_again"), "baseline_again_s": median("baseline", "time_again"),
        "balgraph_imbalance": ours["imbalance"], "baseline_imbalance": base["imbalance"],
        "baseline_sweeps": base["sweeps"], "converged": ours["converged"], "iterations": ours["iterations"],
        "max_rel_scale_difference": max(
            float(np.max(np.abs(np.array(a) - np.array(b)) / np.array(b))) for a, b in zip(ours["scales"], base["scales"])),
    }
    row["ratio"] = row["baseline_s"] / row["balgraph_s"]
    row["ratio_again"] = row["baseline_again_s"] / row["balgraph_again_s"]
    if memory:
        row["balgraph_peak_x"], row["baseline_peak_x"] = ours["peak_x"], base["peak_x"]
    return row


def graph_row(name: str) -> dict:
    problem = workload(name, seed=0)
    pass_s = weight_pass_seconds(problem)
    res, t = timed(lambda: balgraph.solve(problem, p=2, tol=TOL))
    t2 = timed(lambda: balgraph.solve(problem, p=2, tol=TOL))[1]
    return {"workload": name, "weights": problem.n_edges, "weight_pass_s": pass_s,
            "newton_s": min(t, t2), "weight_passes": min(t, t2) / pass_s,
            "imbalance": res.max_imbalance, "converged": bool(res.converged), "iterations": res.iterations}


def to_markdown(report: dict) -> str:
    lines = ["# One-core targets (issue 12)", "",
             f"Produced by `python benchmarks/targets.py` ({report['machine']['cpus']} CPUs, "
             f"numpy {report['machine']['numpy']}); per-unit tolerance {TOL:g}. See the script's docstring.", "",
             "## MLPs: `solve(Problem.from_layers(Ws, bs))` end to end against layer-parallel exact balancing", "",
             "| workload | weights | balgraph (s) | baseline (s) | speed-up (medians of fresh processes) | second call: balgraph / baseline (s) | speed-up | baseline sweeps | imbalance (balgraph / baseline) | scales differ by | peak extra memory (balgraph / baseline) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in report["mlps"]:
        mem = (f"{r['balgraph_peak_x']:.2f}× / {r['baseline_peak_x']:.2f}× the weights"
               if "balgraph_peak_x" in r else "")
        lines.append(
            f"| {r['workload']} | {r['weights'] / 1e6:.2f} M | {r['balgraph_s']:.3f} | {r['baseline_s']:.3f} |"
            f" {r['ratio']:.1f}× | {r['balgraph_again_s']:.3f} / {r['baseline_again_s']:.3f} | {r['ratio_again']:.1f}× | {r['baseline_sweeps']} | {r['balgraph_imbalance']:.1e} / {r['baseline_imbalance']:.1e} |"
            f" {r['max_rel_scale_difference']:.1e} | {mem} |")
    lines += ["", "## General graphs: Newton in weight-passes", "",
              "| workload | weights | weight-pass (ms) | Newton (s) | weight-passes | Newton steps | imbalance |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["graphs"]:
        lines.append(f"| {r['workload']} | {r['weights'] / 1e6:.2f} M | {r['weight_pass_s'] * 1e3:.2f} |"
                     f" {r['newton_s']:.3f} | {r['weight_passes']:.0f} | {r['iterations']} | {r['imbalance']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="leave W5 (58.6 M weights) out")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per path (medians)")
    ap.add_argument("--one", nargs=2, metavar=("WORKLOAD", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(mlp_path(*args.one, memory=args.memory), default=float))
        return 0
    report = {"machine": machine_info(), "tol": TOL, "mlps": [], "graphs": []}
    for name in MLPS:
        if args.quick and name.startswith("W5"):
            continue
        row = mlp_row(name, memory=name.startswith("W5"), repeats=args.repeats)
        print(row, flush=True)
        report["mlps"].append(row)
    for name in ("W2", "W4"):
        row = graph_row(name)
        print(row, flush=True)
        report["graphs"].append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "targets.json").write_text(json.dumps(report, indent=1, default=float))
    (args.out / "targets.md").write_text(to_markdown(report))
    print((args.out / "targets.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
