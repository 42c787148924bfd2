"""ORT's other graph fusions, split by a precision boundary, still load with ORT_ENABLE_ALL and stay accurate.

fusion_units.py keeps the patterns whose fusion fails across a boundary (LayerNorm, which swallows a Cast at its
entry; RMSNorm, GELU, FastGelu, BiasGelu) in one precision. The fusions tested here are the others that
onnxruntime 1.32 applies at ORT_ENABLE_ALL on the CPU EP (graph_transformer_utils.cc: QuickGelu, BiasSoftmax,
SkipLayerNorm / EmbedLayerNorm around a LayerNormalization op, MatMulScale, MatMulTranspose, MatMulAdd,
GemmActivation, ConvActivation, ConvAddActivation, ConvBN, ConvMul/ConvAdd, Pad, BiasGelu around Gelu-20).
Each matches only on a direct producer -> consumer edge (a Cast between two members ends the match) and none
absorbs a Cast, so a split pattern is simply not fused: no unit is needed. Every member is blocked in turn, in
both keep_io_types modes; the load check (load_check.py) would repair or refuse a split that failed, so the
tests also assert that it had nothing to repair. The real exports of tests/data/real/ (attention, embeddings,
SkipLayerNorm, BiasGelu on BERT and GPT-2; ConvActivation on MobileNetV3) get the same sweep by op type.
The CUDA EP's extra fusions (GroupQueryAttention, BiasDropout) are covered by the load check's CUDA session
where a GPU is present.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass.precision_plan import Rule
from olive_fp16_pass.runtime import provider_status
from tests.helpers import feeds_for
from tests.models import FUSION_PATTERNS

REAL = Path(__file__).parent / "data" / "real"
PLUMBING = {"Shape", "Range", "Unsqueeze", "Constant"}  # integer shape arithmetic: never converted


def _options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def optimized_ops(model: onnx.ModelProto) -> Counter:
    """Op types of the graph onnxruntime runs after ORT_ENABLE_ALL on the CPU EP."""
    options = _options()
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return Counter(node.op_type for node in optimized.graph.node)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    feeds = feeds_for(model, dims={"b": 4})
    if "ids" in feeds:
        feeds["ids"] = np.arange(8, dtype=np.int64).reshape(1, 8)
    return feeds


def run_all_optimizations(model: onnx.ModelProto, feeds, provider: str = "CPUExecutionProvider") -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), _options(), providers=[provider])
    typed = {
        i.name: feeds[i.name].astype(np.float16) if i.type == "tensor(float16)" else feeds[i.name]
        for i in session.get_inputs()
    }
    return np.asarray(session.run(None, typed)[0], np.float32)


def _members(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type not in PLUMBING and n.name not in ("e_len",)]


CASES = [(name, member) for name, build in FUSION_PATTERNS.items() for member in _members(build())]


# BiasSoftmaxFusion is registered for CPU too, but its matcher accepts only CUDA / ROCm nodes.
CUDA_ONLY = {"bias_softmax"}


@pytest.mark.parametrize("name", sorted(FUSION_PATTERNS))
def test_onnxruntime_really_fuses_the_pattern(name):
    """Else the split tests below would prove nothing: ORT rewrites each float32 pattern into fewer nodes."""
    if name in CUDA_ONLY:
        pytest.skip(f"{name}: onnxruntime fuses it on CUDA only (test_a_split_fusion_loads_on_cuda)")
    model = FUSION_PATTERNS[name]()
    ops = optimized_ops(model)
    layout = ops.pop("ReorderInput", 0) + ops.pop("ReorderOutput", 0)  # the NCHWc transformer's own nodes
    assert sum(ops.values()) < len(model.graph.node), (ops, layout)


@pytest.mark.parametrize("keep_io", [False, True])
@pytest.mark.parametrize(("name", "member"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_a_split_fusion_loads_and_is_accurate(name, member, keep_io):
    model = FUSION_PATTERNS[name]()
    result = fp16.convert_float16(model, keep_io_types=keep_io, node_block_list=[member])
    precision = {d.node: d.precision.value for d in result.report.decisions}
    assert precision[member] == "fp32"
    others = [d for d in result.report.decisions if d.node != member]
    if not all(d.rule is Rule.FLOAT32_NEIGHBOURS for d in others):  # else no boundary is left to test: a
        # movement node between float32 ends (Transpose on a keep_io input -> blocked MatMul) stays float32
        assert "fp16" in precision.values(), precision  # the boundary really runs through the pattern
    assert not [n for n in result.report.notes if n.startswith("load check")], result.report.notes
    feeds = _feeds(model)
    reference = run_all_optimizations(model, feeds)
    got = run_all_optimizations(result.model, feeds)  # raises if a fusion broke the model
    np.testing.assert_allclose(got, reference, atol=2e-2 * float(np.abs(reference).max()), rtol=0)


@pytest.mark.parametrize("keep_io", [False, True])
@pytest.mark.parametrize("name", sorted(FUSION_PATTERNS))
def test_an_unsplit_fusion_loads_and_is_accurate(name, keep_io):
    model = FUSION_PATTERNS[name]()
    result = fp16.convert_float16(model, keep_io_types=keep_io)
    feeds = _feeds(model)
    reference = run_all_optimizations(model, feeds)
    np.testing.assert_allclose(
        run_all_optimizations(result.model, feeds), reference, atol=2e-2 * float(np.abs(reference).max()), rtol=0
    )


# The op types that take part in the fusions ORT applies to these exports (Attention, SkipLayerNorm, BiasGelu,
# FastGelu, MatMulScale, BiasSoftmax...): blocking one of them puts a precision boundary inside the pattern.
FUSED_OPS = {"Add", "Div", "Erf", "Gemm", "LayerNormalization", "MatMul", "Mul", "Pow", "Softmax", "Tanh", "Where"}


def _op_types(path: Path) -> list[str]:
    graph = onnx.load(path, load_external_data=False).graph
    return sorted({n.op_type for n in graph.node} & FUSED_OPS)


# BERT (external data: its result is load-checked at save) runs by default, GPT-2 with -m slow (~2.5 s a case).
REAL_CASES = [
    pytest.param(model, op, id=f"{model}-{op}", marks=[pytest.mark.slow] if model == "gpt2_past_tiny" else [])
    for model in ("bert_tiny_dynamo", "gpt2_past_tiny")
    for op in _op_types(REAL / f"{model}.onnx")
]


@pytest.mark.parametrize(("model", "op"), REAL_CASES)
def test_real_exports_split_by_op_type_load_with_all_optimizations(model, op, tmp_path):
    """Every op type of BERT (external data: checked at save) and GPT-2 kept float32 in turn, both modes."""
    for keep_io in (False, True):
        result = fp16.convert_float16(REAL / f"{model}.onnx", keep_io_types=keep_io, op_block_list=[op])
        out = result.save(tmp_path / f"{keep_io}" / "model.onnx")
        assert not [n for n in result.report.notes if n.startswith("load check")], result.report.notes
        ort.InferenceSession(str(out), _options(), providers=["CPUExecutionProvider"])


@pytest.mark.skipif(
    not provider_status("CUDAExecutionProvider")[0],
    reason="the CUDA execution provider does not work here (onnxruntime without CUDA, or no GPU)",
)
@pytest.mark.parametrize("keep_io", [False, True])
@pytest.mark.parametrize(("name", "member"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_a_split_fusion_loads_on_cuda(name, member, keep_io):
    model = FUSION_PATTERNS[name]()
    result = fp16.convert_float16(model, keep_io_types=keep_io, node_block_list=[member])
    feeds = _feeds(model)
    reference = run_all_optimizations(model, feeds)
    got = run_all_optimizations(result.model, feeds, "CUDAExecutionProvider")
    np.testing.assert_allclose(got, reference, atol=2e-2 * float(np.abs(reference).max()), rtol=0)
