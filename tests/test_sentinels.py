"""Masking sentinels are not overflow (issue 10.1): -3.4e38 masks before a Softmax convert to float16."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass.emulation import emulate_float16_storage
from olive_fp16_pass.sentinels import SENTINEL_GAP, masking_use, stats_of
from tests.helpers import init, make_model, run, vi
from tests.models import FLOAT32_LOWEST, attention_block, attention_feeds


def _value(model: onnx.ModelProto, name: str) -> ir.Value:
    graph = ir.serde.deserialize_model(model).graph
    if name in graph.initializers:
        return graph.initializers[name]
    return next(v for node in graph for v in node.outputs if v.name == name)


def _emulated(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        emulate_float16_storage(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})[0]


# -- the facts the design rests on ------------------------------------------------------------------------------
def test_float16_casts_of_the_sentinel_give_inf_and_a_fully_masked_row_nan():
    """numpy and onnxruntime's Cast both turn -3.4e38 into -inf (no saturation); Softmax of a row of -inf is
    NaN, while float32 gives that row uniform weights: why a fully masked row must be left to validation."""
    with np.errstate(over="ignore"):
        assert np.float32(FLOAT32_LOWEST).astype(np.float16) == -np.inf
    cast = make_model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)],
        [vi("x", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.FLOAT16, [2])],
    )
    assert run(cast, {"x": np.array([FLOAT32_LOWEST, 1e5], np.float32)})[0].tolist() == [-np.inf, np.inf]
    softmax = make_model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        [vi("x", TensorProto.FLOAT, [1, 3])],
        [vi("y", TensorProto.FLOAT, [1, 3])],
    )
    assert np.isnan(run(softmax, {"x": np.full((1, 3), -np.inf, np.float32)})[0]).all()
    np.testing.assert_allclose(run(softmax, {"x": np.full((1, 3), FLOAT32_LOWEST, np.float32)})[0], 1 / 3)


# -- the recognition ----------------------------------------------------------------------------------------------
def test_values_of_a_mask_are_sentinels_a_continuum_is_not():
    mask = np.triu(np.full((4, 4), FLOAT32_LOWEST, np.float32), k=1)
    assert stats_of(mask).sign() == -1
    assert stats_of(mask + np.float32(3.0)).sign() == -1  # scores + mask: still a sentinel far from the rest
    overflow = np.linspace(0, 1e5, 50, dtype=np.float32)  # values up to and past the limit
    assert stats_of(overflow).sign() is None
    both_signs = np.array([FLOAT32_LOWEST, -FLOAT32_LOWEST, 0], np.float32)
    assert stats_of(both_signs).sign() is None
    too_close = np.array([-1e6, 1e6 / (SENTINEL_GAP / 2)], np.float32)  # in-range values within the gap
    assert stats_of(too_close).sign() is None


def test_uses_decide_masking_add_softmax_where_min_max():
    block = attention_block()
    assert masking_use(_value(block, "causal_mask"), -1) == "Softmax 'softmax'"
    assert masking_use(_value(block, "causal_mask"), +1) is None  # a positive "mask" wins the Softmax: no
    assert masking_use(_value(block, "scores"), -1) == "Softmax 'softmax'"
    assert masking_use(_value(block, "probs"), -1) is None  # MatMul: not a mask's use

    nodes = [
        helper.make_node("Where", ["c", "x", "big"], ["w"], name="where"),
        helper.make_node("Min", ["w", "pos"], ["m"], name="min"),
        helper.make_node("Max", ["x", "neg"], ["n"], name="max"),
        helper.make_node("Add", ["m", "n"], ["y"], name="add"),
        helper.make_node("Add", ["x", "neg2"], ["z"], name="plain_add"),
    ]
    model = make_model(
        nodes,
        [vi("c", TensorProto.BOOL, [3]), vi("x", TensorProto.FLOAT, [3])],
        [vi("y", TensorProto.FLOAT, [3]), vi("z", TensorProto.FLOAT, [3])],
        [
            init("big", np.float32(-FLOAT32_LOWEST)),
            init("pos", np.float32(-FLOAT32_LOWEST)),
            init("neg", np.float32(FLOAT32_LOWEST)),
            init("neg2", np.float32(FLOAT32_LOWEST)),
        ],
    )
    assert masking_use(_value(model, "pos"), +1) == "Min 'min'"
    assert masking_use(_value(model, "neg"), -1) == "Max 'max'"
    assert masking_use(_value(model, "big"), +1) == "Min 'min'"  # through Where's value slot
    assert masking_use(_value(model, "neg2"), -1) is None  # reaches a graph output: not a mask


# -- the rules and the search ---------------------------------------------------------------------------------------
def test_convert_float16_saturates_a_constant_mask_and_says_why():
    block = attention_block()
    result = fp16.convert_float16(block)
    decisions = {d.node: d for d in result.report.decisions}
    assert result.report.fp32_nodes == []
    assert decisions["mask_add"].rule.value == "mask_sentinel"
    assert decisions["mask_add"].detail == (
        "weight 'causal_mask': masking sentinel -3.40282e+38 -> -65504 in float16 (feeds Softmax 'softmax')"
    )
    stored = next(t for t in result.model.graph.initializer if t.name == "causal_mask")
    assert stored.data_type == TensorProto.FLOAT16
    assert onnx.numpy_helper.to_array(stored).min() == -65504
    assert "mask_sentinel" in str(result.report.to_dict()["fp16_nodes_with_notes"])


def test_a_true_weight_overflow_still_keeps_its_node_fp32():
    """A weight of 1e5 feeding a plain Add is an overflow, not a mask."""
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    model = make_model(
        nodes,
        [vi("x", TensorProto.FLOAT, [3])],
        [vi("y", TensorProto.FLOAT, [3])],
        [init("w", np.float32([1e5, 1, 2]))],
    )
    assert {d.node: d.rule.value for d in fp16.convert_float16(model).report.fp32_nodes} == {"add": "weight_overflow"}


@pytest.mark.parametrize("variant", ["constant", "input"])
def test_gpt2_like_block_with_a_float32_lowest_mask_is_all_fp16_and_accurate(variant):
    model = attention_block(mask=variant)
    data = attention_feeds(mask=variant == "input")
    result = fp16.auto_mixed_precision(model, data, rtol=1e-2, atol=1e-3, keep_io_types=True, progress=False)
    search = result.report.search
    assert result.report.fp32_nodes == []
    assert search["criteria_met"] and search["holdout_met"]
    assert search["candidates_tried"] == 2  # one validation and the held-out check
    assert search["sentinels"] == [
        {"tensor": "masked", "value": pytest.approx(FLOAT32_LOWEST), "feeds": "Softmax 'softmax'"}
    ]
    rules = {d.node: d.rule.value for d in result.report.decisions}
    assert rules["mask_add"] == rules["softmax"] == "mask_sentinel"
    for feed in attention_feeds(n=3, mask=variant == "input", seed=7):  # never seen by the search
        np.testing.assert_allclose(_emulated(result.model, feed), run(model, feed)[0], rtol=1e-2, atol=2e-3)


def test_fully_masked_row_is_caught_by_validation():
    """Every position of row 3 masked, the mask a model input: -inf in float16, NaN after the Softmax. The
    search must not return a model that gives NaN: it keeps float32 what the row needs."""
    model = attention_block(mask="input")
    data = attention_feeds(mask=True, masked_row=3)
    result = fp16.auto_mixed_precision(model, data, rtol=1e-2, atol=1e-3, keep_io_types=True, progress=False)
    search = result.report.search
    full = search["history"][0]
    assert full["nodes_fp32_forced"] == 0 and not full["passed"]
    assert any("NaN" in f or "nonfinite" in f or "mismatch" in f or "allclose" in f for f in full["failures"])
    assert search["criteria_met"]
    kept = {d.node for d in result.report.fp32_nodes}
    assert {"mask_add", "softmax"} <= kept
    for feed in attention_feeds(n=2, mask=True, masked_row=3, seed=5):
        out = _emulated(result.model, feed)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, run(model, feed)[0], rtol=1e-2, atol=2e-3)


def test_fully_masked_row_with_float16_inputs_reports_criteria_not_met():
    """With float16 inputs the mask itself is -inf: no candidate can help, and the report says so."""
    model = attention_block(mask="input")
    data = attention_feeds(mask=True, masked_row=3)
    result = fp16.auto_mixed_precision(model, data, rtol=1e-2, atol=1e-3, progress=False)
    assert result.report.search["criteria_met"] is False
    assert any("no candidate met the criteria" in note for note in result.report.notes)


def test_true_activation_overflow_keeps_just_those_nodes_fp32():
    """An MLP MatMul reaching ~1e5 after the masked attention: the nodes touching that tensor stay float32,
    the mask's Add and Softmax do not."""
    model = attention_block(overflow=True)
    result = fp16.auto_mixed_precision(model, attention_feeds(), rtol=1e-2, atol=1e-2, progress=False)
    kept = {d.node: d.rule.value for d in result.report.fp32_nodes}
    assert kept == dict.fromkeys(("mlp_big", "mlp_bias", "mlp_down"), "activation_overflow")
    assert "reaches |" in next(d.detail for d in result.report.fp32_nodes if d.node == "mlp_big")
    assert result.report.search["criteria_met"] and result.report.search["holdout_met"]


