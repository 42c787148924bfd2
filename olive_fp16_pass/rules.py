"""The rules that decide, node by node, whether a node may run in float16, each a small function.

A rule reads one node and its context and answers a `Decision` (a precision, the rule that decided, the
detail the report shows) or None to let the next rule decide. `RULES` is THE order: the first rule that
answers decides, and the classifier (classify.py), the Float16 conversion, the mixed-precision search and its
gated emulation all use this tuple, so a node has one reason whichever path asks. A new rule is one function
inserted at its place in the tuple; each rule has a unit test of its own (tests/test_rules.py).

The order, and why:
  structure   non-tensor values, unknown element types, control-flow interfaces, ops with no schema: nothing
              can be said about such nodes, so they come first and nothing overrides them;
  user lists  node/op block and include lists: what the user asked for comes before any measurement;
  user rules  the user's own rules (`extra_rules`), which can only keep nodes in float32, for the same reason;
  search      nodes the mixed-precision search forces into float32 (it never overrides the rules above);
  kernels     ops onnxruntime cannot run with float16 inputs, float32 tensor attributes;
  schema      the op's schema has no float16 type for its float tensors;
  CUDA        for a model meant for the CUDA EP, no CUDA float16 kernel at the model's opset (its table);
  depth       opt-in (max_reduction_elements): a reduction, MatMul, Gemm or Conv accumulating over more
              elements than the user allows; before the weight rules, so clamping cannot take it to float16;
  ranges      a weight beyond float16's range (or clamped with `clamp_weights`); a factor stored with over 1%
              error (all subnormal), an addend (bias, epsilon) only when float16 turns all of it into 0; a
              masking sentinel beyond the range (sentinels.py) is saturated to ±65504 instead;
  movement    a zero-FLOP data-movement node (Identity, Reshape, Transpose, Gather...) whose float neighbours
              all stay float32 by the rules above: in float16 it would only add two Casts. Last, because it
              reads its neighbours' decisions by those rules (never its own), so it cannot cascade;
  converted   everything else runs in float16.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from olive_fp16_pass import cuda_kernels, op_signatures
from olive_fp16_pass.element_types import ElementTypes
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.name_match import NamePatterns
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import CustomRule, ForcedDecision, Precision, Rule
from olive_fp16_pass.weight_ranges import (
    FP16_MAX,
    FP16_ROUNDS_TO_ZERO,
    UNDERFLOW_REL_ERROR,
    WeightRange,
    WeightRanges,
)

F32 = ir.DataType.FLOAT

# Nodes whose output precision follows their consumers instead of being decided by a rule (classify.py).
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


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule's answer for one node. `clamped`: the weights a float16 node reads clamped to ±65504."""

    precision: Precision
    rule: Rule | CustomRule
    detail: str = ""
    clamped: tuple[tuple[ir.Value, WeightRange], ...] = ()


def keep_fp32(rule: Rule | CustomRule, detail: str) -> Decision:
    return Decision(Precision.FP32, rule, detail)


