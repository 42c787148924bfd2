"""Image-quality figures for a denoiser candidate: fidelity to its float32 original and quality vs the truth.

Fidelity answers "would a user see a difference": besides max/mean/99.9th-percentile error and PSNR against
the float32 output, it counts the 8-bit pixel values that change once both images are quantized for display
(the unit a user actually sees). Task quality uses scikit-image's PSNR and SSIM against the clean photo.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def to_8bit(image: np.ndarray) -> np.ndarray:
    """NCHW/CHW float in [0, 1] -> uint8 as it would be displayed (NaN shows as 0)."""
    clean = np.nan_to_num(np.asarray(image, np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(np.clip(clean, 0.0, 1.0) * 255).astype(np.uint8)


def fidelity(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cand = np.asarray(candidate, np.float64)
    ref = np.asarray(reference, np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(cand)))
    diff = np.abs(np.nan_to_num(cand, nan=np.inf) - ref)
    mse = float(np.mean(np.minimum(diff, 1e6) ** 2))
    changed = to_8bit(cand) != to_8bit(ref)
    level_diff = np.abs(to_8bit(cand).astype(np.int16) - to_8bit(ref).astype(np.int16))
    return {
        "max_abs_vs_fp32": float(diff.max()),
        "mean_abs_vs_fp32": float(diff.mean()),
        "p999_abs_vs_fp32": float(np.quantile(diff, 0.999)),
        "psnr_vs_fp32": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
        "pixels_changed_pct": float(100.0 * changed.mean()),
        "max_8bit_change": int(level_diff.max()),
        "nonfinite": nonfinite,
    }


def task_quality(output: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM against the clean photo, on the displayed image (clipped to [0, 1])."""
    out = np.clip(np.nan_to_num(np.asarray(output, np.float64)), 0, 1)[0].transpose(1, 2, 0)
    truth = np.asarray(clean, np.float64)[0].transpose(1, 2, 0)
    return {
        "psnr_vs_clean": float(peak_signal_noise_ratio(truth, out, data_range=1.0)),
        "ssim_vs_clean": float(structural_similarity(truth, out, data_range=1.0, channel_axis=2)),
    }


def comparison_strip(noisy: np.ndarray, fp32: np.ndarray, fp16: np.ndarray, amplify: float = 50.0) -> np.ndarray:
    """noisy | FP32 | FP16 | |FP16 - FP32| x amplify, as one HxWx3 uint8 image with 8-pixel white gaps."""
    panels = [to_8bit(x[0]).transpose(1, 2, 0) for x in (noisy, fp32, fp16)]
    diff = np.abs(np.nan_to_num(np.asarray(fp16, np.float64), nan=1.0) - np.asarray(fp32, np.float64)) * amplify
    panels.append(to_8bit(diff[0]).transpose(1, 2, 0))
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    parts = []
    for panel in panels:
        parts.extend([panel, gap])
    return np.concatenate(parts[:-1], axis=1)
