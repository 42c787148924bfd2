"""Synthetic FP32 transformer-like ONNX graphs of a chosen size, for conversion-speed benchmarks.

Why synthetic: the benchmark must scale a model from 1k to 100k nodes without downloading anything, and the
conversion cost of a float16 converter depends on the number of nodes, values and precision boundaries, not on
the size of the weights. So every block uses the op mix of a real transformer layer (MatMul with weights, bias
Add, LayerNormalization, Reshape/Transpose with int64 shape initializers, Softmax, Mul, Gelu written as Erf,
Relu, residual Add) but with 16x16 weights, which keeps a 100k-node model around 15 MB.

Node names look like PyTorch-exported names (`/blocks_12/attn/MatMul`) but hold no regular-expression
metacharacters, so the same list works as exact names for onnxconverter-common and onnxruntime and as
full-match patterns for `olive_fp16_pass.convert_float16`.
"""

from __future__ import annotations

import math
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 16
HEADS = 4
OPSET = 17
IR_VERSION = 10  # onnx 1.23 writes IR 14 by default; onnxruntime 1.2x-1.3x loads at most IR 13
NODES_PER_BLOCK = 16
_FLOAT_OPS = frozenset(
    {"MatMul", "Add", "Mul", "Div", "Erf", "Relu", "Softmax", "LayerNormalization", "Reshape", "Transpose"}
)


class _Block:
    """Collects the nodes and initializers of one transformer-like block, with unique, prefixed names."""

    def __init__(self, index: int, rng: np.random.Generator) -> None:
        self.prefix = f"/blocks_{index}"
        self.weight_prefix = f"blocks_{index}"
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        full = f"{self.weight_prefix}.{name}"
        self.initializers.append(numpy_helper.from_array(array, full))
        return full

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op_type: str, path: str, inputs: list[str], **attrs: object) -> str:
        name = f"{self.prefix}/{path}"
        output = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output


def _block(index: int, h: str, rng: np.random.Generator) -> tuple[_Block, str]:
    """One block (16 nodes): dense + LayerNorm, a softmax "attention" over 4 heads, an MLP with Gelu and Relu."""
    b = _Block(index, rng)
    a = b.node("MatMul", "attn/q/MatMul", [h, b.weight("q_weight", (HIDDEN, HIDDEN), 1 / math.sqrt(HIDDEN))])
    a = b.node("Add", "attn/q/Add", [a, b.weight("q_bias", (HIDDEN,), 0.1)])
    ln = b.node(
        "LayerNormalization",
        "attn/ln/LayerNormalization",
        [a, b.const("ln_scale", np.ones(HIDDEN, np.float32)), b.const("ln_bias", np.zeros(HIDDEN, np.float32))],
        axis=-1,
        epsilon=1e-5,
    )
    heads = b.node("Reshape", "attn/Reshape", [ln, b.const("heads_shape", np.array([-1, HEADS, HIDDEN // HEADS]))])
    heads = b.node("Transpose", "attn/Transpose", [heads], perm=[0, 2, 1])
    probs = b.node("Softmax", "attn/Softmax", [heads], axis=-1)
    probs = b.node("Reshape", "attn/Reshape_1", [probs, b.const("flat_shape", np.array([-1, HIDDEN]))])
    mixed = b.node("Mul", "attn/Mul", [probs, ln])
    g = b.node("MatMul", "mlp/fc1/MatMul", [mixed, b.weight("fc1_weight", (HIDDEN, HIDDEN), 1 / math.sqrt(HIDDEN))])
    # Gelu as exported by PyTorch before opset 20: x * 0.5 * (1 + erf(x / sqrt(2))).
    e = b.node("Div", "mlp/act/Div", [g, b.const("sqrt2", np.array(math.sqrt(2), np.float32))])
    e = b.node("Erf", "mlp/act/Erf", [e])
    e = b.node("Add", "mlp/act/Add", [e, b.const("one", np.array(1, np.float32))])
    g = b.node("Mul", "mlp/act/Mul", [g, e])
    g = b.node("Mul", "mlp/act/Mul_1", [g, b.const("half", np.array(0.5, np.float32))])
    g = b.node("Relu", "mlp/Relu", [g])
    out = b.node("Add", "residual/Add", [h, g])
    assert len(b.nodes) == NODES_PER_BLOCK
    return b, out


def build_graph(n_nodes: int, seed: int = 0) -> onnx.ModelProto:
    """An FP32 model of about `n_nodes` nodes (a multiple of 16), input `x` [batch, 16], output `y` [batch, 16].

    Deterministic for a given seed, so every competitor in a benchmark converts the very same graph.
    """
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be positive, got {n_nodes}")
    rng = np.random.default_rng(seed)
    n_blocks = max(1, round(n_nodes / NODES_PER_BLOCK))
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    h = "x"
    for index in range(n_blocks):
        block, h = _block(index, h, rng)
        nodes.extend(block.nodes)
        initializers.extend(block.initializers)
    nodes.append(helper.make_node("Identity", [h], ["y"], name="/output/Identity"))
    graph = helper.make_graph(
        nodes,
        f"synthetic_{n_blocks}_blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", HIDDEN])],
        initializers,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="olive_fp16_pass.bench.synthetic",
    )


def half_block_list(model: onnx.ModelProto) -> list[str]:
    """Names of every other float compute node (about half the graph), in graph order.

    Alternating blocked and free nodes is the worst case for a converter: almost every edge crosses a
    precision boundary, so it stresses Cast insertion and the block-list lookup, not just retyping.
    """
    names = [node.name for node in model.graph.node if node.op_type in _FLOAT_OPS]
    chosen = names[::2]
    bad = [name for name in chosen if re.escape(name) != name]
    if bad:  # the names double as full-match regexes for convert_float16
        raise ValueError(f"node names with regex metacharacters: {bad[:3]}")
    return chosen


if __name__ == "__main__":
    import onnxruntime as ort

    for size in (16, 1000):
        m = build_graph(size)
        onnx.checker.check_model(m, full_check=True)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"x": np.random.default_rng(0).uniform(-1, 1, (3, HIDDEN)).astype(np.float32)})
        blocked = len(half_block_list(m))
        print(f"{size}: {len(m.graph.node)} nodes, {blocked} blocked, y {y.shape}, max|y| {abs(y).max():.3g}")
