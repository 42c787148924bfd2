"""Converting a model that is already float16 returns it unchanged, from a ModelProto or from a file.

onnx-ir types every initializer it reads and writes a value_info for each: a model read from a file used
to gain one per weight on every pass through the converter.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from tests.helpers import init, make_model, vi
from tests.models import transformer_block


def if_model() -> onnx.ModelProto:
    """A subgraph reading an outer-scope initializer, plus a blocked node: Casts and float32 parts survive."""
    branch = helper.make_graph(
        [helper.make_node("Mul", ["h", "w"], ["b_out"], name="b_mul")], "then", [], [vi("b_out", TensorProto.FLOAT)]
    )
    other = helper.make_graph(
        [helper.make_node("Sub", ["h", "w"], ["e_out"], name="e_sub")], "else", [], [vi("e_out", TensorProto.FLOAT)]
    )
    nodes = [
        helper.make_node("Add", ["x", "w"], ["h"], name="add"),
        helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other, name="if"),
        helper.make_node("Exp", ["y"], ["z"], name="exp"),
    ]
    return make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, [4])],
        [vi("z", TensorProto.FLOAT, [4])],
        [init("w", np.linspace(0.1, 0.4, 4).astype(np.float32)), init("zero", np.float32(0))],
    )


CASES = {
    "transformer": (transformer_block, {}),
    "blocked": (transformer_block, {"op_block_list": ["Tanh"], "keep_io_types": True}),
    "if": (if_model, {"node_block_list": ["exp"]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_second_conversion_from_proto_is_byte_identical(case):
    build, options = CASES[case]
    once = fp16.convert_float16(build(), **options).model
    again = fp16.convert_float16(once, **options)
    assert again.model.SerializeToString() == once.SerializeToString()
    assert again.report.casts_inserted == 0 and again.report.values_retyped == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_second_conversion_from_a_file_is_byte_identical(case, tmp_path):
    build, options = CASES[case]
    first = tmp_path / "once.onnx"
    result = fp16.convert_float16(build(), **options)
    result.save(first)
    # Saving adds nothing to the converted graph (it used to add a value_info per initializer).
    assert len(onnx.load(first).graph.value_info) == len(result.model.graph.value_info)
    second = tmp_path / "twice.onnx"
    again = fp16.convert_float16(first, **options)
    again.save(second)
    once = onnx.load(first)
    assert len(again.model.graph.value_info) == len(once.graph.value_info)
    assert second.read_bytes() == first.read_bytes()


def test_file_conversion_writes_no_value_info_for_initializers(tmp_path):
    """Converting from a file (the onnx-ir path) adds nothing the protobuf path does not."""
    model = transformer_block()
    path = tmp_path / "in.onnx"
    onnx.save(model, path)
    from_file = fp16.convert_float16(path).model
    from_proto = fp16.convert_float16(model).model
    initializers = {t.name for t in from_file.graph.initializer}
    assert not [v.name for v in from_file.graph.value_info if v.name in initializers]
    assert onnx.helper.printable_graph(from_file.graph) == onnx.helper.printable_graph(from_proto.graph)


def test_external_data_model_converts_to_itself(tmp_path):
    rng = np.random.default_rng(0)
    model = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="r")],
        [vi("x", TensorProto.FLOAT, [2, 64])],
        [vi("y", TensorProto.FLOAT, [2, 64])],
        [init("W", rng.standard_normal((64, 64)).astype(np.float32))],  # 8 KiB in float16: stays external
    )
    source = tmp_path / "src" / "m.onnx"
    source.parent.mkdir()
    onnx.save(model, source, save_as_external_data=True, location="m.data", size_threshold=0)
    first, second = tmp_path / "a" / "m.onnx", tmp_path / "b" / "m.onnx"
    fp16.convert_float16(source).save(first)
    again = fp16.convert_float16(first)
    assert again.external_data and again.report.values_retyped == 0
    again.save(second)
    assert second.read_bytes() == first.read_bytes()
    assert not onnx.load(second, load_external_data=False).graph.value_info
    assert (second.parent / "m.onnx.data").read_bytes() == (first.parent / "m.onnx.data").read_bytes()
