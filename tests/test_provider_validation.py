"""The search's real-provider path (candidate_runs.ProviderValidator), run here with the CPU provider standing in
for a GPU: no machine in CI has one, and this path is otherwise only exercised by tests/test_gpu.py.

The CPU provider is no evidence of float16 accuracy (it computes float16 ops in float32 behind Casts), so
these tests check the mechanics only: real candidates built and run on the provider, the ranking still read
off the gated emulation, no separate load check (the provider's sessions load each candidate with every
optimization on), one session per candidate however many feeds, and a result that loads."""

from __future__ import annotations

import onnxruntime as ort

from olive_fp16_pass.compare import Criteria
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_search import MixedPrecisionSearch, SearchSettings
from olive_fp16_pass.runtime import ValidationBackend
from olive_fp16_pass.search_model import SearchModel
from tests.models import feeds, layernorm_overflow_model

CPU = "CPUExecutionProvider"


def _search(model, data) -> MixedPrecisionSearch:
    backend = ValidationBackend(CPU, "provider", CPU, "test: the CPU provider standing in for a GPU")
    criteria = Criteria(1e-3, 1e-4, None, None, None, None, None, {})
    settings = SearchSettings(criteria, ConversionOptions(keep_io_types=True), 2.0, 64, 1.0, False)
    return MixedPrecisionSearch(SearchModel(model, None), data[:4], data[4:], backend, settings)


def test_provider_path_ranks_on_the_gated_emulation_and_validates_real_candidates():
    search = _search(layernorm_overflow_model(), feeds((2, 8, 16), n=6))
    outcome = search.run()
    stages = [entry["stage"] for entry in search.history]
    assert outcome.final.passed and outcome.holdout is not None and outcome.holdout.passed
    assert "range rules" in stages and any(stage.startswith("prefix") for stage in stages)  # the ranking ran
    assert not any(stage.startswith("load check") for stage in stages)  # the provider's runs were the check
    assert search.sessions.providers_seen == {CPU}
    # one session per candidate built (its first feed, then the others), plus the reference and the gated one
    assert search.sessions.created <= search.tried + 2
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(outcome.result.model.SerializeToString(), options, providers=[CPU])
    assert session.run(None, feeds((2, 8, 16), n=1)[0])[0].shape == (2, 8, 16)


def test_candidates_with_the_same_labels_but_other_decisions_are_not_confused():
    """The real-candidate cache and the bound gates are keyed by the forced records, not only their labels: the
    same node forced float16 (over an advisory rule) and then float32 are two candidates."""
    from olive_fp16_pass.candidate_runs import CandidateBuilder, GatedEmulator
    from olive_fp16_pass.precision_plan import ForcedDecision, Origin, Precision, Rule
    from olive_fp16_pass.runtime import SessionFactory, choose_backend

    model = SearchModel(layernorm_overflow_model(), None)
    label = model.labels[0]
    as_fp16 = {label: ForcedDecision(Rule.VALIDATED_FP16, "test", Origin.VALIDATED, precision=Precision.FP16)}
    as_fp32 = {label: ForcedDecision(Rule.ACCURACY, "test", Origin.ACCURACY)}
    options = ConversionOptions(keep_io_types=True)

    def precision(decisions) -> Precision:
        return next(d.precision for d in decisions if d.node == label)

    builder = CandidateBuilder(model, options)
    assert precision(builder.build(as_fp16).report.decisions) is Precision.FP16
    assert precision(builder.build(as_fp32).report.decisions) is Precision.FP32
    emulator = GatedEmulator(model, SessionFactory(choose_backend(CPU)), options, flops=0.0)
    data = feeds((2, 8, 16), n=1)
    assert precision(emulator.run(as_fp16, data, model.output_names)[1].plan.decisions.values()) is Precision.FP16
    assert precision(emulator.run(as_fp32, data, model.output_names)[1].plan.decisions.values()) is Precision.FP32
