"""README promises of the command line that no other test shows: node names are full matches, `--strict` exits 3,
and what `olive auto-opt` / `olive optimize` do about float16 (read from the installed Olive's sources)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from olive_fp16_pass.runtime import provider_status
from tests.helpers import init, make_model, run_cli, vi

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CUDA_USABLE = provider_status("CUDAExecutionProvider")[0]


cli = run_cli


def _two_convs(path: Path) -> Path:
    """Nodes `/enc/conv_1` and `/dec/conv_2` (the README's example names)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="/enc/conv_1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="/dec/conv_2", pads=[1, 1, 1, 1]),
    ]
    weights = [init(f"w{k}", rng.standard_normal((3, 3, 3, 3)).astype(np.float32) * 0.2) for k in (1, 2)]
    model = make_model(nodes, [vi("x", shape=[1, 3, 8, 8])], [vi("y", shape=[1, 3, 8, 8])], weights)
    onnx.save(model, path)
    return path


def _fp32_nodes(report: Path) -> set[str]:
    data = json.loads(report.read_text())
    return {d["node"] for d in data["fp32_nodes"]}


def test_node_names_must_match_the_whole_name(tmp_path):
    model = _two_convs(tmp_path / "m.onnx")
    report = tmp_path / "r.json"
    partial = cli("convert", model, "-o", tmp_path / "a.onnx", "--node-block-list", "conv", "--report", report)
    assert partial.returncode == 0, partial.stderr
    assert _fp32_nodes(report) == set()  # `conv` does not match /enc/conv_1 ...
    assert "conv" in json.dumps(
        json.loads(report.read_text())["warnings"]
    )  # ... and the report says it matched nothing
    whole = cli("convert", model, "-o", tmp_path / "b.onnx", "--node-block-list", ".*conv.*", "--report", report)
    assert whole.returncode == 0, whole.stderr
    assert _fp32_nodes(report) == {"/enc/conv_1", "/dec/conv_2"}
    only = cli("convert", model, "-o", tmp_path / "c.onnx", "--node-include-list", "/dec/.*", "--report", report)
    assert only.returncode == 0, only.stderr
    assert _fp32_nodes(report) == {"/enc/conv_1"}  # only /dec/conv_2 goes to float16


@pytest.mark.skipif(CUDA_USABLE, reason="CUDA runs here: --strict has nothing to refuse")
@pytest.mark.parametrize("command", ["amp", "compare"])
def test_strict_exits_3_when_the_provider_cannot_run(tmp_path, command):
    model = _two_convs(tmp_path / "m.onnx")
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.random.default_rng(0).uniform(0, 1, (4, 1, 3, 8, 8)).astype(np.float32))
    target = ["-o", tmp_path / "out.onnx"] if command == "amp" else [model]
    proc = cli(command, model, *target, "--data", feeds, "--strict", "--max-abs", "0.1")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "CUDAExecutionProvider" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_auto_opt_and_optimize_choose_olives_passes_not_ours():
    """README: `olive auto-opt` uses OrtTransformersOptimization with float16, `olive optimize` uses
    OnnxFloatToFloat16, and neither names our passes (their pass lists come from Olive's own names)."""
    olive = pytest.importorskip("olive")
    cli_dir = Path(olive.__file__).parent / "cli"
    auto_opt = (cli_dir / "auto_opt.py").read_text()
    optimize = (cli_dir / "optimize.py").read_text()
    assert '("transformer_optimizer", "float16")' in auto_opt and '"OrtTransformersOptimization"' in auto_opt
    assert '{"type": "OnnxFloatToFloat16"}' in optimize
    for source in (auto_opt, optimize):
        assert "OnnxFloat16" not in source.replace("OnnxFloatToFloat16", "")
        assert "OnnxAutoMixedPrecision" not in source and "olive_fp16" not in source


def test_feeds_written_by_my_model_data_are_read_by_the_command_line(tmp_path):
    """README (Your own model): `workflows/my_model_data.py` writes `feeds/`, one sample per file without the batch
    dimension (Olive's dataloader adds it); the README's `compare --data feeds/` and `convert --calibration-data
    feeds/` read that same folder (a batch axis of 1 added), and `--localize` lists the largest increases with the
    increase first, in the order it sorts them."""
    model = _two_convs(tmp_path / "m.onnx")
    feeds = tmp_path / "feeds"
    written = subprocess.run(
        [sys.executable, "workflows/my_model_data.py", "--model", model, "--out", feeds, "--count", "4"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert written.returncode == 0, written.stderr
    with np.load(feeds / "0000.npz") as sample:
        assert sample["x"].shape == (3, 8, 8)  # no batch dimension: what Olive's npz_feeds dataset yields
    calibrated = cli("convert", model, "-o", tmp_path / "fp16.onnx", "--calibration-data", feeds)
    assert calibrated.returncode == 0, calibrated.stderr
    compared = cli("compare", model, tmp_path / "fp16.onnx", "--data", feeds, "--localize")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "4 feeds" in compared.stdout
    lines = compared.stdout.split("largest increases over the inputs:\n")[1].splitlines()
    increases = [float(line.split("': ")[1].split()[0]) for line in lines if line.startswith("  #")]
    assert increases and increases == sorted(increases, reverse=True)


@pytest.mark.parametrize("spelling", ["none", "None"])
def test_cli_provider_none_is_no_provider_rule(tmp_path, spelling):
    """`convert --help`: "None: no provider-specific rule"; on the command line that is `--provider none`, and the
    report says null, not a provider named "None"."""
    model = _two_convs(tmp_path / "m.onnx")
    report = tmp_path / "r.json"
    proc = cli("convert", model, "-o", tmp_path / "o.onnx", "--provider", spelling, "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["options"]["provider"] is None
