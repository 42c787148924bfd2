"""`olive-fp16 doctor`, and the one CUDA verdict it shares with the workflow guard and bench/latency.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from olive_fp16_pass.doctor import cuda_problem, installed_distributions
from olive_fp16_pass.runtime import provider_status

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CUDA_USABLE = provider_status("CUDAExecutionProvider")[0]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env or ENV, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(CUDA_USABLE, reason="CUDA works on this machine: doctor exits 0 (test_doctor_json)")
def test_doctor_exits_non_zero_here_with_the_exact_reason_and_fix():
    proc = run("-m", "olive_fp16_pass.cli", "doctor")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _, reason = provider_status("CUDAExecutionProvider")
    assert f"CUDA cannot be used here: {reason}" in proc.stdout
    assert "[FAIL] CUDAExecutionProvider session" in proc.stdout
    if "onnxruntime-gpu" not in installed_distributions():  # this machine: the CPU build
        assert "CUDAExecutionProvider is not in this onnxruntime build" in reason
        assert 'fix: pip uninstall -y onnxruntime && pip install "onnxruntime-gpu[cuda,cudnn]"' in proc.stdout


def test_doctor_json_lists_every_check_and_agrees_with_the_exit_code():
    proc = run("-m", "olive_fp16_pass.cli", "doctor", "--json")
    data = json.loads(proc.stdout)
    names = [c["name"] for c in data["checks"]]
    assert names == [
        "onnxruntime distribution",
        "providers",
        "GPU visible (nvidia-smi)",
        "CUDA/cuDNN libraries",
        "CUDAExecutionProvider session",
        "TF32",
    ]
    assert data["cuda_usable"] is CUDA_USABLE
    assert proc.returncode == (0 if CUDA_USABLE else 1)
    for check in data["checks"]:
        if check["ok"] is False:
            assert check["fix"], check  # every problem comes with the command that fixes it


@pytest.mark.skipif(CUDA_USABLE, reason="needs a machine where CUDA cannot run")
def test_workflow_guard_and_latency_bench_print_the_doctor_sentence():
    problem = cuda_problem()
    assert problem
    guard = run(
        "-c",
        "from olive_fp16_pass.showcase.workflow_guard import require_provider\n"
        "require_provider('CUDAExecutionProvider', cpu_workflow='workflows/denoise_fp16_cpu.json')",
    )
    assert guard.returncode == 3 and problem in guard.stderr, guard.stderr
    bench = run("bench/latency.py", "--small")
    assert bench.returncode == 2 and problem in bench.stderr, bench.stderr


def test_version_and_help_for_every_option():
    from olive_fp16_pass import __version__
    from olive_fp16_pass.cli import build_parser

    proc = run("-m", "olive_fp16_pass.cli", "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"olive-fp16 {__version__}"
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = []
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not action.help:
                missing.append(f"{name} {action.dest}")
    assert not missing, f"options without help: {missing}"
    convert_help = subparsers.choices["convert"].format_help()
    assert "--op-include-list" in convert_help and "--node-include-list" in convert_help
    assert "WHOLE name" in convert_help


def test_convert_op_include_list_flag(tmp_path):
    import onnx
    from onnx import TensorProto

    from tests.models import benign_mlp

    model = tmp_path / "mlp.onnx"
    onnx.save(benign_mlp(), model)
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    convert = ["-m", "olive_fp16_pass.cli", "convert", str(model), "-o", str(out), "--op-include-list", "MatMul"]
    proc = run(*convert, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    fp32 = {d["op_type"] for d in json.loads(report.read_text())["fp32_nodes"]}
    assert "MatMul" not in fp32 and {"Tanh", "Add"} <= fp32
    assert any(t.data_type == TensorProto.FLOAT16 for t in onnx.load(out).graph.initializer)
    both = run(*convert, "--op-block-list", "Tanh")
    assert both.returncode == 2 and "mutually exclusive" in both.stderr


def test_doctor_finds_both_onnxruntime_distributions(tmp_path):
    """pip records an install as a .dist-info folder; with onnxruntime-gpu's beside onnxruntime's, the two share
    the module `onnxruntime` and doctor must say so, with the command that cleans it up."""
    if "onnxruntime-gpu" in installed_distributions():
        pytest.skip("onnxruntime-gpu is installed here: the other distribution is the one to add")
    info = tmp_path / "onnxruntime_gpu-1.31.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.31.1\n")
    env = {**ENV, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    proc = run("-m", "olive_fp16_pass.cli", "doctor", "--json", env=env)
    check = json.loads(proc.stdout)["checks"][0]
    assert check["ok"] is False and "both onnxruntime and onnxruntime-gpu are installed" in check["detail"]
    assert check["fix"].startswith("pip uninstall -y onnxruntime onnxruntime-gpu")
    assert proc.returncode != 0
