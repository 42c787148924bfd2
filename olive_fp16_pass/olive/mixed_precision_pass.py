"""Olive pass `OnnxAutoMixedPrecision`: a thin adapter over `olive_fp16_pass.auto_mixed_precision`.

Validation data comes from an Olive `data_config` (read as onnxruntime feeds, like Olive's static
quantization calibration data); candidates are validated on the execution provider of the pass's accelerator
(the CUDA EP in our workflows), or with float16-storage emulation when that provider is not usable here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from olive.data.config import DataConfig
from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.model.utils import resolve_onnx_path
from olive.passes import Pass
from olive.passes.onnx.common import get_external_data_config
from olive.passes.pass_config import BasePassConfig, ParamCategory, PassConfigParam, get_user_script_data_config

from olive_fp16_pass.olive.float16_pass import conversion_options, float16_config_params, to_olive_model

logger = logging.getLogger(__name__)


def _criterion(description: str, default: float | None = None) -> PassConfigParam:
    return PassConfigParam(type_=float, default_value=default, description=description)


class OnnxAutoMixedPrecision(Pass):
    """Keep in float32 only the nodes that accuracy on real data requires; validated where the model runs."""

    @staticmethod
    def is_accelerator_agnostic(accelerator_spec: AcceleratorSpec) -> bool:
        return False

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        config = {
            **get_user_script_data_config(),
            "data_config": PassConfigParam(
                type_=DataConfig | dict,
                required=True,
                category=ParamCategory.DATA,
                description="Validation data: input feeds for the model (the last holdout_fraction is held out).",
            ),
            "max_samples": PassConfigParam(
                type_=int, default_value=32, description="Use at most this many feeds from the data config."
            ),
            "rtol": _criterion("allclose relative tolerance per element (like onnxconverter-common).", 1e-2),
            "atol": _criterion("allclose absolute tolerance per element.", 1e-3),
            "max_abs": _criterion("Upper bound on the maximum absolute error."),
            "mean_abs": _criterion("Upper bound on the mean absolute error."),
            "p999_abs": _criterion("Upper bound on the 99.9th percentile of the absolute error."),
            "min_cosine": _criterion("Lower bound on the cosine similarity with the float32 output."),
            "min_psnr": _criterion("Lower bound on the PSNR (dB) against the float32 output."),
            "per_output": PassConfigParam(
                type_=dict, default_value=None, description="Criteria by output name, overriding the global ones."
            ),
            "validation_provider": PassConfigParam(
                type_=str,
                default_value=None,
                description="Provider to validate on; default: the accelerator's execution provider.",
            ),
            "strict": PassConfigParam(
                type_=bool,
                default_value=False,
                description="Fail when the provider is not usable, instead of emulating float16 storage on the CPU.",
            ),
            "holdout_fraction": PassConfigParam(
                type_=float, default_value=0.25, description="Share of the feeds held out for the final check."
            ),
            "overflow_margin": PassConfigParam(
                type_=float,
                default_value=2.0,
                description="Tensors beyond 65504 / margin on validation data keep their nodes in float32.",
            ),
            "refine_budget": PassConfigParam(
                type_=int, default_value=64, description="Candidates spent giving unneeded float32 nodes back."
            ),
            "on_failure": PassConfigParam(
                type_=str,
                default_value="fp32",
                description="'fp32': return the all-float32-nodes candidate when nothing meets the criteria; "
                "'raise': fail the pass.",
            ),
        }
        config.update(float16_config_params())
        config.update(get_external_data_config())
        return config

    def _run_for_config(
        self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        from olive.common.config_utils import validate_config

        from olive_fp16_pass.mixed_precision import auto_mixed_precision

        output_model_path = resolve_onnx_path(output_model_path, Path(model.model_path).name)
        data_config = validate_config(config.data_config, DataConfig)
        reader = data_config.to_data_container().create_calibration_dataloader(
            model_path=model.model_path, io_config=model.io_config
        )
        feeds = []
        while len(feeds) < config.max_samples and (feed := reader.get_next()) is not None:
            feeds.append(feed)
        provider = config.validation_provider or str(self.accelerator_spec.execution_provider)
        result = auto_mixed_precision(
            model.model_path,
            feeds,
            rtol=config.rtol,
            atol=config.atol,
            max_abs=config.max_abs,
            mean_abs=config.mean_abs,
            p999_abs=config.p999_abs,
            min_cosine=config.min_cosine,
            min_psnr=config.min_psnr,
            per_output=config.per_output,
            strict=config.strict,
            **conversion_options(config, provider).to_dict(),
            holdout_fraction=config.holdout_fraction,
            overflow_margin=config.overflow_margin,
            refine_budget=config.refine_budget,
            on_failure=config.on_failure,
            progress=False,
        )
        logger.info("OnnxAutoMixedPrecision: %s", result.report.summary())
        return to_olive_model(result, model, output_model_path, config)
