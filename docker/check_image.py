"""Build-time check of docker/Dockerfile's image: exactly onnxruntime-gpu is installed, built for this image's CUDA.

onnxruntime-gpu wheels are built for one CUDA major version (1.31 on PyPI: CUDA 13, cuDNN 9), and NVIDIA's
images say theirs in `CUDA_VERSION`. pyproject's `gpu` extra gives no upper bound, so a later onnxruntime-gpu
built for another CUDA major would install fine and then fall back to the CPU at run time; this check turns
that drift into a failed build naming the base image to use. The CUDA major of the wheel comes from
onnxruntime's build info (`onnxruntime.capi.build_and_package_info.cuda_version`, what `olive-fp16 doctor`
reads), else from the wheel's `cuda` extra (`nvidia-cuda-runtime~=13.0`, `nvidia-cuda-runtime-cu12~=12.0`).
Run by the Dockerfile after the installation; exit 1 with one line per problem.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import sys

_RUNTIME_REQUIREMENT = re.compile(r"^nvidia-cuda-runtime(?:-cu(\d+))?\s*(?:[~=<>!]=?\s*(\d+))?")


def cuda_major_from_requirements(requirements: list[str]) -> str | None:
    """The CUDA major of an onnxruntime-gpu wheel from its requirements (its `cuda` extra), or None."""
    for requirement in requirements:
        match = _RUNTIME_REQUIREMENT.match(requirement.strip())
        if match and (match.group(1) or match.group(2)):
            return match.group(1) or match.group(2)
    return None


def wheel_cuda_major() -> str | None:
    """The CUDA major that the installed onnxruntime-gpu was built for."""
    try:
        from onnxruntime.capi import build_and_package_info as info

        version = getattr(info, "cuda_version", None)
        if version:
            return str(version).split(".")[0]
    except ImportError:
        pass
    return cuda_major_from_requirements(importlib.metadata.requires("onnxruntime-gpu") or [])


def problems(distributions: dict[str, str], wheel_cuda: str | None, image_cuda: str | None) -> list[str]:
    """What is wrong with the image: `distributions` maps installed onnxruntime distributions to versions,
    `wheel_cuda` is the CUDA major the onnxruntime-gpu wheel wants, `image_cuda` the base image's CUDA_VERSION."""
    found = []
    if "onnxruntime-gpu" not in distributions:
        found.append("onnxruntime-gpu is not installed (pyproject's `gpu` extra names it)")
    if "onnxruntime" in distributions:
        found.append(
            f"the CPU build onnxruntime {distributions['onnxruntime']} is installed too; both provide the module "
            "`onnxruntime` (scripts/setup_env.sh removes it)"
        )
    image_major = image_cuda.split(".")[0] if image_cuda else None
    if "onnxruntime-gpu" in distributions and wheel_cuda and image_major and wheel_cuda != image_major:
        found.append(
            f"onnxruntime-gpu {distributions['onnxruntime-gpu']} is built for CUDA {wheel_cuda}, but the base image "
            f"has CUDA {image_cuda}: build with --build-arg BASE_IMAGE=nvidia/cuda:<{wheel_cuda}.x.y>-cudnn-runtime-"
            "ubuntu24.04"
        )
    if "onnxruntime-gpu" in distributions and image_major is None:
        found.append("CUDA_VERSION is not set: the base image is not one of NVIDIA's CUDA images")
    return found


def main() -> int:
    distributions = {}
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            distributions[name] = importlib.metadata.version(name)
    wheel_cuda = wheel_cuda_major() if "onnxruntime-gpu" in distributions else None
    found = problems(distributions, wheel_cuda, os.environ.get("CUDA_VERSION"))
    for problem in found:
        print(f"docker/check_image.py: {problem}", file=sys.stderr)
    if not found:
        print(
            f"docker/check_image.py: onnxruntime-gpu {distributions['onnxruntime-gpu']} for CUDA {wheel_cuda or '?'}, "
            f"image CUDA {os.environ.get('CUDA_VERSION')}"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
