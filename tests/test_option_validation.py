"""Options that used to change the result silently are rejected or warned about (issue 14.9), through the
Python API, the CLI and the Olive pass config alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from olive_fp16_pass import cli
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.float16 import convert_float16
from olive_fp16_pass.mixed_precision import auto_mixed_precision
from olive_fp16_pass.options import ConversionOptions
from tests.helpers import init, make_model, vi


def _model():
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [vi("x", TensorProto.FLOAT, [2, 4])],
        [vi("y", TensorProto.FLOAT, [2, 4])],
        [init("w", np.full((4, 4), 1e5, np.float32))],
    )


def test_op_list_typo_is_a_warning_with_a_hint():
    report = convert_float16(_model(), op_block_list=["Matmul"]).report
    assert any("'Matmul' matches no op type" in w and "'MatMul'" in w for w in report.warnings)
    assert not any("op_block_list" in w for w in convert_float16(_model(), op_block_list=["MatMul"]).report.warnings)


def test_op_list_typo_warning_on_the_cli(tmp_path, capsys):
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    assert cli.main(["convert", str(path), "-o", str(tmp_path / "o.onnx"), "--op-include-list", "Matmul"]) == 0
    assert "'Matmul' matches no op type" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_clamp_weights_must_be_a_bool(value):
    with pytest.raises(Float16Error, match="clamp_weights"):
        convert_float16(_model(), clamp_weights=value)


def test_clamp_weights_false_string_does_not_clamp_through_the_olive_pass_config():
    from olive.hardware.accelerator import AcceleratorSpec

    from olive_fp16_pass.olive.float16_pass import OnnxFloat16, conversion_options

    spec = AcceleratorSpec(accelerator_type="cpu", execution_provider="CPUExecutionProvider")
    config = OnnxFloat16.generate_config(spec, {"clamp_weights": "false", "op_block_list": ["Matmul"]})
    options = conversion_options(config, "CPUExecutionProvider")
    assert options == ConversionOptions(op_block_list=["Matmul"], provider="CPUExecutionProvider")
    assert any("'Matmul'" in w for w in convert_float16(_model(), **options.to_dict()).report.warnings)


def _amp(**kwargs):
    data = [{"x": np.random.default_rng(k).uniform(-1e-3, 1e-3, (2, 4)).astype(np.float32)} for k in range(3)]
    return auto_mixed_precision(_model(), data, provider="CPUExecutionProvider", progress=False, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"rtol": math.nan}, "rtol"),
        ({"atol": math.inf}, "atol"),
        ({"max_abs": "0.1"}, "max_abs"),
        ({"min_cosine": 1.5}, "min_cosine"),
        ({"per_output": {"y": {"rtol": math.nan}}}, "per_output"),
        ({"overflow_margin": math.nan}, "overflow_margin"),
        ({"holdout_fraction": math.nan}, "holdout_fraction"),
        ({"refine_budget": -1}, "refine_budget"),
        ({"strict": "false"}, "strict"),
        ({"op_block_list": ["MatMul"], "op_include_list": ["MatMul"]}, "mutually exclusive"),
    ],
)
def test_bad_search_options_are_rejected_naming_the_option(kwargs, option):
    with pytest.raises(Float16Error, match=option):
        _amp(**kwargs)


def test_empty_include_list_is_a_warning():
    report = convert_float16(_model(), op_include_list=[]).report
    assert any("op_include_list is empty" in w for w in report.warnings)
