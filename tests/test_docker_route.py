"""The Docker route (README, "Docker"): docker/Dockerfile and workflows/denoise_fp16_docker.json, without a daemon.

What can be checked here: the image installs what pyproject's `gpu` extra names, through the same setup script
as a workstation (no version pin repeated in the Dockerfile); its base image's CUDA major is the one the
onnxruntime-gpu wheel wants (recorded from onnxruntime-gpu 1.31.1's metadata, and checked again at build time
by docker/check_image.py); the workflow validates through Olive's RunConfig, and the config Olive's Docker
system hands the container (Olive's own steps: host replaced by a local system, `to_json`, resources mounted
into the work dir) still holds our evaluator and imports there from the mounted user script alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker/Dockerfile"
WORKFLOW = REPO / "workflows/denoise_fp16_docker.json"
ENV = {**os.environ, "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO)}

# `Requires-Dist` of onnxruntime-gpu 1.31.1 (cp311 manylinux wheel on PyPI), its `cuda` and `cudnn` extras.
ORT_GPU_1_31_1_REQUIRES = [
    'nvidia-cuda-nvrtc~=13.0; extra == "cuda"',
    'nvidia-cuda-runtime~=13.0; extra == "cuda"',
    'nvidia-cufft~=12.0; extra == "cuda"',
    'nvidia-curand~=10.0; extra == "cuda"',
    'nvidia-cudnn-cu13~=9.0; extra == "cudnn"',
]


def _check_image():
    spec = importlib.util.spec_from_file_location("check_image", REPO / "docker/check_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"docker/Dockerfile has no ARG {name}=..."
    return match.group(1)


def test_dockerfile_installs_pyprojects_gpu_extra_through_the_setup_script():
    text = DOCKERFILE.read_text()
    extras = _dockerfile_arg("EXTRAS").split(",")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {"olive", "gpu"} <= set(extras) <= set(project["optional-dependencies"])
    assert any(req.startswith("onnxruntime-gpu") for req in project["optional-dependencies"]["gpu"])
    instructions = re.sub(r"\\\n\s*", " ", text).splitlines()  # continuation lines joined
    run = next(line for line in instructions if line.startswith("RUN") and "scripts/setup_env.sh" in line)
    assert 'source scripts/setup_env.sh "$EXTRAS"' in run and "&& /opt/venv/bin/python docker/check_image.py" in run
    # no pip install of its own, hence no version pin that could drift from pyproject or the setup script
    assert "pip install" not in text
    names = {"onnxruntime", "onnxruntime-gpu", "torch", "olive-ai", "pydantic", "onnx"}
    pinned = re.findall(r"\b([A-Za-z][\w.-]*)\s*(?:==|>=|~=|<=)\s*\d", text)
    assert not names & set(pinned), pinned


def test_base_image_has_the_cuda_major_the_onnxruntime_gpu_wheel_wants():
    check = _check_image()
    wheel_cuda = check.cuda_major_from_requirements(ORT_GPU_1_31_1_REQUIRES)
    assert wheel_cuda == "13"
    base = _dockerfile_arg("BASE_IMAGE")
    match = re.fullmatch(r"nvidia/cuda:(\d+\.\d+\.\d+)-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert match, base  # NVIDIA's image with cuDNN (onnxruntime-gpu needs cuDNN 9 beside CUDA)
    assert check.problems({"onnxruntime-gpu": "1.31.1"}, wheel_cuda, match.group(1)) == []
    # the recorded metadata is of the onnxruntime the project's CUDA kernel table was made from: regenerating
    # that table for another version is the moment to recheck the wheel's CUDA major and the base image
    kernels = json.loads((REPO / "olive_fp16_pass/data/cuda_kernels.json").read_text())
    assert kernels["onnxruntime_version"] == "1.31.1"


def test_check_image_names_each_problem():
    check = _check_image()
    assert check.cuda_major_from_requirements(['nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"']) == "12"
    assert check.cuda_major_from_requirements(["numpy>=1.21.6"]) is None
    (mismatch,) = check.problems({"onnxruntime-gpu": "1.20.1"}, "12", "13.0.1")
    assert "built for CUDA 12" in mismatch and "--build-arg BASE_IMAGE=nvidia/cuda:<12." in mismatch
    both = check.problems({"onnxruntime-gpu": "1.31.1", "onnxruntime": "1.31.1"}, "13", "13.0.1")
    assert len(both) == 1 and "CPU build onnxruntime" in both[0]
    assert "not installed" in check.problems({"onnxruntime": "1.32.0"}, None, "13.0.1")[0]
    assert "CUDA_VERSION is not set" in check.problems({"onnxruntime-gpu": "1.31.1"}, "13", None)[0]


def test_check_image_fails_here_where_only_the_cpu_build_is_installed():
    proc = subprocess.run(
        [sys.executable, str(REPO / "docker/check_image.py")],
        env={**ENV, "CUDA_VERSION": "13.0.1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.fail("onnxruntime is not importable: the test environment is incomplete")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "onnxruntime-gpu is not installed" in proc.stderr


def test_docker_workflow_is_the_cuda_workflow_with_a_docker_host():
    docker = json.loads(WORKFLOW.read_text())
    cuda = json.loads((REPO / "workflows/denoise_fp16.json").read_text())
    system = docker["systems"][docker["host"]]
    assert system["type"] == "Docker" and docker["target"] == "target_system"
    assert (REPO / system["config"]["build_context_path"] / system["config"]["dockerfile"]) == DOCKERFILE
    assert docker["systems"]["target_system"] == cuda["systems"]["target_system"]  # CUDA EP inside the container
    text = json.dumps(docker).replace("denoise_user_script_docker.py", "denoise_user_script_cuda.py")
    same = {k: v for k, v in json.loads(text).items() if k not in ("systems", "host", "cache_dir", "output_dir")}
    assert same == {k: v for k, v in cuda.items() if k not in ("systems", "host", "cache_dir", "output_dir")}
    # Olive mounts a folder under its base name: output and cache must not land on the same mount point
    assert Path(docker["output_dir"]).name != Path(docker["cache_dir"]).name


# What Olive 0.13's DockerSystem does before starting the container (olive/systems/docker/docker_system.py,
# `_prepare_container_config` and `_mount_workflow_config`), with the container's work dir as a local folder.
CONTAINER_CONFIG = r"""
import json, shutil, sys
from pathlib import Path
from olive.resource_path import find_all_resources
from olive.common.utils import set_nested_dict_value
from olive.systems.common import SystemType
from olive.systems.system_config import LocalTargetUserConfig, SystemConfig
from olive.workflows.run.config import RunConfig

