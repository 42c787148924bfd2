"""The main workflow, run for real: `olive run` on the shipped denoiser, then the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from olive_fp16_pass.runtime import provider_status
from tests.helpers import init

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1"}


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def _workflow_copy(tmp_path: Path, source: str = "workflows/denoise_fp16_cpu.json", **changes) -> Path:
    config = json.loads((REPO / source).read_text())
    config["output_dir"] = str(tmp_path / "out")
    config["cache_dir"] = str(tmp_path / "cache")
    config["evaluators"]["denoise_quality"]["metrics"][0]["user_config"]["evaluate_func_kwargs"]["repeat"] = 5
    for key, value in changes.items():
        config[key] = value
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(config))
    return path


def _tracked_models_state() -> str:
    """git's view of the shipped models folder: a workflow run must leave it as committed."""
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--", "olive_fp16_pass/showcase/models"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return proc.stdout if proc.returncode == 0 else "not a git checkout"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("denoise")
    before = _tracked_models_state()
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(_workflow_copy(tmp_path))])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _run([sys.executable, "-m", "olive_fp16_pass.cli", "report", str(tmp_path / "out")])
    return tmp_path / "out", report, (before, _tracked_models_state())


def test_cpu_workflow_produces_model_report_and_picture(cpu_run):
    out, report_proc, _ = cpu_run
    assert report_proc.returncode == 0, report_proc.stderr
    for name in ("model.onnx", "report.json", "report.md", "comparison.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "ok"
    assert report["device_labels"] == ["CPU"]  # honest labels: no GPU figure from a CPU run
    assert "CPU" in report_proc.stdout
    assert len(report["candidates"]) == 3
    chosen = report["chosen"]
    assert chosen["goals_met"] and chosen["providers_used"] == ["CPUExecutionProvider"]
    metrics = chosen["metrics"]
    assert metrics["max_8bit_change"] <= 2 and metrics["pixels_changed_pct"] <= 5 and metrics["nonfinite"] == 0
    assert metrics["psnr_vs_fp32"] >= 50
    assert metrics["psnr_vs_clean"] > report["input_model_metrics"]["psnr_vs_clean"] - 0.1
    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


def test_selection_rule_fastest_among_goal_meeting(cpu_run):
    """Whatever the measured latencies, the chosen candidate is the fastest of those meeting every goal."""
    out, _, _ = cpu_run
    report = json.loads((out / "report.json").read_text())
    meeting = [c for c in report["candidates"] if c["goals_met"]]
    fastest = min(c["metrics"]["latency_ms"] for c in meeting)
    assert report["chosen"]["metrics"]["latency_ms"] == fastest


def test_fp32_input_is_exact_against_itself(cpu_run):
    """One session set-up for the reference and every candidate: the FP32 row shows no change at all."""
    out, _, _ = cpu_run
    report = json.loads((out / "report.json").read_text())
    baseline = report["input_model_metrics"]
    assert baseline["max_8bit_change"] == 0 and baseline["pixels_changed_pct"] == 0
    assert baseline["max_abs_vs_fp32"] == 0 and baseline["nonfinite"] == 0
    assert baseline["psnr_vs_fp32"] == 200.0  # identical outputs (infinite PSNR) as Olive can store it


def test_latency_is_not_capped_and_has_its_spread(cpu_run):
    out, _, _ = cpu_run
    report = json.loads((out / "report.json").read_text())
    for row in [report["input_model_metrics"], *(c["metrics"] for c in report["candidates"])]:
        assert row["latency_min_ms"] <= row["latency_ms"] <= row["latency_p90_ms"]
    for candidate in report["candidates"]:
        sidecar = json.loads(Path(candidate["model_path"]).with_suffix(".eval.json").read_text())
        assert candidate["metrics"]["latency_ms"] == pytest.approx(float(np.median(sidecar["latency_ms_all"])))


def test_goals_mean_what_the_readme_says(cpu_run):
    out, report_proc, _ = cpu_run
    goals = json.loads((out / "report.json").read_text())["goals"]
    thresholds = {g["short"]: (g["op"], g["threshold"]) for g in goals.values()}
    assert thresholds == {
        "max_8bit_change": ("<=", 2),
        "pixels_changed_pct": ("<=", 5),
        "psnr_vs_fp32": (">=", 50),
        "nonfinite": ("<=", 0),
    }
    assert "max_8bit_change = " in report_proc.stdout and "goal <= 2" in report_proc.stdout


def test_workflow_leaves_the_tracked_models_folder_alone(cpu_run):
    """No sidecar beside the shipped reference model, and no committed file with a machine's absolute path."""
    _, _, (before, after) = cpu_run
    assert after == before
    assert not list((REPO / "olive_fp16_pass/showcase/models").glob("*.eval.*"))


def test_picture_is_labelled_and_fp32_and_chosen_look_the_same(cpu_run):
    from PIL import Image

    out, report_proc, _ = cpu_run
    report = json.loads((out / "report.json").read_text())
    image = Image.open(out / "comparison.png")
    labels = json.loads(image.text["olive-fp16-labels"])
    chosen = report["chosen"]["passes"][0]
    assert labels[:3] == ["noisy input", "FP32 (reference)", f"chosen: {chosen}"]
    assert labels[3].startswith("|chosen - FP32| x50") and "white >= 0.02" in labels[3]
    assert labels[4].startswith("zoom x4")
    assert any(line.startswith("max_8bit_change = ") and "goal <= 2" in line for line in labels[5:])
    for line in labels[5:]:
        assert line in report_proc.stdout  # the same figures in report.md
    pixels = np.asarray(image.convert("RGB")).astype(int)
    title, size, gap = 36, 256, 8
    panels = [pixels[title : title + size, i * (size + gap) : i * (size + gap) + size] for i in range(4)]
    noisy, fp32, fp16, diff = panels
    assert np.abs(fp32 - fp16).max() <= 2  # at most 2 of 255 levels: invisible
    assert np.abs(noisy - fp32).mean() > 5  # the denoiser really changed the picture
    assert diff.max() < 128  # amplified x50, the difference stays dim
    assert (pixels[:title] < 128).any()  # the labels are drawn, not only stored


def _overflowing_denoiser(path: Path) -> None:
    """The shipped denoiser followed by x*300*300/9e4: the identity in FP32, inf in FP16 activations."""
    model = onnx.load(REPO / "olive_fp16_pass/showcase/models/denoiser.onnx")
    graph = model.graph
    out = graph.output[0].name
    graph.node.extend(
        [
            helper.make_node("Mul", [out + "_pre", "k300"], ["ov1"], name="ov_mul1"),
            helper.make_node("Mul", ["ov1", "k300"], ["ov2"], name="ov_mul2"),
            helper.make_node("Div", ["ov2", "k9e4"], [out], name="ov_div"),
        ]
    )
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == out and node.name not in ("ov_div",):
                node.output[i] = out + "_pre"
    graph.initializer.extend([init("k300", np.float32(300.0)), init("k9e4", np.float32(9e4))])
    onnx.save(model, path)


def test_selection_picks_amp_when_full_fp16_misses_the_goal(tmp_path):
    _overflowing_denoiser(tmp_path / "model.onnx")
    config = _workflow_copy(tmp_path, input_model={"type": "ONNXModel", "model_path": str(tmp_path / "model.onnx")})
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(config)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report_proc = _run([sys.executable, "-m", "olive_fp16_pass.cli", "report", str(tmp_path / "out")])
    assert report_proc.returncode == 0, report_proc.stdout + report_proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    by_pass = {c["passes"][0].split()[0]: c for c in report["candidates"]}
    assert not by_pass["OnnxFloat16"]["goals_met"]
    assert not by_pass["OnnxFloatToFloat16"]["goals_met"]
    assert by_pass["OnnxAutoMixedPrecision"]["goals_met"]
    assert report["chosen"]["passes"][0].startswith("OnnxAutoMixedPrecision")
    kept = {n["node"]: n["rule"] for n in report["chosen"]["precision"]["fp32_nodes"]}
    assert kept.get("ov_mul2") == "activation_overflow"


@pytest.mark.skipif(provider_status("CUDAExecutionProvider")[0], reason="CUDA is usable here")
def test_cuda_workflow_stops_at_once_with_a_clear_message(tmp_path):
    config = _workflow_copy(tmp_path, source="workflows/denoise_fp16.json")
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(config)], timeout=300)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "targets CUDAExecutionProvider, which cannot run here" in proc.stderr
    assert "olive run --config workflows/denoise_fp16_cpu.json" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(provider_status("CUDAExecutionProvider")[0], reason="CUDA is usable here")