def test_calibrated_float16_converts_a_computed_mask_and_keeps_a_true_overflow():
    """Calibration reads the same values as the search: the mask input's -3.4e38 only masks a Softmax (the
    Add and the Softmax convert, rule mask_sentinel), the MLP's ~1e5 is an overflow (float32, measured)."""
    model = attention_block(mask="input", overflow=True)
    result = fp16.convert_float16(model, keep_io_types=True, calibration_data=iter(attention_feeds(mask=True)))
    rules = {d.node: d.rule.value for d in result.report.decisions}
    assert rules["mask_add"] == rules["softmax"] == "mask_sentinel"
    assert {d.node for d in result.report.fp32_nodes} == {"mlp_big", "mlp_bias", "mlp_down"}
    sentinels = result.report.calibration["sentinels"]
    assert {(s["tensor"], s["feeds"]) for s in sentinels} == {
        ("mask", "Softmax 'softmax'"),
        ("masked", "Softmax 'softmax'"),
    }
    assert all(s["value"] == pytest.approx(FLOAT32_LOWEST) for s in sentinels)
    feed = attention_feeds(n=1, mask=True, seed=3)[0]
    np.testing.assert_allclose(_emulated(result.model, feed), run(model, feed)[0], rtol=1e-2, atol=1e-2)
