#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the package with the given extras.
# Usage: source scripts/setup_env.sh EXTRAS     e.g. "cpu,test" or "gpu"
# onnxruntime and onnxruntime-gpu both provide the `onnxruntime` module, so the one not asked for is removed.
set -euo pipefail
EXTRAS=${1:-cpu}
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# Olive requires torch. A bare `torch` requirement would pull a multi-GB CUDA build on Linux; pin a release
# (on machines that carry a local CPU build of 2.13.0 pip takes that one). An existing torch is kept.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
case ",$EXTRAS," in
  *,gpu,*) python -m pip uninstall -q -y onnxruntime 2>/dev/null || true ;;
  *,cpu,*) python -m pip uninstall -q -y onnxruntime-gpu 2>/dev/null || true ;;
esac
python -m pip install -q -e ".[$EXTRAS]"
