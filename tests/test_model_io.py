"""Tolerant loading: models that onnx.checker rejects but ONNX Runtime runs are repaired, converted, reported,
and the output is valid; "truncated" is said only of truncated bytes; sparse tensors convert."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import ModelFileError
from tests.helpers import assert_topologically_sorted, init, make_model, run, session, vi
from tests.models import unsorted_model

W = np.arange(9, dtype=np.float32).reshape(3, 3) / 10


def _typeless_value_info() -> onnx.ModelProto:
    model = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"), helper.make_node("Relu", ["m"], ["y"], name="r")],
        [vi("x", TensorProto.FLOAT, [2, 3])],
        [vi("y", TensorProto.FLOAT, [2, 3])],
        [init("W", W)],
    )
    model.graph.value_info.append(onnx.ValueInfoProto(name="m"))
    return model


def _ir3(opset: int) -> onnx.ModelProto:
    """IR 3 with initializers that are not graph inputs: the checker refuses, ONNX Runtime runs it."""
    model = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"), helper.make_node("Relu", ["m"], ["y"], name="r")],
        [vi("x", TensorProto.FLOAT, [2, 3])],
        [vi("y", TensorProto.FLOAT, [2, 3])],
        [init("W", W)],
        opset=opset,
    )
    model.ir_version = 3
    return model


CASES = {
    "unsorted": (unsorted_model, "sorted the nodes of graph 'g' topologically (2 nodes moved)"),
    "typeless_value_info": (_typeless_value_info, "dropped 1 value_info entries without a type in graph 'g'"),
    "ir3_opset8": (lambda: _ir3(8), "added 1 initializers as graph inputs, as IR version < 4 requires (W)"),
    "ir3_opset7": (lambda: _ir3(7), "added 1 initializers as graph inputs, as IR version < 4 requires (W)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("route", ["path", "proto"])
@pytest.mark.parametrize("keep_io_types", [False, True])
def test_checker_failing_models_ort_runs_convert(name, route, keep_io_types, tmp_path):
    build, repair = CASES[name]
    model = build()
    session(model)  # ONNX Runtime runs the input as it is
    before = model.SerializeToString()
    path = tmp_path / "in.onnx"
    path.write_bytes(before)
    result = fp16.convert_float16(path if route == "path" else model, keep_io_types=keep_io_types)
    assert f"repaired the input: {repair}" in result.report.notes
    assert model.SerializeToString() == before  # the caller's proto is never changed
    out = result.model
    onnx.checker.check_model(out, full_check=True)  # the repaired input is valid, so is the output
    assert out.ir_version == model.ir_version
    assert_topologically_sorted(out.graph)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0].astype(np.float32), run(model, {"x": x})[0], atol=1e-2)


def test_cli_converts_an_unsorted_model_and_reports_the_repair(tmp_path):
    source = tmp_path / "in.onnx"
    onnx.save(unsorted_model(), source)
    report = tmp_path / "report.json"
    out = str(tmp_path / "out.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "olive_fp16_pass.cli", "convert", str(source), "-o", out, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "note: repaired the input: sorted the nodes of graph 'g' topologically" in done.stdout
    assert any("sorted the nodes" in note for note in __import__("json").loads(report.read_text())["notes"])
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"), full_check=True)


def test_node_feeding_a_subgraph_is_sorted_before_it(tmp_path):
    """The If's branches read `a` from the outer graph: the sort must place its producer before the If."""
    then_graph = helper.make_graph(
        [
            helper.make_node("Mul", ["a", "two"], ["t"], name="mul_outer"),  # reads outer-scope `a`
            helper.make_node("Neg", ["t"], ["then_out"], name="neg"),
        ],
        "then",
        [],
        [vi("then_out", TensorProto.FLOAT, [3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["else_out"], name="id")],
        "else",
        [],
        [vi("else_out", TensorProto.FLOAT, [3])],
    )
    model = make_model(
        [
            helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_graph, else_branch=else_graph),
            helper.make_node("Relu", ["x"], ["a"], name="relu"),  # produces what the If's branches read
        ],
        [vi("x", TensorProto.FLOAT, [3]), vi("c", TensorProto.BOOL, [])],
        [vi("y", TensorProto.FLOAT, [3])],
        [init("two", np.float32(2))],
    )
    session(model)
    result = fp16.convert_float16(model)
    assert any("sorted the nodes of graph 'g'" in n for n in result.report.notes)
    onnx.checker.check_model(result.model, full_check=True)
    x = np.array([1, -2, 3], np.float32)
    for cond in (True, False):
        expected = run(model, {"x": x, "c": np.array(cond)})[0]
        np.testing.assert_allclose(run(result.model, {"x": x, "c": np.array(cond)})[0].astype(np.float32), expected)


