"""auto_mixed_precision on the CPU, validated with float16-storage emulation (no GPU in CI)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import Float16Error, OptionError
from olive_fp16_pass.mixed_precision import CriteriaNotMetError
from olive_fp16_pass.runtime import ProviderUnavailableError, choose_backend
from tests.helpers import run
from tests.models import activation_overflow_chain, benign_mlp, feeds, layernorm_overflow_model, shared_constant_model


def fp32_nodes(result) -> dict[str, str]:
    return {d.node: d.rule.value for d in result.report.fp32_nodes}


def test_activation_overflow_and_cancellation_kept_fp32_accurate_on_holdout():
    model = activation_overflow_chain()
    data = feeds((2, 16), n=8)
    result = fp16.auto_mixed_precision(model, data, rtol=1e-2, atol=1e-3, progress=False)
    kept = fp32_nodes(result)
    # The overflowing tensor o2 is written by scale_up2 and read by scale_down; x + 3000 - 3000 cancels.
    assert kept == {
        "scale_up2": "activation_overflow",
        "scale_down": "activation_overflow",
        "add_big": "accuracy",
        "sub_big": "accuracy",
    }
    search = result.report.search
    assert search["criteria_met"] and search["holdout_met"]
    assert search["holdout_samples"] == 2 and search["validation_samples"] == 6
    assert search["backend"]["mode"] == "emulation"
    # The full float16 conversion is really broken on this model (emulated storage: inf and lost precision).
    onnx.checker.check_model(result.model, full_check=True)
    fresh = feeds((2, 16), n=3, seed=99)  # never seen by the search
    for feed in fresh:
        np.testing.assert_allclose(run(result.model, feed)[0], run(model, feed)[0], rtol=1e-2, atol=1e-3)
    json.dumps(result.report.to_dict())


def test_model_fine_in_fp16_is_fully_fp16_after_one_validation():
    model = benign_mlp()
    result = fp16.auto_mixed_precision(model, feeds((4, 32), n=8), rtol=1e-2, atol=1e-2, progress=False)
    assert result.report.fp32_nodes == []
    stages = [h["stage"] for h in result.report.search["history"]]
    assert stages == ["full float16", "load check", "holdout"]
    assert result.report.search["candidates_tried"] == 2  # one validation + the held-out check
    assert result.report.search["sessions_created"] <= 3  # reference run, gated emulation, real-model load check


def test_layernorm_fusion_failure_is_rejected_and_search_converges():
    """Whole decomposed LayerNorm in fp32 after an fp16 MatMul: ORT's LayerNormFusion makes the session fail
    ("Type parameter (T) of Optype (LayerNormalization) bound to different types"). The search must reject
    that candidate and go on."""
    model = layernorm_overflow_model()
    data = feeds((2, 8, 16), n=8)
    # refine_budget=0: keep the range rules' whole-LayerNorm unit, the candidate ORT's fusion cannot load.
    result = fp16.auto_mixed_precision(model, data, rtol=1e-2, atol=1e-2, refine_budget=0, progress=False)
    history = result.report.search["history"]
    assert any("failed to load or run" in f and "LayerNormalization" in f for h in history for f in h["failures"])
    assert result.report.search["criteria_met"] and result.report.search["holdout_met"]
    session_out = run(result.model, data[-1])[0]  # the final model loads with ORT's optimizations on
    np.testing.assert_allclose(session_out, run(model, data[-1])[0], rtol=1e-2, atol=1e-2)
    assert fp32_nodes(result)["ln_pow"] == "activation_overflow"


def test_impossible_tolerance_returns_fp32_and_says_so():
    model = benign_mlp(depth=2)
    data = feeds((4, 32), n=4)
    result = fp16.auto_mixed_precision(model, data, rtol=0, atol=0, max_abs=0, progress=False)
    assert result.report.search["criteria_met"] is False
    assert any("no candidate met the criteria" in note for note in result.report.notes)
    assert any("keep_io_types=True" in note for note in result.report.notes)
    assert {d.precision.value for d in result.report.decisions} == {"fp32"}
    with pytest.raises(CriteriaNotMetError, match="no candidate meets the accuracy criteria"):
        fp16.auto_mixed_precision(model, data, rtol=0, atol=0, on_failure="raise", progress=False)


def test_keep_io_types_makes_exact_fp32_reachable():
    model = benign_mlp(depth=2)
    data = feeds((4, 32), n=4)
    result = fp16.auto_mixed_precision(model, data, rtol=0, atol=0, keep_io_types=True, progress=False)
    assert result.report.search["criteria_met"] is True  # every node float32, float32 I/O: exact


def _gated_output(switch, options, feed) -> np.ndarray:
    """The search's gated emulation of the candidate `options` describe, on `feed`: its first output."""
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        switch.model.SerializeToString(), session_options, providers=["CPUExecutionProvider"]
    )
    gates, _ = switch.gates(options)
    return session.run(None, {**feed, **switch.gate_feed(gates)})[0]


