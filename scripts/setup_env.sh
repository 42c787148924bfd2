#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment, install the package with the given extras, activate it.
# Usage: source scripts/setup_env.sh EXTRAS     e.g. "olive,cpu,test", "olive,gpu", or "cpu" (core only)
# onnxruntime and onnxruntime-gpu both provide the `onnxruntime` module, so the one not asked for is removed.
# Meant to be sourced: the installation runs in a subshell with `set -euo pipefail`, so that a failure stops
# it, while the caller's shell keeps its own options (only the venv's activation happens there).
_olive_fp16_setup() (
  set -euo pipefail
  EXTRAS=$1
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
  PY="$VENV/bin/python"
  "$PY" -m pip install -q --upgrade pip
  case ",$EXTRAS," in
    *,olive,*)
      # Olive requires torch. A bare `torch` requirement would pull a multi-GB CUDA build on Linux; pin a
      # release (on machines that carry a local CPU build of 2.13.0 pip takes that one). An existing torch is kept.
      "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0" ;;
  esac
  case ",$EXTRAS," in
    *,gpu,*) "$PY" -m pip uninstall -q -y onnxruntime 2>/dev/null || true ;;
    *,cpu,*) "$PY" -m pip uninstall -q -y onnxruntime-gpu 2>/dev/null || true ;;
  esac
  "$PY" -m pip install -q -e ".[$EXTRAS]"
)
VENV=${VENV:-.venv}
# Not inside an `if`: bash ignores `set -e` in a function called as a condition, even within its subshell.
_olive_fp16_setup "${1:-olive,cpu}"
_olive_fp16_status=$?
unset -f _olive_fp16_setup
if [ "$_olive_fp16_status" -eq 0 ]; then
  unset _olive_fp16_status
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
else
  unset _olive_fp16_status
  echo "scripts/setup_env.sh: installation failed (see above); environment not activated" >&2
  return 1 2>/dev/null || exit 1
fi