def test_model_cut_after_its_graph_is_called_truncated(tmp_path):
    data = unsorted_model().SerializeToString()
    full = onnx.load_from_string(data)
    graph_only = onnx.ModelProto(ir_version=full.ir_version)
    graph_only.graph.CopyFrom(full.graph)
    cut = graph_only.SerializeToString()
    assert data.startswith(cut)  # a real prefix of the file's bytes: what a cut download leaves
    path = tmp_path / "cut.onnx"
    path.write_bytes(cut)
    with pytest.raises(ModelFileError, match="cut.onnx: truncated or incomplete ONNX model"):
        fp16.convert_float16(path)


def test_checker_failure_that_cannot_be_repaired_is_a_warning_not_truncated(tmp_path):
    """Duplicate metadata keys fail the checker; ONNX Runtime runs the model. Never blamed on truncation."""
    model = unsorted_model()
    model.metadata_props.add(key="k", value="1")
    model.metadata_props.add(key="k", value="2")
    session(model)
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    result = fp16.convert_float16(path)
    text = " ".join(result.report.warnings)
    assert "does not pass onnx.checker" in text and "duplicate keys in metadata_props" in text
    assert "truncated" not in text
    session(result.model)


def _sparse_model(linear: bool) -> onnx.ModelProto:
    dense = np.zeros((3, 3), np.float32)
    dense[0, 1], dense[2, 2] = 1.5, -2.0
    values = numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "W")
    if linear:
        indices = numpy_helper.from_array(np.array([1, 8], np.int64), "W_idx")
    else:
        indices = numpy_helper.from_array(np.array([[0, 1], [2, 2]], np.int64), "W_idx")
    sparse = helper.make_sparse_tensor(values, indices, [3, 3])
    model = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", TensorProto.FLOAT, [2, 3])],
        [vi("y", TensorProto.FLOAT, [2, 3])],
        sparse_initializer=[sparse],
    )
    return model, dense


@pytest.mark.parametrize("linear", [True, False])
def test_sparse_initializer_converts(linear, tmp_path):
    model, dense = _sparse_model(linear)
    result = fp16.convert_float16(model)
    assert any("densified 1 sparse initializers (W)" in n for n in result.report.notes)
    out = tmp_path / "out.onnx"
    result.save(out)
    loaded = onnx.load(out)
    onnx.checker.check_model(loaded, full_check=True)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3)).astype(np.float32)
    np.testing.assert_allclose(run(loaded, {"x": x})[0].astype(np.float32), x @ dense, atol=1e-2)


def test_sparse_constant_converts(tmp_path):
    values = numpy_helper.from_array(np.array([4.0, 5.0], np.float32), "v")
    indices = numpy_helper.from_array(np.array([0, 2], np.int64), "i")
    sparse = helper.make_sparse_tensor(values, indices, [3])
    model = make_model(
        [
            helper.make_node("Constant", [], ["k"], name="const", sparse_value=sparse),
            helper.make_node("Add", ["x", "k"], ["y"], name="add"),
        ],
        [vi("x", TensorProto.FLOAT, [3])],
        [vi("y", TensorProto.FLOAT, [3])],
    )
    result = fp16.convert_float16(model)
    assert any("sparse Constant made dense" in n for n in result.report.notes)
    x = np.ones(3, np.float32)
    np.testing.assert_allclose(run(result.model, {"x": x})[0].astype(np.float32), [5, 1, 6])


