"""Each rule of the chain on its own: it answers for the node it is about, and stays silent otherwise.

Shaped like ModelOpt's per-rule node-classifier tests: one tiny real model per rule, the rule called
directly with the context the classifier would give it. The chain itself (its order, its single use by
Float16, the search and the gated emulation) and the options declared once are tested at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from olive_fp16_pass import element_types, rules
from olive_fp16_pass.classify import classify
from olive_fp16_pass.errors import OptionError
from olive_fp16_pass.float16 import convert_float16, convert_with_options
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.mixed_precision import auto_mixed_precision
from olive_fp16_pass.options import OPTION_NAMES, ConversionOptions, add_cli_flags, options_from_cli, pass_params
from olive_fp16_pass.precision_plan import ForcedDecision, Origin, Precision, Rule
from olive_fp16_pass.switchable import SwitchableEmulation
from tests.helpers import count_ops, init, make_model, run, vi
from tests.models import lightgbm_like_regressor


def contexts(proto: onnx.ModelProto, options: ConversionOptions | None = None, forced=None):
    """node name -> (node, NodeContext), as the classifier builds them."""
    model = ir.serde.deserialize_model(proto)
    index = GraphIndex(model)
    types = element_types.infer(model, index)
    context = rules.ModelContext(model, index, types, options or ConversionOptions(), forced=forced)
    return {node.name: (node, rules.NodeContext.of(context, node, graph)) for node, graph in index.nodes}


def ask(rule, proto, name, options=None, forced=None):
    node, context = contexts(proto, options, forced)[name]
    return rule(node, context)


def _mul(weight: float = 2.0, op: str = "Mul", name: str = "mul") -> onnx.ModelProto:
    return make_model(
        [helper.make_node(op, ["x", "w"], ["y"], name=name)],
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
        [init("w", np.full(4, weight, np.float32))],
    )


def test_non_tensor_type():
    proto = make_model(
        [helper.make_node("SequenceConstruct", ["x", "x"], ["s"], name="seq")],
        [vi("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])],
    )
    assert ask(rules.non_tensor_type, proto, "seq").rule is Rule.NON_TENSOR_TYPE
    assert ask(rules.non_tensor_type, _mul(), "mul") is None


def test_unknown_type():
    proto = make_model(
        [
            helper.make_node("Custom", ["x"], ["h"], name="custom", domain="my.domain"),
            # Shape accepts any type: nothing tells the type of h (a Relu consumer would: element_types infers it)
            helper.make_node("Shape", ["h"], ["y"], name="shape"),
        ],
        [vi("x", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.INT64, [1])],
        extra_opsets=[("my.domain", 1)],
    )
    decision = ask(rules.unknown_type, proto, "shape")
    assert decision.rule is Rule.UNKNOWN_TYPE and "h" in decision.detail
    assert ask(rules.unknown_type, _mul(), "mul") is None


def test_control_flow():
    branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="inner")], "b", [], [vi("r", TensorProto.FLOAT, [2])]
    )
    proto = make_model(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch, name="if")],
        [vi("c", TensorProto.BOOL, []), vi("x", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.FLOAT, [2])],
    )
    assert ask(rules.control_flow, proto, "if").rule is Rule.CONTROL_FLOW
    assert ask(rules.control_flow, proto, "inner") is None


def test_unknown_op():
    proto = make_model(
        [helper.make_node("Custom", ["x"], ["y"], name="custom", domain="my.domain")],
        [vi("x", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.FLOAT, [2])],
        extra_opsets=[("my.domain", 1)],
    )
    decision = ask(rules.unknown_op, proto, "custom")
    assert decision.rule is Rule.UNKNOWN_OP and "my.domain::Custom at opset 1" in decision.detail
    assert ask(rules.unknown_op, _mul(), "mul") is None


def test_node_block_list():
    blocked = ConversionOptions(node_block_list=["m.l"])  # a regular expression
    assert ask(rules.node_block_list, _mul(), "mul", blocked).rule is Rule.NODE_BLOCK_LIST
    assert ask(rules.node_block_list, _mul(), "mul", ConversionOptions(node_block_list=["add"])) is None


def test_op_block_list():
    assert ask(rules.op_block_list, _mul(), "mul", ConversionOptions(op_block_list=["Mul"])).rule is Rule.OP_BLOCK_LIST
    assert ask(rules.op_block_list, _mul(), "mul", ConversionOptions(op_block_list=["Add"])) is None


def test_op_include_list():
    only_add = ConversionOptions(op_include_list=["Add"])
    assert ask(rules.op_include_list, _mul(), "mul", only_add).rule is Rule.NOT_IN_OP_INCLUDE_LIST
    assert ask(rules.op_include_list, _mul(), "mul", ConversionOptions(op_include_list=["Mul"])) is None
    assert ask(rules.op_include_list, _mul(), "mul") is None  # no include list: everything is included


def test_node_include_list():
    only_other = ConversionOptions(node_include_list=["other"])
    assert ask(rules.node_include_list, _mul(), "mul", only_other).rule is Rule.NOT_IN_NODE_INCLUDE_LIST
    assert ask(rules.node_include_list, _mul(), "mul", ConversionOptions(node_include_list=["mul"])) is None
    assert ask(rules.node_include_list, _mul(), "mul") is None


def test_search_forced():
    record = ForcedDecision(Rule.ACCURACY, "ranked #1", Origin.ACCURACY)
    decision = ask(rules.search_forced, _mul(), "mul", forced={"mul": record})
    assert (decision.precision, decision.rule, decision.detail) == (Precision.FP32, Rule.ACCURACY, "ranked #1")
    assert ask(rules.search_forced, _mul(), "mul", forced={"other": record}) is None


def test_no_fp16_kernel():
    proto = make_model(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn")],
        [vi("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [vi("y", TensorProto.FLOAT, [1, 2, 3, 3])],
    )
    no_provider = ConversionOptions(provider=None)
    assert ask(rules.no_fp16_kernel, proto, "mvn", no_provider).rule is Rule.NO_FP16_KERNEL
    # under CUDA the kernel table covers MVN: its rule gives the reason instead
    assert ask(rules.no_fp16_kernel, proto, "mvn") is None
    assert ask(rules.no_cuda_float16_kernel, proto, "mvn").rule is Rule.NO_FP16_KERNEL
    assert ask(rules.no_fp16_kernel, _mul(), "mul") is None


def test_no_cuda_float16_kernel():
    proto = make_model(
        [helper.make_node("Tan", ["x"], ["y"], name="tan")],
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
    )
    cuda = ConversionOptions(provider="CUDAExecutionProvider")
    decision = ask(rules.no_cuda_float16_kernel, proto, "tan", cuda)
    assert decision.rule is Rule.NO_FP16_KERNEL and decision.detail.startswith("no CUDA float16 kernel for Tan")
    assert ask(rules.no_cuda_float16_kernel, proto, "tan", ConversionOptions(provider=None)) is None
    assert ask(rules.no_cuda_float16_kernel, _mul(), "mul", cuda) is None


def test_float_tensor_attribute():
    proto = make_model(
        [
            helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos"),
            helper.make_node("Add", ["x", "c"], ["y"], name="add"),
        ],
        [vi("s", TensorProto.INT64, [1]), vi("x", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.FLOAT, [2])],
    )
    node, context = contexts(proto)["add"]
    assert rules.float_tensor_attribute(node, context) is None
    node.attributes["t"] = ir.AttrTensor("t", ir.tensor(np.zeros(2, np.float32)))
    decision = rules.float_tensor_attribute(node, context)
    assert decision.rule is Rule.FLOAT_TENSOR_ATTRIBUTE and "t" in decision.detail


def test_no_fp16_in_schema():
    proto = make_model(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("Resize", ["x", "", "sf"], ["y"], name="resize"),
        ],
        [vi("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [vi("y", TensorProto.FLOAT, None)],
    )
    # Resize still has a float16 data slot: only its scales stay float32, by the slot rule
    assert ask(rules.no_fp16_in_schema, proto, "resize") is None
    _, context = contexts(proto)["resize"]
    assert 2 not in context.fp16_slots()[0]
    ints = make_model(
        [helper.make_node("Range", ["a", "b", "d"], ["y"], name="range")],
        [vi("a", TensorProto.FLOAT, []), vi("b", TensorProto.FLOAT, []), vi("d", TensorProto.FLOAT, [])],
        [vi("y", TensorProto.FLOAT, None)],
    )
    assert ask(rules.no_fp16_in_schema, ints, "range").rule is Rule.NO_FP16_IN_SCHEMA  # Range: no float16 type
    assert ask(rules.no_fp16_in_schema, _mul(), "mul") is None


def test_user_rule():
    def keep_mul(node, context):
        return f"{context.label} kept" if node.op_type == "Mul" else None

    options = ConversionOptions(extra_rules=[keep_mul])
    decision = ask(rules.user_rule, _mul(), "mul", options)
    assert decision.precision is Precision.FP32 and decision.rule.value == "keep_mul" and decision.detail == "mul kept"
    assert ask(rules.user_rule, _mul(), "mul") is None
    assert ask(rules.user_rule, _mul(op="Add", name="add"), "add", options) is None


def _deep_ops() -> onnx.ModelProto:
    """One node per op the depth rule reads, each summing over a known number of elements, and two whose
    depth no static shape tells (the input of `sum_unknown` has no shape; `mm_dynamic` multiplies two inputs
    with a symbolic inner dimension)."""
    f = TensorProto.FLOAT
    return make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),  # 4096 (A's last axis, or W's rows)
            helper.make_node("MatMul", ["p", "q"], ["pq"], name="mm_dynamic"),
            helper.make_node("Gemm", ["g", "G"], ["gg"], transB=1, name="gemm"),  # G is 8 x 300: 300
            helper.make_node("Conv", ["img", "K"], ["c"], name="conv"),  # 8 channels x 3 x 3 = 72
            helper.make_node("ReduceSum", ["r", "axis1"], ["rs"], name="sum_axis"),  # axis 1 of [2, 5000, 3]
            helper.make_node("ReduceMean", ["r"], ["rm"], axes=[1, 2], name="mean_axes"),  # 15000 (opset 17)
            helper.make_node("ReduceSumSquare", ["r"], ["rq"], name="sumsq_all"),  # no axes: all 30000
            helper.make_node("Relu", ["r"], ["u"], name="relu"),  # u: no shape below
            helper.make_node("ReduceL2", ["u"], ["ul"], axes=[1], name="sum_unknown"),
        ],
        [
            vi("x", f, ["b", 4096]),
            vi("p", f, ["b", "k"]),
            vi("q", f, ["k", 4]),
            vi("g", f, [2, 300]),
            vi("img", f, [1, 8, 16, 16]),
            vi("r", f, [2, 5000, 3]),
        ],
        [vi(n, f, None) for n in ("m", "pq", "gg", "c", "rs", "rm", "rq", "ul")],
        [
            init("W", np.zeros((4096, 8), np.float32)),
            init("G", np.zeros((8, 300), np.float32)),
            init("K", np.zeros((4, 8, 3, 3), np.float32)),
            init("axis1", np.array([1], np.int64)),
        ],
    )


def test_deep_reduction():
    proto = _deep_ops()
    depths = {"mm": 4096, "gemm": 300, "conv": 72, "sum_axis": 5000, "mean_axes": 15000, "sumsq_all": 30000}
    options = ConversionOptions(max_reduction_elements=300)
    nodes = contexts(proto, options)
    for name, depth in depths.items():
        node, context = nodes[name]
        assert rules.accumulation_depth(node) == depth, name
        decision = rules.deep_reduction(node, context)
        if depth > 300:
            assert decision.rule is Rule.DEEP_REDUCTION
            assert decision.detail == f"accumulates over {depth} elements > 300 (max_reduction_elements)"
        else:
            assert decision is None, name  # 300 is allowed: more than N, not N
    for name in ("mm_dynamic", "sum_unknown"):
        node, context = nodes[name]
        assert rules.accumulation_depth(node) is None and rules.deep_reduction(node, context) is None
    assert ask(rules.deep_reduction, proto, "mm") is None  # off by default
    assert ask(rules.deep_reduction, proto, "relu", options) is None


def test_deep_reduction_through_the_converter_says_where_it_could_not_look():
    result = convert_float16(_deep_ops(), max_reduction_elements=1000, provider=None)
    rule_of = {d.node: d.rule for d in result.report.decisions}
    assert {n for n, r in rule_of.items() if r is Rule.DEEP_REDUCTION} == {"mm", "sum_axis", "mean_axes", "sumsq_all"}
    assert rule_of["gemm"] is Rule.CONVERTED and rule_of["sum_unknown"] is Rule.CONVERTED
    warning = next(w for w in result.report.warnings if w.startswith("max_reduction_elements"))
    assert "not applied to 2 nodes" in warning and "'mm_dynamic'" in warning and "'sum_unknown'" in warning
    assert result.report.options["max_reduction_elements"] == 1000
    assert not convert_float16(_deep_ops(), provider=None).report.fp32_nodes  # off by default: nothing kept
    assert not any(w.startswith("max_reduction") for w in convert_float16(_deep_ops(), provider=None).report.warnings)


@pytest.mark.parametrize("value", [0, -1, 2.5, "100", True])
def test_max_reduction_elements_must_be_a_positive_whole_number(value):
    with pytest.raises(OptionError, match="max_reduction_elements"):
        ConversionOptions(max_reduction_elements=value)


def test_weight_range():
    assert ask(rules.weight_range, _mul(2.0), "mul") is None
    over = ask(rules.weight_range, _mul(1e5), "mul")
    assert over.rule is Rule.WEIGHT_OVERFLOW and "100000" in over.detail
    assert ask(rules.weight_range, _mul(1e-7), "mul").rule is Rule.WEIGHT_UNDERFLOW
    clamped = ask(rules.weight_range, _mul(1e5), "mul", ConversionOptions(clamp_weights=True))
    assert (clamped.precision, clamped.rule) == (Precision.FP16, Rule.WEIGHT_CLAMPED)
    assert [w.name for _, w in clamped.clamped] == ["w"]


def _biased(op: str, bias: float, **attrs) -> onnx.ModelProto:
    """`op` with a constant bias of `bias` everywhere in its additive slot (Conv B, Gemm C, BatchNorm B)."""
    shapes = {"Conv": ([1, 2, 3, 3], [2, 2, 1, 1], [1, 2, 3, 3]), "Gemm": ([2, 2], [2, 2], [2, 2])}
    x, weight, y = shapes[op]
    return make_model(
        [helper.make_node(op, ["x", "w", "b"], ["y"], name="node", **attrs)],
        [vi("x", TensorProto.FLOAT, x)],
        [vi("y", TensorProto.FLOAT, y)],
        [init("w", np.full(weight, 0.5, np.float32)), init("b", np.full([2], bias, np.float32))],
    )


def test_weight_range_underflow_only_for_factors():
    """Issue 10 (lean): an all-subnormal ADDEND (bias, epsilon) is rounded by at most 2**-25, within the
    rounding of the float16 sum: converted. A factor keeps the rule, with the error float16 really makes."""
    tiny = 4.5e-8  # MobileNetV3's folded BatchNorm biases: all below 2**-24, most not 0 in float16
    assert ask(rules.weight_range, _mul(1e-6, op="Add", name="add"), "add") is None  # T5/Llama RMSNorm eps
    assert ask(rules.weight_range, _mul(1e-6, op="Sub", name="sub"), "sub") is None
    assert ask(rules.weight_range, _biased("Conv", tiny), "node") is None
    assert ask(rules.weight_range, _biased("Gemm", tiny), "node") is None
    # C scaled by beta > 1 is no longer a plain addend; the Conv WEIGHT slot is a factor
    assert ask(rules.weight_range, _biased("Gemm", tiny, beta=4.0), "node").rule is Rule.WEIGHT_UNDERFLOW
    factor = ask(rules.weight_range, _mul(1e-6), "mul")
    assert factor.rule is Rule.WEIGHT_UNDERFLOW and "1.3% error" in factor.detail  # 1e-6 -> 1.0133e-6
    # on float16's subnormal grid, a factor is exact: nothing is lost, nothing to keep
    assert ask(rules.weight_range, _mul(2.0**-20), "mul") is None
    # an epsilon that becomes 0 in float16 guards nothing any more: still kept, and said
    vanished = ask(rules.weight_range, _mul(1e-8, op="Add", name="add"), "add")
    assert vanished.rule is Rule.WEIGHT_UNDERFLOW and "becomes 0" in vanished.detail
    assert ask(rules.weight_range, _biased("Conv", 1e-8), "node") is None  # a vanished bias guards nothing


def test_float32_neighbours():
    """Identity/Reshape/Transpose between a tree ensemble (float32) and keep_io's float32 I/O stay float32."""
    model, keep = lightgbm_like_regressor(), ConversionOptions(keep_io_types=True)
    for name in ("id_in", "reshape", "transpose"):
        decision = ask(rules.float32_neighbours, model, name, keep)
        assert decision.rule is Rule.FLOAT32_NEIGHBOURS and "'tree'" in decision.detail, name
    assert "output 'y' (keep_io_types)" in ask(rules.float32_neighbours, model, "transpose", keep).detail
    assert ask(rules.float32_neighbours, model, "reshape") is None  # float16 graph output: a real boundary
    assert ask(rules.float32_neighbours, model, "tree", keep) is None  # not a movement op
    assert ask(rules.float32_neighbours, _mul(), "mul") is None


