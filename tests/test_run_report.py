"""The run report's and the evaluator's figures, piece by piece: caps, spread, noise, goals, labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("skimage")  # the showcase's evaluator needs the `olive` extra

from olive_fp16_pass.showcase.denoise_eval import cap_psnr, latency_figures
from olive_fp16_pass.showcase.image_quality import (
    NONFINITE_ERROR,
    PSNR_IDENTICAL_DB,
    comparison_picture,
    fidelity,
    panel_labels,
    task_quality,
)
from olive_fp16_pass.showcase.run_report import compare_latency, resolve_goals, speed_words

SPEED = (
    {"key": "d-latency_ms", "short": "latency_ms", "priority": 1, "kind": "custom"},
    {"key": "d-latency_min_ms", "short": "latency_min_ms", "priority": -1, "kind": "custom"},
    {"key": "d-latency_p90_ms", "short": "latency_p90_ms", "priority": -1, "kind": "custom"},
)


def test_only_psnr_is_capped():
    """CPU latencies of 308/237/235 ms once all read 200: the cap is for infinite PSNR only."""
    capped = cap_psnr({"latency_ms": 308.0, "latency_p90_ms": 412.0, "psnr_vs_fp32": float("inf"), "nonfinite": 0})
    assert capped == {"latency_ms": 308.0, "latency_p90_ms": 412.0, "psnr_vs_fp32": 200.0, "nonfinite": 0.0}


def test_identical_images_have_a_json_number_for_psnr():
    """fidelity() gave float('inf') for identical outputs: the sidecar (*.eval.json) then held `Infinity`,
    which strict JSON readers (jq, JavaScript, the run report's schema check) refuse."""
    image = np.random.default_rng(0).uniform(0, 1, (1, 3, 16, 16))
    figures = fidelity(image, image) | task_quality(image, image)
    assert figures["psnr_vs_fp32"] == figures["psnr_vs_clean"] == PSNR_IDENTICAL_DB
    json.dumps(figures, allow_nan=False)  # raises on inf / nan


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels_give_finite_documented_figures(bad):
    """A NaN or Inf pixel gave max_abs inf (NaN) or 1.8e308 (+inf, through np.nan_to_num) and a NaN p99.9:
    now it counts as NONFINITE_ERROR, every figure is finite, and `nonfinite` says how many."""
    reference = np.random.default_rng(1).uniform(0, 1, (1, 3, 16, 16))
    candidate = reference.copy()
    candidate[0, 0, 0, :2] = bad
    figures = fidelity(candidate, reference)
    json.dumps(figures, allow_nan=False)
    assert figures["nonfinite"] == 2 and figures["max_abs_vs_fp32"] == NONFINITE_ERROR
    assert figures["psnr_vs_fp32"] < 0 and figures["p999_abs_vs_fp32"] > 0


def test_latency_is_a_median_with_its_spread():
    figures = latency_figures([96.0, 198.0, 120.0, 101.0, 99.0])
    assert figures["latency_ms"] == 101.0
    assert figures["latency_min_ms"] == 96.0
    assert 120.0 < figures["latency_p90_ms"] <= 198.0


def test_no_faster_claim_within_the_noise():
    """Three identical models measured 96-198 ms: overlapping spreads are not a speed difference."""
    a = {"latency_ms": 110.0, "latency_min_ms": 96.0, "latency_p90_ms": 198.0}
    b = {"latency_ms": 140.0, "latency_min_ms": 98.0, "latency_p90_ms": 190.0}
    cmp = compare_latency(a, b, SPEED)
    assert cmp["beyond_noise"] is False
    assert "within noise" in speed_words(cmp) and "faster" not in speed_words(cmp)
    slow = {"latency_ms": 300.0, "latency_min_ms": 290.0, "latency_p90_ms": 320.0}
    cmp = compare_latency(slow, b, SPEED)
    assert cmp["beyond_noise"] is True and "slower" in speed_words(cmp)


def test_goals_report_the_threshold_olive_applies():
    config = {
        "engine": {"evaluator": "e"},
        "evaluators": {
            "e": {
                "metrics": [
                    {
                        "name": "d",
                        "type": "custom",
                        "sub_types": [
                            {
                                "name": "nonfinite",
                                "higher_is_better": False,
                                "goal": {"type": "max-degradation", "value": 0},
                            },
                            {
                                "name": "max_8bit_change",
                                "higher_is_better": False,
                                "goal": {"type": "threshold", "value": 2},
                            },
                            {"name": "psnr", "higher_is_better": True, "goal": {"type": "max-degradation", "value": 3}},
                            {"name": "latency_ms", "higher_is_better": False},
                        ],
                    }
                ]
            }
        },
    }
    goals = resolve_goals(config, {"nonfinite": 1.0, "max_8bit_change": 1.0, "psnr": 60.0})
    assert goals["d-nonfinite"]["threshold"] == 1.0  # Olive: baseline + value for lower-is-better
    assert goals["d-max_8bit_change"]["threshold"] == 2  # a threshold is the number itself
    assert goals["d-psnr"]["threshold"] == 57.0 and goals["d-psnr"]["op"] == ">="
    assert "d-latency_ms" not in goals  # goals stated only where they exist


def test_picture_labels_come_from_one_function_and_are_drawn():
    labels = panel_labels("OnnxFloat16 (olive-fp16)", amplify=50)
    assert labels[0] == "noisy input" and labels[1] == "FP32 (reference)"
    assert labels[2] == "chosen: OnnxFloat16 (olive-fp16)"
    assert labels[3].startswith("|chosen - FP32| x50") and "0.02" in labels[3] and "5.1/255" in labels[3]
    rng = np.random.default_rng(0)
    reference = rng.random((1, 3, 64, 64)).astype(np.float32)
    candidate = reference.copy()
    candidate[0, :, 40, 10] += 0.01
    image, texts = comparison_picture(
        reference, reference, candidate, candidate_name="OnnxFloat16 (olive-fp16)", figure_lines=["goal line"]
    )
    assert texts[:4] == labels and texts[-1] == "goal line"
    assert "(x=2, y=32)" in texts[4]  # the zoom is centred on the largest difference (x=10, y=40)
    pixels = np.asarray(image)
    assert (pixels[:36] < 128).any() and (pixels[-20:] < 128).any()  # titles and figure lines are drawn
