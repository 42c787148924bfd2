"""Imported by `workflows/my_model_fp16.json` (its `cuda_guard` data config) while Olive validates the workflow.

On a machine where the CUDA execution provider cannot really run, it stops at once with exit code 3, says why
and names the CPU twin, instead of Olive's raw traceback (CPU build of onnxruntime) or a silent CPU fallback.
Keep this data config in your copy of the template (README: Your own model); it loads no data.
"""

from olive_fp16_pass.showcase.workflow_guard import require_provider

# The user runs a copy of the CPU template, not the tracked one (its EDIT_ME places are still unfilled).
require_provider(
    "CUDAExecutionProvider",
    cpu_workflow="my_model_fp16_cpu.json  # your copy of workflows/my_model_fp16_cpu.json (README: Your own model)",
)
