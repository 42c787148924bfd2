"""Small real models shared by the mixed-precision tests and benchmarks."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.helpers import init, make_model, vi


def layernorm_nodes(x: str, prefix: str) -> list[onnx.NodeProto]:
    """LayerNorm written out in primitive ops, the pattern ORT's LayerNormFusion rewrites."""
    p = prefix
    return [
        helper.make_node("ReduceMean", [x], [p + "mean"], axes=[-1], name=p + "rm1"),
        helper.make_node("Sub", [x, p + "mean"], [p + "d"], name=p + "sub"),
        helper.make_node("Pow", [p + "d", "two"], [p + "sq"], name=p + "pow"),
        helper.make_node("ReduceMean", [p + "sq"], [p + "var"], axes=[-1], name=p + "rm2"),
        helper.make_node("Add", [p + "var", "eps"], [p + "ve"], name=p + "addeps"),
        helper.make_node("Sqrt", [p + "ve"], [p + "std"], name=p + "sqrt"),
        helper.make_node("Div", [p + "d", p + "std"], [p + "n"], name=p + "div"),
        helper.make_node("Mul", [p + "n", "gamma"], [p + "g"], name=p + "mulg"),
        helper.make_node("Add", [p + "g", "beta"], [p + "out"], name=p + "addb"),
    ]


def layernorm_overflow_model(seed: int = 0, width: int = 16) -> onnx.ModelProto:
    """MatMul -> decomposed LayerNorm -> Relu, with activations large enough that LN's variance overflows fp16."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        *layernorm_nodes("h", "ln_"),
        helper.make_node("Relu", ["ln_out"], ["y"], name="relu"),
    ]
    return make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, ["batch", 8, width])],
        [vi("y", TensorProto.FLOAT, ["batch", 8, width])],
        [
            init("W", (rng.standard_normal((width, width)) * 150).astype(np.float32)),
            init("two", np.float32(2)),
            init("eps", np.float32(1e-5)),
            init("gamma", np.ones(width, np.float32)),
            init("beta", np.zeros(width, np.float32)),
        ],
    )


def activation_overflow_chain(n_blocks: int = 20) -> onnx.ModelProto:
    """A Tanh chain, then x + 3000 - 3000 (cancellation) and x*300*300/9e4 (overflow in fp16 activations only)."""
    nodes, inits, prev = [], [], "x"
    for i in range(n_blocks):
        nodes.append(helper.make_node("Mul", [prev, f"s{i}"], [f"m{i}"], name=f"mul{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"], name=f"tanh{i}"))
        inits.append(init(f"s{i}", np.float32(1.0 + 0.01 * i)))
        prev = f"t{i}"
    nodes += [
        helper.make_node("Add", [prev, "big"], ["a"], name="add_big"),
        helper.make_node("Sub", ["a", "big"], ["c"], name="sub_big"),
        helper.make_node("Mul", ["c", "k"], ["o1"], name="scale_up"),
        helper.make_node("Mul", ["o1", "k"], ["o2"], name="scale_up2"),
        helper.make_node("Div", ["o2", "kk"], ["y"], name="scale_down"),
    ]
    inits += [init("big", np.float32(3000.0)), init("k", np.float32(300.0)), init("kk", np.float32(9e4))]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, ["b", 16])], [vi("y", TensorProto.FLOAT, ["b", 16])], inits)


def benign_mlp(seed: int = 0, depth: int = 6, width: int = 32) -> onnx.ModelProto:
    """An MLP whose activations stay small: fine in float16."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"h{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Add", [f"h{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"))
        nodes.append(helper.make_node("Tanh", [f"a{i}"], [f"t{i}"], name=f"tanh{i}"))
        inits += [
            init(f"W{i}", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)),
            init(f"b{i}", (rng.standard_normal(width) * 0.1).astype(np.float32)),
        ]
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    return make_model(
        nodes, [vi("x", TensorProto.FLOAT, ["b", width])], [vi("y", TensorProto.FLOAT, ["b", width])], inits
    )


def feeds(shape, n: int = 8, seed: int = 0, scale: float = 1.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal(shape) * scale).astype(np.float32)} for _ in range(n)]


def small_transformer(seed: int = 0) -> onnx.ModelProto:
    """A two-layer transformer encoder in primitive ops (attention, decomposed LayerNorm, Erf-GELU), input
    `hidden_in` [batch, 16, 32]: the benchmark's encoder at test size."""
    from bench.transformer_model import build_encoder

    return build_encoder(layers=2, hidden=32, heads=4, ffn=64, seq=16, seed=seed)


def matmul_activation_overflow(width: int = 64, out: int = 8) -> onnx.ModelProto:
    """MatMul whose weights are in float16's range (16) but whose output reaches 16 * width * |x|: 1e5 for
    x = 100 (width 64); a Div brings it back, a Relu follows. Dynamic batch and rows."""
    return make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Div", ["h", "k"], ["s"], name="scale"),
            helper.make_node("Relu", ["s"], ["y"], name="relu"),
        ],
        [vi("x", TensorProto.FLOAT, ["batch", "rows", width])],
        [vi("y", TensorProto.FLOAT, ["batch", "rows", out])],
        [init("W", np.full((width, out), 16.0, np.float32)), init("k", np.float32(1e4))],
    )