class ModelContext:
    """What the rules may read about the model being converted, built once per conversion.

    It holds the per-model state the options must not: the name matchers bound to this model's node names
    (which remember which entries matched), the weight ranges, and the search's forced nodes.
    """

    def __init__(
        self,
        model: ir.Model,
        index: GraphIndex,
        types: ElementTypes,
        options: ConversionOptions,
        *,
        ranges: WeightRanges | None = None,
        forced: Mapping[str, ForcedDecision] | None = None,
    ) -> None:
        self.model = model
        self.index = index
        self.types = types
        self.options = options
        self.opsets = model.opset_imports
        self.node_names = {node.name for node, _ in index.nodes if node.name}
        self.node_blocks = NamePatterns("node_block_list", options.node_block_list or (), self.node_names)
        self.node_includes = (
            NamePatterns("node_include_list", options.node_include_list, self.node_names)
            if options.node_include_list is not None
            else None
        )
        self.op_blocks = frozenset(options.op_block_list or ())
        self.op_includes = frozenset(options.op_include_list) if options.op_include_list is not None else None
        self.ranges = ranges if ranges is not None else WeightRanges()
        self.forced: Mapping[str, ForcedDecision] = forced or {}
        # labels of the nodes max_reduction_elements could not check (no static shape): said in the report
        self.depth_unknown: list[str] = []
        # value id -> what makes it leave float16's range: the outputs of nodes that read an overflowing
        # weight, and of magnitude-preserving nodes downstream of them (see `note_ranges`)
        self.beyond_fp16: dict[int, str] = {}
        # float32_neighbours' memory: node id -> its neighbours' precision by the rules before it, and
        # movement node id -> the float32 neighbours of its island (None: one neighbour is not float32)
        self.base_precision: dict[int, Precision] = {}
        self.islands: dict[int, list[str] | None] = {}

    def note_ranges(self, node: ir.Node, context: NodeContext) -> None:
        """Mark the outputs of `node` as beyond float16 when it reads an overflowing (unclamped) weight or a
        value already marked, unless the op bounds its output. A graph property, whichever rule decided the
        node, so the search's forced nodes do not change what their consumers are told."""
        if node.op_type in BOUNDED_OPS and context.domain == "":
            return
        beyond = self.beyond_fp16
        cause = None
        for (_, value), dtype in zip(context.inputs, context.in_types, strict=True):
            if id(value) in beyond:
                cause = beyond[id(value)]
                break
            if dtype == F32:
                weight = self.ranges.of(value)
                if (
                    weight is not None
                    and weight.overflows
                    and weight.sentinel is None  # saturated in float16: the mask stays within range
                    and not self.options.clamp_weights
                ):
                    cause = f"weight '{weight.name}' (|max| {weight.abs_max:.6g})"
                    break
        if cause is not None:
            for value in node.outputs:
                beyond[id(value)] = cause

    def option_warnings(self) -> list[str]:
        """Entries of the user's lists that matched nothing: said in the report, never silently ignored."""
        messages = self.options.op_type_warnings(node.op_type for node, _ in self.index.nodes)
        if self.depth_unknown:
            shown = ", ".join(f"'{label}'" for label in self.depth_unknown[:5])
            more = f" and {len(self.depth_unknown) - 5} more" if len(self.depth_unknown) > 5 else ""
            messages.append(
                f"max_reduction_elements: not applied to {len(self.depth_unknown)} nodes whose accumulation depth "
                f"the model's static shapes do not tell ({shown}{more}); run onnx shape inference on the model "
                "first to check them"
            )
        for option in ("op_include_list", "node_include_list"):
            if getattr(self.options, option) == ():
                messages.append(f"{option} is empty: no node goes to float16")
        for patterns in (self.node_blocks, self.node_includes):
            unmatched = patterns.unmatched() if patterns is not None else []
            if not unmatched:
                continue
            # did they name nodes the rules never look at (Cast, Constant, integer-only ops)?
            probe = NamePatterns(patterns.option, unmatched, self.node_names)
            for name in self.node_names:
                probe.match(name)
            for entry in unmatched:
                if entry in probe.matched:
                    messages.append(
                        f"{patterns.option}: '{entry}' names only nodes with no float32 computation of their own "
                        "(Cast, Constant or integer ops, whose precision follows their consumers): nothing to do"
                    )
                else:
                    messages.append(f"{patterns.option}: '{entry}' matches no node name in the model")
        return messages


