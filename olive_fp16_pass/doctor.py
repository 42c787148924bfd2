"""`olive-fp16 doctor`: can onnxruntime really use CUDA here, and if not, why not and what fixes it.

A provider list is no proof: onnxruntime-gpu lists CUDAExecutionProvider on a machine with no GPU, and a
session asked for it then runs on the CPU with only a logged error. So the verdict is a real session
(`runtime.provider_status`: a tiny float16 model, `session.get_providers()` read back). The other checks say
why it fails: which onnxruntime distribution is installed (both onnxruntime and onnxruntime-gpu provide the
module `onnxruntime`, and the one installed last wins), its providers, a GPU visible to `nvidia-smi`, the
CUDA and cuDNN libraries (after `onnxruntime.preload_dlls()`, which loads the NVIDIA runtime wheels), and
the TF32 setting, which changes float32 baselines on the GPU.

`cuda_problem()` is the one sentence (reason and fix) that the CUDA workflow guard, `bench/latency.py` and this
command all print, so a user sees the same message wherever CUDA is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass

CUDA = "CUDAExecutionProvider"
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-training",
    "ort-nightly",
    "ort-nightly-gpu",
)
FIX_GPU_BUILD = 'pip uninstall -y onnxruntime && pip install "onnxruntime-gpu[cuda,cudnn]"'
FIX_BOTH = 'pip uninstall -y onnxruntime onnxruntime-gpu && pip install "onnxruntime-gpu[cuda,cudnn]"'
FIX_LIBS = (
    'pip install "onnxruntime-gpu[cuda,cudnn]"  (the NVIDIA CUDA/cuDNN runtime wheels onnxruntime.preload_dlls() loads)'
)
FIX_DRIVER = (
    "install the NVIDIA driver (nvidia-smi must list the GPU); in a container start it with `docker run --gpus all` "
    "(NVIDIA Container Toolkit)"
)


@dataclass
class Check:
    """One line of the diagnosis: ok is None for information that cannot fail."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None


