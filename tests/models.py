"""Real models built in code, shared by the tests (and benchmarks): every builder another module uses."""

from __future__ import annotations

from pathlib import Path

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


def mlp(seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul (mm1) -> Add (add1) -> Relu (relu) -> MatMul (mm2) -> y, batch dimension dynamic."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    return make_model(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
            helper.make_node("Add", ["h1", "b1"], ["h2"], name="add1"),
            helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
            helper.make_node("MatMul", ["h3", "W2"], ["y"], name="mm2"),
        ],
        [vi("x", TensorProto.FLOAT, ["batch", 8])],
        [vi("y", TensorProto.FLOAT, ["batch", 4])],
        [init("W1", w(8, 16)), init("b1", w(16)), init("W2", w(16, 4))],
    )


def if_model(outer_name="outer") -> onnx.ModelProto:
    """Relu -> If (then: Mul, Sqrt; else: Add; both read the outer tensor `outer_name`) -> Mul."""
    then_graph = helper.make_graph(
        [
            helper.make_node("Mul", [outer_name, "x"], ["t1"], name="then_mul"),
            helper.make_node("Sqrt", ["t1"], ["t2"], name="then_sqrt"),
        ],
        "then",
        [],
        [vi("t2", TensorProto.FLOAT, [3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Add", [outer_name, "x"], ["e1"], name="else_add")],
        "else",
        [],
        [vi("e1", TensorProto.FLOAT, [3])],
    )
    return make_model(
        [
            helper.make_node("Relu", ["x"], [outer_name], name="relu"),
            helper.make_node("If", ["cond"], ["r"], then_branch=then_graph, else_branch=else_graph, name="if"),
            helper.make_node("Mul", ["r", "x"], ["y"], name="after"),
        ],
        [vi("x", TensorProto.FLOAT, [3]), vi("cond", TensorProto.BOOL, [])],
        [vi("y", TensorProto.FLOAT, [3])],
    )


UNIT_WIDTH = 16  # width of the fusion-unit models


def layernorm_inits() -> list[onnx.TensorProto]:
    """The constants `layernorm_nodes` reads: two, eps, gamma, beta (width UNIT_WIDTH)."""
    return [
        init("two", np.float32(2)),
        init("eps", np.float32(1e-5)),
        init("gamma", np.linspace(0.5, 1.5, UNIT_WIDTH).astype(np.float32)),
        init("beta", np.linspace(-0.2, 0.2, UNIT_WIDTH).astype(np.float32)),
    ]


def gelu_nodes(x: str, p: str) -> list[onnx.NodeProto]:
    """GELU as torch's TorchScript exporter writes it: x * 0.5 * (1 + erf(x / sqrt 2))."""
    return [
        helper.make_node("Div", [x, "sqrt2"], [p + "d"], name=p + "div"),
        helper.make_node("Erf", [p + "d"], [p + "e"], name=p + "erf"),
        helper.make_node("Add", [p + "e", "one"], [p + "a"], name=p + "add"),
        helper.make_node("Mul", [x, p + "a"], [p + "m"], name=p + "mul"),
        helper.make_node("Mul", [p + "m", "half"], [p + "out"], name=p + "half"),
    ]


GELU_INITS = [init("sqrt2", np.float32(np.sqrt(2))), init("one", np.float32(1)), init("half", np.float32(0.5))]


def fast_gelu_nodes(x: str, p: str) -> list[onnx.NodeProto]:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's "gelu_new"."""
    return [
        helper.make_node("Pow", [x, "three"], [p + "x3"], name=p + "pow"),
        helper.make_node("Mul", [p + "x3", "c044"], [p + "a"], name=p + "mul_c"),
        helper.make_node("Add", [x, p + "a"], [p + "b"], name=p + "add_x"),
        helper.make_node("Mul", [p + "b", "c079"], [p + "c"], name=p + "mul_s"),
        helper.make_node("Tanh", [p + "c"], [p + "t"], name=p + "tanh"),
        helper.make_node("Add", [p + "t", "one"], [p + "d"], name=p + "add1"),
        helper.make_node("Mul", [x, p + "d"], [p + "e"], name=p + "mul_x"),
        helper.make_node("Mul", [p + "e", "half"], [p + "out"], name=p + "half"),
    ]


def rms_norm_nodes(x: str, p: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("Pow", [x, "two"], [p + "sq"], name=p + "pow"),
        helper.make_node("ReduceMean", [p + "sq"], [p + "m"], axes=[-1], name=p + "rm"),
        helper.make_node("Add", [p + "m", "eps"], [p + "v"], name=p + "add"),
        helper.make_node("Sqrt", [p + "v"], [p + "r"], name=p + "sqrt"),
        helper.make_node("Div", [x, p + "r"], [p + "n"], name=p + "div"),
        helper.make_node("Mul", [p + "n", "gamma"], [p + "out"], name=p + "mul"),
    ]


def transformer_block() -> onnx.ModelProto:
    """MatMul -> LayerNorm -> GELU -> RMSNorm -> FastGelu -> MatMul: every pattern the matcher knows."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        *layernorm_nodes("h", "ln_"),
        *gelu_nodes("ln_out", "g_"),
        *rms_norm_nodes("g_out", "rms_"),
        *fast_gelu_nodes("rms_out", "fg_"),
        helper.make_node("MatMul", ["fg_out", "W"], ["y"], name="mm2"),
    ]
    inits = [
        *layernorm_inits(),
        *GELU_INITS,
        init("W", (rng.standard_normal((UNIT_WIDTH, UNIT_WIDTH)) / 4).astype(np.float32)),
    ]
    inits += [init("three", np.float32(3)), init("c044", np.float32(0.044715)), init("c079", np.float32(0.7978846))]
    return make_model(
        nodes, [vi("x", TensorProto.FLOAT, ["b", UNIT_WIDTH])], [vi("y", TensorProto.FLOAT, ["b", UNIT_WIDTH])], inits
    )


def unsorted_model() -> onnx.ModelProto:
    """keras2onnx-era order: the consumer before its producer, in the main graph."""
    return make_model(
        [
            helper.make_node("Relu", ["a"], ["y"], name="relu"),
            helper.make_node("Add", ["m", "b"], ["a"], name="add"),
            helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
        ],
        [vi("x", TensorProto.FLOAT, [2, 3])],
        [vi("y", TensorProto.FLOAT, [2, 3])],
        [init("W", np.arange(9, dtype=np.float32).reshape(3, 3) / 10), init("b", np.ones(3, np.float32))],
    )


BIG_WIDTH = 8192  # one 8192x8192 float32 weight = 256 MiB

BIG_LAYERS = 9  # 2.25 GiB of weights: over protobuf's 2 GB limit


def write_big_model(folder: Path) -> Path:
    """Write the weights straight to the data file (never holding the whole model in memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "big.onnx.data"
    inits, nodes, offset = [], [], 0
    rng = np.random.default_rng(0)
    with open(data, "wb") as f:
        for i in range(BIG_LAYERS):
            weight = (rng.standard_normal((BIG_WIDTH, BIG_WIDTH), dtype=np.float32) / np.sqrt(BIG_WIDTH)).astype(
                np.float32
            )
            raw = weight.tobytes()
            f.write(raw)
            tensor = TensorProto(name=f"W{i}", data_type=TensorProto.FLOAT, dims=[BIG_WIDTH, BIG_WIDTH])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            inits.append(tensor)
            nodes.append(helper.make_node("MatMul", [f"h{i}" if i else "x", f"W{i}"], [f"h{i + 1}"], name=f"mm{i}"))
    nodes.append(helper.make_node("Tanh", [f"h{BIG_LAYERS}"], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, BIG_WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, BIG_WIDTH])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path