def test_malformed_sparse_initializer_is_refused():
    model, _ = _sparse_model(True)
    model.graph.sparse_initializer[0].indices.CopyFrom(numpy_helper.from_array(np.array([1, 99], np.int64), "W_idx"))
    with pytest.raises(ModelFileError, match="sparse initializer 'W' is malformed"):
        fp16.convert_float16(model)


def _sparse_constant(name: str, dense: np.ndarray) -> onnx.NodeProto:
    flat = np.flatnonzero(dense)
    values = numpy_helper.from_array(dense.ravel()[flat].astype(np.float32), f"{name}_values")
    indices = numpy_helper.from_array(flat.astype(np.int64), f"{name}_indices")
    sparse = helper.make_sparse_tensor(values, indices, list(dense.shape))
    return helper.make_node("Constant", [], [name], name=name, sparse_value=sparse)


def test_sparse_constant_and_typeless_value_info_in_subgraphs_are_repaired():
    """Loading finds what it repairs inside If branches too (load_repair.scan_model walks subgraphs once)."""
    k = np.array([0.0, 2.0, -3.0], np.float32)
    then_graph = helper.make_graph(
        [_sparse_constant("k", k), helper.make_node("Mul", ["outer", "k"], ["t"], name="then_mul")],
        "then",
        [],
        [vi("t", TensorProto.FLOAT, [3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Add", ["outer", "x"], ["e"], name="else_add")], "else", [], [vi("e", TensorProto.FLOAT, [3])]
    )
    else_graph.value_info.append(onnx.ValueInfoProto(name="e"))  # no type: trips type inference
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["outer"], name="relu"),
            helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph, name="if"),
        ],
        [vi("x", TensorProto.FLOAT, [3]), vi("cond", TensorProto.BOOL, [])],
        [vi("y", TensorProto.FLOAT, [3])],
    )
    result = fp16.convert_float16(model)
    notes = " ".join(result.report.notes)
    assert "node 'k' attribute 'sparse_value': sparse Constant made dense" in notes
    assert "dropped 1 value_info entries without a type in graph 'else'" in notes
    x = np.array([1.0, -2.0, 3.0], np.float32)
    got_then = run(result.model, {"x": x, "cond": np.array(True)})[0].astype(np.float32)
    np.testing.assert_allclose(got_then, np.maximum(x, 0) * k, atol=1e-2)
    got_else = run(result.model, {"x": x, "cond": np.array(False)})[0].astype(np.float32)
    np.testing.assert_allclose(got_else, np.maximum(x, 0) + x, atol=1e-2)


def test_external_data_inside_a_function_is_held_to_the_rules():
    """A function body's Constant pointing out of the model's folder is refused like an initializer would be:
    the one walk that tells load whether a model has external data covers functions."""
    value = numpy_helper.from_array(np.ones(3, np.float32), "c")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    for key, entry in {"location": "../outside.bin", "offset": "0", "length": "12"}.items():
        value.external_data.add(key=key, value=entry)
    function = helper.make_function(
        "local",
        "AddConst",
        ["a"],
        ["b"],
        [
            helper.make_node("Constant", [], ["c"], name="body_const", value=value),
            helper.make_node("Add", ["a", "c"], ["b"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    model = make_model(
        [helper.make_node("AddConst", ["x"], ["y"], domain="local", name="call")],
        [vi("x", TensorProto.FLOAT, [3])],
        [vi("y", TensorProto.FLOAT, [3])],
        extra_opsets=[("local", 1)],
    )
    model.functions.append(function)
    with pytest.raises(
        ModelFileError, match=r"node 'body_const' attribute 'value' location '\.\./outside\.bin' leads out"
    ):
        fp16.convert_float16(model)