def _movement_around_compute() -> onnx.ModelProto:
    """tree (float32) -> Reshape -> Relu -> Transpose -> output: the Relu is real compute, float16."""
    proto = lightgbm_like_regressor()
    graph = proto.graph
    transpose = next(n for n in graph.node if n.name == "transpose")
    transpose.input[0] = "relu_out"
    graph.node.insert(3, helper.make_node("Relu", ["r"], ["relu_out"], name="relu"))
    return proto


def test_float32_neighbours_does_not_cascade_into_compute():
    """A float16 compute node next to the island keeps it float16: the rule never moves compute, and it judges
    neighbours by the rules before it, so one kept island cannot make the next node float32."""
    proto = _movement_around_compute()
    keep = ConversionOptions(keep_io_types=True)
    assert ask(rules.float32_neighbours, proto, "reshape", keep) is None
    assert ask(rules.float32_neighbours, proto, "transpose", keep) is None
    result = convert_float16(proto, keep_io_types=True)
    precision = {d.node: d.precision for d in result.report.decisions}
    assert precision["relu"] is precision["reshape"] is precision["transpose"] is Precision.FP16
    assert precision["id_in"] is Precision.FP32  # its own island, between x and the tree


def test_lightgbm_like_model_with_keep_io_has_no_useless_casts():
    """keep_io_types=True gave 4 Casts: Identity and Reshape/Transpose in float16 between float32 nodes."""
    model = lightgbm_like_regressor()
    result = convert_float16(model, keep_io_types=True)
    assert count_ops(result.model, "Cast") == 0 == result.report.casts_inserted
    feeds = {"x": np.random.default_rng(0).uniform(0, 1, (3, 4)).astype(np.float32)}
    np.testing.assert_array_equal(run(result.model, feeds)[0], run(model, feeds)[0])
    rules_of = {d.node: d.rule for d in result.report.fp32_nodes}
    assert rules_of == {
        "id_in": Rule.FLOAT32_NEIGHBOURS,
        "tree": Rule.NO_FP16_IN_SCHEMA,
        "reshape": Rule.FLOAT32_NEIGHBOURS,
        "transpose": Rule.FLOAT32_NEIGHBOURS,
    }