class NodeContext:
    """One node's facts, computed once and shared by the rules that ask (schema lookups are lazy)."""

    __slots__ = ("_fp16", "_signature", "domain", "graph", "in_types", "inputs", "label", "model", "node", "out_types")

    def __init__(
        self,
        model: ModelContext,
        node: ir.Node,
        graph: str,
        inputs: list[tuple[int, ir.Value]],
        in_types: list[ir.DataType | None],
        out_types: list[ir.DataType | None],
    ) -> None:
        self.model = model
        self.node = node
        self.label = model.index.labels[id(node)]
        self.graph = graph  # path of the node's graph: "main", "main/If_3/then_branch"
        self.inputs = inputs  # (slot, value) of the inputs that are present
        self.in_types = in_types
        self.out_types = out_types
        # the node's domain with "ai.onnx" spelled "" (the two name the same default domain)
        self.domain = "" if node.domain == "ai.onnx" else node.domain
        self._signature: op_signatures.OpSignature | bool | None = False
        self._fp16: tuple[frozenset[int], frozenset[int]] | None = None

    @classmethod
    def of(cls, model: ModelContext, node: ir.Node, graph: str) -> NodeContext:
        """The context of any node (for tests and user code; the classifier builds it in its hot loop)."""
        inputs = [(i, v) for i, v in enumerate(node.inputs) if v is not None]
        dtype_of = model.types.by_id
        return cls(
            model,
            node,
            graph,
            inputs,
            [dtype_of.get(id(v)) for _, v in inputs],
            [dtype_of.get(id(v)) for v in node.outputs],
        )

    @property
    def opset(self) -> int | None:
        return self.model.opsets.get(self.domain)

    @property
    def signature(self) -> op_signatures.OpSignature | None:
        if self._signature is False:
            version = self.opset
            node = self.node
            self._signature = op_signatures.lookup(node.domain, node.op_type, version) if version is not None else None
        return self._signature

    def fp16_slots(self) -> tuple[frozenset[int], frozenset[int]]:
        """Input and output slots that may go float16: float32 now, float16 allowed by the schema and by
        onnxruntime's kernels."""
        if self._fp16 is None:
            signature = self.signature
            kept_float = ORT_FLOAT32_INPUTS.get((self.domain, self.node.op_type), frozenset())
            inputs = frozenset(
                i
                for (i, _), t in zip(self.inputs, self.in_types, strict=True)
                if t == F32 and (s := signature.input_slot(i)) is not None and s.allows_float16 and i not in kept_float
            )
            outputs = frozenset(
                i
                for i, t in enumerate(self.out_types)
                if t == F32 and (s := signature.output_slot(i)) is not None and s.allows_float16
            )
            self._fp16 = (inputs, outputs)
        return self._fp16


NodeRule = Callable[[ir.Node, NodeContext], Decision | None]


# -- structure --------------------------------------------------------------------------------------------------
def non_tensor_type(node: ir.Node, context: NodeContext) -> Decision | None:
    """Sequence/optional/map values: the converter retypes tensors only."""
    non_tensor = context.model.types.non_tensor
    if non_tensor and any(id(v) in non_tensor for v in (*(v for _, v in context.inputs), *node.outputs)):
        return keep_fp32(Rule.NON_TENSOR_TYPE, "has sequence/optional/map inputs or outputs")
    return None


def unknown_type(node: ir.Node, context: NodeContext) -> Decision | None:
    """A value whose element type inference could not tell: converting it would be a guess."""
    if None not in context.in_types and None not in context.out_types:
        return None
    values = [v for _, v in context.inputs] + list(node.outputs)
    unknown = [v.name for v, t in zip(values, context.in_types + context.out_types, strict=True) if t is None]
    return keep_fp32(Rule.UNKNOWN_TYPE, f"element type unknown for {', '.join(map(str, unknown))}")


def control_flow(node: ir.Node, context: NodeContext) -> Decision | None:
    """If/Loop/Scan keep their interface; their body nodes are classified on their own."""
    if id(node) in context.model.index.control_flow:
        return keep_fp32(Rule.CONTROL_FLOW, "inputs/outputs kept; body nodes converted on their own")
    return None


def unknown_op(node: ir.Node, context: NodeContext) -> Decision | None:
    """No schema at the model's opset: which tensors may be float16 is unknown."""
    if context.signature is None:
        domain = node.domain or "ai.onnx"
        return keep_fp32(Rule.UNKNOWN_OP, f"no schema for {domain}::{node.op_type} at opset {context.opset}")
    return None


# -- user lists ---------------------------------------------------------------------------------------------------
def node_block_list(node: ir.Node, context: NodeContext) -> Decision | None:
    if context.model.node_blocks.match(node.name or ""):
        return keep_fp32(Rule.NODE_BLOCK_LIST, "name matches node_block_list")
    return None


def op_block_list(node: ir.Node, context: NodeContext) -> Decision | None:
    if node.op_type in context.model.op_blocks:
        return keep_fp32(Rule.OP_BLOCK_LIST, f"{node.op_type} is in op_block_list")
    return None


