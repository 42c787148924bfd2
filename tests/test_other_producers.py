"""Forms the other converters write (skl2onnx, onnxmltools, tf2onnx), rebuilt with onnx.helper.

Each is a failure bench/other_converters.py found on a real export: the test models reproduce the form, not
the producer (the CI venv has neither scikit-learn nor TensorFlow).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import olive_fp16_pass as fp16
from olive_fp16_pass.runtime import run_session
from tests.helpers import session
from tests.models import (
    dict_vectorizer_model,
    float64_regressor,
    old_opset_mlp,
    scan_cancellation_model,
    string_and_float_inputs,
    string_feeds,
    zipmap_classifier,
)
from tests.test_fusion_safe import all_optimizations_session


def _rows(n: int = 4, rows: int = 6, features: int = 4, dtype=np.float32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"X": rng.standard_normal((rows, features)).astype(dtype)} for _ in range(n)]


def _probabilities(outputs) -> np.ndarray:
    """ZipMap's output, a list of {class: probability} dicts, as a (rows, classes) array."""
    return np.array([[row[k] for k in sorted(row)] for row in outputs[1]], np.float32)


def _sequence_of_maps(model: onnx.ModelProto) -> onnx.TypeProto:
    return next(o.type for o in model.graph.output if o.name == "output_probability")


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize("route", ["proto", "path"])
def test_zipmap_classifier_converts_keeps_its_map_output_and_loads(tmp_path, route, keep_io_types):
    """ZipMap's seq(map(int64, float)) output made onnx-ir refuse the model ("Map types are not supported")."""
    model = zipmap_classifier()
    source: onnx.ModelProto | str = model
    if route == "path":
        source = str(tmp_path / "in.onnx")
        onnx.save(model, source)
    result = fp16.convert_float16(source, keep_io_types=keep_io_types)
    saved = tmp_path / "out.onnx"
    result.save(saved)
    for out in (result.model, onnx.load(str(saved))):
        assert _sequence_of_maps(out) == _sequence_of_maps(model)
        onnx.checker.check_model(out, full_check=True)
        assert {n.op_type for n in out.graph.node if n.domain == "ai.onnx.ml"} == {"Scaler", "ZipMap"}
        decisions = {d.node: d.precision.value for d in result.report.decisions}
        assert decisions["matmul"] == "fp16" and decisions["zipmap"] == "fp32" and decisions["scaler"] == "fp32"
        feed = _rows(1)[0]
        expected = session(model).run(None, feed)
        typed = {"X": feed["X"].astype(np.float32 if keep_io_types else np.float16)}
        got = all_optimizations_session(out).run(None, typed)
        np.testing.assert_allclose(_probabilities(got), _probabilities(expected), atol=3e-3)


def test_zipmap_classifier_mixed_precision():
    model = zipmap_classifier()
    result = fp16.auto_mixed_precision(
        model, _rows(), rtol=None, atol=None, max_abs=1e-2, keep_io_types=True, progress=False
    )
    assert _sequence_of_maps(result.model) == _sequence_of_maps(model)
    # The search compares ZipMap's dicts as numbers: it used to fail every candidate on them and return all float32.
    assert result.report.search["criteria_met"]
    decisions = {d.node: d.precision.value for d in result.report.decisions}
    assert decisions["matmul"] == "fp16" and decisions["softmax"] == "fp16"
    expected = session(model).run(None, _rows(1)[0])
    got = all_optimizations_session(result.model).run(None, _rows(1)[0])
    np.testing.assert_allclose(_probabilities(got), _probabilities(expected), atol=1e-2)


def test_float64_model_is_returned_unchanged_by_both_entry_points():
    """skl2onnx keeps the training dtype: a float64 graph. AMP cast its float64 feeds to float32 and crashed."""
    model = float64_regressor()
    data = _rows(dtype=np.float64)
    converted = fp16.convert_float16(model)
    assert any("unchanged" in note for note in converted.report.notes)
    amp = fp16.auto_mixed_precision(model, data, rtol=1e-6, atol=1e-9, progress=False)
    for result in (converted, amp):
        assert [n.op_type for n in result.model.graph.node] == ["MatMul", "Add"]
        assert result.model.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
        np.testing.assert_array_equal(session(result.model).run(None, data[0])[0], session(model).run(None, data[0])[0])