def test_pytorch_cuda_workflow_names_its_pytorch_cpu_twin(tmp_path):
    config = json.loads((REPO / "workflows/denoise_from_pytorch.json").read_text())
    config.update(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "workflow.json").write_text(json.dumps(config))
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(tmp_path / "workflow.json")], timeout=300)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "olive run --config workflows/denoise_from_pytorch_cpu.json" in proc.stderr
    cpu_twin = json.loads((REPO / "workflows/denoise_from_pytorch_cpu.json").read_text())
    assert cpu_twin["input_model"] == config["input_model"]  # the twin starts from the same PyTorch model


def test_report_exits_nonzero_when_no_candidate_met_the_goals(tmp_path):
    """Goals no float16 model can meet: Olive ends with no model (exit 0); our report exits 1."""
    config = json.loads(_workflow_copy(tmp_path).read_text())
    config["passes"]["precision"] = [{"type": "OnnxFloat16"}]
    sub_types = {s["name"]: s for s in config["evaluators"]["denoise_quality"]["metrics"][0]["sub_types"]}
    sub_types["max_8bit_change"]["goal"] = {"type": "threshold", "value": 0}  # no 8-bit pixel may change
    sub_types["pixels_changed_pct"]["goal"] = {"type": "threshold", "value": 0}
    (tmp_path / "workflow.json").write_text(json.dumps(config))
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(tmp_path / "workflow.json")])
    assert proc.returncode == 0  # Olive itself does not say it failed
    report_proc = _run([sys.executable, "-m", "olive_fp16_pass.cli", "report", str(tmp_path / "out")])
    assert report_proc.returncode == 1
    assert "No candidate met the goals" in report_proc.stdout
    assert json.loads((tmp_path / "out" / "report.json").read_text())["status"] == "no_candidate_met_goals"


