"""Bring your own model, as a new user does it: torch.onnx.export, the template, the shipped data script, the report.

Each test runs the real steps as subprocesses: `torch.onnx.export` of a small CNN (model.onnx +
model.onnx.data), `python workflows/my_model_data.py` for feeds, the template with only its EDIT_ME places
edited, `olive run`, then `olive-fp16 report`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from olive_fp16_pass.runtime import provider_status

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1"}

EXPORT = """
import sys
import torch

class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))

torch.manual_seed(0)
torch.onnx.export(SmallCNN().eval(), (torch.rand(1, 3, 32, 32),), sys.argv[1], input_names=["image"],
                  output_names=["out"], dynamic_shapes={"x": {0: "batch"}}, dynamo=True)
"""


def _run(args: list[str], cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> Path:
    """What the user starts with: their exported model (with external data) and feeds from the shipped script."""
    folder = tmp_path_factory.mktemp("byom")
    (folder / "export.py").write_text(EXPORT)
    exported = _run([sys.executable, str(folder / "export.py"), str(folder / "model.onnx")], cwd=folder)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (folder / "model.onnx.data").is_file()  # torch.onnx.export wrote external data
    feeds = _run(
        [sys.executable, "workflows/my_model_data.py", "--model", str(folder / "model.onnx"), "--out",
         str(folder / "feeds"), "--shape", "image:1x3x32x32", "--count", "8"]
    )  # fmt: skip
    assert feeds.returncode == 0, feeds.stderr[-3000:]
    assert "RANDOM" in feeds.stdout  # random data is announced as such
    assert len(list((folder / "feeds").glob("*.npz"))) == 8
    return folder


def _edited_template(folder: Path, template: str, out: str, passes: dict | None = None) -> Path:
    """The template with its EDIT_ME places filled in (model, feeds folder), nothing else, unless `passes`."""
    text = (REPO / template).read_text()
    assert text.count("EDIT_ME") == 2, "the template's EDIT_ME places changed: update this test and the README"
    text = text.replace("EDIT_ME/your_model.onnx", str(folder / "model.onnx"))
    text = text.replace("EDIT_ME/your_feeds_folder", str(folder / "feeds"))
    config = json.loads(text)
    config.update(output_dir=str(folder / out), cache_dir=str(folder / f"cache_{out}"))
    if passes is not None:
        config["passes"] = passes
    path = folder / f"{out}.json"
    path.write_text(json.dumps(config))
    return path


def _run_and_report(folder: Path, workflow: Path, out: str) -> tuple[dict, str]:
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(workflow)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _run([sys.executable, "-m", "olive_fp16_pass.cli", "report", str(folder / out)])
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return json.loads((folder / out / "report.json").read_text()), (folder / out / "report.md").read_text()


def _check_generic_report(report: dict, text: str) -> None:
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = table[0]
    # Only what the workflow measured: Olive's latency (p50, min, p90), no denoiser column, no "None".
    assert "latency p50 (ms)" in header and "latency min (ms)" in header and "latency p90 (ms)" in header
    for absent in ("max_8bit_change", "psnr", "ssim", "pixels_changed", "goals met"):
        assert absent not in header, absent
    assert "None" not in text
    assert "Measured on: **CPU**" in text and "unknown" not in text
    assert "no goals" in text and "meeting every goal" not in text
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[1:-1]] for line in table[2:]}
    fp32 = rows["FP32 input model"]
    candidate = next(cells for name, cells in rows.items() if name != "FP32 input model")
    latency = header.split("|")[1:-1].index(" latency p50 (ms) ")
    assert float(fp32[latency]) > 0 and float(candidate[latency]) > 0  # both latencies shown
    assert candidate[-1] == "CPUExecutionProvider"
    chosen = report["chosen"]
    assert chosen["latency_vs_input"]["baseline"] == report["input_model_metrics"]["p50"]
    if chosen["latency_vs_input"]["ratio"] > 1:
        assert "slower than its FP32 input" in text


def test_byom_full_fp16_on_cpu_report_is_generic(user_model):
    """The template with the user's choice of full FP16 (OnnxFloat16) instead of the search: works today."""
    passes = {"precision": {"type": "OnnxFloat16", "keep_io_types": True}}
    workflow = _edited_template(user_model, "workflows/my_model_fp16_cpu.json", "out_fp16", passes)
    report, text = _run_and_report(user_model, workflow, "out_fp16")
    _check_generic_report(report, text)
    assert report["chosen"]["passes"] == ["OnnxFloat16 (olive-fp16)"]


