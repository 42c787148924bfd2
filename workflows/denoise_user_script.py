"""Thin user script for the denoise workflows: it only imports what the workflow names from the package.

Olive imports it while validating the workflow (it is named by the data config and the evaluator), which
also registers the validation dataset `denoise_validation_feeds`.
"""

from olive_fp16_pass.showcase.denoise_data import denoise_validation_feeds  # noqa: F401  (registers the dataset)
from olive_fp16_pass.showcase.denoise_eval import evaluate_denoiser  # noqa: F401  (the evaluator's evaluate_func)