def op_include_list(node: ir.Node, context: NodeContext) -> Decision | None:
    includes = context.model.op_includes
    if includes is not None and node.op_type not in includes:
        return keep_fp32(Rule.NOT_IN_OP_INCLUDE_LIST, f"{node.op_type} is not in op_include_list")
    return None


def node_include_list(node: ir.Node, context: NodeContext) -> Decision | None:
    includes = context.model.node_includes
    if includes is not None and not includes.match(node.name or ""):
        return keep_fp32(Rule.NOT_IN_NODE_INCLUDE_LIST, "name does not match node_include_list")
    return None


# -- the user's own rules ---------------------------------------------------------------------------------------
def user_rule(node: ir.Node, context: NodeContext) -> Decision | None:
    """The user's rules (`extra_rules`, user_rules.py) in their order: the first reason keeps the node float32,
    reported under that rule's name. A rule that fails or answers something else is a clear error naming it."""
    for rule in context.model.options.extra_rules or ():
        try:
            reason = rule.decide(node, context)
        except Float16Error:
            raise
        except Exception as exc:
            raise Float16Error(
                f"extra_rules: rule '{rule.name}' failed on node '{context.label}': {type(exc).__name__}: {exc}"
            ) from exc
        if reason is None:
            continue
        if not isinstance(reason, str) or not reason:
            raise Float16Error(
                f"extra_rules: rule '{rule.name}' answered {reason!r} for node '{context.label}': expected a reason "
                "(a non-empty string) to keep it in float32, or None"
            )
        return keep_fp32(rule.name, reason)
    return None


# -- the search ---------------------------------------------------------------------------------------------------
def search_forced(node: ir.Node, context: NodeContext) -> Decision | None:
    """Nodes the mixed-precision search keeps in float32, with its own rule and detail."""
    forced = context.model.forced.get(context.label)
    return forced_decision(forced) if forced is not None else None


def forced_decision(forced: ForcedDecision) -> Decision:
    return keep_fp32(forced.rule, forced.detail)


# -- kernels ------------------------------------------------------------------------------------------------------
def no_fp16_kernel(node: ir.Node, context: NodeContext) -> Decision | None:
    """Hand-written exceptions; under CUDA the kernel table's reason replaces them where it covers the op."""
    if (context.domain, node.op_type) in ORT_NO_FP16_KERNEL and not cuda_kernels.table_rules_out_float16(
        context.model.options.provider, context.domain, node
    ):
        return keep_fp32(Rule.NO_FP16_KERNEL, f"onnxruntime has no float16 kernel for {node.op_type}")
    return None


def float_tensor_attribute(node: ir.Node, context: NodeContext) -> Decision | None:
    """Tensor attributes holding float32 data (TreeEnsemble's nodes_splits...) must match the input type."""
    if not node.attributes:
        return None
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
    if names:
        return keep_fp32(
            Rule.FLOAT_TENSOR_ATTRIBUTE,
            f"float32 tensor attributes {', '.join(names)} must keep the type of the inputs",
        )
    return None


# -- schema -------------------------------------------------------------------------------------------------------
def no_fp16_in_schema(node: ir.Node, context: NodeContext) -> Decision | None:
    inputs, outputs = context.fp16_slots()
    if not inputs and not outputs:
        return keep_fp32(Rule.NO_FP16_IN_SCHEMA, f"{node.op_type} has no float16 type for its float tensors")
    return None


def no_cuda_float16_kernel(node: ir.Node, context: NodeContext) -> Decision | None:
    """For a model meant for the CUDA EP: an op with no CUDA float16 kernel at its opset (cuda_kernels.py)."""
    verdict = cuda_kernels.no_cuda_float16_kernel(
        node,
        cuda_kernels.NodeKernelContext(
            context.model.options.provider, context.domain, context.opset, context.signature
        ),
    )
    return keep_fp32(verdict.rule, verdict.detail) if verdict is not None else None


# -- depth --------------------------------------------------------------------------------------------------------
REDUCE_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2"})
DEEP_OPS = REDUCE_OPS | {"MatMul", "Gemm", "Conv"}


