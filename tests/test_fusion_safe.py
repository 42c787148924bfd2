"""Float16 output loads in onnxruntime with every graph optimization: fusion units keep one precision.

ORT fuses decomposed LayerNorm / GELU patterns. A precision boundary inside such a pattern, or a Cast right
in front of a LayerNorm (which LayerNormFusion swallows), makes a model that passes the checker fail to load:
"Type parameter (T) of Optype (LayerNormalization) bound to different types".
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass import float16 as float16_mod
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.fusion_units import fusion_units
from olive_fp16_pass.options import ConversionOptions
from tests.helpers import all_optimizations_session, check_converted, feeds_for, init, make_model, vi
from tests.models import (
    GELU_INITS,
    UNIT_WIDTH,
    gelu_nodes,
    layernorm_inits,
    layernorm_nodes,
    rms_norm_nodes,
    transformer_block,
)

W = UNIT_WIDTH


def ln_on_input(opset: int = 17) -> onnx.ModelProto:
    nodes = [*layernorm_nodes("x", "ln_"), helper.make_node("Relu", ["ln_out"], ["y"], name="relu")]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, ["b", W])], [vi("y", TensorProto.FLOAT, ["b", W])],
                      layernorm_inits(), opset=opset)  # fmt: skip


def matmul_ln() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        *layernorm_nodes("h", "ln_"),
        helper.make_node("Relu", ["ln_out"], ["y"], name="relu"),
    ]
    weight = init("W", (rng.standard_normal((W, W)) / 4).astype(np.float32))
    return make_model(nodes, [vi("x", TensorProto.FLOAT, ["b", W])], [vi("y", TensorProto.FLOAT, ["b", W])],
                      [*layernorm_inits(), weight])  # fmt: skip


def gelu_on_input() -> onnx.ModelProto:
    nodes = [*gelu_nodes("x", "g_"), helper.make_node("Relu", ["g_out"], ["y"], name="relu")]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, ["b", W])], [vi("y", TensorProto.FLOAT, ["b", W])],
                      GELU_INITS)  # fmt: skip


def check_loads_and_accurate(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    session = all_optimizations_session(converted)  # raises if LayerNormFusion breaks the model
    feeds = feeds_for(original, dims={"b": 4})
    check_converted(original, converted, feeds=feeds, atol=2e-2, rtol=2e-2)
    typed = {i.name: feeds[i.name].astype(np.float16 if "16" in i.type else np.float32) for i in session.get_inputs()}
    optimized = session.run(None, typed)[0].astype(np.float32)
    reference = all_optimizations_session(original).run(None, feeds)[0]
    np.testing.assert_allclose(optimized, reference, atol=2e-2, rtol=2e-2)


def precisions(result) -> dict[str, str]:
    return {d.node: d.precision.value for d in result.report.decisions}


@pytest.mark.parametrize("keep_io", [True, False])
def test_layernorm_on_graph_input_loads_with_all_optimizations(keep_io):
    model = ln_on_input()
    result = fp16.convert_float16(model, keep_io_types=keep_io)
    check_loads_and_accurate(model, result.model)
    ln = {n: p for n, p in precisions(result).items() if n.startswith("ln_")}
    # keep_io_types=True: the LayerNorm runs in its input's precision (float32), the Cast moves after it.
    assert set(ln.values()) == {"fp32" if keep_io else "fp16"}
    if keep_io:
        assert {d.rule.value for d in result.report.fp32_nodes} == {"fusion_boundary"}
        assert any("kept in float32, the precision of its input" in n for n in result.report.notes)


def test_layernorm_on_graph_input_before_opset17_stays_float16():
    """Below opset 17 the fused node is ORT's LayerNormalization-1, which takes float32 x and float16 scale."""
    model = ln_on_input(opset=16)
    result = fp16.convert_float16(model, keep_io_types=True)
    check_loads_and_accurate(model, result.model)
    assert {p for n, p in precisions(result).items() if n.startswith("ln_")} == {"fp16"}