def test_converted_is_last_and_always_answers():
    assert rules.RULES[-1] is rules.converted
    decision = ask(rules.converted, _mul(), "mul")
    assert (decision.precision, decision.rule) == (Precision.FP16, Rule.CONVERTED)


def test_every_rule_in_the_chain_is_tested_here():
    tested = {name[len("test_") :] for name in globals() if name.startswith("test_")}
    missing = [rule.__name__ for rule in rules.RULES if rule.__name__ not in tested and rule is not rules.converted]
    assert not missing


# -- the chain --------------------------------------------------------------------------------------------------
def test_first_answer_wins_in_chain_order():
    """A weight overflow AND a block list: the user's list comes first in RULES, so it is the reason."""
    proto = _mul(1e5)
    model = ir.serde.deserialize_model(proto)
    index = GraphIndex(model)
    types = element_types.infer(model, index)
    plan = classify(model, index, types, ConversionOptions(op_block_list=["Mul"])).plan
    assert [d.rule for d in plan.decisions.values()] == [Rule.OP_BLOCK_LIST]
    reordered = (rules.weight_range, rules.op_block_list, rules.converted)
    plan = classify(model, index, types, ConversionOptions(op_block_list=["Mul"]), rules=reordered).plan
    assert [d.rule for d in plan.decisions.values()] == [Rule.WEIGHT_OVERFLOW]


