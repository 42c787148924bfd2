"""Rules that decide, node by node, whether a node may run in float16, each with its reason.

Rules are applied in a fixed order (structure, user lists, op schema, weight ranges) and the first rule
that keeps a node in float32 is the one recorded. Cast, Constant and ConstantOfShape are not classified:
their output precision simply follows what their consumers need (see convert.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from olive_fp16_pass import op_signatures
from olive_fp16_pass.cuda_kernels import NodeKernelContext, no_cuda_float16_kernel, table_rules_out_float16
from olive_fp16_pass.element_types import ElementTypes
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import NodeDecision, Precision, PrecisionPlan, Rule

FP16_MAX = 65504.0
# Below 2**-14 float16 values are subnormal, with a fixed step of 2**-24, so the rounding error of a value v is
# up to 2**-25 / v relative. A tensor whose LARGEST |value| is below FP16_UNDERFLOW (~3e-6) loses more than 1%
# even there (and values under 2**-25 become 0). Above it the tensor survives: LayerNorm's eps of 1e-5 is
# stored within 0.3%, and flagging it (an earlier threshold of 2**-14) kept every LayerNorm's Add(eps) in
# float32 for nothing (bench/amp_speed.py, enc300: 14 needless float32 nodes).
FP16_MIN_NORMAL = 2.0**-14
FP16_UNDERFLOW = 2.0**-25 / 0.01

# Nodes whose output precision follows their consumers instead of being decided by a rule.
FREE_OPS = frozenset({"Cast", "Constant", "ConstantOfShape"})

# Inputs the schema allows in float16 but onnxruntime's kernels only register in float32: converting them
# makes a model that passes the checker but fails to load (onnxconverter-common #272, #207).
ORT_FLOAT32_INPUTS: dict[tuple[str, str], frozenset[int]] = {
    ("", "Resize"): frozenset({1, 2}),  # roi, scales
    ("", "Upsample"): frozenset({1}),  # scales
}


# Ops onnxruntime has no float16 kernel for AND whose ONNX function body (ORT's fallback) uses float32
# constants, so a float16 input makes the session fail: "Type parameter (T) of Optype (Add) bound to different
# types" (found by bench/conformance.py on test_mvn; onnxconverter-common and ORT's converter fail it too).
ORT_NO_FP16_KERNEL: frozenset[tuple[str, str]] = frozenset({("", "MeanVarianceNormalization")})


def _float_tensor_attributes(node: ir.Node) -> list[str]:
    """Tensor attributes holding float32 data (TreeEnsemble's nodes_splits...): they must match the input type."""
    names = []
    for name, attr in node.attributes.items():
        if attr.type == ir.AttributeType.TENSOR:
            tensors = [attr.value] if attr.value is not None else []
        elif attr.type == ir.AttributeType.TENSORS:
            tensors = list(attr.value)
        else:
            continue
        if any(t.dtype == ir.DataType.FLOAT for t in tensors):
            names.append(name)
    return names


def is_free(node: ir.Node) -> bool:
    return node.op_type in FREE_OPS and node.domain in ("", "ai.onnx")


@dataclass
class WeightRange:
    """Range of a constant tensor, measured once however many nodes read it."""

    name: str
    abs_max: float
    overflows: bool
    all_underflow: bool


@dataclass
class ClassifyResult:
    plan: PrecisionPlan
    node_slots: dict[int, frozenset[int]] = field(default_factory=dict)  # node id -> input slots that go fp16
    output_slots: dict[int, frozenset[int]] = field(default_factory=dict)  # node id -> output slots that go fp16
    clamped: dict[int, WeightRange] = field(default_factory=dict)  # constant value id -> range (clamp option)
    ranges: WeightRanges | None = None  # measured once per model, reused by every candidate of a search


class WeightRanges:
    def __init__(self) -> None:
        self._cache: dict[int, WeightRange | None] = {}

    def of(self, value: ir.Value) -> WeightRange | None:
        key = id(value)
        if key not in self._cache:
            self._cache[key] = _measure(value)
        return self._cache[key]


def constant_tensor(value: ir.Value) -> ir.TensorProtocol | None:
    """The tensor behind an initializer or a Constant node's output; None for computed values."""
    if value.const_value is not None and (value.is_initializer() or value.producer() is None):
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].value
    return None


def _measure(value: ir.Value) -> WeightRange | None:
    tensor = constant_tensor(value)
    if tensor is None or tensor.dtype != ir.DataType.FLOAT:
        return None
    array = tensor.numpy()
    if array.size == 0:
        return WeightRange(value.name or "", 0.0, False, False)
    abs_max = float(np.max(np.abs(array)))
    finite_max = abs_max if np.isfinite(abs_max) else float(np.max(np.abs(array[np.isfinite(array)]), initial=0.0))
    return WeightRange(
        name=value.name or "",
        abs_max=abs_max,
        overflows=finite_max > FP16_MAX,
        all_underflow=0.0 < abs_max < FP16_UNDERFLOW,
    )


