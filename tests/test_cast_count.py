"""Casts at the lower bound: one per tensor that crosses a precision boundary, none cancelling another."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from tests.helpers import check_converted, count_ops, init, make_model, vi

UNARY = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs"]
BINARY = ["Add", "Mul", "Sub", "Max"]


def random_mixed_graph(seed: int, n_nodes: int = 80) -> onnx.ModelProto:
    """A DAG with fan-out, shared initializers and several inputs/outputs."""
    rng = np.random.default_rng(seed)
    tensors = ["x0", "x1"]
    shared = [f"w{i}" for i in range(4)]
    nodes = []
    for i in range(n_nodes):
        if rng.random() < 0.4:
            op = str(rng.choice(UNARY))
            inputs = [str(rng.choice(tensors[-10:]))]
        else:
            op = str(rng.choice(BINARY))
            other = str(rng.choice(shared)) if rng.random() < 0.3 else str(rng.choice(tensors))
            inputs = [str(rng.choice(tensors[-10:])), other]
        out = f"t{i}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"n{i}"))
        tensors.append(out)
    consumed = {name for node in nodes for name in node.input}
    outputs = [*[t for t in tensors[2:] if t not in consumed][:4], tensors[-1]]
    outputs = list(dict.fromkeys(outputs))
    return make_model(
        nodes,
        [vi("x0", TensorProto.FLOAT, [4]), vi("x1", TensorProto.FLOAT, [4])],
        [vi(o, TensorProto.FLOAT, [4]) for o in outputs],
        [init(w, rng.uniform(0.5, 1.0, 4).astype(np.float32)) for w in shared],
    )


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


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("keep_io", [False, True])
def test_cast_count_equals_lower_bound(seed, keep_io):
    model = random_mixed_graph(seed)
    rng = np.random.default_rng(100 + seed)
    blocked = [f"n{i}" for i in range(len(model.graph.node)) if rng.random() < 0.5]
    result = fp16.convert_float16(model, node_block_list=blocked, keep_io_types=keep_io)
    fp32_nodes = {d.node for d in result.report.fp32_nodes}
    assert fp32_nodes == set(blocked)
    out = result.model
    expected = lower_bound(model, fp32_nodes, keep_io)
    assert count_ops(out, "Cast") == expected == result.report.casts_inserted
    # No Cast reads another Cast's output (no pairs that cancel out).
    cast_outputs = {n.output[0] for n in out.graph.node if n.op_type == "Cast"}
    assert not [n.name for n in out.graph.node if n.op_type == "Cast" and n.input[0] in cast_outputs]
    check_converted(model, out, atol=5e-2, rtol=5e-2)


def test_all_fp16_graph_needs_no_cast():
    model = random_mixed_graph(7)
    result = fp16.convert_float16(model)
    assert count_ops(result.model, "Cast") == 0 == lower_bound(model, set(), False)