def installed_distributions() -> dict[str, str]:
    """onnxruntime distributions installed in this environment, name -> version (from importlib.metadata)."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def check_distributions() -> Check:
    found = installed_distributions()
    listed = ", ".join(f"{n} {v}" for n, v in found.items()) or "none"
    if not found:
        return Check("onnxruntime distribution", False, "no onnxruntime distribution installed", FIX_GPU_BUILD)
    if "onnxruntime" in found and "onnxruntime-gpu" in found:
        return Check(
            "onnxruntime distribution",
            False,
            f"both onnxruntime and onnxruntime-gpu are installed ({listed}): they provide the same module and the "
            "one installed last overwrote the other's files",
            FIX_BOTH,
        )
    return Check("onnxruntime distribution", True, listed)


def check_providers() -> tuple[Check, object | None]:
    try:
        import onnxruntime as ort
    except Exception as exc:
        return Check("providers", False, f"import onnxruntime failed: {type(exc).__name__}: {exc}", FIX_GPU_BUILD), None
    providers = ort.get_available_providers()
    detail = f"onnxruntime {ort.__version__} from {os.path.dirname(ort.__file__)}: {', '.join(providers)}"
    if CUDA not in providers:
        return Check("providers", False, detail + f"; no {CUDA}: this is a CPU build", FIX_GPU_BUILD), ort
    return Check("providers", True, detail), ort


def check_gpu_visible() -> Check:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return Check(
            "GPU visible (nvidia-smi)", False, "nvidia-smi not found: no NVIDIA driver visible here", FIX_DRIVER
        )
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("GPU visible (nvidia-smi)", False, f"nvidia-smi failed: {exc}", FIX_DRIVER)
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        return Check(
            "GPU visible (nvidia-smi)",
            False,
            f"nvidia-smi lists no GPU: {message[0] if message else proc.returncode}",
            FIX_DRIVER,
        )
    return Check("GPU visible (nvidia-smi)", True, "; ".join(lines))


def _cuda_major(ort) -> str | None:
    """The CUDA major version this onnxruntime build wants, where its build info says so."""
    with contextlib.suppress(Exception):
        from onnxruntime.capi import build_and_package_info as info

        version = getattr(info, "cuda_version", None)
        if version:
            return str(version).split(".")[0]
    return None


def check_cuda_libraries(ort) -> Check:
    preload = "onnxruntime.preload_dlls() not available in this onnxruntime"
    if ort is not None and hasattr(ort, "preload_dlls"):
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                ort.preload_dlls()
            preload = "onnxruntime.preload_dlls() ran"
        except Exception as exc:
            preload = f"onnxruntime.preload_dlls() failed: {type(exc).__name__}: {exc}"
    major = _cuda_major(ort) if ort is not None else None
    majors = [major] if major else ["13", "12"]
    wanted = {
        "CUDA runtime": "libcudart.so",
        "cuBLAS": "libcublas.so",
        "cuBLASLt": "libcublasLt.so",
        "cuDNN": "libcudnn.so",
    }
    found, missing = [], []
    for label, stem in wanted.items():
        versions = ["9"] if label == "cuDNN" else majors
        hit = None
        for version in versions:
            with contextlib.suppress(OSError):
                ctypes.CDLL(f"{stem}.{version}")
                hit = f"{stem}.{version}"
                break
        (found if hit else missing).append(hit or f"{label} ({' or '.join(f'{stem}.{v}' for v in versions)})")
    detail = f"{preload}; CUDA {major or '12/13'} wanted; found: {', '.join(found) or 'none'}"
    if missing:
        return Check("CUDA/cuDNN libraries", False, detail + f"; missing: {', '.join(missing)}", FIX_LIBS)
    return Check("CUDA/cuDNN libraries", True, detail)


def cuda_status() -> tuple[bool, str, str | None]:
    """(usable, reason, fix): the real-session verdict, with the command that fixes the first cause found."""
    from olive_fp16_pass.runtime import provider_status

    usable, reason = provider_status(CUDA)
    if usable:
        return True, f"a session on {CUDA} ran and session.get_providers() confirmed it", None
    return False, reason, _first_fix()


def _first_fix() -> str:
    """The fix of the most basic failing cause: distribution, then build, then driver, then libraries."""
    for check in (check_distributions(), check_providers()[0], check_gpu_visible()):
        if check.ok is False and check.fix:
            return check.fix
    _, ort = check_providers()
    libs = check_cuda_libraries(ort)
    return libs.fix if libs.ok is False and libs.fix else "run `olive-fp16 doctor` for the details"


def cuda_problem() -> str | None:
    """None when CUDA really runs here; else one sentence: why not, and the command that fixes it."""
    usable, reason, fix = cuda_status()
    return None if usable else f"{reason}. Fix: {fix}"


def check_tf32(session_ok: bool) -> Check:
    override = os.environ.get("NVIDIA_TF32_OVERRIDE")
    env = f"NVIDIA_TF32_OVERRIDE={override}" if override is not None else "NVIDIA_TF32_OVERRIDE unset"
    value = "1 (onnxruntime's default)"
    if session_ok:
        with contextlib.suppress(Exception):
            import onnxruntime as ort

            from olive_fp16_pass.runtime import probe_model

            session = ort.InferenceSession(probe_model(), providers=[CUDA])
            value = session.get_provider_options().get(CUDA, {}).get("use_tf32", value)
    disabled = override == "0" or str(value) == "0"
    detail = (
        f"CUDA provider option use_tf32={value}; {env}: float32 MatMul/Conv "
        + ("run in strict float32" if disabled else "may run in TF32 (10-bit mantissa) on Ampere or newer GPUs")
        + "; for a strict float32 baseline pass the provider option use_tf32=0"
    )
    return Check("TF32", None, detail)


def run_checks() -> list[Check]:
    distributions = check_distributions()
    providers, ort = check_providers()
    gpu = check_gpu_visible()
    libs = check_cuda_libraries(ort)
    usable, reason, fix = cuda_status()
    session = Check(f"{CUDA} session", usable, reason, fix)
    return [distributions, providers, gpu, libs, session, check_tf32(usable)]


def main(as_json: bool = False) -> int:
    checks = run_checks()
    usable = checks[4].ok is True
    if as_json:
        print(json.dumps({"cuda_usable": usable, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            mark = "ok  " if check.ok else ("info" if check.ok is None else "FAIL")
            print(f"[{mark}] {check.name}: {check.detail}")
            if check.ok is False and check.fix:
                print(f"       fix: {check.fix}")
        print(
            "\nCUDA works here: sessions really run on the GPU."
            if usable
            else f"\nCUDA cannot be used here: {checks[4].detail}"
        )
    return 0 if usable else 1


if __name__ == "__main__":
    sys.exit(main("--json" in sys.argv))
