"""Real-world forms: float64 and bfloat16 tensors, QDQ-quantized models, custom-domain ops, subgraphs sharing
outer-scope initializers. Each converts, stays valid, and (where onnxruntime can run the input) loads with
every optimization, runs and matches float32.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from tests.helpers import (
    all_optimizations_session,
    check_converted,
    count_ops,
    elem_type,
    feeds_for,
    init,
    make_model,
    vi,
)


def decisions(result) -> dict[str, tuple[str, str]]:
    return {d.node: (d.precision.value, d.rule.value) for d in result.report.decisions}


def test_float64_tensors_are_kept_and_reported():
    model = make_model(
        [
            helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE, name="to_double"),
            helper.make_node("Mul", ["xd", "wd"], ["yd"], name="mul_double"),
            helper.make_node("Cast", ["yd"], ["yf"], to=TensorProto.FLOAT, name="to_float"),
            helper.make_node("Add", ["yf", "w"], ["y"], name="add"),
        ],
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
        [init("wd", np.array([1e-9, 2.0, 3.0, 1e6])), init("w", np.ones(4, np.float32))],
    )
    result = fp16.convert_float16(model)
    out = result.model
    assert elem_type(out, "wd") == TensorProto.DOUBLE
    assert decisions(result)["add"] == ("fp16", "converted")
    note = next(n for n in result.report.notes if "float64" in n)
    assert note.startswith("3 float64 tensors kept") and "wd" in note
    all_optimizations_session(out)
    check_converted(model, out, feeds={"x": np.float32([0.5, -1, 2, 1e-3])}, rtol=1e-2)


def test_bfloat16_tensors_are_left_as_they_are():
    model = make_model(
        [
            helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16, name="to_bf16"),
            helper.make_node("Cast", ["xb"], ["xf"], to=TensorProto.FLOAT, name="from_bf16"),
            helper.make_node("Mul", ["xf", "w"], ["y"], name="mul"),
        ],
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
        [init("w", np.float32([1, 2, 3, 4]))],
        value_info=[vi("xb", TensorProto.BFLOAT16, [4])],
    )
    result = fp16.convert_float16(model)
    out = result.model
    assert elem_type(out, "xb") == TensorProto.BFLOAT16
    to_bf16 = next(n for n in out.graph.node if n.name == "to_bf16")
    assert to_bf16.attribute[0].i == TensorProto.BFLOAT16
    assert any(n.startswith("1 bfloat16 tensors left as they are") for n in result.report.notes)
    all_optimizations_session(out)
    check_converted(model, out, rtol=2e-2, atol=2e-2)


def qdq_model(opset: int) -> onnx.ModelProto:
    """x -> Q/DQ -> MatMul(DQ(int8 W)) -> Add(bias) -> Relu -> Q/DQ, as ORT's quantizer writes a QDQ model."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xdq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"], name="dq_w"),
        helper.make_node("MatMul", ["xdq", "wdq"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "b"], ["mmb"], name="bias"),
        helper.make_node("Relu", ["mmb"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "rs", "rz"], ["rq"], name="q_r"),
        helper.make_node("DequantizeLinear", ["rq", "rs", "rz"], ["y"], name="dq_r"),
    ]
    inits = [
        init("xs", np.float32(0.0101)),
        init("xz", np.uint8(128)),
        init("wq", rng.integers(-100, 100, (8, 8)).astype(np.int8)),
        init("ws", np.float32(0.0203)),
        init("wz", np.int8(0)),
        init("b", rng.standard_normal(8).astype(np.float32)),
        init("rs", np.float32(0.0507)),
        init("rz", np.uint8(0)),
    ]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, [2, 8])], [vi("y", TensorProto.FLOAT, [2, 8])], inits, opset)


@pytest.mark.parametrize("opset", [13, 21])
@pytest.mark.parametrize("keep_io", [False, True])
def test_qdq_scales_and_zero_points_keep_their_types(opset, keep_io):
    model = qdq_model(opset)
    result = fp16.convert_float16(model, keep_io_types=keep_io)
    out = result.model
    types = {t.name: t.data_type for t in out.graph.initializer}
    original = {t.name: t.data_type for t in model.graph.initializer}
    assert {k: types[k] for k in ("xs", "xz", "wq", "ws", "wz", "rs", "rz")} == {
        k: original[k] for k in ("xs", "xz", "wq", "ws", "wz", "rs", "rz")
    }
    assert types["b"] == TensorProto.FLOAT16  # the float part between DQ and Q converts
    got = decisions(result)
    assert {got[n][0] for n in ("mm", "bias", "relu")} == {"fp16"}
    assert {got[n][0] for n in ("q_x", "dq_x", "dq_w", "q_r", "dq_r")} == {"fp32"}
    all_optimizations_session(out)
    check_converted(model, out, atol=0.06, rtol=0.05)  # one quantization step of the output (0.05)


def custom_op_model(declare_output: bool) -> onnx.ModelProto:
    model = make_model(
        [
            helper.make_node("Mul", ["x", "w"], ["a"], name="before"),
            helper.make_node("MyOp", ["a"], ["b"], domain="my.domain", name="custom"),
            helper.make_node("Relu", ["b"], ["c"], name="after"),
            helper.make_node("Add", ["c", "w"], ["y"], name="after2"),
        ],
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
        [init("w", np.float32([1, 2, 3, 4]))],
        extra_opsets=[("my.domain", 1)],
    )
    if declare_output:
        model.graph.value_info.append(vi("b", TensorProto.FLOAT, [4]))
    return model