def _emulated_output(model: onnx.ModelProto, feed) -> np.ndarray:
    """`model` (a float16 or mixed model) run with float16 storage emulated, optimizations off."""
    import onnxruntime as ort

    from olive_fp16_pass.emulation import emulate_float16_storage

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    emulated = emulate_float16_storage(model).SerializeToString()
    return ort.InferenceSession(emulated, options, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_emulation_sees_overflow_that_the_cpu_provider_hides():
    """DESIGN §5: the CPU EP runs fp16 ops in fp32 behind Casts, so a float16 model 'works' there."""
    from olive_fp16_pass.options import ConversionOptions
    from olive_fp16_pass.switchable import SwitchableEmulation

    model = activation_overflow_chain(n_blocks=2)
    feed = feeds((2, 16), n=1)[0]
    full = fp16.convert_float16(model).model
    cpu_out = run(full, feed)[0]
    reference = run(model, feed)[0]
    assert np.isfinite(cpu_out).all()  # the CPU EP hides the overflow of o2 (|o2| up to ~9e4)
    for emulated_out in (
        _gated_output(SwitchableEmulation(model), ConversionOptions(), feed),
        _emulated_output(full, feed),
    ):
        assert not np.isfinite(emulated_out).all() or np.abs(emulated_out - reference).max() > 0.1


def test_provider_unavailable_strict_and_emulated():
    with pytest.raises(ProviderUnavailableError, match="provider NoSuchExecutionProvider: NoSuchExecutionProvider"):
        choose_backend("NoSuchExecutionProvider", strict=True)
    backend = choose_backend("CUDAExecutionProvider")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and backend.mode == "provider":
        pytest.skip("a usable CUDA provider is present")
    assert backend.mode == "emulation" and "emulated" in backend.reason
    model = benign_mlp(depth=1)
    with pytest.raises(ProviderUnavailableError):
        fp16.auto_mixed_precision(model, feeds((2, 32), n=2), strict=True, progress=False)
    cpu = choose_backend("CPUExecutionProvider")
    assert cpu.mode == "emulation" and "hides overflow" in cpu.reason


def test_bad_validation_feeds():
    model = benign_mlp(depth=1)
    with pytest.raises(Float16Error, match=r"data\[0\]: input names do not match the model \(missing: \['x'\]"):
        fp16.auto_mixed_precision(model, [{"input": np.zeros((2, 32), np.float32)}], progress=False)
    with pytest.raises(Float16Error, match=r"data\[1\]\['x'\]: shape \(2, 7\), the model expects 32 on axis 1"):
        fp16.auto_mixed_precision(model, [{"x": np.zeros((2, 32))}, {"x": np.zeros((2, 7))}], progress=False)
    with pytest.raises(Float16Error, match=r"data\[0\]\['x'\]: rank 1"):
        fp16.auto_mixed_precision(model, [{"x": np.zeros(32, np.float32)}], progress=False)
    with pytest.raises(Float16Error, match=r"data\[0\]\['x'\]: dtype int64, the model expects float32"):
        fp16.auto_mixed_precision(model, [{"x": np.zeros((1, 32), np.int64)}], progress=False)
    with pytest.raises(Float16Error, match="data: no validation samples given"):
        fp16.auto_mixed_precision(model, [], progress=False)
    with pytest.raises(OptionError, match="no accuracy criterion given"):
        fp16.auto_mixed_precision(model, feeds((1, 32), n=1), rtol=None, atol=None, progress=False)
    with pytest.raises(Float16Error, match=r"per_output: \['z'\] are not outputs of the model"):
        fp16.auto_mixed_precision(model, feeds((1, 32), n=1), per_output={"z": {"max_abs": 1}}, progress=False)


def test_other_criteria_psnr_and_cosine():
    model = activation_overflow_chain()
    data = feeds((2, 16), n=6)
    result = fp16.auto_mixed_precision(model, data, rtol=None, atol=None, min_psnr=40, min_cosine=0.999, progress=False)
    errors = result.report.search["validation_errors"]["y"]
    assert errors["psnr"] == "inf" or errors["psnr"] >= 40
    assert errors["cosine"] >= 0.999
    assert result.report.search["criteria_met"]


@pytest.mark.parametrize("builder,shape", [(activation_overflow_chain, (2, 16)), (benign_mlp, (4, 32))])
@pytest.mark.parametrize("blocked", [None, ["tanh1", "mul3"]])
def test_two_emulations_agree(builder, shape, blocked):
    """The search's gated emulation of a plan and the emulation of the float16 model converted from that plan
    must give identical outputs."""
    from olive_fp16_pass.float16 import convert_with_options
    from olive_fp16_pass.options import ConversionOptions
    from olive_fp16_pass.switchable import SwitchableEmulation

    model = builder()
    names = [n.name for n in model.graph.node]
    block = [b for b in (blocked or []) if b in names] or None
    options = ConversionOptions(node_block_list=block)
    feed = feeds(shape, 1)[0]
    converted = convert_with_options(model, options, check_runtime=False).model  # the plan as the search builds it
    np.testing.assert_array_equal(
        _gated_output(SwitchableEmulation(model), options, feed), _emulated_output(converted, feed)
    )


def test_refinement_gives_back_unneeded_fusion_members():
    model = layernorm_overflow_model()
    result = fp16.auto_mixed_precision(model, feeds((2, 8, 16), n=8), rtol=1e-2, atol=1e-2, progress=False)
    kept = fp32_nodes(result)
    assert set(kept) == {"ln_pow", "ln_rm2", "ln_addeps", "ln_sqrt"}  # the tensors beyond range, nothing else
    assert result.report.search["criteria_met"] and result.report.search["holdout_met"]


@pytest.mark.parametrize(
    "builder,shape",
    [(activation_overflow_chain, (2, 16)), (layernorm_overflow_model, (2, 8, 16)), (shared_constant_model, (2, 8))],
)
@pytest.mark.parametrize("keep_io", [False, True])
def test_gated_emulation_equals_direct_emulation(builder, shape, keep_io):
    """The search's one gated session computes, for any candidate, exactly the emulation of that candidate's
    real float16 model."""
    from olive_fp16_pass.float16 import convert_with_options
    from olive_fp16_pass.options import ConversionOptions
    from olive_fp16_pass.switchable import SwitchableEmulation

    model = builder()
    switch = SwitchableEmulation(model)
    feed = feeds(shape, 1)[0]
    names = [n.name for n in model.graph.node]
    for blocked in (None, names[1::3], names[-3:]):
        plan = ConversionOptions(node_block_list=blocked, keep_io_types=keep_io)
        converted = convert_with_options(model, plan, check_runtime=False).model
        np.testing.assert_array_equal(_gated_output(switch, plan, feed), _emulated_output(converted, feed))
