"""Real models built in code, shared by the tests (and benchmarks): every builder another module uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


# -- ORT's other graph fusions (tests/test_fusion_straddle.py) ----------------------------------------------------
# Each is a small model of one pattern that onnxruntime rewrites at ORT_ENABLE_ALL on the CPU EP (QuickGelu /
# SiLU, BiasSoftmax's Add + Softmax, SkipLayerNorm and EmbedLayerNorm around a LayerNormalization op,
# MatMulScale, MatMulTranspose, MatMulAdd, GemmActivation, ConvActivation (Clip, HardSwish), ConvAddActivation,
# ConvBN, ConvMul/ConvAdd, PadFusion, BiasGelu around a Gelu-20 op). Node names start with the pattern's prefix.

FUSION_WIDTH = 16
_IMAGE = [1, 4, 8, 8]


def _weights(seed: int, *shape: int, scale: float = 0.25) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _rows(nodes, inits, opset: int = 17, extra_inputs=(), shape=("b", FUSION_WIDTH)) -> onnx.ModelProto:
    inputs = [vi("x", TensorProto.FLOAT, list(shape)), *extra_inputs]
    return make_model(nodes, inputs, [vi("y", TensorProto.FLOAT, None)], inits, opset=opset)


def _image(nodes, inits) -> onnx.ModelProto:
    return make_model(nodes, [vi("x", TensorProto.FLOAT, _IMAGE)], [vi("y", TensorProto.FLOAT, None)], inits)


def _mm(x: str, out: str, name: str) -> onnx.NodeProto:
    return helper.make_node("MatMul", [x, "W"], [out], name=name)


def _w() -> onnx.TensorProto:
    return init("W", _weights(0, FUSION_WIDTH, FUSION_WIDTH))


def _kernel() -> list[onnx.TensorProto]:
    return [init("K", _weights(1, 4, 4, 3, 3)), init("kb", _weights(2, 4))]


def fusion_quick_gelu() -> onnx.ModelProto:
    """x * Sigmoid(1.702 x) after a MatMul: QuickGeluFusion."""
    n = helper.make_node
    nodes = [_mm("x", "h", "q_mm"), n("Mul", ["h", "alpha"], ["a"], name="q_alpha"),
             n("Sigmoid", ["a"], ["s"], name="q_sig"), n("Mul", ["h", "s"], ["y"], name="q_mul")]  # fmt: skip
    return _rows(nodes, [_w(), init("alpha", np.float32(1.702))])


def fusion_silu() -> onnx.ModelProto:
    """x * Sigmoid(x) (SiLU / Swish: EfficientNet, Llama's MLP): QuickGeluFusion with alpha 1."""
    n = helper.make_node
    nodes = [_mm("x", "h", "s_mm"), n("Sigmoid", ["h"], ["s"], name="s_sig"), n("Mul", ["h", "s"], ["y"], name="s_mul")]
    return _rows(nodes, [_w()])


def fusion_bias_softmax() -> onnx.ModelProto:
    """MatMul -> Relu -> Add(mask input) -> Softmax: BiasSoftmaxFusion's pattern (attention scores plus a mask)."""
    n = helper.make_node
    nodes = [_mm("x", "g", "bs_mm"), n("Relu", ["g"], ["h"], name="bs_relu"),
             n("Add", ["h", "m"], ["a"], name="bs_add"),
             n("Softmax", ["a"], ["y"], axis=-1, name="bs_softmax")]  # fmt: skip
    mask = vi("m", TensorProto.FLOAT, [2, 1, 1, FUSION_WIDTH])  # BERT's [batch, 1, 1, seq] on [batch, heads, seq, seq]
    return _rows(nodes, [_w()], extra_inputs=[mask], shape=(2, 2, 4, FUSION_WIDTH))


def fusion_skip_layernorm() -> onnx.ModelProto:
    """MatMul -> Relu -> Add(bias) -> Add(residual) -> LayerNormalization-17 (the op, as dynamo exports it):
    SkipLayerNormFusion (3-D inputs of one shape)."""
    n = helper.make_node
    nodes = [_mm("x", "g", "sk_mm"), n("Relu", ["g"], ["h"], name="sk_relu"),
             n("Add", ["h", "bias"], ["hb"], name="sk_bias"), n("Add", ["hb", "x"], ["r"], name="sk_res"),
             n("LayerNormalization", ["r", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5, name="sk_ln")]  # fmt: skip
    w = FUSION_WIDTH
    inits = [_w(), init("bias", _weights(3, w)), init("gamma", 1 + _weights(4, w)), init("beta", _weights(5, w))]
    return _rows(nodes, inits, shape=(2, 4, w))


def fusion_embed_layernorm() -> onnx.ModelProto:
    """Word + position embeddings (Gather, Range) -> Add -> LayerNormalization -> MatMul: CPU fuses the Add and
    the LayerNormalization into SkipLayerNormalization."""
    n, w = helper.make_node, FUSION_WIDTH
    nodes = [
        n("Gather", ["wemb", "ids"], ["we"], name="e_word"),
        n("Shape", ["ids"], ["shape"], name="e_shape"),
        n("Gather", ["shape", "one"], ["length"], axis=0, name="e_len"),
        n("Range", ["zero", "length", "one"], ["pos"], name="e_range"),
        n("Unsqueeze", ["pos", "axes0"], ["pos2"], name="e_unsq"),
        n("Gather", ["pemb", "pos2"], ["pe"], name="e_pos"),
        n("Add", ["we", "pe"], ["s"], name="e_add"),
        n("LayerNormalization", ["s", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-12, name="e_ln"),
        _mm("ln", "y", "e_mm"),
    ]
    inits = [init("wemb", _weights(6, 50, w)), init("pemb", _weights(7, 8, w)), init("one", np.int64(1)),
             init("zero", np.int64(0)), init("axes0", np.array([0], np.int64)), init("gamma", 1 + _weights(8, w)),
             init("beta", _weights(9, w)), _w()]  # fmt: skip
    return make_model(nodes, [vi("ids", TensorProto.INT64, [1, 8])], [vi("y", TensorProto.FLOAT, None)], inits)


def fusion_matmul_scale() -> onnx.ModelProto:
    """Mul(0.5) -> MatMul -> Div(8): MatMulScaleFusion folds both scalars into FusedMatMul's alpha."""
    n = helper.make_node
    nodes = [n("Mul", ["x", "half"], ["xs"], name="ms_pre"), _mm("xs", "h", "ms_mm"),
             n("Div", ["h", "eight"], ["y"], name="ms_div")]  # fmt: skip
    return _rows(nodes, [_w(), init("half", np.float32(0.5)), init("eight", np.float32(8.0))])


def fusion_matmul_transpose() -> onnx.ModelProto:
    """Transpose -> MatMul: MatmulTransposeFusion (FusedMatMul with transA)."""
    n = helper.make_node
    nodes = [n("Transpose", ["x"], ["xt"], perm=[1, 0], name="mt_t"), n("MatMul", ["xt", "x"], ["y"], name="mt_mm")]
    return _rows(nodes, [])


def fusion_gemm_activation() -> onnx.ModelProto:
    """MatMul + Add(bias) -> Gemm (MatMulAddFusion), Gemm -> Relu / LeakyRelu -> FusedGemm (GemmActivationFusion)."""
    n = helper.make_node
    nodes = [_mm("x", "h", "ga_mm"), n("Add", ["h", "bias"], ["g"], name="ga_add"),
             n("Relu", ["g"], ["r"], name="ga_relu"), n("Gemm", ["r", "W", "bias"], ["g2"], name="ga_gemm"),
             n("LeakyRelu", ["g2"], ["y"], alpha=0.1, name="ga_leaky")]  # fmt: skip
    return _rows(nodes, [_w(), init("bias", _weights(10, FUSION_WIDTH))])


def fusion_conv_activation() -> onnx.ModelProto:
    """Conv -> Clip(0, 6) and Conv -> HardSwish written as HardSigmoid * x (MobileNetV3): ConvActivationFusion."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "K", "kb"], ["c"], pads=[1, 1, 1, 1], name="ca_conv"),
             n("Clip", ["c", "lo", "hi"], ["r"], name="ca_clip"),
             n("Conv", ["r", "K", "kb"], ["c2"], pads=[1, 1, 1, 1], name="ca_conv2"),
             n("HardSigmoid", ["c2"], ["hs"], name="ca_hsig"),
             n("Mul", ["c2", "hs"], ["y"], name="ca_hswish")]  # fmt: skip
    return _image(nodes, [*_kernel(), init("lo", np.float32(0)), init("hi", np.float32(6))])


def fusion_conv_add_relu() -> onnx.ModelProto:
    """Conv -> Conv -> Add(residual) -> Relu: the NCHWc transformer fuses the Add and Relu into the second Conv."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "K", "kb"], ["c"], pads=[1, 1, 1, 1], name="car_conv"),
             n("Conv", ["c", "K", "kb"], ["c2"], pads=[1, 1, 1, 1], name="car_conv2"),
             n("Add", ["c2", "c"], ["a"], name="car_add"), n("Relu", ["a"], ["y"], name="car_relu")]  # fmt: skip
    return _image(nodes, _kernel())


def fusion_conv_bn() -> onnx.ModelProto:
    """Conv -> BatchNormalization: ConvBNFusion folds the statistics into the Conv's weights."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1], name="cb_conv"),
             n("BatchNormalization", ["c", "s", "bb", "mean", "var"], ["y"], name="cb_bn")]  # fmt: skip
    stats = [init("s", 1 + _weights(11, 4)), init("bb", _weights(12, 4)), init("mean", _weights(13, 4)),
             init("var", np.abs(1 + _weights(14, 4)))]  # fmt: skip
    return _image(nodes, [_kernel()[0], *stats])


def fusion_conv_mul_add() -> onnx.ModelProto:
    """Conv -> Mul(per channel) -> Add(per channel): ConvMulFusion and ConvAddFusion."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1], name="cm_conv"),
             n("Mul", ["c", "cs"], ["m"], name="cm_mul"), n("Add", ["m", "cbias"], ["y"], name="cm_add")]  # fmt: skip
    return _image(nodes, [_kernel()[0], init("cs", 1 + _weights(15, 4, 1, 1)), init("cbias", _weights(16, 4, 1, 1))])


def fusion_pad_conv() -> onnx.ModelProto:
    """Pad -> Conv: PadFusion moves the padding into the Conv."""
    n = helper.make_node
    nodes = [n("Pad", ["x", "pads", "pv"], ["p"], name="pc_pad"), n("Conv", ["p", "K"], ["y"], name="pc_conv")]
    pads = init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    return _image(nodes, [_kernel()[0], pads, init("pv", np.float32(0))])


def fusion_bias_gelu_op() -> onnx.ModelProto:
    """MatMul -> Add(bias) -> Gelu-20 (the op): MatMulAddFusion / BiasGeluFusion."""
    n = helper.make_node
    nodes = [_mm("x", "h", "bg_mm"), n("Add", ["h", "bias"], ["a"], name="bg_add"),
             n("Gelu", ["a"], ["y"], name="bg_gelu")]  # fmt: skip
    return _rows(nodes, [_w(), init("bias", _weights(17, FUSION_WIDTH))], opset=20)


FUSION_PATTERNS = {
    "quick_gelu": fusion_quick_gelu,
    "silu": fusion_silu,
    "bias_softmax": fusion_bias_softmax,
    "skip_layernorm": fusion_skip_layernorm,
    "embed_layernorm": fusion_embed_layernorm,
    "matmul_scale": fusion_matmul_scale,
    "matmul_transpose": fusion_matmul_transpose,
    "gemm_activation": fusion_gemm_activation,
    "conv_activation": fusion_conv_activation,
    "conv_add_relu": fusion_conv_add_relu,
    "conv_bn": fusion_conv_bn,
    "conv_mul_add": fusion_conv_mul_add,
    "pad_conv": fusion_pad_conv,
    "bias_gelu_op": fusion_bias_gelu_op,
}


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


# ---- Forms other converters write (skl2onnx, onnxmltools, tf2onnx): bench/other_converters.py has the real ones.


def zipmap_classifier(seed: int = 0, features: int = 4, classes: int = 3) -> onnx.ModelProto:
    """skl2onnx's classifier shape: ai.onnx.ml Scaler, a float head, ArgMax label, and ZipMap's seq(map) output."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Scaler", ["X"], ["scaled"], domain="ai.onnx.ml", name="scaler",
                         offset=[0.1] * features, scale=[2.0] * features),
        helper.make_node("MatMul", ["scaled", "W"], ["logits_raw"], name="matmul"),
        helper.make_node("Add", ["logits_raw", "b"], ["logits"], name="add"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1, name="softmax"),
        helper.make_node("ArgMax", ["probabilities"], ["label_2d"], axis=1, keepdims=1, name="argmax"),
        helper.make_node("Reshape", ["label_2d", "flat"], ["output_label"], name="reshape"),
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml", name="zipmap",
                         classlabels_int64s=list(range(classes))),
    ]  # fmt: skip
    proba = onnx.ValueInfoProto(
        name="output_probability",
        type=helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
        ),
    )
    return make_model(
        nodes,
        [vi("X", TensorProto.FLOAT, [None, features])],
        [vi("output_label", TensorProto.INT64, [None]), proba],
        [
            init("W", rng.standard_normal((features, classes)).astype(np.float32)),
            init("b", rng.standard_normal(classes).astype(np.float32)),
            init("flat", np.array([-1], np.int64)),
        ],
        opset=15,
        extra_opsets=[("ai.onnx.ml", 1)],
    )


def float64_regressor(features: int = 4) -> onnx.ModelProto:
    """skl2onnx's export of an estimator trained on float64 data: a float64 graph, no float32 tensor at all."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "b"], ["variable"], name="add"),
    ]
    return make_model(
        nodes,
        [vi("X", TensorProto.DOUBLE, [None, features])],
        [vi("variable", TensorProto.DOUBLE, [None, 1])],
        [init("W", rng.standard_normal((features, 1))), init("b", np.array([0.5]))],
        opset=13,
    )


