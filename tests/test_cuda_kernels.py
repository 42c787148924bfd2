"""The CUDA kernel table (olive_fp16_pass/data/cuda_kernels.json), its generator and the rule that uses it.

Without a GPU the converter still knows which ops onnxruntime's CUDA EP has float16 kernels for: a node
without one stays float32 for provider CUDA (it would run on the CPU with copies), and ops with no CUDA kernel
at all are listed in the report.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass import cuda_kernels, op_signatures, rules
from olive_fp16_pass.precision_plan import Precision, Rule
from tests.helpers import check_converted, feeds_for, make_model, vi

F = TensorProto.FLOAT
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MD = Path(__file__).parent / "data" / "operator_kernels_sample.md"
CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def gen():
    """scripts/gen_cuda_kernel_table.py, the generator of the kernel table."""
    from scripts import gen_cuda_kernel_table

    return gen_cuda_kernel_table


def tan_then_relu(opset: int = 13) -> onnx.ModelProto:
    """Tan has no CUDA kernel at all in onnxruntime 1.31.1 (and no ONNX function body): it leaves the GPU."""
    return make_model(
        [helper.make_node("Tan", ["x"], ["t"], name="tan"), helper.make_node("Relu", ["t"], ["y"], name="relu")],
        [vi("x", F, [2, 8])],
        [vi("y", F, [2, 8])],
        opset=opset,
    )


def grid_sample(opset: int = 16) -> onnx.ModelProto:
    """GridSample has CUDA kernels, but for float only."""
    return make_model(
        [
            helper.make_node("GridSample", ["x", "grid"], ["s"], name="grid_sample"),
            helper.make_node("Relu", ["s"], ["y"], name="relu"),
        ],
        [vi("x", F, [1, 1, 4, 4]), vi("grid", F, [1, 3, 3, 2])],
        [vi("y", F, [1, 1, 3, 3])],
        opset=opset,
    )


def decisions(result) -> dict[str, tuple[str, str, str]]:
    return {d.node: (d.precision.value, d.rule.value, d.detail) for d in result.report.decisions}


# -- the shipped table ------------------------------------------------------------------------------------------


def test_table_says_which_onnxruntime_it_describes_where_from_and_when():
    table = cuda_kernels.load_table()
    assert table.onnxruntime_version == "1.31.1"
    assert datetime.date.fromisoformat(table.generated_on) <= datetime.date.today()
    assert "onnxruntime-gpu 1.31.1" in table.source
    raw = json.loads((ROOT / "olive_fp16_pass" / "data" / "cuda_kernels.json").read_text())
    assert raw["provider"] == "CUDAExecutionProvider"
    assert "get_all_opkernel_def" in raw["source_detail"]["method"]
    assert "git-commit-id=" in raw["source_detail"]["build_info"]
    assert cuda_kernels.load_table() is table  # read once


def test_known_cuda_kernels():
    has = cuda_kernels.has_kernel
    assert has("Conv", "", 17, "float16") and has("Conv", "ai.onnx", 17, "float32")
    assert has("MatMul", "", 13, "float16") and has("Softmax", "", 13, "float16")
    assert has("LayerNormalization", "", 17, "bfloat16")
    assert has("BiasGelu", "com.microsoft", 1, "float16")
    # the opset matters: Add's kernel for opsets 7-12 has no bfloat16, the one for 13 has
    assert not has("Add", "", 12, "bfloat16") and has("Add", "", 13, "bfloat16")
    # a model at opset 17 uses Conv-11: served by the [11, 21] registration
    assert has("Conv", "", 17, "float16")
    assert has("GridSample", "", 16, "float") and not has("GridSample", "", 16, "float16")
    assert not has("MeanVarianceNormalization", "", 13, "float16")
    assert not has("Tan", "", 13, "float")
    assert not has("NoSuchOp", "", 13, "float16")


def test_ops_without_any_cuda_kernel():
    missing = cuda_kernels.ops_without_kernel()
    assert {"Tan", "MeanVarianceNormalization", "Det"} <= set(missing)
    assert not {"Conv", "MatMul", "GridSample", "Constant"} & set(missing)


def test_table_covers_the_hand_written_no_float16_kernel_ops():
    """The hand-written list (MVN) is what the table says for CUDA too: for provider CUDA the table decides."""
    for domain, op_type in rules.ORT_NO_FP16_KERNEL:
        assert not cuda_kernels.has_kernel(op_type, domain, 13, "float16"), op_type


# -- the rule ---------------------------------------------------------------------------------------------------


def test_kernel_less_op_stays_fp32_under_cuda_with_the_reason():
    model = tan_then_relu()
    result = fp16.convert_float16(model, provider="CUDAExecutionProvider")
    assert decisions(result) == {
        "tan": ("fp32", Rule.NO_FP16_KERNEL.value, "no CUDA float16 kernel for Tan at opset 13"),
        "relu": ("fp16", Rule.CONVERTED.value, ""),
    }
    assert result.report.cpu_fallback_risks == [
        {
            "domain": "ai.onnx",
            "op_type": "Tan",
            "opset": 13,
            "nodes": 1,
            "function_body": False,
            "detail": "no CUDA kernel for Tan at opset 13: it runs on the CPU, with copies to and from the GPU",
        }
    ]
    assert result.report.to_dict()["cpu_fallback_risks"][0]["op_type"] == "Tan"
    assert "no CUDA kernel for Tan" in result.report.summary()
    check_converted(model, result.model)


def test_cuda_is_the_default_provider_of_convert_float16():
    result = fp16.convert_float16(tan_then_relu())
    assert decisions(result)["tan"][0] == "fp32"
    assert result.report.options["provider"] == "CUDAExecutionProvider"


def test_kernel_less_op_converts_under_cpu_as_before():
    """The CPU EP runs float16 through Casts, so the CUDA table does not apply: Tan goes float16 as today."""
    model = tan_then_relu()
    result = fp16.convert_float16(model, provider="CPUExecutionProvider")
    assert decisions(result)["tan"] == ("fp16", Rule.CONVERTED.value, "")
    assert result.report.cpu_fallback_risks == []
    check_converted(model, result.model)


def test_op_with_cuda_kernels_but_none_for_float16_stays_fp32_and_is_no_fallback_risk():
    model = grid_sample(opset=16)
    result = fp16.convert_float16(model, provider="CUDAExecutionProvider")
    assert decisions(result)["grid_sample"] == (
        "fp32",
        Rule.NO_FP16_KERNEL.value,
        "no CUDA float16 kernel for GridSample at opset 16",
    )
    assert decisions(result)["relu"][0] == "fp16"
    assert result.report.cpu_fallback_risks == []
    assert decisions(fp16.convert_float16(model, provider="CPUExecutionProvider"))["grid_sample"][0] == "fp16"


def test_mvn_is_decided_by_the_table_under_cuda_and_by_the_hand_written_rule_otherwise():
    model = make_model(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn")],
        [vi("x", F, [1, 2, 3, 3])],
        [vi("y", F, [1, 2, 3, 3])],
        opset=13,
    )
    cuda = fp16.convert_float16(model, provider="CUDAExecutionProvider")
    assert decisions(cuda)["mvn"][2] == "no CUDA float16 kernel for MeanVarianceNormalization at opset 13"
    assert cuda.report.cpu_fallback_risks[0]["function_body"] is True
    cpu = fp16.convert_float16(model, provider="CPUExecutionProvider")
    assert decisions(cpu)["mvn"][:2] == ("fp32", Rule.NO_FP16_KERNEL.value)


def test_function_op_without_cuda_kernel_converts_as_onnxruntime_expands_its_body():
    """Mish has no CUDA kernel but an ONNX function body: a float16 Mish is expanded into ops that have CUDA
    float16 kernels (Softplus, Tanh, Mul), so the rule leaves it to float16."""
    model = make_model(
        [helper.make_node("Mish", ["x"], ["m"], name="mish"), helper.make_node("Relu", ["m"], ["y"], name="relu")],
        [vi("x", F, [2, 8])],
        [vi("y", F, [2, 8])],
        opset=18,
    )
    assert all(cuda_kernels.has_kernel(op, "", 18, "float16") for op in ("Softplus", "Tanh", "Mul"))
    result = fp16.convert_float16(model, provider=CUDA)
    assert decisions(result)["mish"] == ("fp16", Rule.CONVERTED.value, "")
    [risk] = result.report.cpu_fallback_risks
    assert (risk["op_type"], risk["function_body"]) == ("Mish", True)
    assert "expands its ONNX function body" in risk["detail"]
    check_converted(model, result.model)  # the expanded float16 body loads and is accurate (CPU here)


def test_known_broken_function_bodies_are_the_hand_written_list():
    """One list of function bodies that fail in float16 for the table rule, the same as rules.ORT_NO_FP16_KERNEL."""
    normalized = {(cuda_kernels.table_domain(d), op) for d, op in rules.ORT_NO_FP16_KERNEL}
    assert normalized == set(cuda_kernels.FUNCTION_BODY_FAILS_IN_FLOAT16)


def test_rule_answers_nothing_for_other_providers_and_custom_domains():
    node = ir.Node("", "Tan", inputs=[ir.Value(name="x")])
    signature = op_signatures.lookup("", "Tan", 13)
    verdict = cuda_kernels.no_cuda_float16_kernel(node, cuda_kernels.NodeKernelContext(CUDA, "", 13, signature))
    assert verdict is not None and verdict.precision is Precision.FP32
    for other in (None, "CPUExecutionProvider", "DmlExecutionProvider"):
        context = cuda_kernels.NodeKernelContext(other, "", 13, signature)
        assert cuda_kernels.no_cuda_float16_kernel(node, context) is None
    custom = cuda_kernels.NodeKernelContext(CUDA, "my.custom", 1, signature)
    assert cuda_kernels.no_cuda_float16_kernel(node, custom) is None


def test_mixed_precision_search_keeps_the_kernel_less_op_fp32_for_cuda():
    model = tan_then_relu()
    data = [feeds_for(model, seed=s) for s in range(4)]
    result = fp16.auto_mixed_precision(model, data, provider="CUDAExecutionProvider", progress=False)
    assert decisions(result)["tan"] == ("fp32", Rule.NO_FP16_KERNEL.value, "no CUDA float16 kernel for Tan at opset 13")
    assert decisions(result)["relu"][0] == "fp16"
    assert [r["op_type"] for r in result.report.cpu_fallback_risks] == ["Tan"]


# -- the generator ----------------------------------------------------------------------------------------------


def test_generator_parses_operator_kernels_markdown(gen):
    entries = gen.entries_from_markdown(SAMPLE_MD.read_text())
    table = gen.merge(entries)
    assert set(table) == {"ai.onnx", "com.microsoft"}  # the CPU and DML sections are skipped
    onnx_ops = table["ai.onnx"]
    assert onnx_ops["Add"] == [
        [14, None, {"T": ["bfloat16", "double", "float", "float16", "int32"]}],
        [13, 13, {"T": ["bfloat16", "double", "float", "float16", "int32"]}],
        [7, 12, {"T": ["double", "float", "float16", "int32"]}],
    ]
    assert onnx_ops["GridSample"] == [
        [22, None, {"T1": ["float"], "T2": ["float"]}],
        [16, 21, {"T1": ["float"], "T2": ["float"]}],
    ]
    assert onnx_ops["LayerNormalization"][1] == [
        1,
        16,
        {
            "T": ["bfloat16", "double", "float", "float16"],
            "U": ["double", "float"],
            "V": ["bfloat16", "double", "float", "float16"],
        },
    ]
    assert onnx_ops["ConcatFromSequence"] == [[11, None, {"S": ["seq(bfloat16)", "seq(float)", "seq(float16)"]}]]
    assert table["com.microsoft"] == {"BiasGelu": [[1, None, {"T": ["bfloat16", "double", "float", "float16"]}]]}
    assert "Tan" not in onnx_ops


def test_generator_merges_per_type_kernel_defs_like_the_markdown(gen):
    """get_all_opkernel_def() gives one registration per type; merged, they read like OperatorKernels.md."""
    defs = [
        {"provider": "CUDAExecutionProvider", "op_name": "GridSample", "domain": "", "version_range": (16, 21),
         "type_constraints": {"T1": ["tensor(float)"], "T2": ["tensor(float)"]}},
        {"provider": "CUDAExecutionProvider", "op_name": "GridSample", "domain": "", "version_range": (22, 2147483647),
         "type_constraints": {"T1": ["tensor(float)"], "T2": ["tensor(float)"]}},
        {"provider": "CPUExecutionProvider", "op_name": "Tan", "domain": "", "version_range": (7, 21),
         "type_constraints": {"T": ["tensor(float)"]}},
    ]  # fmt: skip
    for t in ("tensor(float)", "tensor(int32)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"):
        defs.append(
            {"provider": "CUDAExecutionProvider", "op_name": "Add", "domain": "", "version_range": (14, 2147483647),
             "type_constraints": {"T": [t]}}
        )  # fmt: skip
    from_defs = gen.merge(gen.entries_from_kernel_defs(defs))
    from_md = gen.merge(gen.entries_from_markdown(SAMPLE_MD.read_text()))
    assert from_defs["ai.onnx"]["GridSample"] == from_md["ai.onnx"]["GridSample"]
    assert from_defs["ai.onnx"]["Add"] == from_md["ai.onnx"]["Add"][:1]
    assert "Tan" not in from_defs["ai.onnx"]  # CPU registrations are not CUDA kernels


def test_generator_writes_a_table_the_package_reads(gen, tmp_path):
    out = tmp_path / "cuda_kernels.json"
    argv = ["--from-markdown", str(SAMPLE_MD), "--version", "1.31.1", "--date", "2026-12-02", "--output", str(out)]
    assert gen.main(argv) == 0
    data = json.loads(out.read_text())
    assert (data["onnxruntime_version"], data["generated_on"]) == ("1.31.1", "2026-12-02")
    table = cuda_kernels.parse_table(data)
    assert table.types_at("Add", "", 13) == frozenset({"bfloat16", "double", "float", "float16", "int32"})
    assert table.types_at("GridSample", "ai.onnx", 16) == frozenset({"float"})
    assert table.types_at("Add", "", 6) is None


def test_generator_refuses_markdown_without_a_version_or_a_cuda_section(gen, tmp_path):
    with pytest.raises(SystemExit):
        gen.main(["--from-markdown", str(SAMPLE_MD), "--output", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="CUDAExecutionProvider"):
        gen.entries_from_markdown("## Operators implemented by CPUExecutionProvider\n|Tan||7+|**T** = tensor(float)|\n")


def test_shipped_table_matches_the_generator_format(gen):
    data = json.loads((ROOT / "olive_fp16_pass" / "data" / "cuda_kernels.json").read_text())
    assert data["format"] == gen.FORMAT_VERSION
    assert gen.to_json(data) == (ROOT / "olive_fp16_pass" / "data" / "cuda_kernels.json").read_text()
    assert np.all([len(row) == 3 for ops in data["kernels"].values() for rows in ops.values() for row in rows])
