"""The protobuf emitter (ModelProto input) and the onnx-ir editor (paths, big models) make the same model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from olive_fp16_pass.float16 import convert_with_options
from olive_fp16_pass.options import ConversionOptions
from tests.helpers import canonical, feeds_for, run
from tests.models import activation_overflow_chain, if_model, layernorm_overflow_model, mlp, random_mixed_graph

CASES = [
    ("mlp", mlp, {}),
    ("mlp_blocked", mlp, {"node_block_list": ["relu", "mm1"]}),
    ("mlp_keep_io", mlp, {"keep_io_types": True}),
    ("if", if_model, {"op_block_list": ["Sqrt"]}),
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
    assert canonical(via_proto) == canonical(via_ir)
    feeds = feeds_for(model)
    for a, b in zip(run(via_proto, feeds), run(via_ir, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