def string_and_float_inputs(features: int = 3) -> onnx.ModelProto:
    """A ColumnTransformer-like export: a string column label-encoded beside float columns, then a float head."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("LabelEncoder", ["cat"], ["code"], domain="ai.onnx.ml", name="encode",
                         keys_strings=["red", "green", "blue"], values_int64s=[0, 1, 2], default_int64=-1),
        helper.make_node("Cast", ["code"], ["code_f"], to=TensorProto.FLOAT, name="code_to_float"),
        helper.make_node("Concat", ["code_f", "num"], ["both"], axis=1, name="concat"),
        helper.make_node("MatMul", ["both", "W"], ["h"], name="matmul"),
        helper.make_node("Tanh", ["h"], ["y"], name="tanh"),
    ]  # fmt: skip
    return make_model(
        nodes,
        [vi("cat", TensorProto.STRING, [None, 1]), vi("num", TensorProto.FLOAT, [None, features])],
        [vi("y", TensorProto.FLOAT, [None, 2])],
        [init("W", rng.standard_normal((features + 1, 2)).astype(np.float32))],
        opset=15,
        extra_opsets=[("ai.onnx.ml", 2)],
    )


def string_feeds(n: int = 4, rows: int = 5) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    colours = np.array(["red", "green", "blue", "black"], dtype=object)
    return [
        {"cat": rng.choice(colours, size=(rows, 1)), "num": rng.standard_normal((rows, 3)).astype(np.float32)}
        for _ in range(n)
    ]


def old_opset_mlp(width: int = 8) -> onnx.ModelProto:
    """onnxmltools' LightGBM export versions: IR 4, default opset 8 (before Where, opset 9), ai.onnx.ml 1."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("MatMul", ["input", "W1"], ["h1"], name="matmul1"),
        helper.make_node("Add", ["h1", "b1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "W2"], ["variable"], name="matmul2"),
    ]
    model = make_model(
        nodes,
        [vi("input", TensorProto.FLOAT, [None, width])],
        [vi("variable", TensorProto.FLOAT, [None, 1])],
        [
            init("W1", rng.standard_normal((width, width)).astype(np.float32)),
            init("b1", rng.standard_normal(width).astype(np.float32)),
            init("W2", rng.standard_normal((width, 1)).astype(np.float32)),
        ],
        opset=8,
        extra_opsets=[("ai.onnx.ml", 1)],
    )
    model.ir_version = 4
    return model


def dict_vectorizer_model() -> onnx.ModelProto:
    """skl2onnx's DictVectorizer pipeline: a map(string, float) graph input, vectorised, then a float head."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("DictVectorizer", ["input"], ["features"], domain="ai.onnx.ml", name="vectorize",
                         string_vocabulary=["a", "b", "c"]),
        helper.make_node("MatMul", ["features", "W"], ["h"], name="matmul"),
        helper.make_node("Tanh", ["h"], ["y"], name="tanh"),
    ]  # fmt: skip
    features = onnx.ValueInfoProto(
        name="input",
        type=helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])),
    )
    return make_model(
        nodes,
        [features],
        [vi("y", TensorProto.FLOAT, [None, 2])],
        [init("W", rng.standard_normal((3, 2)).astype(np.float32))],
        opset=15,
        extra_opsets=[("ai.onnx.ml", 1)],
    )


def scan_cancellation_model(steps: int = 6, width: int = 8) -> onnx.ModelProto:
    """A Scan whose body cancels (x + 3000 - 3000, outer-scope constant): float16 in the body loses the values.

    scikit-learn's GaussianProcessRegressor export computes its distances in a Scan body the same way."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["x_t", "big"], ["shifted"], name="body_add"),
            helper.make_node("Sub", ["shifted", "big"], ["back"], name="body_sub"),
            helper.make_node("Identity", ["state_in"], ["state_out"], name="body_state"),
        ],
        "body",
        [vi("state_in", TensorProto.FLOAT, [width]), vi("x_t", TensorProto.FLOAT, [width])],
        [vi("state_out", TensorProto.FLOAT, [width]), vi("back", TensorProto.FLOAT, [width])],
    )
    nodes = [
        helper.make_node("Scan", ["state0", "x"], ["state", "scanned"], body=body, num_scan_inputs=1, name="scan"),
        helper.make_node("Mul", ["scanned", "gain"], ["y"], name="gain_mul"),
    ]
    return make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, [steps, width])],
        [vi("y", TensorProto.FLOAT, [steps, width])],
        [
            init("state0", np.zeros(width, np.float32)),
            init("big", np.float32(3000.0)),
            init("gain", np.float32(2.0)),
        ],
    )