def classify(model: ir.Model, index: GraphIndex, types: ElementTypes, options: ConversionOptions) -> ClassifyResult:
    """Decide every non-free node that touches a float32 tensor."""
    result = ClassifyResult(PrecisionPlan())
    ranges = result.ranges = WeightRanges()
    opsets = model.opset_imports
    op_blocks = set(options.op_block_list or [])
    op_includes = set(options.op_include_list) if options.op_include_list is not None else None
    labels = index.labels
    dtype_of = types.by_id  # plain dict lookups: this loop runs once per node of graphs with 100k+ nodes
    f32 = ir.DataType.FLOAT
    for node, graph_label in index.nodes:
        if is_free(node):
            continue
        inputs = [(i, v) for i, v in enumerate(node.inputs) if v is not None]
        in_types = [dtype_of.get(id(v)) for _, v in inputs]
        out_types = [dtype_of.get(id(v)) for v in node.outputs]
        if f32 not in in_types and f32 not in out_types:
            continue
        float_in = [i for (i, _), t in zip(inputs, in_types, strict=True) if t == f32]
        float_out = [i for i, t in enumerate(out_types) if t == f32]

        def decide(precision: Precision, rule: Rule, detail: str = "", *, node=node, graph_label=graph_label) -> None:
            result.plan.decisions[id(node)] = NodeDecision(
                labels[id(node)], node.op_type, node.domain, graph_label, precision, rule, detail
            )

        values = [v for _, v in inputs] + list(node.outputs)
        if types.non_tensor and any(id(v) in types.non_tensor for v in values):
            decide(Precision.FP32, Rule.NON_TENSOR_TYPE, "has sequence/optional/map inputs or outputs")
            continue
        unknown = [v.name for v, t in zip(values, in_types + out_types, strict=True) if t is None]
        if unknown:
            decide(Precision.FP32, Rule.UNKNOWN_TYPE, f"element type unknown for {', '.join(map(str, unknown))}")
            continue
        if id(node) in index.control_flow:
            decide(Precision.FP32, Rule.CONTROL_FLOW, "inputs/outputs kept; body nodes converted on their own")
            continue
        version = opsets.get("" if node.domain == "ai.onnx" else node.domain)
        signature = op_signatures.lookup(node.domain, node.op_type, version) if version is not None else None
        if signature is None:
            domain = node.domain or "ai.onnx"
            decide(Precision.FP32, Rule.UNKNOWN_OP, f"no schema for {domain}::{node.op_type} at opset {version}")
            continue
        if options.node_blocks.match(node.name or ""):
            decide(Precision.FP32, Rule.NODE_BLOCK_LIST, "name matches node_block_list")
            continue
        if node.op_type in op_blocks:
            decide(Precision.FP32, Rule.OP_BLOCK_LIST, f"{node.op_type} is in op_block_list")
            continue
        if op_includes is not None and node.op_type not in op_includes:
            decide(Precision.FP32, Rule.NOT_IN_OP_INCLUDE_LIST, f"{node.op_type} is not in op_include_list")
            continue
        if options.node_include_list is not None and not options.node_includes.match(node.name or ""):
            decide(Precision.FP32, Rule.NOT_IN_NODE_INCLUDE_LIST, "name does not match node_include_list")
            continue

        forced = options.forced_fp32.get(labels[id(node)])
        if forced is not None:
            decide(Precision.FP32, forced[0], forced[1])
            continue
        domain = "" if node.domain == "ai.onnx" else node.domain
        if (domain, node.op_type) in ORT_NO_FP16_KERNEL and not table_rules_out_float16(options.provider, domain, node):
            decide(Precision.FP32, Rule.NO_FP16_KERNEL, f"onnxruntime has no float16 kernel for {node.op_type}")
            continue
        tensor_attrs = _float_tensor_attributes(node) if node.attributes else []
        if tensor_attrs:
            decide(
                Precision.FP32,
                Rule.FLOAT_TENSOR_ATTRIBUTE,
                f"float32 tensor attributes {', '.join(tensor_attrs)} must keep the type of the inputs",
            )
            continue
        kept_float = ORT_FLOAT32_INPUTS.get((domain, node.op_type), frozenset())
        in16 = frozenset(
            i
            for i in float_in
            if (s := signature.input_slot(i)) is not None and s.allows_float16 and i not in kept_float
        )
        out16 = frozenset(i for i in float_out if (s := signature.output_slot(i)) is not None and s.allows_float16)
        if not in16 and not out16:
            decide(Precision.FP32, Rule.NO_FP16_IN_SCHEMA, f"{node.op_type} has no float16 type for its float tensors")
            continue
        kernel_context = NodeKernelContext(options.provider, domain, version, signature) if options.provider else None
        if kernel_context and (verdict := no_cuda_float16_kernel(node, kernel_context)):
            decide(verdict.precision, verdict.rule, verdict.detail)
            continue

        overflow = underflow = None
        clamped: list[tuple[ir.Value, WeightRange]] = []
        for i in sorted(in16):
            weight = ranges.of(node.inputs[i])
            if weight is None:
                continue
            if weight.overflows:
                if options.clamp_weights:
                    clamped.append((node.inputs[i], weight))
                else:
                    overflow = weight
                    break
            elif weight.all_underflow:
                underflow = weight
                break
        if overflow is not None:
            decide(
                Precision.FP32,
                Rule.WEIGHT_OVERFLOW,
                f"weight '{overflow.name}' has |value| up to {overflow.abs_max:.6g} > {FP16_MAX:g} (float16 max)",
            )
            continue
        if underflow is not None:
            decide(
                Precision.FP32,
                Rule.WEIGHT_UNDERFLOW,
                f"weight '{underflow.name}' has |value| at most {underflow.abs_max:.3g} < {FP16_UNDERFLOW:.3g}: "
                "float16 would lose over 1% of every value (subnormal or 0)",
            )
            continue
        result.node_slots[id(node)] = in16
        result.output_slots[id(node)] = out16
        if clamped:
            for value, weight in clamped:
                result.clamped[id(value)] = weight
            names = ", ".join(f"'{w.name}' (|max| {w.abs_max:.6g})" for _, w in clamped)
            decide(Precision.FP16, Rule.WEIGHT_CLAMPED, f"clamped to ±{FP16_MAX:g}: {names}")
        else:
            decide(Precision.FP16, Rule.CONVERTED)
    return result
