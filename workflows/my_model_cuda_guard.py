"""Imported by `workflows/my_model_fp16.json` (its `cuda_guard` data config) while Olive validates the workflow.

On a machine where the CUDA execution provider cannot really run, it stops at once with exit code 3, says why
and names the CPU twin, instead of Olive's raw traceback (CPU build of onnxruntime) or a silent CPU fallback.
Keep this data config when you edit the template; it loads no data.
"""

from olive_fp16_pass.showcase.workflow_guard import require_provider

require_provider("CUDAExecutionProvider", cpu_workflow="workflows/my_model_fp16_cpu.json")
