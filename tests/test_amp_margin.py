"""Emulation safety margin (issue 10.6): under emulation a candidate must pass with room to spare."""

from __future__ import annotations

import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import Float16Error
from tests.models import benign_mlp, feeds


def test_margin_tightens_acceptance_and_report_says_how_close():
    model, data = benign_mlp(), feeds((4, 32), n=6)
    loose = fp16.auto_mixed_precision(model, data, max_abs=1.0, emulation_margin=1.0, progress=False)
    error = loose.report.search["validation_errors"]["y"]["max_abs"]
    assert loose.report.fp32_nodes == [] and 0 < error < 1.0
    limit = 1.5 * error
    at_edge = fp16.auto_mixed_precision(model, data, max_abs=limit, emulation_margin=1.0, progress=False)
    assert at_edge.report.fp32_nodes == []
    used = at_edge.report.search["tolerance_used"]["y"]["max_abs"]
    assert used == pytest.approx(error / limit, rel=1e-3)
    # Only half the tolerance under emulation: full float16 (error/limit = 0.67) is no longer accepted.
    safe = fp16.auto_mixed_precision(model, data, max_abs=limit, emulation_margin=0.5, progress=False)
    search = safe.report.search
    assert search["history"][0]["stage"] == "full float16" and not search["history"][0]["passed"]
    assert search["criteria_applied"]["max_abs"] == pytest.approx(limit * 0.5)
    assert search["emulation_margin"] == 0.5


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "0.8"])
def test_bad_margin_is_refused(bad):
    with pytest.raises(Float16Error, match="emulation_margin"):
        fp16.auto_mixed_precision(benign_mlp(), feeds((4, 32), n=2), max_abs=1.0, emulation_margin=bad, progress=False)