def test_string_inputs_in_mixed_precision():
    """A string column beside float ones: AMP's I/O binding cannot bind strings ("Only binding non-string")."""
    model = string_and_float_inputs()
    data = string_feeds()
    result = fp16.auto_mixed_precision(model, data, rtol=None, atol=None, max_abs=2e-2, progress=False)
    assert result.model.graph.input[0].type.tensor_type.elem_type == TensorProto.STRING
    decisions = {d.node: d.precision.value for d in result.report.decisions}
    assert decisions["matmul"] == "fp16"
    expected = session(model).run(None, data[0])[0]
    got = run_session(all_optimizations_session(result.model), data[0])[0]  # float16 "num" (keep_io_types=False)
    np.testing.assert_allclose(got.astype(np.float32), expected, atol=2e-2)


def test_default_opset_8_model_in_mixed_precision():
    """onnxmltools' LightGBM exports import opset 8, before Where (9): AMP's gated emulation model failed to load."""
    model = old_opset_mlp()
    data = [{"input": np.random.default_rng(i).standard_normal((5, 8)).astype(np.float32)} for i in range(4)]
    result = fp16.auto_mixed_precision(model, data, rtol=None, atol=None, max_abs=5e-2, progress=False)
    assert {o.domain or "": o.version for o in result.model.opset_import}[""] == 8
    assert result.model.ir_version == 4
    assert sum(d.precision.value == "fp16" for d in result.report.decisions) >= 3
    onnx.checker.check_model(result.model, full_check=True)
    expected = session(model).run(None, data[0])[0]
    got = run_session(all_optimizations_session(result.model), data[0])[0]
    np.testing.assert_allclose(got.astype(np.float32), expected, atol=5e-2 * np.abs(expected).max())


def test_map_input_converts_and_mixed_precision_feeds_it_as_a_dict():
    """DictVectorizer's map(string, float) input: kept through onnx-ir, and fed to onnxruntime as the user's dict
    (run_session made a 0-d object array of it; AMP's feed checks read a tensor type it does not have)."""
    model = dict_vectorizer_model()
    data = [{"input": {"a": 0.5 * i, "b": -1.0, "c": 0.25 + i}} for i in range(4)]
    expected = session(model).run(None, data[1])[0]
    for keep_io_types in (True, False):
        converted = fp16.convert_float16(model, keep_io_types=keep_io_types).model
        assert converted.graph.input[0].type == model.graph.input[0].type
        onnx.checker.check_model(converted, full_check=True)
        got = run_session(all_optimizations_session(converted), data[1])[0]
        np.testing.assert_allclose(got.astype(np.float32), expected, atol=5e-3)
    result = fp16.auto_mixed_precision(model, data, rtol=None, atol=None, max_abs=1e-2, progress=False)
    assert {d.node: d.precision.value for d in result.report.decisions}["matmul"] == "fp16"
    got = run_session(all_optimizations_session(result.model), data[1])[0]
    np.testing.assert_allclose(got.astype(np.float32), expected, atol=1e-2)


def test_mixed_precision_keeps_a_scan_body_in_float32_when_its_accuracy_needs_it():
    """The search forces main-graph nodes; forcing a Scan (float32 at its interface anyway) did not reach its
    body, so no candidate met the criteria and even the "all float32" fallback ran the body in float16."""
    model = scan_cancellation_model()
    data = [{"x": np.random.default_rng(i).uniform(-0.1, 0.1, (6, 8)).astype(np.float32)} for i in range(4)]
    result = fp16.auto_mixed_precision(
        model, data, rtol=None, atol=None, max_abs=1e-3, keep_io_types=True, progress=False
    )
    assert result.report.search["criteria_met"]
    decisions = {d.node: d for d in result.report.decisions}
    assert decisions["body_add"].precision.value == "fp32" and decisions["body_sub"].precision.value == "fp32"
    assert decisions["gain_mul"].precision.value == "fp16"  # found by the search, not the all-float32 fallback
    expected = session(model).run(None, data[3])[0]
    got = all_optimizations_session(result.model).run(None, data[3])[0]
    np.testing.assert_allclose(got, expected, atol=1e-3)
