"""`olive run` with OnnxFloat16 on unusual inputs: external data (the output's data file exists), an
unsafe external_data_name, a model the checker rejects but ONNX Runtime runs.

Weights kept in float32 stay lazily read from the input's data file; written as they were, the output model
pointed at a `model.onnx.data` that does not exist beside it (exit 0, an unloadable model).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from olive_fp16_pass.load_check import SaveCheck
from tests.helpers import init, make_model, output_attributes, run, run_workflow, vi


def _model() -> onnx.ModelProto:
    """Weights above Olive's 256-byte external-data threshold: W converts to fp16, `big` stays fp32."""
    rng = np.random.default_rng(0)
    return make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
            helper.make_node("Mul", ["a", "big"], ["b"], name="mul_big"),
            helper.make_node("Relu", ["b"], ["y"], name="relu"),
        ],
        [vi("x", TensorProto.FLOAT, ["batch", 64])],
        [vi("y", TensorProto.FLOAT, ["batch", 128])],
        [init("W", rng.standard_normal((64, 128)).astype(np.float32)), init("big", np.full(128, 1e-6, np.float32))],
    )


@pytest.mark.parametrize("save_as_external_data", [False, True])
def test_olive_run_on_external_data_model_writes_a_loadable_output(tmp_path, save_as_external_data):
    original = _model()
    source = tmp_path / "in" / "model.onnx"
    source.parent.mkdir()
    stored = onnx.ModelProto()
    stored.CopyFrom(original)  # onnx.save with external data rewrites the proto it is given
    onnx.save(stored, source, save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    # Run from another folder, and without the input folder: nothing may resolve through it.
    proc = _run_workflow(tmp_path, source, {"save_as_external_data": save_as_external_data})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out" / "model.onnx"
    (source.parent / "model.onnx.data").rename(tmp_path / "moved.data")
    header = onnx.load(out, load_external_data=False)
    for tensor in header.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}["location"]
            assert (out.parent / location).is_file(), f"{tensor.name} points at a missing {location}"
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in header.graph.initializer) == (
        save_as_external_data
    )
    attributes = output_attributes(tmp_path)
    # the output was load-checked on its own files as they were written (load_check.SaveCheck)
    assert SaveCheck.DONE in attributes["olive_fp16_report"]["notes"]
    converted = onnx.load(out)
    onnx.checker.check_model(converted, full_check=True)
    assert {t.name: t.data_type for t in converted.graph.initializer} == {
        "W": onnx.TensorProto.FLOAT16,
        "big": onnx.TensorProto.FLOAT,
    }
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(run(converted, {"x": x})[0], run(original, {"x": x})[0], rtol=2e-2, atol=1e-6)


def _run_workflow(tmp_path, model_path, pass_config: dict):
    return run_workflow(tmp_path, model_path, {"fp16": {"type": "OnnxFloat16", **pass_config}})


def test_olive_run_refuses_an_external_data_name_leaving_the_output_folder(tmp_path):
    source = tmp_path / "in" / "model.onnx"
    source.parent.mkdir()
    onnx.save(_model(), source)
    proc = _run_workflow(tmp_path, source, {"save_as_external_data": True, "external_data_name": "../../escaped.data"})
    assert "external_data_name: '../../escaped.data' must be a plain file name" in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("escaped.data")) and not list(tmp_path.parent.glob("escaped.data"))


def test_olive_run_converts_an_unsorted_model_and_reports_the_repair(tmp_path):
    from tests.models import unsorted_model

    source = tmp_path / "unsorted.onnx"
    onnx.save(unsorted_model(), source)
    proc = _run_workflow(tmp_path, source, {})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    attributes = output_attributes(tmp_path)
    notes = attributes["olive_fp16_report"]["notes"]
    assert "repaired the input: sorted the nodes of graph 'g' topologically (2 nodes moved)" in notes
    onnx.checker.check_model(onnx.load(tmp_path / "out" / "model.onnx"), full_check=True)