@pytest.mark.parametrize("declare_output", [True, False])
def test_unknown_custom_op_stays_float32_with_casts_at_its_boundary(declare_output):
    """Without value_info the op's output type comes from its consumers' schemas (Relu's T = its float output)."""
    model = custom_op_model(declare_output)
    result = fp16.convert_float16(model)
    got = decisions(result)
    assert got["custom"] == ("fp32", "unknown_op")
    assert got["before"] == got["after"] == got["after2"] == ("fp16", "converted")
    out = result.model
    custom = next(n for n in out.graph.node if n.name == "custom")
    producers = {o: n for n in out.graph.node for o in n.output}
    assert producers[custom.input[0]].op_type == "Cast"  # float16 -> float32 in front of it
    after = next(n for n in out.graph.node if n.name == "after")
    assert producers[after.input[0]].op_type == "Cast"  # and back behind it
    assert result.report.casts_inserted == 2
    # Reported: the decision names the op and why; onnxruntime cannot run it, so the check is structural.
    detail = next(d.detail for d in result.report.fp32_nodes if d.node == "custom")
    assert "my.domain::MyOp" in detail
    assert any("does not load in onnxruntime" in w and "structurally" in w for w in result.report.warnings)
    onnx.checker.check_model(out, full_check=True)
    assert {(o.domain, o.version) for o in out.opset_import} == {("", 17), ("my.domain", 1)}


def test_contrib_op_without_float16_runs_in_float32_between_casts():
    """com.microsoft::CDist has float/double only: kept float32, the rest converts, ORT runs it."""
    model = make_model(
        [
            helper.make_node("Mul", ["a", "s"], ["a2"], name="scale"),
            helper.make_node("CDist", ["a2", "b"], ["d"], domain="com.microsoft", metric="euclidean", name="cdist"),
            helper.make_node("Sqrt", ["d"], ["y"], name="sqrt"),
        ],
        [vi("a", TensorProto.FLOAT, [3, 4]), vi("b", TensorProto.FLOAT, [5, 4])],
        [vi("y", TensorProto.FLOAT, [3, 5])],
        [init("s", np.float32(2))],
        extra_opsets=[("com.microsoft", 1)],
    )
    result = fp16.convert_float16(model)
    got = decisions(result)
    assert got["cdist"] == ("fp32", "no_fp16_in_schema")
    assert got["scale"] == got["sqrt"] == ("fp16", "converted")
    assert count_ops(result.model, "Cast") == result.report.casts_inserted == 3  # a2 and b in, d out
    all_optimizations_session(result.model)
    check_converted(model, result.model, feeds=feeds_for(model))


def shared_initializer_model() -> onnx.ModelProto:
    """Outer initializers `w`, `b` read by the main graph, both If branches, a Loop body and a nested If."""
    then_g = helper.make_graph(
        [
            helper.make_node("Mul", ["h", "w"], ["t1"], name="then_mul"),
            helper.make_node("Add", ["t1", "b"], ["t_out"], name="then_add"),
        ],
        "then",
        [],
        [vi("t_out", TensorProto.FLOAT)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["h", "w"], ["e_out"], name="else_sub")], "else", [], [vi("e_out", TensorProto.FLOAT)]
    )
    inner_then = helper.make_graph(
        [helper.make_node("Mul", ["acc", "w"], ["it"], name="in_then_mul")], "ithen", [], [vi("it", TensorProto.FLOAT)]
    )
    inner_else = helper.make_graph(
        [helper.make_node("Div", ["acc", "w"], ["ie"], name="in_else_div")], "ielse", [], [vi("ie", TensorProto.FLOAT)]
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_id"),
            helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT, name="body_cast"),
            helper.make_node("Greater", ["fi", "one"], ["gc"], name="body_gt"),
            helper.make_node("If", ["gc"], ["acc2"], then_branch=inner_then, else_branch=inner_else, name="inner_if"),
            helper.make_node("Add", ["acc2", "b"], ["acc_out"], name="body_add"),
        ],
        "body",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("acc", TensorProto.FLOAT, [4])],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", TensorProto.FLOAT, [4])],
    )
    nodes = [
        helper.make_node("Add", ["x", "w"], ["h"], name="add"),
        helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        helper.make_node("If", ["c"], ["y1"], then_branch=then_g, else_branch=else_g, name="if"),
        helper.make_node("Loop", ["n", "true", "y1"], ["y2"], body=body, name="loop"),
        helper.make_node("Mul", ["y2", "w"], ["y"], name="out_mul"),
    ]
    inits = [
        init("w", np.linspace(0.5, 0.8, 4).astype(np.float32)),
        init("b", np.float32([0.1, 0.2, 0.3, 0.4])),
        init("zero", np.float32(0)),
        init("one", np.float32(1)),
        init("n", np.int64(3)),
        init("true", np.bool_(True)),
    ]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, [4])], [vi("y", TensorProto.FLOAT, [4])], inits)


@pytest.mark.parametrize(
    "options",
    [{}, {"node_block_list": ["else_sub"]}, {"node_block_list": ["in_else_div", "out_mul"], "keep_io_types": True}],
)
def test_subgraphs_sharing_outer_initializers(options):
    model = shared_initializer_model()
    result = fp16.convert_float16(model, **options)
    out = result.model
    # Each initializer is stored once (float16 where a float16 node reads it), a Cast serves the others.
    assert sorted(t.name for t in out.graph.initializer) == sorted(t.name for t in model.graph.initializer)
    all_optimizations_session(out)
    for x in ([1, 2, 3, 4], [-5, -5, -5, -5]):  # both If branches
        check_converted(model, out, feeds={"x": np.float32(x)}, atol=2e-2, rtol=2e-2)