def _weights_and_user_list() -> onnx.ModelProto:
    return make_model(
        [
            helper.make_node("Mul", ["x", "big"], ["a"], name="over"),  # weight overflow (after the search's rule)
            helper.make_node("Add", ["a", "one"], ["b"], name="blocked"),  # block list (before the search's rule)
            helper.make_node("Relu", ["b"], ["y"], name="relu"),
        ],
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
        [init("big", np.full(4, 1e5, np.float32)), init("one", np.ones(4, np.float32))],
    )


def test_search_float16_and_gated_emulation_give_the_same_reasons():
    """Before: the converter gave the search's reason to a forced node with an overflowing weight, the gated
    emulation kept the weight rule's reason (the order was written twice). Now both read RULES."""
    proto = _weights_and_user_list()
    options = ConversionOptions(node_block_list=["blocked"])
    forced = {
        label: ForcedDecision(Rule.ACTIVATION_OVERFLOW, f"forced {label}", Origin.RANGE)
        for label in ("over", "blocked", "relu")
    }
    converted = convert_with_options(proto, options, forced=forced).report.decisions
    _, classified = SwitchableEmulation(proto).gates(options, forced)
    gated = list(classified.plan.decisions.values())
    as_rows = lambda decisions: sorted((d.node, d.precision, d.rule, d.detail) for d in decisions)  # noqa: E731
    assert as_rows(converted) == as_rows(gated)
    by_node = {d.node: d.rule for d in converted}
    assert by_node == {
        "over": Rule.ACTIVATION_OVERFLOW,
        "blocked": Rule.NODE_BLOCK_LIST,
        "relu": Rule.ACTIVATION_OVERFLOW,
    }