def test_byom_template_as_shipped_on_cpu(user_model):
    """The CPU template exactly as shipped (OnnxAutoMixedPrecision), only the EDIT_ME places edited."""
    workflow = _edited_template(user_model, "workflows/my_model_fp16_cpu.json", "out_amp")
    report, text = _run_and_report(user_model, workflow, "out_amp")
    _check_generic_report(report, text)
    assert report["chosen"]["passes"] == ["OnnxAutoMixedPrecision (olive-fp16)"]


def _readme_commands() -> list[str]:
    """The shell commands of README's "Your own model" block from the copy of the template on (the export and
    the feeds are the fixture's), continuation lines joined."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Your own model") :]
    block = section[section.index("```bash\n") + len("```bash\n") : section.index("```\n", section.index("```bash"))]
    block = block.replace("\\\n", " ")
    commands = [line for line in block.splitlines() if line.strip()]
    first = next(i for i, line in enumerate(commands) if line.startswith("sed "))
    return commands[first:]


def test_readme_byom_commands_work_as_written_and_leave_the_template_alone(user_model):
    """The README told users to edit the tracked templates (workflows/my_model_fp16*.json); its commands now copy
    the template with its EDIT_ME places filled in, and run as written in a shell, from a folder laid out like
    the repository root (`workflows/` beside the user's model.onnx and feeds/)."""
    commands = _readme_commands()
    assert any(c.startswith("olive run --config my_model_fp16_cpu.json") for c in commands), commands
    assert not any("workflows/my_model_fp16" in c and ("-i" in c.split() or c.startswith("olive ")) for c in commands)
    root = user_model / "root"
    root.mkdir()
    (root / "workflows").symlink_to(REPO / "workflows")
    for name in ("model.onnx", "model.onnx.data", "feeds"):
        (root / name).symlink_to(user_model / name)
    template = (REPO / "workflows/my_model_fp16_cpu.json").read_bytes()
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}"}
    script = "set -e\n" + "\n".join(c.split("  #")[0] for c in commands)
    proc = subprocess.run(["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (REPO / "workflows/my_model_fp16_cpu.json").read_bytes() == template
    copy = json.loads((root / "my_model_fp16_cpu.json").read_text())
    assert copy["input_model"]["model_path"] == "model.onnx"
    assert "EDIT_ME" not in json.dumps(copy)
    report = json.loads((root / "outputs/my_model_fp16_cpu/report.json").read_text())
    assert report["chosen"]["passes"] == ["OnnxAutoMixedPrecision (olive-fp16)"]


@pytest.mark.skipif(provider_status("CUDAExecutionProvider")[0], reason="CUDA is usable here")
def test_byom_cuda_template_exits_3_naming_its_cpu_twin(user_model):
    workflow = _edited_template(user_model, "workflows/my_model_fp16.json", "out_cuda")
    proc = _run([sys.executable, "-m", "olive", "run", "--config", str(workflow)], timeout=300)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "targets CUDAExecutionProvider, which cannot run here" in proc.stderr
    assert "olive run --config my_model_fp16_cpu.json  # your copy of workflows/my_model_fp16_cpu.json" in proc.stderr
    assert "run_denoise.sh" not in proc.stderr  # that script runs the denoiser, not the user's model
    assert "Traceback" not in proc.stderr
    assert not (user_model / "out_cuda").exists()


def test_templates_differ_only_in_target():
    """The CPU twin is the CUDA template with a CPU target: what a user edits is the same in both."""
    gpu = json.loads((REPO / "workflows/my_model_fp16.json").read_text())
    cpu = json.loads((REPO / "workflows/my_model_fp16_cpu.json").read_text())
    assert gpu["data_configs"][0] == cpu["data_configs"][0]
    assert [d["name"] for d in gpu["data_configs"]] == ["validation", "cuda_guard"]
    assert gpu["evaluators"] == cpu["evaluators"]
    assert cpu["systems"]["target_system"]["accelerators"][0]["execution_providers"] == ["CPUExecutionProvider"]
    assert gpu["passes"]["precision"]["strict"] is True and cpu["passes"]["precision"]["strict"] is False
