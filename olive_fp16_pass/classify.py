"""The classifier: runs the rule chain (rules.py) over every node and gathers the decisions into a plan.

Cast, Constant and ConstantOfShape are not classified: their output precision simply follows what their
consumers need (see precision_edits.py). Nodes that touch no float32 tensor are not in the plan either.

The mixed-precision search classifies one model for many candidates that differ only in the nodes it
forces into float32. So a model is classified once without them (`classify_base`), and `with_forced` lays a
candidate's forced nodes over that: a forced node takes the search's decision unless a rule that comes
before the search's rule in `RULES` decided it. That is what running the whole chain would give, read off
each node's deciding rule position, so the order exists once, in `rules.RULES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from olive_fp16_pass.element_types import ElementTypes
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import (
    OVERRULABLE,
    CustomRule,
    ForcedDecision,
    NodeDecision,
    Precision,
    PrecisionPlan,
)
from olive_fp16_pass.rules import (
    FREE_OPS,
    RULES,
    Decision,
    ModelContext,
    NodeContext,
    NodeRule,
    active_rules,
    forced_decision,
    search_forced,
)
from olive_fp16_pass.weight_ranges import (  # re-exported: the converter and the search read them here
    FP16_MAX,
    FP16_MIN_NORMAL,
    FP16_UNDERFLOW,
    WeightRange,
    WeightRanges,
    constant_tensor,
)

# The origin a node kept by one of the user's own rules (extra_rules) has in the report.
USER_RULE_ORIGIN = "extra_rules"


def is_free(node: ir.Node) -> bool:
    return node.op_type in FREE_OPS and node.domain in ("", "ai.onnx")


@dataclass
class ClassifyResult:
    plan: PrecisionPlan
    node_slots: dict[int, frozenset[int]] = field(default_factory=dict)  # node id -> input slots that go fp16
    output_slots: dict[int, frozenset[int]] = field(default_factory=dict)  # node id -> output slots that go fp16
    clamped: dict[int, WeightRange] = field(default_factory=dict)  # constant value id -> range (clamp option)
    ranges: WeightRanges | None = None  # measured once per model, reused by every candidate of a search
    positions: dict[int, int] = field(default_factory=dict)  # node id -> position in `rules` of the deciding rule
    node_clamped: dict[int, tuple[tuple[ir.Value, WeightRange], ...]] = field(default_factory=dict)
    rules: tuple[NodeRule, ...] = RULES
    context: ModelContext | None = None
    node_ids: dict[str, list[int]] = field(default_factory=dict)  # label -> ids of the nodes with that label
    # node id -> (input, output) float16 slots of float32 nodes whose rule the search may overrule (OVERRULABLE)
    overrulable: dict[int, tuple[frozenset[int], frozenset[int]]] = field(default_factory=dict)


def classify(
    model: ir.Model,
    index: GraphIndex,
    types: ElementTypes,
    options: ConversionOptions,
    forced: Mapping[str, ForcedDecision] | None = None,
    *,
    rules: tuple[NodeRule, ...] = RULES,
) -> ClassifyResult:
    """Decide every non-free node that touches a float32 tensor; `forced`: the search's float32 nodes."""
    return with_forced(classify_base(model, index, types, options, rules=rules), forced or {})