def test_forced_node_with_clamped_weight_does_not_clamp_it():
    proto = _mul(1e5)
    forced = {"mul": ForcedDecision(Rule.ACCURACY, "x", Origin.ACCURACY)}
    result = convert_with_options(proto, ConversionOptions(clamp_weights=True), forced=forced)
    weight = next(t for t in result.model.graph.initializer if t.name == "w")
    assert weight.data_type == TensorProto.FLOAT and onnx.numpy_helper.to_array(weight).max() == np.float32(1e5)


# -- options declared once ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("function", [convert_float16, auto_mixed_precision])
def test_public_functions_take_every_option_with_its_default(function):
    parameters = inspect.signature(function).parameters
    for f in dataclasses.fields(ConversionOptions):
        assert f.name in parameters, f"{function.__name__} lacks {f.name}"
        assert parameters[f.name].default == f.default


def test_pass_params_cli_flags_and_report_cover_every_option():
    # the passes take `provider` from their accelerator, not from a parameter of their own
    assert tuple(pass_params()) == tuple(name for name in OPTION_NAMES if name != "provider")
    parser = argparse.ArgumentParser()
    add_cli_flags(parser)
    args = parser.parse_args(
        ["--op-include-list", "Mul", "--node-include-list", "mul", "--keep-io-types", "--max-reduction-elements", "9"]
    )
    options = options_from_cli(args)
    assert options.max_reduction_elements == 9
    assert options.op_include_list == ("Mul",) and options.node_include_list == ("mul",)
    assert options.keep_io_types is True and options.clamp_weights is False
    report = convert_float16(_mul(), op_include_list=["Mul"]).report
    assert tuple(report.options) == OPTION_NAMES and report.options["op_include_list"] == ["Mul"]


