"""Stop a GPU workflow before any work when its execution provider cannot really run here."""

from __future__ import annotations

import sys

from olive_fp16_pass.runtime import provider_status

EXIT_PROVIDER_UNAVAILABLE = 3


def require_provider(provider: str, *, cpu_workflow: str, picker_script: str | None = None) -> None:
    """Exit 3 with the reason and the CPU twin to run (`cpu_workflow`, which starts from the same input model),
    plus the script that picks the workflow for this machine, where one exists. For CUDA the reason is
    `doctor.cuda_problem()`'s, the sentence `olive-fp16 doctor` and bench/latency.py print."""
    if provider == "CUDAExecutionProvider":
        from olive_fp16_pass.doctor import cuda_problem

        reason = cuda_problem()
        if reason is None:
            return
    else:
        usable, reason = provider_status(provider)
        if usable:
            return
        reason = f"{reason}."
    picker = f"\nor `bash {picker_script}`, which picks the workflow that fits this machine." if picker_script else ""
    print(
        f"olive-fp16: this workflow targets {provider}, which cannot run here: {reason}\n"
        f"Nothing was run. To run the same workflow on the CPU (every figure labelled CPU), use:\n"
        f"    olive run --config {cpu_workflow}" + picker,
        file=sys.stderr,
    )
    raise SystemExit(EXIT_PROVIDER_UNAVAILABLE)
