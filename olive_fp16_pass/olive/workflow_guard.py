"""Stop a GPU workflow before any work when its execution provider cannot really run here."""

from __future__ import annotations

import sys

from olive_fp16_pass.runtime import provider_status

EXIT_PROVIDER_UNAVAILABLE = 3


def require_provider(provider: str, *, cpu_workflow: str) -> None:
    """For CUDA the reason is `doctor.cuda_problem()`'s, the sentence `olive-fp16 doctor` and bench/latency.py print."""
    if provider == "CUDAExecutionProvider":
        from olive_fp16_pass.doctor import cuda_problem

        reason = cuda_problem()
        if reason is None:
            return
    else:
        usable, reason = provider_status(provider)
        if usable:
            return
    print(
        f"olive-fp16: this workflow targets {provider}, which cannot run here: {reason}\n"
        f"Nothing was run. To run the same workflow on the CPU (every figure labelled CPU), use:\n"
        f"    olive run --config {cpu_workflow}\n"
        "or `bash scripts/run_denoise.sh`, which picks the workflow that fits this machine.",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_PROVIDER_UNAVAILABLE)
