"""Real `olive run` subprocesses: our pass resolves with no extra flag, and through --package-config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.helpers import (
    init,
    make_model,
    olive_env,
    output_attributes,
    run,
    run_olive,
    run_workflow,
    user_data_config,
    vi,
    write_workflow,
)


def _model(path: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
            helper.make_node("Mul", ["a", "big"], ["b"], name="mul_big"),
            helper.make_node("Relu", ["b"], ["y"], name="relu"),
        ],
        [vi("x", TensorProto.FLOAT, ["batch", 8])],
        [vi("y", TensorProto.FLOAT, ["batch", 4])],
        [init("W", rng.standard_normal((8, 4)).astype(np.float32)), init("big", np.full(4, 1e-6, np.float32))],
    )
    onnx.save(model, path)
    return model


def _workflow(tmp_path: Path) -> Path:
    passes = {
        "fp16": {"type": "OnnxFloat16", "node_block_list": ["no_such_node"]},
        # One of Olive's built-in passes after ours: float16 inputs/outputs back to float32.
        "io": {"type": "OnnxIODataTypeConverter", "name_pattern": ".*"},
    }
    return write_workflow(tmp_path, tmp_path / "model.onnx", passes)


def _check_output(tmp_path: Path, original: onnx.ModelProto) -> None:
    out = onnx.load(tmp_path / "out" / "model.onnx")
    onnx.checker.check_model(out, full_check=True)
    assert out.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # Olive's IO converter ran
    initializers = {t.name: t.data_type for t in out.graph.initializer}
    assert initializers == {"W": TensorProto.FLOAT16, "big": TensorProto.FLOAT}  # 1e-6: over 1% lost in fp16
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(original, {"x": x})[0], rtol=2e-2, atol=1e-6)
    attributes = output_attributes(tmp_path)
    report = attributes["olive_fp16_report"]
    assert report["fp32_nodes"][0]["node"] == "mul_big"
    assert report["fp32_nodes"][0]["rule"] == "weight_underflow"
    assert report["warnings"] == ["node_block_list: 'no_such_node' matches no node name in the model"]


def test_olive_run_resolves_our_pass_with_no_extra_flag(tmp_path):
    original = _model(tmp_path / "model.onnx")
    proc = run_olive(["run", "--config", str(_workflow(tmp_path))], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_output(tmp_path, original)


def test_olive_run_with_package_config_route(tmp_path):
    """The official route alone: auto-registration off, a package config written by our command."""
    original = _model(tmp_path / "model.onnx")
    package_config = tmp_path / "package_config.json"
    written = subprocess.run(
        [sys.executable, "-m", "olive_fp16_pass.cli", "package-config", "-o", str(package_config)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "package-config" in written.stdout
    data = json.loads(package_config.read_text())
    assert "OnnxFloatToFloat16" in data["passes"]  # Olive's built-ins kept
    entry = data["passes"]["OnnxFloat16"]
    assert {"CPUExecutionProvider", "CUDAExecutionProvider"} <= set(entry["supported_providers"])
    workflow = _workflow(tmp_path)
    no_hook = {"OLIVE_FP16_NO_AUTOREGISTER": "1"}
    failed = run_olive(["run", "--config", str(workflow)], tmp_path, no_hook)
    assert failed.returncode != 0
    assert "onnxfloat16" in (failed.stdout + failed.stderr).lower()
    proc = run_olive(["run", "--config", str(workflow), "--package-config", str(package_config)], tmp_path, no_hook)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_output(tmp_path, original)


def test_registration_patch_is_idempotent_and_keeps_builtins():
    from olive.package_config import OlivePackageConfig

    from olive_fp16_pass.olive.registration import patch_package_config

    assert patch_package_config(OlivePackageConfig) is False  # the .pth hook already patched it
    config = OlivePackageConfig.parse_file_or_obj(OlivePackageConfig.get_default_config_path())
    assert config.get_pass_module_config("OnnxFloat16").module_path.endswith("float16_pass.OnnxFloat16")
    assert config.get_pass_module_config("OnnxFloatToFloat16").module_path.startswith("olive.")
    assert config.import_pass_module("onnxfloat16").__name__ == "OnnxFloat16"
    with pytest.raises(ValueError, match="not found"):
        config.get_pass_module_config("NoSuchPass")


def test_import_hook_applies_compat_workarounds_when_olive_loads():
    code = (
        "from olive.workflows import run\n"
        "from olive_fp16_pass.olive import compat\n"
        "import json\n"
        "print(json.dumps([sorted(compat.applied()), sorted(k for k, v in compat.detect().items() if v)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=olive_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied, still_present = json.loads(proc.stdout.strip().splitlines()[-1])
    assert still_present == []
    assert "B1_custom_metric_serialization" in applied or not applied  # empty only on an Olive without the bugs


USER_DATA = """
import numpy as np
from tests.helpers import olive_env, run_olive
from olive.data.registry import Registry