@pytest.mark.parametrize("keep_io", [True, False])
def test_gelu_on_graph_input_loads_and_is_accurate(keep_io):
    model = gelu_on_input()
    result = fp16.convert_float16(model, keep_io_types=keep_io)
    check_loads_and_accurate(model, result.model)


@pytest.mark.parametrize("keep_io", [True, False])
def test_blocking_one_gelu_node_keeps_the_whole_unit_float32(keep_io):
    model = gelu_on_input()
    result = fp16.convert_float16(model, keep_io_types=keep_io, op_block_list=["Erf"])
    check_loads_and_accurate(model, result.model)
    gelu = {n: p for n, p in precisions(result).items() if n.startswith("g_")}
    assert set(gelu.values()) == {"fp32"}, gelu
    detail = {d.node: d.detail for d in result.report.fp32_nodes}
    assert "fused with 'g_erf'" in detail["g_div"] and "Gelu" in detail["g_div"]
    assert precisions(result)["relu"] == "fp16"


@pytest.mark.parametrize("keep_io", [True, False])
def test_layernorm_after_float32_matmul_loads(keep_io):
    """A blocked MatMul feeding a float16 LayerNorm: the Cast between them would be absorbed."""
    model = matmul_ln()
    result = fp16.convert_float16(model, keep_io_types=keep_io, op_block_list=["MatMul"])
    check_loads_and_accurate(model, result.model)


@pytest.mark.parametrize("keep_io", [True, False])
def test_float32_layernorm_after_float16_matmul_moves_the_boundary_up(keep_io):
    """The user keeps the LayerNorm in float32: the MatMul feeding it follows, so the Cast sits before it."""
    model = matmul_ln()
    ln_nodes = [n.name for n in model.graph.node if n.name.startswith("ln_")]
    result = fp16.convert_float16(model, keep_io_types=keep_io, node_block_list=ln_nodes)
    check_loads_and_accurate(model, result.model)
    decisions = {d.node: d for d in result.report.decisions}
    assert decisions["mm"].precision.value == "fp32" and decisions["mm"].rule.value == "fusion_boundary"
    assert all(decisions[n].rule.value == "node_block_list" for n in ln_nodes)


def test_splitting_a_layernorm_by_op_block_list_keeps_it_whole():
    model = matmul_ln()
    result = fp16.convert_float16(model, op_block_list=["ReduceMean"])
    check_loads_and_accurate(model, result.model)
    assert {p for n, p in precisions(result).items() if n.startswith("ln_")} == {"fp32"}


def test_load_check_repairs_what_the_unit_rules_miss(monkeypatch):
    """With the preventive rules switched off, the load check itself finds the failing node and repairs it."""
    monkeypatch.setattr(float16_mod, "keep_units_whole", lambda *args: [])
    model = ln_on_input()
    result = fp16.convert_float16(model, keep_io_types=True)
    check_loads_and_accurate(model, result.model)
    assert any(n.startswith("load check: moved") and "ln_mulg" in n for n in result.report.notes)


def test_unloadable_result_raises_float16error():
    """A float32 LayerNorm reading a float16 graph input cannot load (the Cast is absorbed): clear error."""
    model = ln_on_input()
    ln_nodes = [n.name for n in model.graph.node if n.name.startswith("ln_")]
    with pytest.raises(Float16Error, match="does not load in onnxruntime.*LayerNormalization"):
        fp16.convert_float16(model, keep_io_types=False, node_block_list=ln_nodes)


def test_search_and_float16_share_the_unit_patterns():
    """mixed_precision's protobuf view finds the units the Float16 conversion keeps whole, RMSNorm and FastGelu too."""
    model = transformer_block()
    units = fusion_units(model.graph, [n.name for n in model.graph.node])
    assert sorted(map(sorted, units)) == sorted(
        sorted(n.name for n in model.graph.node if n.name.startswith(p)) for p in ("ln_", "g_", "rms_", "fg_")
    )


