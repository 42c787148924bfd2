"""Olive pass `OnnxFloat16`: a thin adapter over `olive_fp16_pass.convert_float16`.

Shaped like Olive's own `OnnxFloatToFloat16` (same option names where they mean the same thing) so that it is
a drop-in replacement, but safe by default: weights beyond float16's range keep their node in float32
instead of being clamped (set `clamp_weights` to clamp), and the per-node decisions are written next to the
model as `<model>.fp16_report.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.model.utils import resolve_onnx_path
from olive.passes import Pass
from olive.passes.onnx.common import get_external_data_config, ir_model_to_olive_model
from olive.passes.pass_config import BasePassConfig, PassConfigParam

logger = logging.getLogger(__name__)

REPORT_SUFFIX = ".fp16_report.json"


def float16_config_params() -> dict[str, PassConfigParam]:
    """Options shared by the Float16 and auto-mixed-precision passes."""
    return {
        "keep_io_types": PassConfigParam(
            type_=bool | list[str],
            default_value=False,
            description="Keep model inputs/outputs in float32: true for all, or a list of input/output names.",
        ),
        "op_block_list": PassConfigParam(
            type_=list[str], default_value=None, description="Op types to keep in float32."
        ),
        "op_include_list": PassConfigParam(
            type_=list[str],
            default_value=None,
            description="Only these op types go to float16. Mutually exclusive with op_block_list.",
        ),
        "node_block_list": PassConfigParam(
            type_=list[str],
            default_value=None,
            description="Node names (exact, or regular expressions matching the whole name) to keep in float32.",
        ),
        "node_include_list": PassConfigParam(
            type_=list[str],
            default_value=None,
            description="Only nodes whose names match go to float16. Mutually exclusive with node_block_list.",
        ),
        "clamp_weights": PassConfigParam(
            type_=bool,
            default_value=False,
            description=(
                "Clamp weights beyond ±65504 to the float16 range instead of keeping their nodes in float32. "
                "Off by default: clamping silently changes what the model computes."
            ),
        ),
    }


def write_report(report_dict: dict, model_path: str | Path) -> Path:
    path = Path(model_path)
    target = path.with_name(path.stem + REPORT_SUFFIX)
    target.write_text(json.dumps(report_dict, indent=2))
    return target


def to_olive_model(result, input_model: ONNXModelHandler, output_model_path: str, config) -> ONNXModelHandler:
    """Save a conversion result like Olive's own passes do, carrying the input's attributes and our report.

    The report is written beside the model and attached to the model's attributes: they travel with the
    model through later passes and into `output_dir/model_config.json`. (Returning the model as a folder
    would also carry the file, but Olive 0.13 resolves a relative `onnx_file_name` against the current
    directory, so a `model.onnx` there silently replaces ours.)
    """
    from olive.passes.onnx.common import _LARGE_IR_MODEL_THRESHOLD  # above it Olive writes external data

    from olive_fp16_pass.model_io import check_data_name, detach_from_input, estimate_size

    if config.external_data_name:  # Olive joins it to the output folder unchecked ('../../x' escapes it)
        check_data_name(config.external_data_name, Path(output_model_path).name)
    external = config.save_as_external_data or estimate_size(result.ir_model) > _LARGE_IR_MODEL_THRESHOLD
    detach_from_input(result.ir_model, keep_external=external)  # else it points at the input's data file
    output = ir_model_to_olive_model(result.ir_model, output_model_path, config)
    report_dict = result.report.to_dict()
    write_report(report_dict, output.model_path)
    output.model_attributes = {**(input_model.model_attributes or {}), "olive_fp16_report": report_dict}
    return output


class OnnxFloat16(Pass):
    """Convert a model to float16, keeping in float32 only the nodes that must stay there, with reasons."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        config = float16_config_params()
        config.update(get_external_data_config())
        return config

    def _run_for_config(
        self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        from olive_fp16_pass.float16 import convert_float16

        output_model_path = resolve_onnx_path(output_model_path, Path(model.model_path).name)
        # A path, not a loaded proto: external data then stays memory-mapped until it is converted.
        result = convert_float16(
            model.model_path,
            keep_io_types=config.keep_io_types,
            op_block_list=config.op_block_list,
            node_block_list=config.node_block_list,
            op_include_list=config.op_include_list,
            node_include_list=config.node_include_list,
            clamp_weights=config.clamp_weights,
        )
        logger.info("OnnxFloat16: %s", result.report.summary())
        return to_olive_model(result, model, output_model_path, config)
