"""Which tensors of an operator may be float16, read from the operator schemas.

The converter never guesses from op names: for every input and output slot it asks the schema of the op at
the model's opset whether `tensor(float16)` is allowed there. Slots with a fixed `tensor(float)` type (Resize
`scales`, LayerNormalization `Mean`, ...) therefore stay float32 by construction, which is the root cause of
several known converter bugs (onnxconverter-common #306, #272, #207). Standard ops come from `onnx.defs`;
other domains (com.microsoft, ai.onnx.ml, ...) from the schemas onnxruntime registers.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import onnx
import onnx.defs

FLOAT16_TYPE = "tensor(float16)"
FLOAT_TYPE = "tensor(float)"


@dataclass(frozen=True)
class Slot:
    """One formal input or output: the allowed element types and the constraint name that binds it."""

    name: str
    constraint: str | None  # type-parameter name ("T"), None for a fixed type such as tensor(float)
    allowed: frozenset[str]
    variadic: bool
    homogeneous: bool = True

    @property
    def allows_float16(self) -> bool:
        return FLOAT16_TYPE in self.allowed


@dataclass(frozen=True)
class OpSignature:
    domain: str
    op_type: str
    since_version: int
    inputs: tuple[Slot, ...]
    outputs: tuple[Slot, ...]
    attribute_names: frozenset[str]

    def input_slot(self, index: int) -> Slot | None:
        return _slot_at(self.inputs, index)

    def output_slot(self, index: int) -> Slot | None:
        return _slot_at(self.outputs, index)


def _slot_at(slots: tuple[Slot, ...], index: int) -> Slot | None:
    if index < len(slots):
        return slots[index]
    if slots and slots[-1].variadic:
        return slots[-1]
    return None


def _normalize_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _make_slots(params, constraints: dict[str, frozenset[str]], type_attr: str, variadic_value) -> tuple[Slot, ...]:
    slots = []
    for param in params:
        type_str = getattr(param, type_attr)
        if type_str in constraints:
            slot = Slot(param.name, type_str, constraints[type_str], param.option == variadic_value)
        else:
            slot = Slot(param.name, None, frozenset([type_str]), param.option == variadic_value)
        if slot.variadic and not getattr(param, "is_homogeneous", getattr(param, "isHomogeneous", True)):
            slot = Slot(slot.name, slot.constraint, slot.allowed, True, homogeneous=False)
        slots.append(slot)
    return tuple(slots)


def _from_onnx_schema(schema: onnx.defs.OpSchema) -> OpSignature:
    constraints = {c.type_param_str: frozenset(c.allowed_type_strs) for c in schema.type_constraints}
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    return OpSignature(
        domain=_normalize_domain(schema.domain),
        op_type=schema.name,
        since_version=schema.since_version,
        inputs=_make_slots(schema.inputs, constraints, "type_str", variadic),
        outputs=_make_slots(schema.outputs, constraints, "type_str", variadic),
        attribute_names=frozenset(schema.attributes),
    )


@functools.cache
def _ort_schemas() -> dict[tuple[str, str], list]:
    """onnxruntime's registered schemas by (domain, op), newest first; empty if onnxruntime is absent."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
    except ImportError:  # pragma: no cover - onnxruntime is a dependency through the cpu/gpu extras
        return {}
    table: dict[tuple[str, str], list] = {}
    for schema in ort_c.get_all_operator_schema():
        table.setdefault((_normalize_domain(schema.domain), schema.name), []).append(schema)
    for entries in table.values():
        entries.sort(key=lambda s: s.since_version, reverse=True)
    return table


def _from_ort_schema(schema) -> OpSignature:
    constraints = {c.type_param_str: frozenset(c.allowed_type_strs) for c in schema.type_constraints}
    variadic = type(schema).FormalParameterOption.Variadic
    return OpSignature(
        domain=_normalize_domain(schema.domain),
        op_type=schema.name,
        since_version=schema.since_version,
        inputs=_make_slots(schema.inputs, constraints, "typeStr", variadic),
        outputs=_make_slots(schema.outputs, constraints, "typeStr", variadic),
        attribute_names=frozenset(schema.attributes),
    )


# Quantization boundaries keep their scales' type. Since opset 19 the schemas let QuantizeLinear's input and
# scale (and DequantizeLinear's scale and output) be float16, so a schema-driven converter would rewrite every
# scale of a QDQ model in float16: scales written by a calibration in float32 would be rounded, and QDQ
# consumers (TensorRT, ORT's QDQ transformers, quantization tools) expect the model's own types. The Q/DQ nodes
# therefore read and write float32, like the opset-13 schemas say, and the float ops between them convert,
# with Casts at the DequantizeLinear outputs and QuantizeLinear inputs.
_KEEP_TYPES: frozenset[tuple[str, str]] = frozenset(
    (domain, op) for domain in ("", "com.microsoft") for op in ("QuantizeLinear", "DequantizeLinear")
)


def _without_float16(signature: OpSignature) -> OpSignature:
    def strip(slots: tuple[Slot, ...]) -> tuple[Slot, ...]:
        drop = {FLOAT16_TYPE, "tensor(bfloat16)"}
        return tuple(Slot(s.name, s.constraint, s.allowed - drop, s.variadic, s.homogeneous) for s in slots)

    return dataclasses.replace(signature, inputs=strip(signature.inputs), outputs=strip(signature.outputs))


@functools.cache
def lookup(domain: str, op_type: str, opset_version: int) -> OpSignature | None:
    """The schema of `op_type` as seen by a model importing `domain` at `opset_version`, or None if unknown."""
    signature = _lookup(_normalize_domain(domain), op_type, opset_version)
    if signature is not None and (signature.domain, op_type) in _KEEP_TYPES:
        return _without_float16(signature)
    return signature


def _lookup(domain: str, op_type: str, opset_version: int) -> OpSignature | None:
    try:
        return _from_onnx_schema(onnx.defs.get_schema(op_type, opset_version, domain))
    except onnx.defs.SchemaError:
        pass
    for schema in _ort_schemas().get((domain, op_type), []):
        if schema.since_version <= opset_version:
            return _from_ort_schema(schema)
    return None
