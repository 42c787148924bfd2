"""User script of the CUDA workflow: stop at once, saying why and what to run, when CUDA cannot be used here.

Without it, Olive 0.13 either stops with "None of the execution providers ['CUDAExecutionProvider'] cannot
be found" (CPU build of onnxruntime) or, with onnxruntime-gpu and no usable GPU, evaluates every candidate on
a silent CPU fallback, fails them all and ends with "No output model produced" and exit code 0.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from olive_fp16_pass.showcase.workflow_guard import require_provider

require_provider(
    "CUDAExecutionProvider", cpu_workflow="workflows/denoise_fp16_cpu.json", picker_script="scripts/run_denoise.sh"
)

from denoise_user_script import denoise_validation_feeds, evaluate_denoiser  # noqa: E402, F401
