#!/usr/bin/env bash
# GPU checks, for a machine with an NVIDIA GPU:
#   1. CuPy: the image's own if importable, else wheels from .whl/ (offline), else pip install cupy-cuda12x;
#   2. the @pytest.mark.gpu tests (CuPy against NumPy on the same code path, layered and sparse models);
#   3. benchmarks/gpu.py: W5 and W4 on the CPU and the GPU, and an MLP of ~1e9 float32 weights.
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
$PY -m pytest -q -p no:cacheprovider -m gpu tests/
$PY benchmarks/gpu.py --width "${1:-11000}" --layers "${2:-8}"
