"""Our evaluator and passes as the target (and host) of Olive's PythonEnvironment system, in a second venv.

The second venv is made here from the base interpreter (`python -m venv --without-pip`); a `.pth` line puts
the shared venv's site-packages on its path, so Olive and onnxruntime import there, while the shared venv's
own `.pth` files (our editable install and its import hook) are *not* processed: our package is importable
there only the way the README documents (`environment_variables: {"PYTHONPATH": ...}`, or installed, which
adds the import hook's `.pth`; the second test copies that file as `pip install` would).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytest.importorskip("olive")

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1"}


def _second_venv(root: Path, *, with_hook: bool) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout.strip()
    (Path(purelib) / "shared_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if with_hook:  # what `pip install olive-fp16` adds beside the package
        shutil.copy(REPO / "olive_fp16_pass/olive/autoregister.pth", Path(purelib) / "olive_fp16_pass_autoregister.pth")
    return root / "bin"


def _workflow(tmp_path: Path, venv_bin: Path, *, host_too: bool) -> Path:
    config = json.loads((REPO / "workflows/denoise_fp16_cpu.json").read_text())
    config["passes"] = {"precision": {"type": "OnnxFloat16"}}
    metric = config["evaluators"]["denoise_quality"]["metrics"][0]
    metric["user_config"]["evaluate_func_kwargs"].update(image_size=64, repeat=2)
    config["systems"]["other_env"] = {
        "type": "PythonEnvironment",
        "config": {
            "python_environment_path": str(venv_bin),
            "environment_variables": {"PYTHONPATH": str(REPO)},
            "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
        },
    }
    config["target"] = "other_env"
    if host_too:
        config["host"] = "other_env"
    config.update(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(config))
    return path


def _run(tmp_path: Path, workflow: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "olive", "run", "--config", str(workflow)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "out" / "model.onnx").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = subprocess.run(
        [sys.executable, "-m", "olive_fp16_pass.cli", "report", str(tmp_path / "out")],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return json.loads((tmp_path / "out" / "report.json").read_text())


def _evaluating_python(report: dict) -> dict:
    sidecar = json.loads(Path(report["chosen"]["model_path"]).with_suffix(".eval.json").read_text())
    return sidecar["python"]


def test_evaluator_runs_in_the_target_env_without_the_import_hook(tmp_path):
    venv_bin = _second_venv(tmp_path / "venv", with_hook=False)
    report = _run(tmp_path, _workflow(tmp_path, venv_bin, host_too=False))
    python = _evaluating_python(report)
    assert python["executable"] == str(venv_bin / "python")  # evaluated in the second venv, not the host
    assert python["import_hook_active"] is False  # and it needed no hook there
    assert report["device_labels"] == ["CPU"] and report["chosen"]["goals_met"]
    assert report["input_model_metrics"]["max_8bit_change"] == 0


def test_passes_and_evaluator_run_in_an_env_where_the_package_is_installed(tmp_path):
    """Host and target in the second venv: Olive's pass runner there resolves OnnxFloat16 through that
    env's own import hook (installed with the package), not the host's."""
    venv_bin = _second_venv(tmp_path / "venv", with_hook=True)
    report = _run(tmp_path, _workflow(tmp_path, venv_bin, host_too=True))
    assert report["chosen"]["passes"] == ["OnnxFloat16 (olive-fp16)"]
    assert _evaluating_python(report)["executable"] == str(venv_bin / "python")
