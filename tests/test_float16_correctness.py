"""Regression tests for the converter: each known converter defect (DESIGN.md §3) has a model here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from tests.helpers import (
    check_converted,
    count_ops,
    elem_type,
    feeds_for,
    init,
    make_model,
    run,
    vi,
)
from tests.models import if_model, mlp

F, H = TensorProto.FLOAT, TensorProto.FLOAT16
rng = np.random.default_rng(0)


def w(*shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def test_full_conversion_mlp_types_and_accuracy():
    model = mlp()
    result = fp16.convert_float16(model)
    out = result.model
    assert elem_type(out, "x") == H and elem_type(out, "y") == H
    assert all(t.data_type == H for t in out.graph.initializer)
    assert count_ops(out, "Cast") == 0
    check_converted(model, out)
    assert result.report.to_dict()["summary"]["nodes_fp16"] == 4


def test_input_model_is_never_modified(tmp_path):
    model = mlp()
    before = model.SerializeToString()
    fp16.convert_float16(model, node_block_list=["relu"])
    assert model.SerializeToString() == before
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    data = path.read_bytes()
    fp16.convert_float16(path).save(tmp_path / "out.onnx")
    assert path.read_bytes() == data


def test_keep_io_types_bool_and_list():
    model = mlp()
    kept = fp16.convert_float16(model, keep_io_types=True).model
    assert elem_type(kept, "x") == F and elem_type(kept, "y") == F
    assert count_ops(kept, "Cast") == 2
    check_converted(model, kept)
    only_x = fp16.convert_float16(model, keep_io_types=["x"]).model
    assert elem_type(only_x, "x") == F and elem_type(only_x, "y") == H
    assert count_ops(only_x, "Cast") == 1
    check_converted(model, only_x)


def test_existing_cast_to_float_feeding_converted_nodes():
    """onnxconverter-common #320: Cast(to=FLOAT) left unchanged while its consumers become float16."""
    model = make_model(
        [
            helper.make_node("Cast", ["xi"], ["xf"], to=F, name="cast_in"),
            helper.make_node("Mul", ["xf", "s"], ["m"], name="mul"),
            helper.make_node("Relu", ["m"], ["y"], name="relu"),
        ],
        [vi("xi", TensorProto.INT64, [2, 3])],
        [vi("y", F, [2, 3])],
        [init("s", np.float32(0.5))],
    )
    out = fp16.convert_float16(model).model
    cast = next(n for n in out.graph.node if n.name == "cast_in")
    assert helper.get_attribute_value(cast.attribute[0]) == H
    assert count_ops(out, "Cast") == 1  # the original one, retargeted; nothing added
    check_converted(model, out, feeds={"xi": np.arange(6, dtype=np.int64).reshape(2, 3)})


def test_existing_cast_to_float_with_mixed_consumers():
    model = make_model(
        [
            helper.make_node("Cast", ["xi"], ["xf"], to=F, name="cast_in"),
            helper.make_node("Relu", ["xf"], ["a"], name="relu"),
            helper.make_node("Sqrt", ["xf"], ["b"], name="sqrt_blocked"),
            helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        ],
        [vi("xi", TensorProto.INT64, [3])],
        [vi("y", F, [3])],
    )
    out = fp16.convert_float16(model, node_block_list=["sqrt_blocked"]).model
    check_converted(model, out, feeds={"xi": np.array([1, 4, 9], dtype=np.int64)})
    # Cast stays to FLOAT for the blocked Sqrt; one Cast feeds Relu; one brings Sqrt's output back to fp16.
    assert count_ops(out, "Cast") == 3


def test_resize_scales_and_roi_stay_float32():
    """onnxconverter-common #306/#272/#207: Resize scales/roi converted to float16 makes an invalid model."""
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Resize", ["r", "roi", "scales"], ["y"], mode="nearest", name="resize"),
        ],
        [vi("x", F, [1, 1, 4, 4])],
        [vi("y", F, [1, 1, 8, 8])],
        [init("roi", np.array([], np.float32)), init("scales", np.array([1, 1, 2, 2], np.float32))],
        opset=19,
    )
    out = fp16.convert_float16(model).model
    assert elem_type(out, "scales") == F and elem_type(out, "roi") == F
    assert count_ops(out, "Cast") == 0
    check_converted(model, out)