def test_readme_python_api_names_every_option():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme[readme.index("result = fp16.convert_float16(") :]
    block = block[: block.index("```")]
    missing = [name for name in OPTION_NAMES if not re.search(rf"\b{name}\b", block)]
    assert not missing, f"README's convert_float16 example lacks {missing}"


def test_options_are_frozen_and_hashable():
    options = ConversionOptions(op_block_list=["Mul"])
    assert hash(options) == hash(ConversionOptions(op_block_list=("Mul",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.clamp_weights = True  # type: ignore[misc]
    with pytest.raises(OptionError, match="mutually exclusive"):
        ConversionOptions(op_block_list=["Mul"], op_include_list=["Add"])


def test_auto_mixed_precision_honours_clamp_weights():
    proto = _mul(1e5)
    rng = np.random.default_rng(0)
    data = [{"x": rng.uniform(-1e-3, 1e-3, 4).astype(np.float32)} for _ in range(3)]
    kept = auto_mixed_precision(proto, data, provider="CPUExecutionProvider", progress=False, rtol=1, atol=1)
    assert {d.rule for d in kept.report.decisions} == {Rule.WEIGHT_OVERFLOW}
    clamped = auto_mixed_precision(
        proto, data, provider="CPUExecutionProvider", progress=False, rtol=1, atol=1, clamp_weights=True
    )
    assert {d.rule for d in clamped.report.decisions} == {Rule.WEIGHT_CLAMPED}
    assert clamped.report.options["clamp_weights"] is True


@pytest.mark.parametrize("attribute", ["value_float", "value_floats"])
@pytest.mark.parametrize("keep_io", [False, True])
def test_constant_value_float_beyond_float16_keeps_its_consumer_fp32(attribute, keep_io):
    """Issue 14.1: a Constant written with value_float(s) skipped the weight-range check (1e6 -> inf)."""
    value = 1e6 if attribute == "value_float" else [1e6, 1.0, 2.0, 3.0]
    proto = make_model(
        [
            helper.make_node("Constant", [], ["c"], name="const", **{attribute: value}),
            helper.make_node("Mul", ["x", "c"], ["y"], name="mul"),
        ],
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
    )
    result = convert_float16(proto, keep_io_types=keep_io)
    assert [d.rule for d in result.report.decisions if d.node == "mul"] == [Rule.WEIGHT_OVERFLOW]
    from tests.helpers import run

    x = {"x": np.full(4, 1e-3, np.float32)}
    y = np.asarray(run(result.model, x)[0], np.float32)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, np.asarray(run(proto, x)[0]), rtol=1e-2)


def _overflow_then(*ops: str) -> onnx.ModelProto:
    nodes = [helper.make_node("Mul", ["x", "big"], ["t0"], name="over")]
    for k, op in enumerate(ops):
        nodes.append(helper.make_node(op, [f"t{k}"], [f"t{k + 1}"], name=f"n{k}_{op}"))
    nodes.append(helper.make_node("Identity", [f"t{len(ops)}"], ["y"], name="out"))
    return make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("y", TensorProto.FLOAT, [4])],
        [init("big", np.full(4, 1e5, np.float32))],
    )


