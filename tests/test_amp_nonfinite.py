"""Non-finite validation data (issue 14.7): no crash in the metrics, no blame on a candidate, no silent pass."""

from __future__ import annotations

import numpy as np
import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass.compare import Criteria, output_error
from olive_fp16_pass.errors import Float16Error
from tests.models import benign_mlp, feeds


def test_one_nan_in_one_feed_is_not_blamed_on_the_candidate():
    data = feeds((4, 32), n=8)
    data[2]["x"][1, 3] = np.nan  # one bad value in one feed: one NaN row in its reference
    result = fp16.auto_mixed_precision(benign_mlp(), data, rtol=1e-2, atol=1e-2, min_psnr=30, progress=False)
    search = result.report.search
    assert search["criteria_met"], search["failures"]
    assert result.report.fp32_nodes == []  # fine in float16: the NaN must not push it to float32
    assert not any("failed to load or run" in f for h in search["history"] for f in h["failures"])
    assert search["validation_errors"]["y"]["reference_nonfinite"] > 0


def test_all_nan_data_is_refused_not_passed():
    data = [{"x": np.full((4, 32), np.nan, np.float32)} for _ in range(4)]
    with pytest.raises(Float16Error, match="NaN/Inf everywhere"):
        fp16.auto_mixed_precision(benign_mlp(), data, max_abs=1.0, progress=False)


def test_nonfinite_reference_rule():
    ref = [np.array([1.0, np.nan, np.inf, 2.0], np.float32)]
    same = output_error(ref, [np.array([1.0, np.nan, np.inf, 2.0], np.float32)])
    assert same.max_abs == 0 and same.reference_nonfinite == 2 and same.reference_mismatch == 0
    assert np.isfinite(same.psnr) or same.psnr == float("inf")
    other = output_error(ref, [np.array([1.0, 0.5, -np.inf, 2.0], np.float32)])
    assert other.reference_mismatch == 2
    assert Criteria(max_abs=1.0).check({"y": other})  # a candidate that differs in kind fails