def deep_reduction(node: ir.Node, context: NodeContext) -> Decision | None:
    """Opt-in: float16 accumulation error grows with the number of terms summed, so with
    `max_reduction_elements` a node summing over more elements stays float32 (ModelOpt AutoCast's
    reduction-depth rule). The depth comes from the model's static shapes; unknown: not applied, reported."""
    limit = context.model.options.max_reduction_elements
    if limit is None or context.domain != "" or node.op_type not in DEEP_OPS:
        return None
    depth = accumulation_depth(node)
    if depth is None:
        context.model.depth_unknown.append(context.label)
        return None
    if depth > limit:
        return keep_fp32(Rule.DEEP_REDUCTION, f"accumulates over {depth} elements > {limit} (max_reduction_elements)")
    return None


def _dims(value: ir.Value | None) -> tuple[int | None, ...] | None:
    """Static dims of a value (None for a symbolic one), from its tensor when constant, else its shape."""
    if value is None:
        return None
    tensor = value.const_value
    shape = tensor.shape if tensor is not None else value.shape
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in shape)


def _constant_ints(value: ir.Value | None) -> list[int] | None:
    """The integers of a constant input (an initializer or a Constant node's `value`), or None."""
    if value is None:
        return None
    tensor = value.const_value
    producer = value.producer()
    if tensor is None and producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        tensor = producer.attributes["value"].value
    return [int(v) for v in tensor.numpy().reshape(-1)] if tensor is not None else None


def accumulation_depth(node: ir.Node) -> int | None:
    """How many products or elements one output element sums, or None when the static shapes do not say."""
    op = node.op_type
    if op in REDUCE_OPS:
        dims = _dims(node.inputs[0])
        if dims is None:
            return None
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            axes = _constant_ints(node.inputs[1])
            if axes is None:
                return None
        elif "axes" in node.attributes:
            axes = list(node.attributes["axes"].value)
        else:
            axes = []
        if not axes:
            noop = node.attributes.get("noop_with_empty_axes")
            if noop is not None and noop.value:
                return 1
            axes = list(range(len(dims)))
        sizes = [dims[a] for a in axes if -len(dims) <= a < len(dims)]
        return math.prod(sizes) if len(sizes) == len(axes) and None not in sizes else None
    if op == "Conv":
        weight = _dims(node.inputs[1])
        return math.prod(weight[1:]) if weight and len(weight) > 1 and None not in weight[1:] else None
    a, b = _dims(node.inputs[0]), _dims(node.inputs[1])
    if op == "Gemm":
        trans_a = node.attributes.get("transA")
        trans_b = node.attributes.get("transB")
        from_a = a[0 if trans_a is not None and trans_a.value else 1] if a and len(a) == 2 else None
        from_b = b[1 if trans_b is not None and trans_b.value else 0] if b and len(b) == 2 else None
        return from_a if from_a is not None else from_b
    from_a = a[-1] if a else None  # MatMul: the last axis of A, or the first of B's matrix axes
    from_b = (b[0] if len(b) == 1 else b[-2]) if b else None
    return from_a if from_a is not None else from_b


# -- ranges -------------------------------------------------------------------------------------------------------
# Input slots whose constant is ADDED (a bias, a shift, an epsilon), by (domain, op); None: every input. Float16
# rounds a subnormal value by at most 2**-25, half its smallest step, which is never more than the rounding of
# the float16 operand it is added to or of the float16 sum: an all-subnormal addend costs nothing that storing
# the node's tensors in float16 does not cost already. Keeping such a node in float32 bought nothing but two
# Casts: the folded BatchNorm biases of MobileNetV3/EfficientNet (~1e-8), the 1e-6 epsilon of every T5/Llama
# RMSNorm, ViT's MLP biases (std 1e-6). A factor (Mul, MatMul, Conv weights, Div) is different: its relative
# error becomes the product's, so it keeps the rule.
ADDITIVE_SLOTS: dict[tuple[str, str], frozenset[int] | None] = {
    ("", "Add"): None,
    ("", "Sub"): None,
    ("", "Sum"): None,
    ("", "Conv"): frozenset({2}),
    ("", "ConvTranspose"): frozenset({2}),
    ("", "Gemm"): frozenset({2}),  # C, only while |beta| <= 1 (it scales C's error)
    ("", "BatchNormalization"): frozenset({2, 3}),  # B, and mean (subtracted from X, scaled as X is)
    ("", "LayerNormalization"): frozenset({2}),
    ("", "InstanceNormalization"): frozenset({2}),
    ("", "GroupNormalization"): frozenset({2}),
}


