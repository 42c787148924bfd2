"""The protobuf emitter (ModelProto input) and the onnx-ir editor (paths, big models) make the same model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from olive_fp16_pass.float16 import convert_with_options
from olive_fp16_pass.options import ConversionOptions
from tests.helpers import feeds_for, run
from tests.models import activation_overflow_chain, layernorm_overflow_model
from tests.test_cast_count import random_mixed_graph
from tests.test_float16_correctness import _if_model, mlp


def _canonical(model: onnx.ModelProto) -> list[tuple]:
    def graph(g: onnx.GraphProto) -> list[tuple]:
        rows = []
        for node in g.node:
            attrs = []
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    attrs.append((a.name, tuple(graph(a.g))))
                else:
                    attrs.append((a.name, onnx.helper.get_attribute_value(a).__repr__()))
            rows.append((node.op_type, tuple(node.input), tuple(node.output), tuple(sorted(attrs))))
        rows.append(("outputs", tuple((o.name, o.type.tensor_type.elem_type) for o in g.output)))
        rows.append(("inputs", tuple((i.name, i.type.tensor_type.elem_type) for i in g.input)))
        rows.append(("init", tuple(sorted((t.name, t.data_type, t.raw_data or b"") for t in g.initializer))))
        return rows

    return graph(model.graph)


CASES = [
    ("mlp", mlp, {}),
    ("mlp_blocked", mlp, {"node_block_list": ["relu", "mm1"]}),
    ("mlp_keep_io", mlp, {"keep_io_types": True}),
    ("if", _if_model, {"op_block_list": ["Sqrt"]}),
    ("chain", activation_overflow_chain, {"node_block_list": ["add_big", "tanh3", "scale_down"]}),
    ("layernorm", layernorm_overflow_model, {"node_block_list": ["ln_pow", "ln_div"], "keep_io_types": ["x"]}),
    *[
        (f"random{s}", lambda s=s: random_mixed_graph(s), {"node_block_list": [f"n{i}" for i in range(0, 80, 3)]})
        for s in range(4)
    ],
]


@pytest.mark.parametrize("name,builder,kwargs", CASES, ids=[c[0] for c in CASES])
def test_backends_agree(name, builder, kwargs):
    model = builder()
    via_proto = convert_with_options(model, ConversionOptions(**kwargs)).model
    via_ir = convert_with_options(ir.serde.deserialize_model(model), ConversionOptions(**kwargs)).model
    onnx.checker.check_model(via_proto, full_check=True)
    assert _canonical(via_proto) == _canonical(via_ir)
    feeds = feeds_for(model)
    for a, b in zip(run(via_proto, feeds), run(via_ir, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
