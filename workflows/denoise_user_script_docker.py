"""User script of the Docker workflow (workflows/denoise_fp16_docker.json): self-contained, because Olive's
Docker system mounts each file a workflow names on its own into the container (no sibling modules there).

Olive imports it twice: on the host, which only builds and starts the container (it needs neither a GPU nor
onnxruntime-gpu, so no CUDA check there), and inside the image, where docker/Dockerfile sets
OLIVE_FP16_IN_IMAGE=1: there it stops at once (exit 3, the reason in the container's log) when CUDA cannot
be used, e.g. a container started without GPU access.
"""

import os

from olive_fp16_pass.showcase.denoise_data import denoise_validation_feeds  # noqa: F401  (registers the dataset)
from olive_fp16_pass.showcase.denoise_eval import evaluate_denoiser  # noqa: F401  (the evaluator's evaluate_func)

if os.environ.get("OLIVE_FP16_IN_IMAGE") == "1":
    from olive_fp16_pass.showcase.workflow_guard import require_provider

    require_provider("CUDAExecutionProvider", cpu_workflow="workflows/denoise_fp16_cpu.json")