def test_resize_scales_computed_at_runtime():
    """scales computed from float tensors: the computation may be fp16, the scales input must be fp32."""
    model = make_model(
        [
            helper.make_node("Mul", ["s0", "two"], ["scales"], name="mul_scales"),
            helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest", name="resize"),
        ],
        [vi("x", F, [1, 1, 2, 2])],
        [vi("y", F, [1, 1, 4, 4])],
        [init("s0", np.array([0.5, 0.5, 1, 1], np.float32)), init("two", np.float32(2.0))],
        opset=19,
    )
    out = fp16.convert_float16(model).model
    check_converted(model, out)


def test_initializer_shared_by_fp32_and_fp16_nodes():
    """onnxconverter-common #304: an initializer shared across precisions is 'bound to different types'."""
    model = make_model(
        [
            helper.make_node("Add", ["x", "shared"], ["a"], name="add_fp16"),
            helper.make_node("Mul", ["x", "shared"], ["b"], name="mul_fp32"),
            helper.make_node("Sub", ["a", "b"], ["y"], name="sub"),
        ],
        [vi("x", F, [4])],
        [vi("y", F, [4])],
        [init("shared", w(4))],
    )
    result = fp16.convert_float16(model, node_block_list=["mul_fp32"])
    out = result.model
    assert elem_type(out, "shared") == F  # stored once, in float32; a Cast feeds the float16 node
    check_converted(model, out)
    # x->fp32 for Mul, shared->fp16 for Add, b->fp16 for Sub
    assert count_ops(out, "Cast") == 3


def test_unnamed_nodes_and_name_clashes():
    """Cast names built from node names clash when nodes are unnamed or names are taken."""
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Sqrt", ["a"], ["b"]),
            helper.make_node("Relu", ["b"], ["c"]),
            helper.make_node("Sqrt", ["c"], ["a_float"], name="a_cast_float"),
            helper.make_node("Identity", ["a_float"], ["y"], name="a_float_1"),
        ],
        [vi("x", F, [3])],
        [vi("y", F, [3])],
    )
    out = fp16.convert_float16(model, op_block_list=["Sqrt"]).model
    names = [n.name for n in out.graph.node if n.name]
    assert len(names) == len(set(names))
    values = [o for n in out.graph.node for o in n.output]
    assert len(values) == len(set(values))
    check_converted(model, out, feeds={"x": np.array([1.0, 4.0, 9.0], np.float32)})


def test_already_float16_model_converts_to_itself():
    model = mlp()
    once = fp16.convert_float16(model, node_block_list=["relu"]).model
    twice_result = fp16.convert_float16(once, node_block_list=["relu"])
    assert twice_result.model.SerializeToString() == once.SerializeToString()
    assert twice_result.report.casts_inserted == 0
    full = fp16.convert_float16(model).model
    again = fp16.convert_float16(full)
    assert again.model.SerializeToString() == full.SerializeToString()
    assert any("unchanged" in note for note in again.report.notes)


def test_model_without_float_tensors_is_unchanged_with_a_note():
    model = make_model(
        [helper.make_node("Add", ["a", "b"], ["c"], name="add")],
        [vi("a", TensorProto.INT64, [2]), vi("b", TensorProto.INT64, [2])],
        [vi("c", TensorProto.INT64, [2])],
    )
    result = fp16.convert_float16(model)
    assert onnx.helper.printable_graph(result.model.graph) == onnx.helper.printable_graph(model.graph)
    assert any("unchanged" in note for note in result.report.notes)


@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("block", [None, ["Sqrt"]])
def test_if_bodies_with_outer_scope_tensors(cond, block):
    model = if_model()
    result = fp16.convert_float16(model, op_block_list=block)
    feeds = {"x": np.array([1.0, 2.0, 3.0], np.float32), "cond": np.array(cond)}
    check_converted(model, result.model, feeds=feeds)
    decisions = {d.node: d for d in result.report.fp32_nodes}
    assert decisions["if"].rule.value == "control_flow_interface"
    if block:
        assert decisions["then_sqrt"].rule.value == "op_block_list"