ELEMENTWISE_ADD = frozenset({"Add", "Sub", "Sum"})


def is_additive_slot(node: ir.Node, domain: str, slot: int) -> bool:
    """Whether input `slot` of `node` is only added (see ADDITIVE_SLOTS)."""
    key = (domain, node.op_type)
    if key not in ADDITIVE_SLOTS:
        return False
    slots = ADDITIVE_SLOTS[key]
    if slots is not None and slot not in slots:
        return False
    return node.op_type != "Gemm" or abs(node.attributes.get_float("beta", 1.0)) <= 1.0


def weight_range(node: ir.Node, context: NodeContext) -> Decision | None:
    """A constant input beyond ±65504 keeps the node in float32 (or is clamped, with `clamp_weights`); so does a
    factor that float16 stores with over 1% error (all subnormal), or an addend of which float16 keeps nothing
    (every value rounds to 0). The first such input, in slot order, is the one reported. A masking sentinel
    (-3.4e38 added before a Softmax, sentinels.py) is not an overflow: saturated to ±65504, it masks the same
    in float16."""
    ranges = context.model.ranges
    clamp = context.model.options.clamp_weights
    clamped: list[tuple[ir.Value, WeightRange]] = []
    sentinels: list[tuple[ir.Value, WeightRange]] = []
    for i in sorted(context.fp16_slots()[0]):
        weight = ranges.of(node.inputs[i])
        if weight is None:
            continue
        if weight.overflows:
            if weight.sentinel is not None:
                sentinels.append((node.inputs[i], weight))
                continue
            if not clamp:
                return keep_fp32(
                    Rule.WEIGHT_OVERFLOW,
                    f"weight '{weight.name}' has |value| up to {weight.abs_max:.6g} > {FP16_MAX:g} (float16 max)",
                )
            clamped.append((node.inputs[i], weight))
        elif weight.all_underflow:
            if not is_additive_slot(node, context.domain, i):
                return keep_fp32(
                    Rule.WEIGHT_UNDERFLOW,
                    f"weight '{weight.name}' has |value| at most {weight.abs_max:.3g}, all subnormal in float16, "
                    f"which stores it with {weight.fp16_rel_error:.1%} error (> {UNDERFLOW_REL_ERROR:.0%})",
                )
            if weight.vanishes and node.op_type in ELEMENTWISE_ADD:
                # an epsilon that becomes 0 no longer guards the Sqrt/Div after it: kept, as before, and said
                # (a bias that vanishes is harmless: a bias guards nothing)
                return keep_fp32(
                    Rule.WEIGHT_UNDERFLOW,
                    f"weight '{weight.name}' (|value| at most {weight.abs_max:.3g} < {FP16_ROUNDS_TO_ZERO:.3g}) "
                    "is added but becomes 0 in float16",
                )
    notes = [w.sentinel.detail(f"weight '{w.name}'", f"{np.sign(w.sentinel.value) * FP16_MAX:g}") for _, w in sentinels]
    if clamped:
        names = ", ".join(f"'{w.name}' (|max| {w.abs_max:.6g})" for _, w in clamped)
        detail = "; ".join([f"clamped to ±{FP16_MAX:g}: {names}", *notes])
        return Decision(Precision.FP16, Rule.WEIGHT_CLAMPED, detail, tuple(clamped + sentinels))
    if sentinels:
        return Decision(Precision.FP16, Rule.MASK_SENTINEL, "; ".join(notes), tuple(sentinels))
    return None


