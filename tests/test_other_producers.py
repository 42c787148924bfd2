"""Forms the other converters write (skl2onnx, onnxmltools, tf2onnx), rebuilt with onnx.helper.

Each is a failure bench/other_converters.py found on a real export: the test models reproduce the form, not
the producer (the CI venv has neither scikit-learn nor TensorFlow).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import olive_fp16_pass as fp16
from tests.helpers import session
from tests.models import zipmap_classifier
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
    all_optimizations_session(result.model).run(None, _rows(1)[0])