workflow, work_dir = sys.argv[1], Path(sys.argv[2])
run_config = RunConfig.parse_file_or_obj(workflow)
host = run_config.engine.host
assert host.type == SystemType.Docker, host.type
docker = host.config
accelerators = host.config.accelerators
run_config.engine.host = SystemConfig(type=SystemType.Local, config=LocalTargetUserConfig(accelerators=accelerators))
assert run_config.engine.target.type in (SystemType.Local, SystemType.PythonEnvironment)
config = run_config.to_json(make_absolute=False)
config.pop("evaluators", None)
mounts = {}
for key, resource in find_all_resources(config, ignore_keys=["systems", "evaluators"]).items():
    source = Path(resource.get_path())
    target = work_dir / source.name
    assert mounts.setdefault(str(target), str(source)) == str(source), f"two resources mount at {target}"
    if source.is_file():
        shutil.copy(source, target)
    set_nested_dict_value(config, key, str(target))
(work_dir / "config.json").write_text(json.dumps(config))
print(json.dumps({"dockerfile": docker.dockerfile, "image": docker.image_name, "work_dir": docker.work_dir,
                  "device": str(accelerators[0].device), "mounts": mounts}))
"""

# Inside the container: Olive's workflow_runner parses the config it was given (importing the user scripts).
CONTAINER_PARSE = r"""
import json, sys
from olive.workflows.run.config import RunConfig
config = json.load(open(sys.argv[1]))
run_config = RunConfig.parse_file_or_obj(config)
metric = run_config.engine.evaluator.metrics[0]
print(json.dumps({"evaluate_func": metric.user_config.evaluate_func, "host": str(run_config.engine.host.type)}))
"""


@pytest.fixture(scope="module")
def container_config(tmp_path_factory) -> tuple[Path, dict]:
    pytest.importorskip("olive")
    work_dir = tmp_path_factory.mktemp("olive-ws")
    proc = subprocess.run(
        [sys.executable, "-c", CONTAINER_CONFIG, str(WORKFLOW), str(work_dir)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work_dir, json.loads(proc.stdout.strip().splitlines()[-1])


def test_docker_workflow_validates_and_names_olives_docker_system(container_config):
    _, info = container_config
    assert info["dockerfile"] == "docker/Dockerfile" and info["image"] == "olive-fp16:gpu"
    assert info["work_dir"] == "/olive-ws" and info["device"].lower().endswith("gpu")  # started with GPU access
    mounted = {Path(source).name for source in info["mounts"].values()}
    assert mounted == {"denoiser.onnx", "denoise_user_script_docker.py"}, mounted


def test_container_config_keeps_our_evaluator_and_imports_from_the_mounted_script(container_config):
    work_dir, _ = container_config
    # the container's python: our package installed (here: on PYTHONPATH), nothing of the repository beside it
    proc = subprocess.run(
        [sys.executable, "-c", CONTAINER_PARSE, str(work_dir / "config.json")],
        cwd=work_dir,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed["evaluate_func"] == "evaluate_denoiser"  # survived Olive's dump (compat B2)
    assert parsed["host"].lower().endswith("localsystem")


def test_in_the_image_the_user_script_stops_without_cuda(container_config):
    """docker/Dockerfile sets OLIVE_FP16_IN_IMAGE=1: there the mounted user script, which Olive imports first,
    stops a container without a usable GPU at once, exit 3, with `olive-fp16 doctor`'s sentence."""
    work_dir, _ = container_config
    script = work_dir / "denoise_user_script_docker.py"
    proc = subprocess.run(
        [sys.executable, "-c", f"import runpy; runpy.run_path({str(script)!r})"],
        cwd=work_dir,
        env={**ENV, "OLIVE_FP16_IN_IMAGE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode == 0:
        pytest.skip("CUDA really runs here: the guard lets the workflow through")
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "targets CUDAExecutionProvider, which cannot run here" in proc.stderr
    assert "ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv OLIVE_FP16_IN_IMAGE=1" in DOCKERFILE.read_text()


def test_dockerignore_keeps_local_environments_out_of_the_build_context():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "cache", "outputs"} <= ignored
