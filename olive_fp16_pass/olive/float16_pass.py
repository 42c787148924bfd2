"""Olive pass `OnnxFloat16`: a thin adapter over `olive_fp16_pass.convert_float16`.

Shaped like Olive's own `OnnxFloatToFloat16` (same option names where they mean the same thing) so that it is
a drop-in replacement, but safe by default: weights beyond float16's range keep their node in float32
instead of being clamped (set `clamp_weights` to clamp), and the per-node decisions are written next to the
model as `<model>.fp16_report.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from olive.common.config_utils import validate_config
from olive.data.config import DataConfig
from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.model.utils import resolve_onnx_path
from olive.passes import Pass
from olive.passes.onnx.common import get_external_data_config, ir_model_to_olive_model
from olive.passes.pass_config import BasePassConfig, ParamCategory, PassConfigParam, get_user_script_data_config

from olive_fp16_pass.options import ConversionOptions, pass_params

logger = logging.getLogger(__name__)

REPORT_SUFFIX = ".fp16_report.json"


def float16_config_params() -> dict[str, PassConfigParam]:
    """Options shared by the Float16 and auto-mixed-precision passes, derived from `ConversionOptions`."""
    return {name: PassConfigParam(**spec) for name, spec in pass_params().items()}


def conversion_options(config, provider: str | None = None) -> ConversionOptions:
    """The user options of a pass run, read off its config by the option names; `provider` is the one the
    pass targets (with CUDA, ops with no CUDA float16 kernel stay float32)."""
    return dataclasses.replace(ConversionOptions.from_mapping(config), provider=provider)


def write_report(report_dict: dict, model_path: str | Path) -> Path:
    path = Path(model_path)
    target = path.with_name(path.stem + REPORT_SUFFIX)
    target.write_text(json.dumps(report_dict, indent=2))
    return target


# Olive 0.13 takes every string of a model config for a possible path (`find_all_resources` stats each one when it
# prepares a model for evaluation): a string over NAME_MAX (255 bytes) raises ENAMETOOLONG there and the run
# ends with "No output model produced" (and exit 0). Longer strings of the attached report are cut below this;
# the full text stays in the report file beside the model.
OLIVE_STRING_LIMIT = 240


def olive_safe(value, report_file: str):
    """`value` with every string longer than OLIVE_STRING_LIMIT bytes cut, saying where the full text is."""
    if isinstance(value, dict):
        return {k: olive_safe(v, report_file) for k, v in value.items()}
    if isinstance(value, list):
        return [olive_safe(v, report_file) for v in value]
    if isinstance(value, str) and len(value.encode()) > OLIVE_STRING_LIMIT:
        tail = f" [...] (full text: {report_file})"
        head = value.encode()[: max(0, OLIVE_STRING_LIMIT - len(tail.encode()))].decode(errors="ignore")
        return head + tail
    return value


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
    # An external-data input's result is load-checked on its files as they are written (ConversionResult.save).
    if getattr(result, "save_check", None) is not None:
        path = result.save(output_model_path, external_data=external, external_data_name=config.external_data_name)
        folder = {"model_path": str(path.parent), "onnx_file_name": path.name}  # as Olive's own save does
        output = ONNXModelHandler(**folder) if external else ONNXModelHandler(model_path=str(path))
    else:
        detach_from_input(result.ir_model, keep_external=external)  # else it points at the input's data file
        output = ir_model_to_olive_model(result.ir_model, output_model_path, config)
    report_dict = result.report.to_dict()
    report_file = write_report(report_dict, output.model_path)
    attached = olive_safe(report_dict, report_file.name)
    output.model_attributes = {**(input_model.model_attributes or {}), "olive_fp16_report": attached}
    return output


# Options of Olive's OnnxFloatToFloat16 that have no exact counterpart here, and what replaces each: a config that
# swaps "OnnxFloatToFloat16" for "OnnxFloat16" validates and runs, and the log says what each option now means.
OLIVE_FLOAT_TO_FLOAT16_OPTIONS: dict[str, tuple[type, str]] = {
    "min_positive_val": (
        float,
        "OnnxFloatToFloat16 raises tiny constants to min_positive_val; OnnxFloat16 never changes a weight: a node "
        "multiplying by a constant that float16 would store with over 1% error (all subnormal, |w| < ~3e-6) stays "
        "in float32 instead (rule weight_underflow); tiny biases and epsilons convert",
    ),
    "max_finite_val": (
        float,
        "OnnxFloatToFloat16 clips constants to ±max_finite_val; OnnxFloat16 keeps a node whose weights exceed "
        "float16's range (±65504) in float32 instead, or clips them to ±65504 with clamp_weights: true",
    ),
    "use_symbolic_shape_infer": (
        bool,
        "OnnxFloat16 needs no shape inference (it propagates element types itself); the option has no effect",
    ),
}


def olive_compat_params() -> dict[str, PassConfigParam]:
    """OnnxFloatToFloat16's option names, accepted so that a config swapping the pass type still validates."""
    return {
        name: PassConfigParam(
            type_=type_,
            default_value=None,
            description=f"Accepted for drop-in compatibility with OnnxFloatToFloat16. {meaning}.",
        )
        for name, (type_, meaning) in OLIVE_FLOAT_TO_FLOAT16_OPTIONS.items()
    }