def test_loop_body_with_outer_scope_tensor():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="cond_id"),
            helper.make_node("Mul", ["acc_in", "scale"], ["m"], name="body_mul"),
            helper.make_node("Add", ["m", "bias"], ["acc_out"], name="body_add"),
        ],
        "body",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("acc_in", F, [3])],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", F, [3])],
    )
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["scale"], name="relu"),
            helper.make_node("Loop", ["n", "", "x"], ["y"], body=body, name="loop"),
        ],
        [vi("x", F, [3]), vi("n", TensorProto.INT64, [])],
        [vi("y", F, [3])],
        [init("bias", np.array([0.1, 0.2, 0.3], np.float32))],
    )
    out = fp16.convert_float16(model).model
    check_converted(model, out, feeds={"x": np.array([0.5, 0.25, 0.75], np.float32), "n": np.array(3)})


def test_scan_body():
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "x_t"], ["s_out"], name="scan_add"),
            helper.make_node("Relu", ["s_out"], ["y_t"], name="scan_relu"),
        ],
        "scan_body",
        [vi("s_in", F, [2]), vi("x_t", F, [2])],
        [vi("s_out", F, [2]), vi("y_t", F, [2])],
    )
    model = make_model(
        [helper.make_node("Scan", ["s0", "xs"], ["s_final", "ys"], body=body, num_scan_inputs=1, name="scan")],
        [vi("s0", F, [2]), vi("xs", F, [4, 2])],
        [vi("s_final", F, [2]), vi("ys", F, [4, 2])],
    )
    out = fp16.convert_float16(model).model
    check_converted(model, out)


def test_topk_argmax_mixed_type_outputs():
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("TopK", ["r", "k"], ["values", "indices"], axis=-1, name="topk"),
            helper.make_node("ArgMax", ["r"], ["amax"], axis=-1, name="argmax"),
            helper.make_node("Shape", ["r"], ["shape"], name="shape"),
        ],
        [vi("x", F, [2, 5])],
        [
            vi("values", F, [2, 2]),
            vi("indices", TensorProto.INT64, [2, 2]),
            vi("amax", TensorProto.INT64, [2, 1]),
            vi("shape", TensorProto.INT64, [2]),
        ],
        [init("k", np.array([2], np.int64))],
    )
    out = fp16.convert_float16(model).model
    assert elem_type(out, "indices") == TensorProto.INT64
    assert count_ops(out, "Cast") == 0
    feeds = {"x": np.array([[1, 5, 2, 4, 3], [9, 7, 8, 6, 0]], np.float32)}
    check_converted(model, out, feeds=feeds)


def test_com_microsoft_contrib_ops():
    model = make_model(
        [
            helper.make_node("FusedMatMul", ["x", "W"], ["m"], domain="com.microsoft", alpha=0.5, name="fmm"),
            helper.make_node("Gelu", ["m"], ["g"], domain="com.microsoft", name="gelu"),
            helper.make_node("Relu", ["g"], ["y"], name="relu"),
        ],
        [vi("x", F, [2, 4])],
        [vi("y", F, [2, 3])],
        [init("W", w(4, 3))],
        extra_opsets=[("com.microsoft", 1)],
    )
    result = fp16.convert_float16(model)
    assert not result.report.fp32_nodes
    check_converted(model, result.model)


def test_unknown_custom_op_stays_float32_with_reason():
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="relu"),
            helper.make_node("Normalizer", ["a"], ["n"], domain="ai.onnx.ml", norm="L2", name="normalizer"),
            helper.make_node("Relu", ["n"], ["y"], name="relu2"),
        ],
        [vi("x", F, [2, 3])],
        [vi("y", F, [2, 3])],
        extra_opsets=[("ai.onnx.ml", 3)],
    )
    result = fp16.convert_float16(model)
    fp32 = {d.node: d.rule.value for d in result.report.fp32_nodes}
    assert fp32 == {"normalizer": "no_fp16_in_schema"}
    check_converted(model, result.model)