def test_range_propagated():
    proto = _overflow_then("Relu", "Softmax", "Relu")
    node, context = contexts(proto)["n0_Relu"]
    assert rules.range_propagated(node, context) is None  # nothing marked until the classifier walks the graph
    context.model.beyond_fp16[id(node.inputs[0])] = "weight 'big'"
    assert rules.range_propagated(node, context).rule is Rule.RANGE_PROPAGATED


def test_node_kept_for_weight_overflow_keeps_its_output_range():
    """Issue 14.6: the Mul is float32 for its weight, but its output (1e5 x) was cast to float16 for the
    Relu after it: inf. Now the range travels through Relu and stops at the Softmax (bounded)."""
    proto = _overflow_then("Relu", "Softmax", "Relu")
    result = convert_float16(proto)
    rule_of = {d.node: d.rule for d in result.report.decisions}
    assert rule_of["over"] is Rule.WEIGHT_OVERFLOW
    assert rule_of["n0_Relu"] is Rule.RANGE_PROPAGATED and rule_of["n1_Softmax"] is Rule.RANGE_PROPAGATED
    assert rule_of["n2_Relu"] is Rule.CONVERTED and rule_of["out"] is Rule.CONVERTED
    from tests.helpers import run

    x = {"x": np.array([1.0, 0.5, -1.0, 2.0], np.float32)}
    y = np.asarray(run(result.model, x)[0], np.float32)
    np.testing.assert_allclose(y, np.asarray(run(proto, x)[0]), atol=1e-3)
    assert not convert_float16(proto, clamp_weights=True).report.fp32_nodes  # clamped: nothing to propagate
