"""Drop-in for Olive users: a config that swaps "OnnxFloatToFloat16" for "OnnxFloat16" keeps its options."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnx import TensorProto

from tests.models import benign_mlp

# The options an OnnxFloatToFloat16 config may set (Olive 0.13's names and defaults).
OLIVE_OPTIONS = {
    "min_positive_val": 1e-7,
    "max_finite_val": 1e4,
    "keep_io_types": True,
    "use_symbolic_shape_infer": True,
    "op_block_list": ["Tanh"],
}


def test_olive_float_to_float16_options_validate_and_are_explained(tmp_path: Path, caplog) -> None:
    from olive.model import ONNXModelHandler
    from olive.passes.olive_pass import create_pass_from_dict

    from olive_fp16_pass.olive.float16_pass import OnnxFloat16

    source = tmp_path / "mlp.onnx"
    onnx.save(benign_mlp(), source)
    olive_pass = create_pass_from_dict(OnnxFloat16, dict(OLIVE_OPTIONS), disable_search=True)
    with caplog.at_level(logging.WARNING, logger="olive_fp16_pass.olive.float16_pass"):
        output = olive_pass.run(ONNXModelHandler(model_path=str(source)), str(tmp_path / "out.onnx"))
    model = onnx.load(output.model_path)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # keep_io_types honoured
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    notes = output.model_attributes["olive_fp16_report"]["notes"]
    for name in ("min_positive_val", "max_finite_val", "use_symbolic_shape_infer"):
        assert any(note.startswith(f"{name}=") for note in notes), name
        assert name in caplog.text
    assert any("clamp_weights: true" in note for note in notes)