def test_dynamic_shapes():
    model = mlp()
    out = fp16.convert_float16(model).model
    for batch in (1, 7):
        feeds = feeds_for(model, dims={"batch": batch})
        check_converted(model, out, feeds=feeds)
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_external_data_roundtrip(tmp_path):
    model = mlp()
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(model)  # onnx.save with external data rewrites the proto it is given
    onnx.save(
        on_disk, src, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    result = fp16.convert_float16(src)
    dst = tmp_path / "dst" / "model.onnx"
    result.save(dst)
    assert (tmp_path / "dst" / "model.onnx.data").exists()
    loaded = onnx.load(dst)
    check_converted(model, loaded)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["model.onnx", "model.onnx.data"]


def test_weight_overflow_stays_float32_or_clamps():
    model = make_model(
        [
            helper.make_node("Mul", ["x", "big"], ["a"], name="mul_big"),
            helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("Mul", ["b", "small"], ["y"], name="mul_small"),
        ],
        [vi("x", F, [3])],
        [vi("y", F, [3])],
        [init("big", np.array([1e5, 2.0, 3.0], np.float32)), init("small", np.array([1e-3, 1e-3, 1e-3], np.float32))],
    )
    result = fp16.convert_float16(model, keep_io_types=True)
    fp32 = {d.node: d for d in result.report.fp32_nodes}
    assert fp32["mul_big"].rule.value == "weight_overflow"
    # issue 14.6: what follows keeps the range (Relu and Mul preserve magnitudes), else it is cast to float16
    assert {n: d.rule.value for n, d in fp32.items() if n != "mul_big"} == {
        "relu": "range_propagated",
        "mul_small": "range_propagated",
    }
    assert "100000" in fp32["mul_big"].detail
    feeds = {"x": np.array([1e-3, 1.0, 2.0], np.float32)}
    check_converted(model, result.model, feeds=feeds, rtol=1e-2, atol=1e-9)
    clamped = fp16.convert_float16(model, keep_io_types=True, clamp_weights=True)
    assert not clamped.report.fp32_nodes
    assert [d.rule.value for d in clamped.report.decisions if d.node == "mul_big"] == ["weight_clamped"]
    y = run(clamped.model, feeds)[0]
    assert np.isfinite(y).all()


def test_weight_underflow_stays_float32():
    model = make_model(
        [helper.make_node("Mul", ["x", "tiny"], ["y"], name="mul_tiny")],
        [vi("x", F, [2])],
        [vi("y", F, [2])],
        [init("tiny", np.array([1e-9, -2e-6], np.float32))],
    )
    result = fp16.convert_float16(model, keep_io_types=True)
    assert [d.rule.value for d in result.report.fp32_nodes] == ["weight_underflow"]
    out = run(result.model, {"x": np.array([1e3, 1e3], np.float32)})[0]
    assert np.all(out != 0)


@pytest.mark.parametrize(("value", "rule"), [(1e5, "weight_overflow"), (1e-6, "weight_underflow")])
def test_constant_copied_by_identity_is_judged_where_it_is_read(value, rule):
    """Issue 10 (lean): TorchScript routes deduplicated initializers through Identity (ConvNeXt's equal layer
    scales). The rules saw the constant only at the Identity, kept that float32, and converted the Mul reading
    the copy, which then read it through a Cast to float16: 1e-6 lost 1.3% although the Identity's reason said
    it was kept (an overflow was caught one step later, as range_propagated). The Mul now sees the constant
    through the copy and stays float32 with the Identity for the rule's own reason."""
    model = make_model(
        [
            helper.make_node("Identity", ["c"], ["c_copy"], name="copy"),
            helper.make_node("Mul", ["x", "c_copy"], ["a"], name="scale"),
            helper.make_node("Mul", ["x", "c"], ["b"], name="scale_direct"),
            helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        ],
        [vi("x", F, [4])],
        [vi("y", F, [4])],
        [init("c", np.full(4, value, np.float32))],
    )
    result = fp16.convert_float16(model, keep_io_types=True)
    fp32 = {d.node: d.rule.value for d in result.report.fp32_nodes}
    assert fp32.get("scale") == rule and fp32.get("scale_direct") == rule, fp32
    assert fp32.get("copy") == rule  # it feeds a float32 node the exact constant: its reason holds
    feeds = {"x": np.array([0.5, 1.0, 2.0, 3.0], np.float32)}
    out = run(result.model, feeds)[0]
    np.testing.assert_allclose(out, run(model, feeds)[0], rtol=2e-3)


def test_tiny_biases_and_epsilons_convert_and_stay_accurate():
    """Issue 10 (lean): a MobileNetV3-like Conv whose folded BatchNorm bias is ~1e-8 and a T5-like RMSNorm with
    its 1e-6 epsilon were kept float32 (weight_underflow, 2 Casts each) although float16 rounds an addend by at
    most 2**-25; they now convert, with no Cast, and match float32 under float16-storage emulation."""
    from olive_fp16_pass.emulation import emulate_float16_storage

    gen = np.random.default_rng(3)
    bias = (gen.standard_normal(8) * 2e-8).astype(np.float32)  # |b| <= ~5e-8, most values subnormal or 0
    model = make_model(
        [
            helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("HardSwish", ["c"], ["h"], name="hswish"),
            helper.make_node("Pow", ["h", "two"], ["sq"], name="pow"),
            helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], name="mean", keepdims=1),
            helper.make_node("Add", ["ms", "eps"], ["mse"], name="add_eps"),
            helper.make_node("Sqrt", ["mse"], ["rms"], name="sqrt"),
            helper.make_node("Div", ["h", "rms"], ["n"], name="div"),
            helper.make_node("Mul", ["n", "gamma"], ["y"], name="scale"),
        ],
        [vi("x", F, [1, 4, 6, 6])],
        [vi("y", F, [1, 8, 6, 6])],
        [
            init("W", w(8, 4, 3, 3)),
            init("B", bias),
            init("two", np.array(2.0, np.float32)),
            init("axes", np.array([1], np.int64)),
            init("eps", np.array(1e-6, np.float32)),
            init("gamma", np.full([1, 8, 1, 1], 0.7, np.float32)),
        ],
        opset=18,
    )
    result = fp16.convert_float16(model, keep_io_types=False)
    assert not result.report.fp32_nodes, [(d.node, d.rule.value, d.detail) for d in result.report.fp32_nodes]
    assert count_ops(result.model, "Cast") == 0
    feeds = {"x": gen.uniform(-1, 1, (1, 4, 6, 6)).astype(np.float32)}
    expected = run(model, feeds)[0]
    emulated = run(emulate_float16_storage(result.model), feeds)[0]
    np.testing.assert_allclose(emulated, expected, rtol=1e-2, atol=1e-2)
    cosine = float(np.dot(emulated.ravel(), expected.ravel()) / np.linalg.norm(emulated) / np.linalg.norm(expected))
    assert cosine > 0.9999


