#!/usr/bin/env bash
# Set up the environment and run the main workflow: the shipped FP32 denoiser -> FP16 / mixed precision,
# evaluated against FP32 and the clean photos, the fastest candidate meeting the goals kept, report written.
# With a usable NVIDIA GPU: onnxruntime-gpu and workflows/denoise_fp16.json (CUDA EP).
# Without one: onnxruntime (CPU) and workflows/denoise_fp16_cpu.json, every figure labelled CPU.
# Exit code: 0 when a candidate met the goals, 1 when none did, 3 when the CUDA workflow cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then EXTRA=gpu; else EXTRA=cpu; fi
source scripts/setup_env.sh "olive,$EXTRA"
if python -c "from olive_fp16_pass.runtime import provider_status as p; import sys; sys.exit(0 if p('CUDAExecutionProvider')[0] else 1)"; then
  WORKFLOW=workflows/denoise_fp16.json; OUT=outputs/denoise_fp16
else
  echo "olive-fp16: no usable CUDA execution provider here; running the CPU variant (figures labelled CPU)." >&2
  WORKFLOW=workflows/denoise_fp16_cpu.json; OUT=outputs/denoise_fp16_cpu
fi
export CI="${CI:-1}"  # Olive 0.13 otherwise waits ~10 s at exit for a telemetry upload
rm -rf "$OUT"
olive run --config "$WORKFLOW"
olive-fp16 report "$OUT"