class _Samples:
    def __init__(self, n):
        rng = np.random.default_rng(0)
        self.items = [rng.standard_normal(16).astype(np.float32) for _ in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {"x": self.items[i]}, 0


@Registry.register_dataset()
def amp_validation_samples(data_dir=None, **kwargs):
    return _Samples(16)
"""


def test_olive_run_auto_mixed_precision_with_data_config(tmp_path):
    from tests.models import activation_overflow_chain

    model = activation_overflow_chain()
    onnx.save(model, tmp_path / "model.onnx")
    (tmp_path / "user_data.py").write_text(USER_DATA)
    proc = run_workflow(
        tmp_path,
        tmp_path / "model.onnx",
        {"amp": {"type": "OnnxAutoMixedPrecision", "data_config": "val", "rtol": 0.01, "atol": 0.001}},
        [user_data_config("val", tmp_path / "user_data.py", "amp_validation_samples")],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = onnx.load(tmp_path / "out" / "model.onnx")
    onnx.checker.check_model(out, full_check=True)
    attributes = output_attributes(tmp_path)
    report = attributes["olive_fp16_report"]
    assert {d["node"]: d["rule"] for d in report["fp32_nodes"]} == {
        "scale_up2": "activation_overflow",
        "scale_down": "activation_overflow",
        "add_big": "accuracy",
        "sub_big": "accuracy",
    }
    search = report["search"]
    assert search["criteria_met"] and search["holdout_met"]
    assert search["validation_samples"] == 6 and search["holdout_samples"] == 2
    assert search["backend"]["mode"] == "emulation"  # CPU target: never plain CPU-EP runs of an fp16 graph
    x = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-2, atol=1e-3)


CALIBRATION_DATA = """
import numpy as np
from olive.data.registry import Registry


class _Rows:
    def __len__(self):
        return 6

    def __getitem__(self, i):  # the 5th sample drives the MatMul output to 16 * 64 * 100 = 102400
        return {"x": np.full((2, 64), 100.0 if i == 4 else 1.0, np.float32)}, 0


@Registry.register_dataset()
def calibration_rows(data_dir=None, **kwargs):
    return _Rows()
"""


def test_olive_run_float16_with_calibration_data_config(tmp_path):
    """Calibrated Float16 through `olive run`: OnnxFloat16 with a data_config keeps the activation-overflow
    MatMul (and the Div reading its output) in float32; without one, it converts everything."""
    from tests.models import matmul_activation_overflow

    model = matmul_activation_overflow()
    onnx.save(model, tmp_path / "model.onnx")
    (tmp_path / "user_data.py").write_text(CALIBRATION_DATA)
    proc = run_workflow(
        tmp_path,
        tmp_path / "model.onnx",
        {"fp16": {"type": "OnnxFloat16", "data_config": "calib", "overflow_margin": 2.0}},
        [user_data_config("calib", tmp_path / "user_data.py", "calibration_rows")],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = onnx.load(tmp_path / "out" / "model.onnx")
    onnx.checker.check_model(out, full_check=True)
    attributes = output_attributes(tmp_path)
    report = attributes["olive_fp16_report"]
    kept = {d["node"]: d for d in report["fp32_nodes"]}
    assert set(kept) == {"mm", "scale"}
    assert all(d["rule"] == "activation_overflow" and d["origin"] == "calibration" for d in kept.values())
    assert "reaches |102400| on calibration data" in kept["mm"]["detail"]
    assert report["calibration"]["samples"] == 3  # 6 samples in batches of 2: every batch measured
    assert "search" not in report


def test_olive_float_to_float16_config_with_only_the_type_changed_runs_and_evaluates(tmp_path):
    """README: a config of Olive's OnnxFloatToFloat16 only needs its "type" changed. Its options give the report
    notes longer than 255 bytes, and Olive 0.13 stats every string of a model config as a path before it evaluates
    the model (ENAMETOOLONG: "No output model produced", exit 0): the attached report cuts them, the file beside
    the model keeps them whole. Run on the README's own-model template (workflows/my_model_fp16_cpu.json)."""
    repo = Path(__file__).resolve().parent.parent
    _model(tmp_path / "model.onnx")
    feeds = tmp_path / "feeds"
    subprocess.run(
        [
            sys.executable,
            str(repo / "workflows/my_model_data.py"),
            "--model",
            str(tmp_path / "model.onnx"),
            "--out",
            str(feeds),
            "--count",
            "4",
            "--shape",
            "x:1x8",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    config = json.loads((repo / "workflows/my_model_fp16_cpu.json").read_text())
    config["input_model"]["model_path"] = str(tmp_path / "model.onnx")
    data = config["data_configs"][0]
    data["user_script"] = str(repo / data["user_script"])
    data["load_dataset_config"]["params"]["data_dir"] = str(feeds)
    config["passes"] = {
        "fp16": {
            "type": "OnnxFloat16",
            "min_positive_val": 1e-7,
            "max_finite_val": 1e4,
            "use_symbolic_shape_infer": True,
        }
    }
    config.update(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), evaluate_input_model=False)
    (tmp_path / "workflow.json").write_text(json.dumps(config))
    proc = run_olive(["run", "--config", str(tmp_path / "workflow.json")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "out" / "model.onnx").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "File name too long" not in proc.stdout + proc.stderr
    attributes = output_attributes(tmp_path)
    notes = attributes["olive_fp16_report"]["notes"]
    cut = next(note for note in notes if note.startswith("min_positive_val="))
    assert len(cut.encode()) <= 255 and cut.endswith("(full text: model.fp16_report.json)")
    whole = json.loads(next((tmp_path / "cache").rglob("*.fp16_report.json")).read_text())["notes"]
    assert any(note.startswith("min_positive_val=") and "tiny biases and epsilons convert" in note for note in whole)