def test_pytorch_workflow_cpu_variant(tmp_path):
    """workflows/denoise_from_pytorch_cpu.json with one precision pass."""
    config = json.loads((REPO / "workflows/denoise_from_pytorch_cpu.json").read_text())
    config["evaluators"]["denoise_quality"]["metrics"][0]["user_config"]["evaluate_func_kwargs"]["repeat"] = 3
    config["passes"]["precision"] = [{"type": "OnnxFloat16"}]
    config.update(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "workflow.json").write_text(json.dumps(config))
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(tmp_path / "workflow.json")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report_proc = _run([sys.executable, "-m", "olive_fp16_pass.cli", "report", str(tmp_path / "out")])
    assert report_proc.returncode == 0, report_proc.stdout + report_proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["chosen"]["passes"][:2] == ["OnnxConversion (Olive)", "OnnxFloat16 (olive-fp16)"]
    # the FP32 row ran in PyTorch, not on the target provider: said in the row and under the table
    assert report["input_model_type"].lower() == "pytorchmodel"
    row = next(line for line in report_proc.stdout.splitlines() if line.startswith("| FP32 input model"))
    assert row.startswith("| FP32 input model (PyTorch) |") and row.endswith("| PyTorch (not onnxruntime) |")
    assert "the ratios to it include the ONNX conversion" in report_proc.stdout
