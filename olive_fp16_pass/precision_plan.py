"""Decisions are data: which precision each node runs in, and why.

Every rule returns records rather than log lines, and the report is built from these records, so a user
can always see which rule kept a node in float32 and the value it measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Precision(str, Enum):
    FP16 = "fp16"
    FP32 = "fp32"


class Rule(str, Enum):
    """Why a node ended up in the precision it has."""

    CONVERTED = "converted"
    OP_BLOCK_LIST = "op_block_list"
    NODE_BLOCK_LIST = "node_block_list"
    NOT_IN_OP_INCLUDE_LIST = "not_in_op_include_list"
    NOT_IN_NODE_INCLUDE_LIST = "not_in_node_include_list"
    WEIGHT_OVERFLOW = "weight_overflow"
    WEIGHT_UNDERFLOW = "weight_underflow"
    WEIGHT_CLAMPED = "weight_clamped"
    # float16 although the weight-underflow rule advised float32: the search's validation showed it accurate
    VALIDATED_FP16 = "validated_fp16"
    MASK_SENTINEL = "mask_sentinel"  # float16 although a tensor is beyond ±65504: its values only mask (sentinels.py)
    RANGE_PROPAGATED = "range_propagated"
    NO_FP16_IN_SCHEMA = "no_fp16_in_schema"
    NO_FP16_KERNEL = "no_fp16_kernel_in_onnxruntime"
    FLOAT_TENSOR_ATTRIBUTE = "float_tensor_attribute"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_TYPE = "unknown_type"
    NON_TENSOR_TYPE = "non_tensor_type"
    CONTROL_FLOW = "control_flow_interface"
    FUSION_BOUNDARY = "fusion_boundary"  # a fused pattern (LayerNorm) must run in its input's precision
    ACTIVATION_OVERFLOW = "activation_overflow"
    ACTIVATION_UNDERFLOW = "activation_underflow"
    ACCURACY = "accuracy"
    DEEP_REDUCTION = "deep_reduction"  # opt-in: accumulates over more than max_reduction_elements
    FLOAT32_NEIGHBOURS = "float32_neighbours"  # zero-FLOP data movement between float32 nodes only


class CustomRule(str):
    """The name of a user-supplied rule (user_rules.py): a plain string that reads like a `Rule` (`.value`), so
    the report treats the user's reasons exactly like ours."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)


@dataclass
class NodeDecision:
    node: str
    op_type: str
    domain: str
    graph: str
    precision: Precision
    rule: Rule | CustomRule
    detail: str = ""
    origin: str | None = None  # for a node forced by a measurement: which stage (an `Origin` value)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["precision"] = self.precision.value
        data["rule"] = self.rule.value
        if self.origin is None:
            del data["origin"]
        return data


class Origin(str, Enum):
    """Which stage of the mixed-precision search forced a node into float32."""

    RANGE = "range"  # a tensor it reads or writes leaves float16's range on the validation data
    CALIBRATION = "calibration"  # the same, measured by calibrated Float16 on its calibration data
    FUSED = "fused"  # moves with a node of its fusion unit that a range rule forced
    ACCURACY = "accuracy"  # the accuracy search's ranking (alone, or moving with its unit)
    FALLBACK = "fallback"  # no candidate met the criteria: every node in float32
    LOAD_CHECK = "load-check"  # onnxruntime would not load the model with it in float16 (load_check.py)
    VALIDATED = "validated"  # float16 over a data-checkable static rule (weight underflow): the search tries it


# Static rules whose float32 advice is about precision on typical data, not about what onnxruntime can run:
# the search may overrule them (a ForcedDecision with precision FP16) when validation shows float16 is accurate.
OVERRULABLE = frozenset({Rule.WEIGHT_UNDERFLOW})


@dataclass(frozen=True)
class ForcedDecision:
    """One node the search keeps in float32: the rule and detail the report shows, and where it came from.

    `moves_with` is the label of the node whose unit brought this one along (None when forced for itself).
    `precision` FP16: the node goes float16 over a rule of `OVERRULABLE` (and only over one of those).
    """

    rule: Rule
    detail: str
    origin: Origin
    moves_with: str | None = None
    precision: Precision = Precision.FP32


@dataclass
class PrecisionPlan:
    """Node decisions keyed by `id(node)`; nodes with no float32 tensor are not in the plan."""

    decisions: dict[int, NodeDecision] = field(default_factory=dict)

    def precision(self, node_id: int) -> Precision | None:
        decision = self.decisions.get(node_id)
        return decision.precision if decision else None

    def fp32_decisions(self) -> list[NodeDecision]:
        return [d for d in self.decisions.values() if d.precision is Precision.FP32]