def test_constant_nodes_and_constant_of_shape():
    model = make_model(
        [
            helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", F, [3], [1.0, 2.0, 3.0]), name="k"),
            helper.make_node("Constant", [], ["cf"], value_float=0.5, name="kf"),
            helper.make_node("Shape", ["x"], ["shp"], name="shape"),
            helper.make_node("ConstantOfShape", ["shp"], ["ones"], value=helper.make_tensor("o", F, [1], [1.0])),
            helper.make_node("Mul", ["x", "c"], ["a"], name="mul"),
            helper.make_node("Add", ["a", "ones"], ["b"], name="add"),
            helper.make_node("Mul", ["b", "cf"], ["y"], name="mul2"),
        ],
        [vi("x", F, [3])],
        [vi("y", F, [3])],
    )
    out = fp16.convert_float16(model).model
    assert count_ops(out, "Cast") == 0
    check_converted(model, out)


def test_topological_order_kept_with_blocked_nodes():
    model = mlp()
    out = fp16.convert_float16(model, node_block_list=["mm1", "relu"]).model
    check_converted(model, out)  # includes a topological-order check
    order = [n.name for n in out.graph.node if n.op_type != "Cast"]
    assert order == ["mm1", "add1", "relu", "mm2"]


def test_node_block_list_regex_and_unmatched_warning():
    model = mlp()
    result = fp16.convert_float16(model, node_block_list=[r"mm\d", "no_such_node"])
    assert {d.node for d in result.report.fp32_nodes} == {"mm1", "mm2"}
    assert result.report.warnings == ["node_block_list: 'no_such_node' matches no node name in the model"]
    check_converted(model, result.model)


