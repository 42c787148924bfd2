"""The search's real candidates (candidate_runs.CandidateBuilder) are written as protobuf from the source proto
and the search's analysed onnx-ir copy, with the classification the gated emulation made of them: no fresh copy,
no rule run again. These check that route against the plain conversion of a fresh onnx-ir copy, that it leaves
the analysed copy exactly as it was (every later candidate is classified on it), and that the report's
decisions are the candidate's own (mark_sentinels edits them)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from olive_fp16_pass import ir_serde
from olive_fp16_pass.candidate_runs import CandidateBuilder
from olive_fp16_pass.float16 import convert_with_options
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import ForcedDecision, Origin, Precision, Rule
from olive_fp16_pass.runtime import SessionFactory, choose_backend
from olive_fp16_pass.search_model import SearchModel
from tests.helpers import canonical, feeds_for, run
from tests.models import attention_block, dead_weight_model, if_model, layernorm_overflow_model, random_mixed_graph

CASES = [
    ("layernorm", layernorm_overflow_model, {"keep_io_types": True}),
    ("if", if_model, {}),  # a control-flow node: its body follows it (SearchModel.with_bodies)
    ("attention", attention_block, {"keep_io_types": True}),  # a -3.4e38 mask Constant
    ("dead_weights", dead_weight_model, {}),  # weight-underflow rules the search may overrule
    ("random", lambda: random_mixed_graph(1), {"clamp_weights": True}),
]


def _candidates(model: SearchModel, options: ConversionOptions) -> list[dict[str, ForcedDecision]]:
    """Full float16 with every overrulable node forced float16, then growing float32 prefixes, then one node
    alone: what a search tries."""
    overrule = {
        d.node: ForcedDecision(Rule.VALIDATED_FP16, "test", Origin.VALIDATED, precision=Precision.FP16)
        for d in model.classified(options, {}).plan.decisions.values()
        if d.precision is Precision.FP32
    }
    fp32 = ForcedDecision(Rule.ACCURACY, "test", Origin.ACCURACY)
    labels = model.labels
    return [
        {},
        overrule,
        {label: fp32 for label in labels[: len(labels) // 3]},
        {label: fp32 for label in labels[len(labels) // 2 :]},
        {labels[-1]: fp32},
    ]


def _snapshot(model: SearchModel) -> bytes:
    return ir_serde.serialize_model(model.ir).SerializeToString(deterministic=True)


@pytest.mark.parametrize("name,make,kwargs", CASES, ids=[c[0] for c in CASES])
def test_candidates_written_from_the_analysed_copy_equal_a_fresh_conversion(name, make, kwargs):
    proto = make()
    model = SearchModel(proto, None)
    options = ConversionOptions(**kwargs)
    before = _snapshot(model)
    builder = CandidateBuilder(model, options)
    for forced in _candidates(model, options):
        built = builder.build(forced)
        fresh = convert_with_options(model.fresh_ir(), options, forced=model.with_bodies(forced), check_runtime=False)
        assert canonical(built.model) == canonical(fresh.model)
        assert [dataclasses.asdict(d) for d in built.report.decisions] == [
            dataclasses.asdict(d) for d in fresh.report.decisions
        ]
        assert built.report.casts_inserted == fresh.report.casts_inserted
        data = feeds_for(proto)
        # optimizations off: some of these candidates do not load under ORT's fusions (the search's load check
        # rejects those); both routes must give the same model all the same
        for a, b in zip(run(built.model, data, optimize=False), run(fresh.model, data, optimize=False), strict=True):
            np.testing.assert_array_equal(a, b)
        # the report's decisions are copies: the search's classification of the candidate keeps its own
        shared = {id(d) for d in model.classified(options, model.with_bodies(forced)).plan.decisions.values()}
        assert not shared & {id(d) for d in built.report.decisions}
    assert _snapshot(model) == before  # the analysed copy is only read


def test_external_data_models_are_still_built_on_a_fresh_copy(tmp_path):
    """A model whose weights live in a data file cannot be written as protobuf from memory: its candidates are
    converted on fresh onnx-ir copies that read the data from the model's folder."""
    import onnx

    proto = layernorm_overflow_model()
    path = tmp_path / "m.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(proto)  # onnx.save moves the tensors of the proto it is given out to the file
    onnx.save(
        saved, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=0
    )
    lazy = onnx.load(path, load_external_data=False)
    model = SearchModel(lazy, tmp_path)
    options = ConversionOptions(keep_io_types=True)
    built = CandidateBuilder(model, options).build({})
    reference = convert_with_options(proto, options, check_runtime=False)
    assert built.held_form() is built.ir_model  # converted in place on the onnx-ir copy
    sessions = SessionFactory(choose_backend("CPUExecutionProvider"), tmp_path)
    data = feeds_for(proto)
    got = sessions.session(built.ir_model, emulation=False).run(None, data)
    for a, b in zip(got, run(reference.model, data), strict=True):
        np.testing.assert_array_equal(a, b)
