"""Image-quality figures for a denoiser candidate: fidelity to its float32 original and quality vs the truth.

Fidelity answers "would a user see a difference": besides max/mean/99.9th-percentile error and PSNR against
the float32 output, it counts the 8-bit pixel values that change once both images are quantized for display
(the unit a user actually sees). Task quality is PSNR and scikit-image's SSIM against the clean photo.

Every figure is a finite float, so the evaluator's sidecar and Olive's footprint stay strict JSON (Python's json
would write `Infinity`, which JSON has not, and `np.nan_to_num` turned a +inf pixel into an error of 1.8e308):
identical images have a PSNR of `PSNR_IDENTICAL_DB`, and a NaN/Inf output pixel counts as an error of
`NONFINITE_ERROR`, which no image in [0, 1] reaches; `nonfinite` counts those pixels.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

#: Largest PSNR reported, in dB: the PSNR of identical images (infinite), as a JSON number. Also Olive's cap.
PSNR_IDENTICAL_DB = 200.0
#: The absolute error a NaN/Inf output pixel counts as (the outputs are images in [0, 1]).
NONFINITE_ERROR = 1e6


def psnr_db(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB, `PSNR_IDENTICAL_DB` at most (an mse of 0 has no finite PSNR)."""
    if mse <= 0:
        return PSNR_IDENTICAL_DB
    return min(float(10 * np.log10(data_range**2 / mse)), PSNR_IDENTICAL_DB)


def to_8bit(image: np.ndarray) -> np.ndarray:
    """NCHW/CHW float in [0, 1] -> uint8 as it would be displayed (NaN shows as 0)."""
    clean = np.nan_to_num(np.asarray(image, np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(np.clip(clean, 0.0, 1.0) * 255).astype(np.uint8)


def fidelity(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cand = np.asarray(candidate, np.float64)
    ref = np.asarray(reference, np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(cand)))
    diff = np.abs(cand - ref)
    diff[~np.isfinite(diff)] = NONFINITE_ERROR
    mse = float(np.mean(diff**2))
    changed = to_8bit(cand) != to_8bit(ref)
    level_diff = np.abs(to_8bit(cand).astype(np.int16) - to_8bit(ref).astype(np.int16))
    return {
        "max_abs_vs_fp32": float(diff.max()),
        "mean_abs_vs_fp32": float(diff.mean()),
        "p999_abs_vs_fp32": float(np.quantile(diff, 0.999)),
        "psnr_vs_fp32": psnr_db(mse),
        "pixels_changed_pct": float(100.0 * changed.mean()),
        "max_8bit_change": int(level_diff.max()),
        "nonfinite": nonfinite,
    }


def task_quality(output: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM against the clean photo, on the displayed image (clipped to [0, 1])."""
    out = np.clip(np.nan_to_num(np.asarray(output, np.float64)), 0, 1)[0].transpose(1, 2, 0)
    truth = np.asarray(clean, np.float64)[0].transpose(1, 2, 0)
    return {
        "psnr_vs_clean": psnr_db(float(np.mean((truth - out) ** 2))),  # scikit-image's formula, capped
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


def panel_labels(candidate_name: str, amplify: float = 50.0) -> list[str]:
    """The four panel titles of the comparison picture, with the difference panel's scale (white = 1/amplify)."""
    white = 1.0 / amplify
    return [
        "noisy input",
        "FP32 (reference)",
        f"chosen: {candidate_name}",
        f"|chosen - FP32| x{amplify:g}\nblack 0, white >= {white:.3g} ({white * 255:.3g}/255)",
    ]


def _largest_difference(diff: np.ndarray, crop: int) -> tuple[int, int]:
    """Top-left corner of the crop x crop window centred on the largest difference (the centre if none)."""
    height, width = diff.shape[:2]
    if diff.max() <= 0:
        y, x = height // 2, width // 2
    else:
        y, x = np.unravel_index(int(np.argmax(diff)), diff.shape[:2])
    return int(np.clip(y - crop // 2, 0, height - crop)), int(np.clip(x - crop // 2, 0, width - crop))


def comparison_picture(
    noisy: np.ndarray,
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    candidate_name: str,
    figure_lines: list[str],
    amplify: float = 50.0,
    zoom: int = 4,
):
    """Labelled picture: noisy | FP32 | candidate | |candidate - FP32| x amplify, then the same four zoomed
    around the largest difference, then the figure lines (goals and values) under it.

    Returns (PIL image, texts), texts being every string drawn, for the PNG's text metadata."""
    from PIL import Image, ImageDraw, ImageFont

    panels = [to_8bit(x[0]).transpose(1, 2, 0) for x in (noisy, reference, candidate)]
    diff = np.abs(np.nan_to_num(np.asarray(candidate, np.float64), nan=1.0) - np.asarray(reference, np.float64))
    panels.append(to_8bit(diff[0] * amplify).transpose(1, 2, 0))
    height, width = panels[0].shape[:2]
    crop = max(8, min(height, width) // zoom)
    top, left = _largest_difference(diff[0].max(axis=0), crop)
    zoomed = [np.kron(p[top : top + crop, left : left + crop], np.ones((zoom, zoom, 1), np.uint8)) for p in panels]
    font = ImageFont.load_default(size=13)
    gap, title, line = 8, 36, 18
    labels = panel_labels(candidate_name, amplify)
    zoom_label = f"zoom x{zoom}: {crop}x{crop} pixels at (x={left}, y={top}), around the largest difference"
    panel_w, zoom_h = max(width, crop * zoom), crop * zoom
    total_w = 4 * panel_w + 3 * gap
    total_h = title + height + title + zoom_h + gap + line * len(figure_lines) + gap
    image = Image.new("RGB", (total_w, total_h), "white")
    draw = ImageDraw.Draw(image)
    for i, (panel, small) in enumerate(zip(panels, zoomed, strict=True)):
        x = i * (panel_w + gap)
        draw.multiline_text((x + 2, 3), labels[i], fill="black", font=font, spacing=2)
        image.paste(Image.fromarray(panel), (x, title))
        image.paste(Image.fromarray(small), (x, title + height + title))
    draw.text((2, title + height + 10), zoom_label, fill="black", font=font)
    y = title + height + title + zoom_h + gap
    for text in figure_lines:
        draw.text((2, y), text, fill="black", font=font)
        y += line
    return image, [*labels, zoom_label, *figure_lines]
