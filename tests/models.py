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


FLOAT32_LOWEST = float(np.finfo(np.float32).min)  # torch.finfo(torch.float32).min: what exporters mask with


def causal_mask(seq: int, *, masked_row: int | None = None) -> np.ndarray:
    """0 on and below the diagonal, float32's lowest above it (row `masked_row` masked everywhere)."""
    mask = np.triu(np.full((seq, seq), FLOAT32_LOWEST, np.float32), k=1)
    if masked_row is not None:
        mask[masked_row] = FLOAT32_LOWEST
    return mask


def attention_block(
    seq: int = 8,
    width: int = 16,
    *,
    mask: str = "constant",
    masked_row: int | None = None,
    overflow: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """A GPT-2-like attention block: Q/K/V MatMuls, QK^T, scale, Add of a causal mask holding -3.4e38, Softmax,
    MatMul V, output MatMul. `mask="input"`: the additive mask is the graph input `mask` [seq, seq] instead of
    a constant. `overflow`: an MLP after it whose MatMul reaches ~1e5 (a true activation overflow) feeds an
    Add of a bias, then a Mul scales it back to ~1."""
    rng = np.random.default_rng(seed)

    def weight(name: str, scale: float = 1.0) -> onnx.TensorProto:
        return init(name, (rng.standard_normal((width, width)) * scale / np.sqrt(width)).astype(np.float32))

    inits = [weight("Wq"), weight("Wk"), weight("Wv"), weight("Wo"), init("scale", np.float32(1 / np.sqrt(width)))]
    inputs = [vi("x", TensorProto.FLOAT, [1, seq, width])]
    if mask == "constant":
        inits.append(init("causal_mask", causal_mask(seq, masked_row=masked_row)))
        mask_name = "causal_mask"
    else:
        inputs.append(vi("mask", TensorProto.FLOAT, [seq, seq]))
        mask_name = "mask"
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "Wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "Wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kT"], perm=[0, 2, 1], name="k_t"),
        helper.make_node("MatMul", ["q", "kT"], ["scores"], name="qk"),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="qk_scale"),
        helper.make_node("Add", ["scaled", mask_name], ["masked"], name="mask_add"),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["probs", "v"], ["context"], name="pv"),
        helper.make_node("MatMul", ["context", "Wo"], ["attn_out"], name="o_proj"),
    ]
    out = "attn_out"
    if overflow:
        inits += [
            init("W_big", rng.choice(np.float32([-3e4, 3e4]), (width, width))),  # within float16's range
            init("b_big", np.full(width, 10.0, np.float32)),
            init("k_down", np.float32(1e-5)),
        ]
        nodes += [
            helper.make_node("MatMul", [out, "W_big"], ["big"], name="mlp_big"),
            helper.make_node("Add", ["big", "b_big"], ["big_b"], name="mlp_bias"),
            helper.make_node("Mul", ["big_b", "k_down"], ["y"], name="mlp_down"),
        ]
    else:
        nodes.append(helper.make_node("Identity", [out], ["y"], name="out"))
    return make_model(nodes, inputs, [vi("y", TensorProto.FLOAT, [1, seq, width])], inits)


def attention_feeds(
    n: int = 8, seq: int = 8, width: int = 16, *, mask: bool = False, masked_row: int | None = None, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Feeds for `attention_block`; with `mask`, the causal mask as the `mask` input."""
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(n):
        feed = {"x": rng.standard_normal((1, seq, width)).astype(np.float32)}
        if mask:
            feed["mask"] = causal_mask(seq, masked_row=masked_row)
        data.append(feed)
    return data


def near_limit_model(data: list[dict[str, np.ndarray]], peak: float = 45000.0) -> onnx.ModelProto:
    """x * s / s, with s chosen so that the product peaks at `peak` on `data`: beyond the search's range limit
    (65504 / margin 2) but within float16's range, so full float16 is accurate on that data."""
    scale = peak / max(float(np.abs(feed["x"]).max()) for feed in data)
    nodes = [
        helper.make_node("Mul", ["x", "up"], ["h"], name="scale_up"),
        helper.make_node("Tanh", ["x"], ["t"], name="tanh"),
        helper.make_node("Mul", ["h", "down"], ["d"], name="scale_down"),
        helper.make_node("Add", ["d", "t"], ["y"], name="add"),
    ]
    width = data[0]["x"].shape[-1]
    return make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, ["b", width])],
        [vi("y", TensorProto.FLOAT, ["b", width])],
        [init("up", np.float32(scale)), init("down", np.float32(1 / scale))],
    )


def dead_weight_model(boost: float = 1.0, seed: int = 0, width: int = 16) -> onnx.ModelProto:
    """y = x @ W + (x @ W_dead) * boost, W_dead ~1e-8 (entirely subnormal in float16, as a dead channel of
    a trained or randomly initialised net): negligible for boost 1, the whole signal for boost 1e8."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="live"),
        helper.make_node("MatMul", ["x", "W_dead"], ["d"], name="dead"),
        helper.make_node("Mul", ["d", "boost"], ["db"], name="boost"),
        helper.make_node("Add", ["h", "db"], ["y"], name="add"),
    ]
    return make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, ["b", width])],
        [vi("y", TensorProto.FLOAT, ["b", width])],
        [
            init("W", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)),
            init("W_dead", (rng.standard_normal((width, width)) * 1e-8).astype(np.float32)),
            init("boost", np.float32(boost)),
        ],
    )
