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


def test_a_lasting_failure_on_the_first_feed_ends_the_validation():
    """NaN, allclose and max_abs failures hold on any superset of the feeds: the other feeds are not run. The
    statistics (mean_abs, cosine, PSNR) need every feed, and so do the held-out check and the fallback."""
    from olive_fp16_pass.compare import Criteria, OutputError

    error = OutputError(2.0, 0.5, 1.0, 0.9, 20.0, 1.0, 0, 0, 0)
    criteria = Criteria(rtol=0.0, atol=0.1, max_abs=1.0, mean_abs=0.1, min_cosine=0.99)
    assert len(criteria.check({"y": error})) == 4
    assert [f.split(":")[1].split("(")[0].strip() for f in criteria.lasting_failures({"y": error})] == [
        "not allclose",
        "max_abs 2 > 1",
    ]
    result = fp16.auto_mixed_precision(activation_overflow_chain(), feeds((2, 16), n=8), progress=False)
    history = result.report.search["history"]
    assert all(f.endswith("(first feed; the others not run)") for f in history[0]["failures"])
    assert result.report.search["criteria_met"]
    assert set(result.report.search["validation_errors"]["y"]) >= {"max_abs", "mean_abs"}


def test_full_float16_overrules_the_weight_underflow_rule_when_validation_allows():
    """A weight entirely subnormal in float16 keeps its node float32 in `convert_float16` (no data to judge);
    the search's full-float16 candidate converts it, and validation decides."""
    from tests.models import dead_weight_model

    data = feeds((4, 16), n=8)
    dead = dead_weight_model()
    assert {d.node: d.rule.value for d in fp16.convert_float16(dead).report.fp32_nodes} == {"dead": "weight_underflow"}
    result = fp16.auto_mixed_precision(dead, data, rtol=1e-2, atol=1e-2, progress=False)
    assert result.report.fp32_nodes == [] and result.report.search["candidates_tried"] == 2
    decision = next(d for d in result.report.decisions if d.node == "dead")
    assert decision.rule.value == "validated_fp16" and "W_dead" in decision.detail
    # Where the tiny weights carry the signal, float16 flushes them: validation fails, the rule stands.
    boosted = dead_weight_model(boost=1e8)
    result = fp16.auto_mixed_precision(boosted, data, rtol=1e-2, atol=1e-2, progress=False)
    history = result.report.search["history"]
    assert history[0]["stage"] == "full float16" and not history[0]["passed"]
    kept = {d.node: d.rule.value for d in result.report.fp32_nodes}
    assert kept.get("dead") in ("weight_underflow", "activation_underflow")  # the range rules see its 1e-8 output
    assert result.report.search["criteria_met"]


def test_refine_tries_everything_but_the_critical_unit_first():
    """The 298-node encoder of bench/amp_speed.py: the passing prefix holds a LayerNorm unit ranked above the
    cancellation that made the prefix pass. Giving back all but that unit in one try is the first refine step,
    and it passes: the search ends with the 5 nodes that truly need float32 in few validations."""
    from bench.amp_models import encoder, encoder_feeds

    model, injected = encoder(7)
    result = fp16.auto_mixed_precision(
        model, encoder_feeds(), rtol=1e-2, atol=2e-2, keep_io_types=True, emulation_margin=1.0, progress=False
    )
    refine = [h for h in result.report.search["history"] if h["stage"].startswith("refine")]
    assert refine[0]["passed"] and refine[0]["nodes_fp32_forced"] == 5
    assert {d.node for d in result.report.fp32_nodes} == {n for names in injected.values() for n in names}
    assert result.report.search["candidates_tried"] <= 11


def test_search_report_is_a_dataclass_read_by_attribute_or_key():
    import json

    from olive_fp16_pass.report import SearchReport

    result = fp16.auto_mixed_precision(activation_overflow_chain(), feeds((2, 16), n=8), progress=False)
    search = result.report.search
    assert isinstance(search, SearchReport)
    assert search.criteria_met is search["criteria_met"] is True
    assert search.history is search["history"] and search.candidates_tried == search["candidates_tried"]
    assert set(search) == set(search.to_dict()) and dict(search) == search.to_dict()
    assert json.loads(result.report.to_json())["search"]["candidates_tried"] == search.candidates_tried
    with pytest.raises(KeyError):
        search["no_such_key"]
    assert "search: " in result.report.summary()