def test_mean_variance_normalization_stays_fp32():
    """ORT has no fp16 MVN kernel and its function body uses float32 constants (found by bench/conformance.py)."""
    model = make_model(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn")],
        [vi("x", F, [1, 2, 3, 3])],
        [vi("y", F, [1, 2, 3, 3])],
    )
    result = fp16.convert_float16(model)
    assert [d.rule.value for d in result.report.fp32_nodes] == ["no_fp16_kernel_in_onnxruntime"]
    # onnx's full check fails on the original too (its MVN function body trips shape inference): plain check.
    onnx.checker.check_model(result.model)
    feed = {"x": np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)}
    np.testing.assert_allclose(run(result.model, feed)[0], run(model, feed)[0], atol=2e-2)


def test_model_without_default_domain_gets_an_opset_for_its_casts():
    """A model importing only ai.onnx.ml: inserted Casts need an opset import for the default domain."""
    graph = helper.make_graph(
        [helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="MAX", name="norm")],
        "g",
        [vi("x", F, [2, 3])],
        [vi("y", F, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3)], ir_version=10)
    result = fp16.convert_float16(model)  # fp16 I/O around a float32-only op: two Casts
    assert result.report.casts_inserted == 2
    assert {(o.domain, o.version) for o in result.model.opset_import} == {("ai.onnx.ml", 3), ("", 13)}
    assert any("added an opset import for the default domain" in n for n in result.report.notes)
    onnx.checker.check_model(result.model, full_check=True)
    out = run(result.model, {"x": np.array([[1, -2, 4], [3, 0, -1]], np.float32)})[0]
    np.testing.assert_allclose(out, [[0.25, -0.5, 1], [1, 0, -1 / 3]], atol=1e-3)


def test_float_tensor_attributes_keep_node_fp32():
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node(
                "TreeEnsemble",
                ["r"],
                ["y"],
                domain="ai.onnx.ml",
                name="trees",
                aggregate_function=1,
                leaf_targetids=[0, 0],
                leaf_weights=helper.make_tensor("w", F, [2], [1.0, 2.0]),
                nodes_falseleafs=[1],
                nodes_falsenodeids=[1],
                nodes_featureids=[0],
                nodes_modes=helper.make_tensor("m", TensorProto.UINT8, [1], [0]),
                nodes_splits=helper.make_tensor("s", F, [1], [0.5]),
                nodes_trueleafs=[1],
                nodes_truenodeids=[0],
                n_targets=1,
                post_transform=0,
                tree_roots=[0],
            ),
        ],
        [vi("x", F, [2, 1])],
        [vi("y", F, [2, 1])],
        extra_opsets=[("ai.onnx.ml", 5)],
        opset=21,
    )
    result = fp16.convert_float16(model)
    assert {d.node: d.rule.value for d in result.report.fp32_nodes} == {"trees": "float_tensor_attribute"}
    onnx.checker.check_model(result.model, full_check=True)


def test_block_list_with_re_escaped_names_and_non_float_nodes():
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="/layers.0/act[1]"),
            helper.make_node("Cast", ["a"], ["b"], to=TensorProto.INT64, name="to_int"),
            helper.make_node("Cast", ["b"], ["c"], to=F, name="to_float"),
            helper.make_node("Relu", ["c"], ["y"], name="out"),
        ],
        [vi("x", F, [3])],
        [vi("y", F, [3])],
    )
    import re

    result = fp16.convert_float16(model, node_block_list=[re.escape("/layers.0/act[1]"), "to_int", "nothing"])
    assert {d.node for d in result.report.fp32_nodes} == {"/layers.0/act[1]"}
    assert result.report.warnings == [
        "node_block_list: 'to_int' names only nodes with no float32 computation of their own (Cast, Constant or "
        "integer ops, whose precision follows their consumers): nothing to do",
        "node_block_list: 'nothing' matches no node name in the model",
    ]
    check_converted(model, result.model, feeds={"x": np.array([1.0, -2.0, 3.0], np.float32)})
