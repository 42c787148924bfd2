"""A BERT-base-sized transformer encoder in plain ONNX ops (random weights) for latency benchmarks.

Written out in primitive ops (MatMul, Add, decomposed LayerNorm, Softmax, Erf-GELU) like a typical exported
model, so ORT's fusions and the converters' handling of those patterns are both exercised.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_encoder(
    layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072, seq: int = 128, seed: int = 0
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def w(name: str, *shape: int, scale: float | None = None) -> str:
        std = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name))
        return name

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def layernorm(x: str, p: str) -> str:
        mean = node("ReduceMean", [x], f"{p}/mean", axes=[-1])
        d = node("Sub", [x, mean], f"{p}/sub")
        sq = node("Pow", [d, "two"], f"{p}/pow")
        var = node("ReduceMean", [sq], f"{p}/var", axes=[-1])
        ve = node("Add", [var, "eps"], f"{p}/add_eps")
        std = node("Sqrt", [ve], f"{p}/sqrt")
        n = node("Div", [d, std], f"{p}/div")
        g = node("Mul", [n, const(f"{p}/gamma", np.ones(hidden, np.float32))], f"{p}/mul_gamma")
        return node("Add", [g, const(f"{p}/beta", np.zeros(hidden, np.float32))], f"{p}/add_beta")

    const("two", np.float32(2.0))
    const("eps", np.float32(1e-5))
    const("sqrt2", np.float32(np.sqrt(2.0)))
    const("one", np.float32(1.0))
    const("half", np.float32(0.5))
    const("scale", np.float32(1.0 / np.sqrt(hidden // heads)))
    const("qkv_shape", np.array([0, 0, heads, hidden // heads], np.int64))
    const("out_shape", np.array([0, 0, hidden], np.int64))
    x = "hidden_in"
    for i in range(layers):
        p = f"/layer.{i}"
        heads_out = []
        for part in ("q", "k", "v"):
            h = node("MatMul", [x, w(f"{p}/{part}/W", hidden, hidden)], f"{p}/{part}/matmul")
            h = node("Add", [h, w(f"{p}/{part}/b", hidden, scale=0.02)], f"{p}/{part}/add")
            h = node("Reshape", [h, "qkv_shape"], f"{p}/{part}/reshape")
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            heads_out.append(node("Transpose", [h], f"{p}/{part}/transpose", perm=perm))
        q, k, v = heads_out
        scores = node("MatMul", [q, k], f"{p}/scores")
        scores = node("Mul", [scores, "scale"], f"{p}/scaled")
        probs = node("Softmax", [scores], f"{p}/softmax", axis=-1)
        ctx = node("MatMul", [probs, v], f"{p}/context")
        ctx = node("Transpose", [ctx], f"{p}/context/transpose", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "out_shape"], f"{p}/context/reshape")
        attn = node("MatMul", [ctx, w(f"{p}/o/W", hidden, hidden)], f"{p}/o/matmul")
        attn = node("Add", [attn, w(f"{p}/o/b", hidden, scale=0.02)], f"{p}/o/add")
        x = layernorm(node("Add", [attn, x], f"{p}/residual1"), f"{p}/ln1")
        f = node("MatMul", [x, w(f"{p}/ffn1/W", hidden, ffn)], f"{p}/ffn1/matmul")
        f = node("Add", [f, w(f"{p}/ffn1/b", ffn, scale=0.02)], f"{p}/ffn1/add")
        g = node("Div", [f, "sqrt2"], f"{p}/gelu/div")
        g = node("Erf", [g], f"{p}/gelu/erf")
        g = node("Add", [g, "one"], f"{p}/gelu/add")
        g = node("Mul", [f, g], f"{p}/gelu/mul")
        g = node("Mul", [g, "half"], f"{p}/gelu/half")
        f = node("MatMul", [g, w(f"{p}/ffn2/W", ffn, hidden)], f"{p}/ffn2/matmul")
        f = node("Add", [f, w(f"{p}/ffn2/b", hidden, scale=0.02)], f"{p}/ffn2/add")
        x = layernorm(node("Add", [f, x], f"{p}/residual2"), f"{p}/ln2")
    nodes.append(helper.make_node("Identity", [x], ["hidden_out"], name="output"))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("hidden_in", TensorProto.FLOAT, ["batch", seq, hidden])],
        [helper.make_tensor_value_info("hidden_out", TensorProto.FLOAT, ["batch", seq, hidden])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
