#!/usr/bin/env bash
# One GPU check for a fresh GPU machine with Python, torch and numpy but no network.
#   bash bench/gpu_check.sh WHEEL_DIR OUT_DIR
# WHEEL_DIR holds this package's wheel and every wheel it needs, onnxruntime-gpu included (README: "GPU
# check"). Installs them with --no-index, runs the tests marked gpu, then the latency benchmark; everything it
# prints goes to OUT_DIR. Budget: about 8 minutes on an H100/H200-class GPU.
set -uo pipefail
WHEELS=${1:?usage: gpu_check.sh WHEEL_DIR OUT_DIR}
OUT=${2:?usage: gpu_check.sh WHEEL_DIR OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CI=1 OLIVE_DISABLE_TELEMETRY=1
{
  date -u; nvidia-smi; python3 --version
  python3 -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/olive_fp16-*.whl onnxruntime-gpu pytest hypothesis
  python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
} 2>&1 | tee "$OUT/setup.log"
timeout 240 python3 -m pytest -m gpu -p no:cacheprovider tests/test_gpu.py -q 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 360 python3 bench/latency.py --out "$OUT" --runs 50 2>&1 | tee "$OUT/latency.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu tests rc=$tests_rc, latency rc=$bench_rc" | tee "$OUT/summary.txt"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
