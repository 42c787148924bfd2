"""Shared helpers for tests: building small real models and checking a conversion end to end."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # onnx 1.23 writes IR 14 by default; onnxruntime loads at most IR 13


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, extra_opsets=(), name="g", **kw):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers), **kw)
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)


def vi(name: str, dtype=TensorProto.FLOAT, shape: Sequence | None = None):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def feeds_for(model: onnx.ModelProto, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random float32 feeds in [-1, 1] (ints: small non-negative) for every graph input."""
    rng = np.random.default_rng(seed)
    dims = dims or {}
    feeds = {}
    initializer_names = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 3) for d in tensor_type.shape.dim]
        np_type = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(np_type, np.floating):
            feeds[value.name] = rng.uniform(-1, 1, shape).astype(np.float32)
        elif np_type == np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[value.name] = rng.integers(0, 3, shape).astype(np_type)
    return feeds


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = session(model)
    typed = {}
    for value in sess.get_inputs():
        array = feeds[value.name]
        if value.type == "tensor(float16)":
            array = array.astype(np.float16)
        elif value.type == "tensor(float)":
            array = array.astype(np.float32)
        typed[value.name] = array
    return sess.run(None, typed)


def check_converted(original: onnx.ModelProto, converted: onnx.ModelProto, *, atol=2e-2, rtol=2e-2, feeds=None):
    """Valid (full checker), same IR version and opsets, loads and runs, and matches float32 within tolerance."""
    onnx.checker.check_model(converted, full_check=True)
    assert converted.ir_version == original.ir_version
    assert {(o.domain, o.version) for o in converted.opset_import} == {
        (o.domain, o.version) for o in original.opset_import
    }
    assert_topologically_sorted(converted.graph)
    feeds = feeds if feeds is not None else feeds_for(original)
    expected = run(original, feeds)
    actual = run(converted, feeds)
    assert [o.name for o in converted.graph.output] == [o.name for o in original.graph.output]
    for name, e, a in zip([o.name for o in original.graph.output], expected, actual, strict=True):
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(a.astype(np.float32), e, atol=atol, rtol=rtol, err_msg=name)
        else:
            np.testing.assert_array_equal(a, e, err_msg=name)
    return actual


def assert_topologically_sorted(graph: onnx.GraphProto, outer: frozenset[str] = frozenset()) -> None:
    known = set(outer) | {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        for name in node.input:
            assert name in known, f"node {node.name or node.op_type} reads '{name}' before it is produced"
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                assert_topologically_sorted(attr.g, frozenset(known))
        known.update(node.output)


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    def walk(graph):
        n = 0
        for node in graph.node:
            n += node.op_type == op_type
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    n += walk(attr.g)
        return n

    return walk(model.graph)


def elem_type(model: onnx.ModelProto, name: str) -> int:
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if value.name == name:
            return value.type.tensor_type.elem_type
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return tensor.data_type
    raise KeyError(name)