def explain_olive_options(config) -> list[str]:
    """One note per OnnxFloatToFloat16 option the config sets, saying what replaces it (logged, and in the report)."""
    notes = []
    for name, (_, meaning) in OLIVE_FLOAT_TO_FLOAT16_OPTIONS.items():
        value = getattr(config, name, None)
        if value is not None:
            notes.append(f"{name}={value!r}: {meaning}")
    return notes


def calibration_params() -> dict[str, PassConfigParam]:
    """Calibrated Float16: an optional Olive data config (a name from the workflow's `data_configs`, or one
    inline), like the calibration data of Olive's OnnxStaticQuantization."""
    return {
        **get_user_script_data_config(),
        "data_config": PassConfigParam(
            type_=DataConfig | dict,
            default_value=None,
            category=ParamCategory.DATA,
            description="Calibration data (optional): one float32 run over all its feeds; nodes whose tensors leave "
            "float16's range on them stay float32 with the measured value as the reason. No search.",
        ),
        "overflow_margin": PassConfigParam(
            type_=float,
            default_value=2.0,
            description="With data_config: tensors beyond 65504 / margin keep their nodes in float32.",
        ),
    }


def calibration_feeds(config, model: ONNXModelHandler):
    """The data config's feeds as a generator (each drawn when the calibration pass needs it), or None."""
    if not config.data_config:
        return None
    data_config = validate_config(config.data_config, DataConfig)
    reader = data_config.to_data_container().create_calibration_dataloader(
        model_path=model.model_path, io_config=model.io_config
    )
    return iter(reader.get_next, None)


class OnnxFloat16(Pass):
    """Convert a model to float16, keeping in float32 only the nodes that must stay there, with reasons."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        config = float16_config_params()
        config.update(olive_compat_params())
        config.update(calibration_params())
        config.update(get_external_data_config())
        return config

    def _run_for_config(
        self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        from olive_fp16_pass.float16 import convert_float16

        output_model_path = resolve_onnx_path(output_model_path, Path(model.model_path).name)
        # A path, not a loaded proto: external data then stays memory-mapped until it is converted.
        provider = str(self.accelerator_spec.execution_provider)
        result = convert_float16(
            model.model_path,
            **conversion_options(config, provider).to_dict(),
            calibration_data=calibration_feeds(config, model),
            overflow_margin=config.overflow_margin,
        )
        for note in explain_olive_options(config):
            logger.warning("OnnxFloat16: %s", note)
            result.report.notes.append(note)
        logger.info("OnnxFloat16: %s", result.report.summary())
        return to_olive_model(result, model, output_model_path, config)
