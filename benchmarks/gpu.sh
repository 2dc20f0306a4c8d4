#!/usr/bin/env bash
# GPU checks of the dense fast path (issues "Speed" and "GPU"), for a machine with an NVIDIA GPU:
#   1. CuPy: the image's own if importable, else wheels from .whl/ (offline), else pip install cupy-cuda12x;
#   2. the @pytest.mark.gpu tests (CuPy against NumPy on the same code path);
#   3. W5 (58.7 M weights) on the GPU and on the CPU, time to 1e-10 and the GPU/CPU ratio;
#   4. an MLP of ~1e9 float32 weights generated on the GPU (8 layers of 11000 x 11000), time to 1e-8.
# Target on an H100: 1e9 weights to 1e-8 in <= 2 s.   Usage: bash benchmarks/gpu.sh [width] [layers]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! $PY -c "import cupy" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  else
    $PY -m pip install -q cupy-cuda12x
  fi
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$PY -m pytest -q -p no:cacheprovider -m gpu tests/test_dense.py
$PY - "${1:-11000}" "${2:-8}" <<'PYEOF'
import sys, time
import numpy as np
import cupy as cp
import balgraph
from balgraph.dense import balance_layers, dispatch
from balgraph.gallery import workload

def clock(f):
    cp.cuda.Device().synchronize()
    t = time.perf_counter()
    out = f()
    cp.cuda.Device().synchronize()
    return time.perf_counter() - t, out

# Compile CuPy's kernels once, on both storages, before timing anything.
for dt in (np.float64, np.float32):
    small = [cp.random.standard_normal((64, 64)).astype(dt) for _ in range(4)]
    balance_layers(small, p=2.0, tol=1e-8)

pb = workload("W5")
reg = balgraph.Lp(2.0)
opts = dict(fast=True, tol=1e-10, max_iter=None, callback=None, warmup=10, cg_maxiter=1000, coarse=True, u0=None)
t_cpu, cpu = clock(lambda: dispatch(pb, reg, device=None, **opts))
t_gpu, gpu = clock(lambda: dispatch(pb, reg, device="cuda", **opts))
gap = np.max(np.abs(cpu.u - gpu.u))
print(f"W5 Problem path: CPU {t_cpu:.3f} s, GPU {t_gpu:.3f} s (host->device copy included),"
      f" GPU/CPU = {t_gpu / t_cpu:.3f}; converged {cpu.converged}/{gpu.converged}; max |u_gpu - u_cpu| {gap:.2e}")
print("  GPU info:", {k: v for k, v in gpu.info.items() if not isinstance(v, (list, dict))})
t_api, res = clock(lambda: balgraph.solve(pb, device="cuda"))
print(f"W5 balgraph.solve(device='cuda') end to end (structure check and report on the CPU): {t_api:.3f} s,"
      f" converged {res.converged}, max imbalance {res.max_imbalance:.2e}")
mats = [pb.weight[L.edge_slice].reshape(L.n_out, L.n_in) for L in pb.layers if L.n_in > 1]
biases = [pb.weight[L.edge_slice] for L in pb.layers if L.n_in == 1]
d_mats, d_bias = [cp.asarray(m) for m in mats], [cp.asarray(b) for b in biases]
t_dev, res = clock(lambda: balance_layers(d_mats, d_bias, p=2.0, tol=1e-10))
print(f"W5 balance_layers, weights already on the GPU: {t_dev:.3f} s, GPU/CPU = {t_dev / t_cpu:.3f},"
      f" converged {res.converged}, imbalance {res.max_imbalance:.2e}, info {res.info}")
del d_mats, d_bias, res, pb, mats, biases
cp.get_default_memory_pool().free_all_blocks()

n, depth = int(sys.argv[1]), int(sys.argv[2])
rng = cp.random.default_rng(0)
scales = np.exp(np.random.default_rng(0).uniform(-2, 2, depth))
big = []
for k in range(depth):
    W = rng.standard_normal((n, n), dtype=cp.float32)
    W *= np.float32(scales[k] / np.sqrt(n))
    big.append(W)
print(f"MLP {depth} x {n}x{n}: {depth * n * n / 1e9:.3f}e9 float32 weights ({depth * n * n * 4 / 2**30:.1f} GiB)")
for attempt in range(2):
    t_big, res = clock(lambda: balance_layers(big, p=2.0, tol=1e-8))
    print(f"  run {attempt + 1}: {t_big:.3f} s to tol 1e-8, converged {res.converged},"
          f" imbalance {res.max_imbalance:.2e}, info {res.info}")
print(f"GPU memory pool: {cp.get_default_memory_pool().total_bytes() / 2**30:.1f} GiB held")
PYEOF