# Ops whose float output is bounded whatever the input's magnitude: an out-of-range input stops there.
BOUNDED_OPS = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "Sigmoid",
        "HardSigmoid",
        "Tanh",
        "Softsign",
        "Erf",
        "Sin",
        "Cos",
        "Clip",
        "Sign",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "MeanVarianceNormalization",
        "LpNormalization",
        "Equal",
        "Less",
        "LessOrEqual",
        "Greater",
        "GreaterOrEqual",
        "IsInf",
        "IsNaN",
    }
)


def range_propagated(node: ir.Node, context: NodeContext) -> Decision | None:
    """A node reading a tensor that a weight overflow makes exceed float16 stays float32: otherwise that
    tensor is cast to float16 on its way in and overflows anyway (issue 14.6)."""
    beyond = context.model.beyond_fp16
    if not beyond:
        return None
    for _, value in context.inputs:
        cause = beyond.get(id(value))
        if cause is not None:
            return keep_fp32(Rule.RANGE_PROPAGATED, f"input '{value.name}' may exceed float16: it follows from {cause}")
    return None


# -- data movement ----------------------------------------------------------------------------------------------
# Ops that compute nothing on their float data: they copy, reorder, select or join it.
MOVEMENT_OPS = frozenset(
    {
        "Identity",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Gather",
        "GatherElements",
        "GatherND",
        "Slice",
        "Concat",
        "Split",
        "Expand",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
MAX_ISLAND = 64  # movement nodes looked at around one node; a larger island is left to float16


def float32_neighbours(node: ir.Node, context: NodeContext) -> Decision | None:
    """A data-movement node whose every float neighbour runs in float32 stays float32.

    A LightGBM or scikit-learn graph (skl2onnx, onnxmltools) converted with keep_io_types holds Identity /
    Reshape / Transpose nodes between float32-only ops (TreeEnsemble*, no float16 in their schema) and the
    float32 graph outputs: converted, such a node computes nothing faster and costs a Cast on each side. An
    island of several movement nodes is judged as one. Neighbours are judged by the rules before this one,
    so a compute node is never kept float32 here and one kept island does not make the next one float32.
    """
    if context.domain != "" or node.op_type not in MOVEMENT_OPS:
        return None
    model = context.model
    if id(node) not in model.islands:
        _judge_island(node, model, context.graph)
    names = model.islands[id(node)]
    if not names:
        return None
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return keep_fp32(
        Rule.FLOAT32_NEIGHBOURS,
        f"moves data between float32 neighbours only ({shown}): in float16 it would add 2 Casts and save nothing",
    )


def _judge_island(start: ir.Node, model: ModelContext, graph: str) -> None:
    """Walk the movement nodes connected to `start` by float tensors; record their float32 neighbours, or None."""
    island, todo, names = {id(start): start}, [start], []
    verdict: list[str] | None = names
    while todo and verdict is not None:
        node = todo.pop()
        for value in _float_values(node, model):
            for neighbour in _neighbours(value, node, model):
                if isinstance(neighbour, str):
                    names.append(neighbour)
                elif neighbour is None or len(island) > MAX_ISLAND:
                    verdict = None
                elif id(neighbour) not in island and neighbour.op_type in MOVEMENT_OPS and neighbour.domain == "":
                    island[id(neighbour)] = neighbour
                    todo.append(neighbour)
                elif id(neighbour) not in island and _precision_before(neighbour, model, graph) is Precision.FP32:
                    names.append(f"'{model.index.labels[id(neighbour)]}'")
                elif id(neighbour) not in island:
                    verdict = None
    for node_id in island:
        model.islands[node_id] = list(dict.fromkeys(verdict)) if verdict else None


def _float_values(node: ir.Node, model: ModelContext) -> list[ir.Value]:
    """The float32 tensors `node` reads (constants aside: they take their reader's precision) and writes."""
    dtype = model.types.by_id
    inputs = [v for v in node.inputs if v is not None and dtype.get(id(v)) == F32 and not _is_constant(v)]
    return inputs + [v for v in node.outputs if dtype.get(id(v)) == F32]


def _is_constant(value: ir.Value) -> bool:
    producer = value.producer()
    return value.const_value is not None or (producer is not None and producer.op_type == "Constant")


def _neighbours(value: ir.Value, node: ir.Node, model: ModelContext) -> list[ir.Node | str | None]:
    """The nodes at the other end of `value` from `node`: a node, a graph input/output's name when it stays
    float32 (keep_io_types), or None for what cannot be judged (float16 I/O, another graph, a Cast)."""
    graph = node.graph
    ends: list[ir.Node | str | None] = []
    producer = value.producer()
    if producer is not node:
        if producer is None:
            ends.append(_io_end(value, model, model.model.graph.inputs, "input"))
        else:
            ends.append(producer)
    ends.extend(user for user, _ in value.uses() if user is not node)
    if value in model.model.graph.outputs:
        ends.append(_io_end(value, model, model.model.graph.outputs, "output"))
    elif graph is not model.model.graph and value in graph.outputs:
        ends.append(None)
    return [end if end is None or isinstance(end, str) or _judgeable(end, graph) else None for end in ends]


def _io_end(value: ir.Value, model: ModelContext, values, kind: str) -> str | None:
    name = value.name or ""
    return f"{kind} '{name}' (keep_io_types)" if value in values and model.options.keeps_io(name) else None


def _judgeable(neighbour: ir.Node, graph: ir.Graph | None) -> bool:
    return neighbour.graph is graph and not (neighbour.op_type in FREE_OPS and neighbour.domain in ("", "ai.onnx"))


def _precision_before(node: ir.Node, model: ModelContext, graph: str) -> Precision:
    """The precision the rules before float32_neighbours give `node` of `graph` (remembered per model)."""
    if id(node) not in model.base_precision:
        context = NodeContext.of(model, node, graph)
        chain = active_rules(RULES[: RULES.index(float32_neighbours)], model)
        decision = next((d for _, rule in chain if (d := rule(node, context)) is not None), None)
        model.base_precision[id(node)] = decision.precision if decision is not None else Precision.FP16
    return model.base_precision[id(node)]


def converted(node: ir.Node, context: NodeContext) -> Decision | None:
    """No rule objected: the node runs in float16."""
    return Decision(Precision.FP16, Rule.CONVERTED)


# Rules that cannot answer for any node of a model, given its context: the classifier leaves them out of its
# loop over that model (a 20k-node graph runs 14 rules per node: skipping the idle ones kept the refactored
# chain as fast as the inline one it replaced). Positions in the chain are unchanged.
IDLE_WHEN: dict[NodeRule, Callable[[ModelContext], bool]] = {
    non_tensor_type: lambda m: not m.types.non_tensor,
    control_flow: lambda m: not m.index.control_flow,
    node_block_list: lambda m: not m.node_blocks.entries,
    op_block_list: lambda m: not m.op_blocks,
    op_include_list: lambda m: m.op_includes is None,
    node_include_list: lambda m: m.node_includes is None,
    user_rule: lambda m: not m.options.extra_rules,
    search_forced: lambda m: not m.forced,
    no_cuda_float16_kernel: lambda m: m.options.provider != cuda_kernels.CUDA,
    deep_reduction: lambda m: m.options.max_reduction_elements is None,
}


def active_rules(rules: tuple[NodeRule, ...], model: ModelContext) -> list[tuple[int, NodeRule]]:
    """(position, rule) of the rules of `rules` that may answer for some node of this model."""
    return [(position, rule) for position, rule in enumerate(rules) if not IDLE_WHEN.get(rule, _never)(model)]


def _never(model: ModelContext) -> bool:
    return False


RULES: tuple[NodeRule, ...] = (
    non_tensor_type,
    unknown_type,
    control_flow,
    unknown_op,
    node_block_list,
    op_block_list,
    op_include_list,
    node_include_list,
    user_rule,
    search_forced,
    no_fp16_kernel,
    float_tensor_attribute,
    no_fp16_in_schema,
    no_cuda_float16_kernel,
    deep_reduction,
    weight_range,
    range_propagated,
    float32_neighbours,
    converted,
)


__all__ = [
    "RULES",
    "Decision",
    "ModelContext",
    "NodeContext",
    "NodeRule",
    "active_rules",
    "converted",
    "keep_fp32",
]
