"""User script of `denoise_from_pytorch.json` (CUDA): stop at once when CUDA cannot be used here.

Same guard as `denoise_user_script_cuda.py`, naming the CPU twin that also starts from the PyTorch model.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from olive_fp16_pass.showcase.workflow_guard import require_provider

require_provider("CUDAExecutionProvider", cpu_workflow="workflows/denoise_from_pytorch_cpu.json")

from denoise_user_script import denoise_validation_feeds, evaluate_denoiser  # noqa: E402, F401
