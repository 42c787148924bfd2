"""Shared helpers for tests: building small real models and checking a conversion end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

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


def session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    """`optimize=False`: graph optimizations off (a model that does not load under ORT's fusions still runs)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
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


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    sess = session(model, optimize)
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


def lower_bound(model: onnx.ModelProto, fp32_nodes: set[str], keep_io: bool) -> int:
    """Tensors whose consumers need another precision than the one the tensor can be stored in.

    Computed from the original graph and the set of float32 nodes only, independently of the converter.
    """
    io = "fp32" if keep_io else "fp16"
    initializers = {t.name for t in model.graph.initializer}
    producer = {i.name: io for i in model.graph.input}
    for node in model.graph.node:
        for out in node.output:
            producer[out] = "fp32" if node.name in fp32_nodes else "fp16"
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add("fp32" if node.name in fp32_nodes else "fp16")
    for out in model.graph.output:
        consumers.setdefault(out.name, set()).add(io)
    count = 0
    for name, needs in consumers.items():
        if name in initializers:
            count += len(needs) > 1  # stored once in one precision, a Cast for the other
        else:
            count += bool(needs - {producer[name]})
    return count


def canonical(model: onnx.ModelProto) -> list[tuple]:
    """Nodes, attributes, IO types and initializers as plain tuples, subgraphs included: equal means the same model."""

    def graph(g: onnx.GraphProto) -> list[tuple]:
        rows = []
        for node in g.node:
            attrs = []
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    attrs.append((a.name, tuple(graph(a.g))))
                else:
                    attrs.append((a.name, onnx.helper.get_attribute_value(a).__repr__()))
            rows.append((node.op_type, tuple(node.input), tuple(node.output), tuple(sorted(attrs))))
        rows.append(("outputs", tuple((o.name, o.type.tensor_type.elem_type) for o in g.output)))
        rows.append(("inputs", tuple((i.name, i.type.tensor_type.elem_type) for i in g.input)))
        rows.append(("init", tuple(sorted((t.name, t.data_type, t.raw_data or b"") for t in g.initializer))))
        return rows

    return graph(model.graph)


def all_optimizations_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A CPU session with every graph optimization: where ORT's fusions fail on a precision boundary."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


OLIVE = [sys.executable, "-m", "olive"]


def olive_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Olive 0.13 waits ~10 s at exit for a telemetry heartbeat unless it believes it runs in CI.
    return {**os.environ, "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1", **(extra or {})}


def run_olive(args: list[str], tmp_path: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = olive_env(env_extra)
    return subprocess.run([*OLIVE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    """`olive-fp16 ARGS` as a user runs it, in a fresh interpreter (this checkout's package first), from the
    repository root."""
    return subprocess.run(
        [sys.executable, "-m", "olive_fp16_pass.cli", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_workflow(tmp_path: Path, model_path: Path, passes: dict, data_configs: list[dict] | None = None) -> Path:
    """The one-model workflow the Olive tests run: `model_path` through `passes`, into tmp_path/out (cache in
    tmp_path/cache), written to tmp_path/workflow.json."""
    config: dict = {"input_model": {"type": "ONNXModel", "model_path": str(model_path)}}
    if data_configs:
        config["data_configs"] = data_configs
    config.update(
        passes=passes, output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), log_severity_level=1
    )
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(config))
    return path


def run_workflow(
    tmp_path: Path, model_path: Path, passes: dict, data_configs: list[dict] | None = None
) -> subprocess.CompletedProcess:
    """`olive run` of `write_workflow`'s workflow, from tmp_path."""
    return run_olive(["run", "--config", str(write_workflow(tmp_path, model_path, passes, data_configs))], tmp_path)


def user_data_config(name: str, user_script: Path, dataset: str) -> dict:
    """A data config whose dataset `dataset` is registered by `user_script`, in batches of two."""
    return {
        "name": name,
        "user_script": str(user_script),
        "load_dataset_config": {"type": dataset},
        "dataloader_config": {"batch_size": 2},
    }


def output_attributes(tmp_path: Path) -> dict:
    """The model attributes of the output model of a workflow written by `write_workflow` (our report in it)."""
    return json.loads((tmp_path / "out" / "model_config.json").read_text())["config"]["model_attributes"]
