"""Decide once what a precision plan changes in the graph: which tensors go float16, which Casts, where.

Each float32 tensor gets one precision, set by its producer: the producing node's plan for computed
tensors, `keep_io_types` for graph inputs, and for "free" producers (initializers, Constant, ConstantOfShape,
an existing Cast to float) whatever all their consumers need, so that a constant is stored once in the
precision it is used in. Every consumer that needs the other precision reads one shared Cast placed right
after the producer. That is one Cast per tensor crossing a precision boundary, which is the lower bound, and
since Casts only ever sit between a producer and its consumers, no Cast feeds another Cast.

`plan_edits` turns that into a list of edits (retyped tensors with their constant rewrites, and each Cast with
its names and the uses it takes over); the two writers, `convert.write_ir` (onnx-ir) and
`emit_proto.write_proto` (protobuf), are loops over the same list, so they cannot disagree. Everything is
linear in the size of the graph: no copies of the model, no repeated scans.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from olive_fp16_pass.classify import ClassifyResult, WeightRanges, constant_tensor, is_free
from olive_fp16_pass.element_types import ElementTypes
from olive_fp16_pass.graph_edit import F16, F32, FreshNames, OutputSlots, Use, to_float16
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.options import ConversionOptions

ANY = "any"  # the consumer accepts either precision (Cast input, Shape-like ops)
DTYPE_ATTR_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike"})

Want = ir.DataType | str | None  # what a use needs: F16, F32, ANY, or None (not a float tensor)


@dataclass
class Assignment:
    """The precision of every float tensor, and for each tensor what each of its consumers needs."""

    float_values: list[ir.Value]
    assigned: dict[int, ir.DataType]
    uses_with_wants: _Wants  # value -> its uses, each with what it needs

    def want(self, kind: str, owner: ir.Node | ir.Graph, slot: int, value: ir.Value) -> Want:
        """What one use of `value` needs: slot `slot` of node `owner`, or output `slot` of graph `owner`."""
        wants = self.uses_with_wants
        return wants.of_node(owner, slot, value) if kind == "node" else wants.of_output(owner, value)

    def fp16_values(self) -> list[ir.Value]:
        return [v for v in self.float_values if self.assigned[id(v)] == F16]


class _Wants:
    """What each use of a tensor needs under one classification (node slots, model outputs, keep_io_types)."""

    def __init__(
        self, model: ir.Model, index: GraphIndex, types: ElementTypes, classified: ClassifyResult, options
    ) -> None:
        self.main = model.graph
        self.main_inputs = {id(v) for v in self.main.inputs}
        self.types, self.classified, self.options = types, classified, options
        self.outputs = OutputSlots(index.graphs)

    def of_node(self, node: ir.Node, slot: int, value: ir.Value) -> Want:
        if is_free(node):
            return ANY
        slots = self.classified.node_slots.get(id(node))
        if slots is not None and slot in slots:  # a float16 slot of a node converted to float16
            outs = self.classified.output_slots[id(node)]
            if not outs and len(slots) == 1 and node.op_type not in DTYPE_ATTR_OPS:
                return ANY  # e.g. Shape, ArgMax: reads either precision, no float output to keep consistent
            return F16
        return self.types.get(value)

    def of_output(self, graph: ir.Graph, value: ir.Value) -> Want:
        dtype = self.types.get(value)
        if graph is not self.main or dtype != F32:
            return dtype
        if id(value) in self.main_inputs:
            return ANY  # a pass-through input/output follows the input's keep_io_types
        return F32 if self.options.keeps_io(value.name or "") else F16

    def __call__(self, value: ir.Value) -> Iterator[tuple[Use, Want]]:
        for node, i in value.uses():
            yield ("node", node, i), self.of_node(node, i, value)
        for graph, i in self.outputs.of(value):
            yield ("output", graph, i), self.of_output(graph, value)


def float_values(index: GraphIndex, types: ElementTypes) -> list[ir.Value]:
    """Every float32/float16 tensor once: graph inputs and initializers first, then node outputs in order."""
    found: list[ir.Value] = []
    seen: set[int] = set()

    def visit(value: ir.Value | None) -> None:
        if value is not None and id(value) not in seen and types.get(value) in (F32, F16):
            seen.add(id(value))
            found.append(value)

    for graph in index.graphs:
        for value in (*graph.inputs, *graph.initializers.values()):
            visit(value)
    for node, _ in index.nodes:
        for value in node.outputs:
            visit(value)
    return found


def assign_precisions(
    model: ir.Model,
    index: GraphIndex,
    types: ElementTypes,
    classified: ClassifyResult,
    options: ConversionOptions,
    values: list[ir.Value] | None = None,
) -> Assignment:
    """The precision every float tensor is stored in under `classified` (see the module docstring).
    `values`: `float_values(index, types)`, if the caller keeps it (the gated emulation, once per candidate)."""
    wants = _Wants(model, index, types, classified, options)
    if values is None:
        values = float_values(index, types)
    assigned: dict[int, ir.DataType] = {}
    for value in values:
        producer = value.producer()
        if types.get(value) == F16:
            dtype = F16
        elif id(value) in wants.main_inputs:
            dtype = F32 if options.keeps_io(value.name or "") else F16
        elif producer is None and not value.is_initializer():
            dtype = F32  # subgraph input: control-flow interfaces stay float32
        elif producer is None or is_free(producer):
            dtype = _free_precision(value, producer, wants(value), classified)
        else:
            dtype = F16 if value.index() in classified.output_slots.get(id(producer), frozenset()) else F32
        assigned[id(value)] = dtype
    return Assignment(values, assigned, wants)


def _free_precision(value, producer, uses, classified: ClassifyResult) -> ir.DataType:
    """A constant or an existing Cast takes the precision all its consumers need, or stays float32."""
    wanted = [w for _, w in uses]
    if F16 not in wanted or any(w not in (F16, ANY) for w in wanted):
        return F32
    if (producer is None or producer.op_type == "Constant") and id(value) not in classified.clamped:
        weight = (classified.ranges or WeightRanges()).of(value)
        if weight is not None and weight.overflows:
            return F32
    return F16


@dataclass(frozen=True)
class Retype:
    """A float32 tensor that becomes float16, and where its data or type attribute lives.

    `holder`: "initializer" (its tensor), "Constant" / "ConstantOfShape" (the `value` attribute), "Cast" (`to`),
    "dtype" (a Random*/EyeLike `dtype`), or None (computed: only its type changes).
    """

    value: ir.Value
    holder: str | None
    clamp: bool = False  # clip to ±65504 (`clamp_weights`) before storing as float16

    def float16_data(self) -> np.ndarray:
        """The float16 data of a constant holder, read from the untouched float32 source."""
        if self.holder == "ConstantOfShape":
            attr = self.value.producer().attributes.get("value")
            array = attr.value.numpy() if attr is not None else np.zeros(1, np.float32)
        else:
            array = constant_tensor(self.value).numpy()
        return to_float16(array, self.clamp)


@dataclass(frozen=True)
class CastEdit:
    """One inserted Cast of `value` to `target`, shared by the uses it takes over.

    When a model output is among them, the Cast's output takes the output's name (`output` is then the original
    name) and `value` is renamed to `renamed`; `kept` are the uses that go on reading `value`.
    """

    value: ir.Value
    target: ir.DataType
    output: str
    node: str
    taken: tuple[Use, ...]
    kept: tuple[Use, ...]
    renamed: str | None = None


@dataclass
class Edits:
    """Everything a conversion changes, decided once; the writers only carry it out."""

    retypes: list[Retype] = field(default_factory=list)
    casts: list[CastEdit] = field(default_factory=list)

    def stats(self) -> ConvertStats:
        return ConvertStats(
            casts_inserted=len(self.casts),
            initializers_converted=sum(r.holder == "initializer" for r in self.retypes),
            constants_converted=sum(r.holder == "Constant" for r in self.retypes),
            values_retyped=len(self.retypes),
        )


@dataclass
class ConvertStats:
    casts_inserted: int = 0
    initializers_converted: int = 0
    constants_converted: int = 0
    values_retyped: int = 0


def _holder(value: ir.Value) -> str | None:
    producer = value.producer()
    if producer is None:
        return "initializer" if value.const_value is not None else None
    if producer.op_type in ("Cast", "Constant", "ConstantOfShape"):
        return producer.op_type
    return "dtype" if producer.op_type in DTYPE_ATTR_OPS else None


def _cast_edit(value: ir.Value, have: ir.DataType, uses: list[tuple[Use, Want]], names: FreshNames, main):
    taken = tuple(use for use, w in uses if w not in (ANY, None, have))
    if not taken:
        return None
    target = F32 if have == F16 else F16
    base = value.name or "tensor"
    output = names.fresh(f"{base}_{target.name.lower()}")
    node = names.fresh(f"{base}_cast_{target.name.lower()}")
    moved = set(taken)  # uses hash by identity of their node or graph
    kept = tuple(use for use, _ in uses if use not in moved)
    renamed = None
    if any(kind == "output" and owner is main for kind, owner, _ in taken):
        renamed = names.fresh(f"{value.name}_{have.name.lower()}")
        output = value.name or ""  # the model output keeps its name: the Cast's output takes it
    return CastEdit(value, target, output, node, taken, kept, renamed)


def plan_edits(
    model: ir.Model,
    index: GraphIndex,
    types: ElementTypes,
    classified: ClassifyResult,
    options: ConversionOptions,
) -> Edits:
    """The retypes and Casts that carry out `classified` on `model` (which is only read)."""
    assignment = assign_precisions(model, index, types, classified, options)
    edits = Edits()
    for value in assignment.float_values:
        if types.get(value) == F32 and assignment.assigned[id(value)] == F16:
            edits.retypes.append(Retype(value, _holder(value), id(value) in classified.clamped))
    names = FreshNames(index)
    for value in assignment.float_values:
        uses = list(assignment.uses_with_wants(value))
        edit = _cast_edit(value, assignment.assigned[id(value)], uses, names, model.graph)
        if edit is not None:
            edits.casts.append(edit)
    return edits


__all__ = [
    "ANY",
    "DTYPE_ATTR_OPS",
    "Assignment",
    "CastEdit",
    "ConvertStats",
    "Edits",
    "Retype",
    "assign_precisions",
    "float_values",
    "plan_edits",
]