def lightgbm_like_regressor(rows: int = 3, features: int = 4) -> onnx.ModelProto:
    """A LightGBM regressor as onnxmltools writes it: Identity -> TreeEnsembleRegressor -> Reshape -> Transpose.

    The tree ensemble has no float16 type (it stays float32): the data-movement nodes around it sit between
    float32 neighbours only when the graph's I/O stays float32 (keep_io_types)."""
    tree = helper.make_node(
        "TreeEnsembleRegressor",
        ["xi"],
        ["variable"],
        domain="ai.onnx.ml",
        name="tree",
        n_targets=1,
        nodes_treeids=[0, 0, 0],
        nodes_nodeids=[0, 1, 2],
        nodes_featureids=[0, 0, 0],
        nodes_values=[0.5, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 0, 0],
        nodes_missing_value_tracks_true=[0, 0, 0],
        nodes_hitrates=[1.0, 1.0, 1.0],
        target_treeids=[0, 0],
        target_nodeids=[1, 2],
        target_ids=[0, 0],
        target_weights=[-1.5, 2.5],
        post_transform="NONE",
        aggregate_function="SUM",
    )
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"], name="id_in"),
        tree,
        helper.make_node("Reshape", ["variable", "shape"], ["r"], name="reshape"),
        helper.make_node("Transpose", ["r"], ["y"], name="transpose", perm=[1, 0]),
    ]
    return make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, [rows, features])],
        [vi("y", TensorProto.FLOAT, [1, rows])],
        [init("shape", np.array([rows, 1], np.int64))],
        extra_opsets=[("ai.onnx.ml", 3)],
    )


def shared_constant_model(width: int = 8) -> onnx.ModelProto:
    """Constants each read by several nodes: an initializer `c` (Mul m1, Add a1) and a scalar Constant node
    `s` (Mul m2, Sub s1). Blocking some readers gives one constant edges that want float16 and edges that want
    float32 in the same candidate: the gated emulation selects each edge on its own."""
    rng = np.random.default_rng(3)
    c = numpy_helper.from_array(rng.uniform(0.5, 1.5, width).astype(np.float32), "c")
    nodes = [
        helper.make_node(
            "Constant", [], ["s"], name="const_s", value=numpy_helper.from_array(np.array(0.3, np.float32))
        ),
        helper.make_node("Mul", ["x", "c"], ["m1_out"], name="m1"),
        helper.make_node("Add", ["x", "c"], ["a1_out"], name="a1"),
        helper.make_node("Mul", ["m1_out", "s"], ["m2_out"], name="m2"),
        helper.make_node("Sub", ["a1_out", "s"], ["s1_out"], name="s1"),
        helper.make_node("Add", ["m2_out", "s1_out"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes,
        "shared_constants",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", width])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", width])],
        [c],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