@pytest.mark.parametrize("blocked", ["Tanh", "Sqrt"])
def test_every_unit_moves_whole(blocked):
    model = transformer_block()
    result = fp16.convert_float16(model, op_block_list=[blocked], keep_io_types=True)
    check_loads_and_accurate(model, result.model)
    prefix = {"Tanh": "fg_", "Sqrt": "rms_"}[blocked]
    got = precisions(result)
    assert {p for n, p in got.items() if n.startswith(prefix)} == {"fp32"}
    assert {p for n, p in got.items() if n.startswith(("g_", "mm2"))} == {"fp16"}


def test_load_check_can_be_skipped_and_repairs_an_ir_model_input(monkeypatch):
    monkeypatch.setattr(float16_mod, "keep_units_whole", lambda *args: [])
    model = ln_on_input()
    unchecked = fp16.convert_float16(model, keep_io_types=True, load_check=False)
    with pytest.raises(Exception, match="LayerNormalization"):
        all_optimizations_session(unchecked.model)
    options = ConversionOptions(keep_io_types=True)
    repaired = float16_mod.convert_with_options(ir.serde.deserialize_model(model), options)
    check_loads_and_accurate(model, repaired.model)


@pytest.mark.parametrize("keep_io", [True, False])
def test_rmsnorm_with_t5_epsilon_stays_float16_whole(keep_io):
    """Issue 10 (lean): T5/Llama's RMSNorm adds eps = 1e-6, subnormal in float16. The weight_underflow rule kept
    that Add float32 and the fusion rule then pulled the whole SimplifiedLayerNorm unit with it (T5 dynamo: 84
    nodes, 56.8% FP16). An addend is rounded by at most 2**-25, within the rounding of the float16 sum: the unit
    now stays float16, loads with every optimization and is accurate."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        *rms_norm_nodes("h", "rms_"),
        helper.make_node("MatMul", ["rms_out", "W"], ["y"], name="mm2"),
    ]
    inits = [
        init("two", np.float32(2)),
        init("eps", np.float32(1e-6)),
        init("gamma", np.linspace(0.5, 1.5, W).astype(np.float32)),
        init("W", (rng.standard_normal((W, W)) / 4).astype(np.float32)),
    ]
    model = make_model(nodes, [vi("x", TensorProto.FLOAT, ["b", W])], [vi("y", TensorProto.FLOAT, ["b", W])], inits)
    result = fp16.convert_float16(model, keep_io_types=keep_io)
    assert set(precisions(result).values()) == {"fp16"}, [(d.node, d.detail) for d in result.report.fp32_nodes]
    check_loads_and_accurate(model, result.model)


def _fused_epsilons(model: onnx.ModelProto, tmp_path) -> list[float]:
    """The epsilon of every LayerNormalization ORT's optimizer writes for `model` (CPU, ORT_ENABLE_ALL)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    fused = [n for n in optimized.graph.node if n.op_type == "LayerNormalization"]
    return [helper.get_attribute_value(a) for n in fused for a in n.attribute if a.name == "epsilon"]


def _run(model: onnx.ModelProto, feeds: dict, level) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = level
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    typed = {i.name: feeds[i.name].astype(np.float16 if i.type == "tensor(float16)" else np.float32)
             for i in sess.get_inputs()}  # fmt: skip
    return sess.run(None, typed)[0].astype(np.float32)


@pytest.mark.parametrize("keep_io", [True, False])
def test_layernorm_epsilon_survives_onnxruntime_fusion(keep_io, tmp_path):
    """A float16 LayerNorm with eps = 1e-6 (ViT/DeiT/ConvNeXt) was fused by onnxruntime 1.20..1.26 with eps 1e-5:
    LayerNormFusion reads the Add's constant only when it is float32 (layer_norm_fusion.cc). On rows whose
    variance is ~1e-6 the fused model then differed from the unfused one by 1.19 (measured with 1.20.1, 1.23.2
    and 1.26.0; 1.30 reads float16). The normalisation now stays float32 between Casts that the fusion absorbs:
    the fused LayerNormalization carries the model's float32 epsilon and reads the float16 input."""
    rng = np.random.default_rng(0)
    model = _layernorm_eps_model(rng)
    result = fp16.convert_float16(model, keep_io_types=keep_io)
    assert _fused_epsilons(result.model, tmp_path) == [np.float32(1e-6)]
    assert precisions(result)["mm"] == precisions(result)["ln_mulg"] == precisions(result)["ln_addb"] == "fp16"
    tiny = {"x": (rng.standard_normal((8, W)) * 4e-3).astype(np.float32)}  # LayerNorm input variance ~1e-6
    fused = _run(result.model, tiny, onnx_level("ORT_ENABLE_ALL"))
    unfused = _run(result.model, tiny, onnx_level("ORT_DISABLE_ALL"))
    np.testing.assert_allclose(fused, unfused, atol=2e-2)
    np.testing.assert_allclose(fused, _run(model, tiny, onnx_level("ORT_DISABLE_ALL")), atol=5e-2)