def classify_base(
    model: ir.Model,
    index: GraphIndex,
    types: ElementTypes,
    options: ConversionOptions,
    *,
    rules: tuple[NodeRule, ...] = RULES,
) -> ClassifyResult:
    """The plan with no node forced by the search (the rule that reads them never answers here)."""
    context = ModelContext(model, index, types, options)
    result = ClassifyResult(PrecisionPlan(), ranges=context.ranges, rules=rules, context=context)
    decisions = result.plan.decisions
    labels = index.labels
    dtype_of = types.by_id  # plain dict lookups: this loop runs once per node of graphs with 100k+ nodes
    f32 = ir.DataType.FLOAT
    chain = active_rules(rules, context)
    for node, graph_label in index.nodes:
        if is_free(node):
            continue
        inputs = [(i, v) for i, v in enumerate(node.inputs) if v is not None]
        in_types = [dtype_of.get(id(v)) for _, v in inputs]
        out_types = [dtype_of.get(id(v)) for v in node.outputs]
        if f32 not in in_types and f32 not in out_types:
            continue
        node_context = NodeContext(context, node, graph_label, inputs, in_types, out_types)
        position, decision = first_answer(chain, node, node_context)
        context.note_ranges(node, node_context)
        key = id(node)
        decisions[key] = NodeDecision(
            labels[key],
            node.op_type,
            node.domain,
            graph_label,
            decision.precision,
            decision.rule,
            decision.detail,
            USER_RULE_ORIGIN if isinstance(decision.rule, CustomRule) else None,
        )
        result.positions[key] = position
        result.node_ids.setdefault(labels[key], []).append(key)
        if decision.rule in OVERRULABLE and decision.precision is Precision.FP32 and not _reads_overflow(node_context):
            result.overrulable[key] = node_context.fp16_slots()
        if decision.precision is Precision.FP16:
            result.node_slots[key], result.output_slots[key] = node_context.fp16_slots()
            if decision.clamped:
                result.node_clamped[key] = decision.clamped
                for value, weight in decision.clamped:
                    result.clamped[id(value)] = weight
    return result


def _reads_overflow(context: NodeContext) -> bool:
    """Whether a constant input is beyond float16's range (a sentinel aside): such a node stays float32."""
    ranges = context.model.ranges
    for _, value in context.inputs:
        weight = ranges.of(value)
        if weight is not None and weight.overflows and weight.sentinel is None:
            return True
    return False


def first_answer(chain: list[tuple[int, NodeRule]], node: ir.Node, context: NodeContext) -> tuple[int, Decision]:
    """The first rule of `chain` ((position, rule) pairs) that answers for `node`, and its position."""
    for position, rule in chain:
        decision = rule(node, context)
        if decision is not None:
            return position, decision
    raise AssertionError(f"no rule decided for {context.label}: the chain must end with `rules.converted`")


def with_forced(base: ClassifyResult, forced: Mapping[str, ForcedDecision]) -> ClassifyResult:
    """`base` with the search's forced nodes in float32, as if the whole chain had run with them."""
    if not forced:
        return base
    if search_forced not in base.rules:
        raise ValueError("forced nodes need a rule chain that holds rules.search_forced")
    forced_position = base.rules.index(search_forced)
    result = ClassifyResult(
        PrecisionPlan(dict(base.plan.decisions)),
        dict(base.node_slots),
        dict(base.output_slots),
        base.clamped,
        base.ranges,
        base.positions,
        base.node_clamped,
        base.rules,
        base.context,
        base.node_ids,
        base.overrulable,
    )
    unclamped = False
    decisions = result.plan.decisions
    for label, record in forced.items():
        for node_id in base.node_ids.get(label, ()):
            if record.precision is Precision.FP16:  # over a precision rule only (OVERRULABLE), never another
                if node_id in base.overrulable:
                    old = decisions[node_id]
                    decisions[node_id] = NodeDecision(
                        old.node, old.op_type, old.domain, old.graph, Precision.FP16, record.rule, record.detail
                    )
                    result.node_slots[node_id], result.output_slots[node_id] = base.overrulable[node_id]
                continue
            if base.positions[node_id] < forced_position:
                continue  # decided by a rule that comes before the search's
            old = decisions[node_id]
            decision = forced_decision(record)
            decisions[node_id] = NodeDecision(
                old.node,
                old.op_type,
                old.domain,
                old.graph,
                decision.precision,
                decision.rule,
                decision.detail,
                record.origin.value,
            )
            result.node_slots.pop(node_id, None)
            result.output_slots.pop(node_id, None)
            unclamped = unclamped or node_id in base.node_clamped
    if unclamped:  # only the weights of float16 nodes are clamped
        result.clamped = {
            id(value): weight
            for node_id, pairs in base.node_clamped.items()
            if node_id in result.node_slots
            for value, weight in pairs
        }
    return result


__all__ = [
    "FP16_MAX",
    "FP16_MIN_NORMAL",
    "FP16_UNDERFLOW",
    "ClassifyResult",
    "WeightRange",
    "WeightRanges",
    "classify",
    "classify_base",
    "constant_tensor",
    "first_answer",
    "is_free",
    "with_forced",
]
