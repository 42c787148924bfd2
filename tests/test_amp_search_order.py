"""The search tries the most aggressive candidate first and never returns more float32 than a passing
candidate it has seen (issue 10.2). Counted through the search report: validations and sessions, not time."""

from __future__ import annotations

import numpy as np
import pytest

import olive_fp16_pass as fp16
from tests.helpers import run
from tests.models import (
    activation_overflow_chain,
    attention_block,
    attention_feeds,
    feeds,
    layernorm_overflow_model,
    near_limit_model,
)


def test_full_float16_first_returns_after_one_validation():
    """A tensor at 45000 is beyond the range rules' limit (65504 / 2) but fine in float16: the range rules
    would keep two nodes float32; full float16 passes at once and is returned."""
    data = feeds((2, 32), n=8)
    model = near_limit_model(data)
    result = fp16.auto_mixed_precision(model, data, rtol=1e-2, atol=1e-2, progress=False)
    search = result.report.search
    assert result.report.fp32_nodes == []
    assert [h["stage"] for h in search["history"]] == ["full float16", "load check", "holdout"]
    assert search["candidates_tried"] == 2  # one validation + the held-out check
    assert search["sessions_created"] <= 3  # reference run, gated emulation, real-model load check
    assert search["criteria_met"] and search["holdout_met"]
    assert any("full float16" in note for note in result.report.notes)
    np.testing.assert_allclose(run(result.model, data[0])[0], run(model, data[0])[0], rtol=1e-2, atol=1e-2)


def test_full_float16_failing_goes_on_to_the_range_rules():
    result = fp16.auto_mixed_precision(activation_overflow_chain(), feeds((2, 16), n=8), progress=False)
    stages = [h["stage"] for h in result.report.search["history"]]
    assert stages[:2] == ["full float16", "range rules"]
    assert not result.report.search["history"][0]["passed"]
    assert result.report.search["criteria_met"]


@pytest.mark.parametrize(
    "model,data,tolerance",
    [
        (activation_overflow_chain(), feeds((2, 16), n=8), {"rtol": 1e-2, "atol": 1e-3}),
        (layernorm_overflow_model(), feeds((2, 8, 16), n=8), {"rtol": 1e-2, "atol": 1e-2}),
        (attention_block(overflow=True), attention_feeds(), {"rtol": 1e-2, "atol": 1e-3}),
    ],
    ids=["overflow_chain", "layernorm", "attention_mlp"],
)
def test_result_keeps_no_more_fp32_than_any_passing_candidate(model, data, tolerance):
    result = fp16.auto_mixed_precision(model, data, progress=False, **tolerance)
    history = result.report.search["history"]
    passing = [h["nodes_fp32"] for h in history if h.get("passed") and "nodes_fp32" in h and h["stage"] != "holdout"]
    failed_load = any(h["stage"].startswith("load check") and not h["passed"] for h in history)
    assert passing and result.report.search["criteria_met"]
    if not failed_load:  # a candidate that ORT cannot load does not count as passing
        assert len(result.report.fp32_nodes) == min(passing)
    assert len(result.report.fp32_nodes) == next(h["nodes_fp32"] for h in history if h["stage"] == "holdout")