def _layernorm_eps_model(rng) -> onnx.ModelProto:
    """MatMul -> decomposed LayerNorm with eps = 1e-6 (ViT/DeiT/ConvNeXt) -> MatMul."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        *layernorm_nodes("h", "ln_"),
        helper.make_node("MatMul", ["ln_out", "W"], ["y"], name="mm2"),
    ]
    inits = [i for i in layernorm_inits() if i.name != "eps"] + [init("eps", np.float32(1e-6))]
    inits.append(init("W", (rng.standard_normal((W, W)) / 4).astype(np.float32)))
    return make_model(nodes, [vi("x", TensorProto.FLOAT, ["b", W])], [vi("y", TensorProto.FLOAT, ["b", W])], inits)


def test_mixed_precision_keeps_the_layernorm_epsilon_too(tmp_path):
    """auto_mixed_precision's pick gets the same protection (precision_search.keep_epsilons), validated once more:
    its fused LayerNormalization carries the model's epsilon, not onnxruntime <= 1.26's 1e-5."""
    rng = np.random.default_rng(0)
    model = _layernorm_eps_model(rng)
    data = [{"x": rng.standard_normal((8, W)).astype(np.float32)} for _ in range(4)]
    result = fp16.auto_mixed_precision(model, data, rtol=1e-2, atol=1e-2, keep_io_types=True, progress=False)
    search = result.report.search
    assert search.criteria_met and search.holdout_met
    assert any(h["stage"].startswith("LayerNorm epsilon float32") and h["passed"] for h in search.history)
    assert _fused_epsilons(result.model, tmp_path) == [np.float32(1e-6)]
    assert precisions(result)["mm"] == precisions(result)["ln_mulg"] == precisions(result)["ln_addb"] == "fp16"


def onnx_level(name: str):
    import onnxruntime as ort

    return getattr(ort.GraphOptimizationLevel, name)


def test_layernorm_with_default_epsilon_stays_float16_whole():
    """eps = 1e-5 is what ORT writes when it cannot read the constant: nothing to protect, no Cast added."""
    result = fp16.convert_float16(matmul_ln(), keep_io_types=False)
    assert set(precisions(result).values()) == {"fp16"}
    assert sum(n.op_type == "Cast" for n in result.model.graph.node) == 0


def test_layernorm_without_gamma_and_beta_keeps_its_epsilon_float16():
    """ORT fuses a LayerNorm only with its Mul(gamma) and Add(beta): without them no fused node reads the epsilon,
    so nothing moves to float32 (no Cast) even with eps = 1e-6, residual Add in front or not."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "x"], ["h"], name="residual"),
        *layernorm_nodes("h", "ln_")[:7],
    ]
    inits = [init("two", np.float32(2)), init("eps", np.float32(1e-6)), init("W", np.eye(W, dtype=np.float32))]
    model = make_model(nodes, [vi("x", TensorProto.FLOAT, ["b", W])], [vi("ln_n", TensorProto.FLOAT, ["b", W])], inits)
    result = fp16.convert_float16(model, keep_io_types=False)
    assert set(precisions(result).values()) == {"fp16"}
    assert sum(n.op_type == "Cast" for n in result.model.graph.node) == 0
