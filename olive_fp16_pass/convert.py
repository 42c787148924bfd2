"""Apply a precision plan: retype tensors, convert constants, insert the fewest Casts.

Each float32 tensor gets one precision, set by its producer: the producing node's plan for computed
tensors, `keep_io_types` for graph inputs, and for "free" producers (initializers, Constant, ConstantOfShape,
an existing Cast to float) whatever all their consumers need, so that a constant is stored once in the
precision it is used in. Every consumer that needs the other precision reads one shared Cast placed right
after the producer. That is one Cast per tensor crossing a precision boundary, which is the lower bound, and
since Casts only ever sit between a producer and its consumers, no Cast feeds another Cast.

Everything is linear in the size of the graph: no copies of the model, no repeated scans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from olive_fp16_pass.classify import FP16_MAX, ClassifyResult, WeightRanges, constant_tensor, is_free
from olive_fp16_pass.element_types import ElementTypes
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.options import ConversionOptions

F32 = ir.DataType.FLOAT
F16 = ir.DataType.FLOAT16
ANY = "any"  # the consumer accepts either precision (Cast input, Shape-like ops)
_DTYPE_ATTR_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike"})


@dataclass
class ConvertStats:
    casts_inserted: int = 0
    initializers_converted: int = 0
    constants_converted: int = 0
    values_retyped: int = 0
    cast_nodes: list[str] = field(default_factory=list)
    renamed_outputs: list[str] = field(default_factory=list)


class _Names:
    """Fresh names that clash with no node or value name anywhere in the model."""

    def __init__(self, index: GraphIndex) -> None:
        self.used: set[str] = set()
        self._next: dict[str, int] = {}  # per base, the next suffix to try: O(1) for bases used thousands of times
        for graph in index.graphs:
            self.used.update(v.name for v in (*graph.inputs, *graph.outputs, *graph.initializers.values()) if v.name)
            for node in graph:
                if node.name:
                    self.used.add(node.name)
                self.used.update(v.name for v in node.outputs if v.name)

    def fresh(self, base: str) -> str:
        name, k = base, self._next.get(base, 0)
        if k:
            name = f"{base}_{k}"
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self._next[base] = k + 1
        self.used.add(name)
        return name


def _to_float16(array: np.ndarray, clamp: bool) -> np.ndarray:
    if clamp:
        array = np.clip(array, -FP16_MAX, FP16_MAX)
    with np.errstate(over="ignore"):
        return array.astype(np.float16)


@dataclass
class Assignment:
    """The precision of every float tensor, and for each tensor what each of its consumers needs."""

    float_values: list[ir.Value]
    assigned: dict[int, ir.DataType]
    uses_with_wants: Callable[[ir.Value], Iterator[tuple[tuple[str, object, int], object]]]

    def fp16_values(self) -> list[ir.Value]:
        return [v for v in self.float_values if self.assigned[id(v)] == F16]


def assign_precisions(
    model: ir.Model,
    index: GraphIndex,
    types: ElementTypes,
    classified: ClassifyResult,
    options: ConversionOptions,
) -> Assignment:
    main = model.graph
    main_inputs = {id(v) for v in main.inputs}

    def want(node: ir.Node, index: int, value: ir.Value) -> ir.DataType | str | None:
        if is_free(node):
            return ANY
        slots = classified.node_slots.get(id(node))
        if slots is not None and index in slots:  # a float16 slot of a node converted to float16
            outs = classified.output_slots[id(node)]
            if not outs and len(slots) == 1 and node.op_type not in _DTYPE_ATTR_OPS:
                return ANY  # e.g. Shape, ArgMax: reads either precision, no float output to keep consistent
            return F16
        return types.get(value)

    # Output slots of every graph, by value: graph outputs are consumers too.
    output_slots: dict[int, list[tuple[ir.Graph, int]]] = {}
    for graph in index.graphs:
        for i, value in enumerate(graph.outputs):
            output_slots.setdefault(id(value), []).append((graph, i))

    def output_want(graph: ir.Graph, index: int, value: ir.Value) -> ir.DataType | str | None:
        dtype = types.get(value)
        if graph is not main or dtype != F32:
            return dtype
        if id(value) in main_inputs:
            return ANY  # a pass-through input/output follows the input's keep_io_types
        return F32 if options.keeps_io(value.name or "") else F16

    def uses_with_wants(value: ir.Value):
        for node, index in value.uses():
            yield ("node", node, index), want(node, index, value)
        for graph, index in output_slots.get(id(value), ()):
            yield ("output", graph, index), output_want(graph, index, value)

    float_values: list[ir.Value] = []
    seen: set[int] = set()

    def visit(value: ir.Value | None) -> None:
        if value is not None and id(value) not in seen and types.get(value) in (F32, F16):
            seen.add(id(value))
            float_values.append(value)

    for graph in index.graphs:
        for value in (*graph.inputs, *graph.initializers.values()):
            visit(value)
    for node, _ in index.nodes:
        for value in node.outputs:
            visit(value)

    assigned: dict[int, ir.DataType] = {}
    for value in float_values:
        dtype = types.get(value)
        if dtype == F16:
            assigned[id(value)] = F16
            continue
        producer = value.producer()
        if id(value) in main_inputs:
            assigned[id(value)] = F32 if options.keeps_io(value.name or "") else F16
        elif producer is None and not value.is_initializer():
            assigned[id(value)] = F32  # subgraph input: control-flow interfaces stay float32
        elif producer is None or is_free(producer):
            assigned[id(value)] = _free_precision(value, producer, uses_with_wants(value), classified)
        else:
            outs = classified.output_slots.get(id(producer), frozenset())
            assigned[id(value)] = F16 if value.index() in outs else F32
    return Assignment(float_values, assigned, uses_with_wants)


def _redirect(
    model: ir.Model, names: _Names, value: ir.Value, new: ir.Value, uses, suffix: str, stats: ConvertStats
) -> None:
    """Point `uses` of `value` at `new`; a main-graph output keeps its name (the old tensor is renamed)."""
    main = model.graph
    for kind, owner, index in uses:
        if kind == "node":
            owner.replace_input_with(index, new)
        elif owner is main:
            original = value.name
            value.name = names.fresh(f"{original}_{suffix}")
            new.name = original
            owner.outputs[index] = new
            stats.renamed_outputs.append(original or "")
        else:
            owner.outputs[index] = new


def apply_plan(
    model: ir.Model,
    index: GraphIndex,
    types: ElementTypes,
    classified: ClassifyResult,
    options: ConversionOptions,
) -> ConvertStats:
    stats = ConvertStats()
    assignment = assign_precisions(model, index, types, classified, options)
    float_values, assigned, uses_with_wants = assignment.float_values, assignment.assigned, assignment.uses_with_wants

    # 2. Retype tensors and rewrite constants.
    for value in float_values:
        if types.get(value) != F32 or assigned[id(value)] != F16:
            continue
        stats.values_retyped += 1
        if value.type is not None or value.is_graph_input() or value.is_graph_output():
            value.type = ir.TensorType(F16)  # no value_info is invented for tensors that had none
        producer = value.producer()
        clamp = id(value) in classified.clamped
        if producer is None:
            tensor = value.const_value
            if tensor is not None:
                value.const_value = ir.Tensor(_to_float16(tensor.numpy(), clamp), name=tensor.name)
                stats.initializers_converted += 1
        elif producer.op_type == "Cast":
            producer.attributes["to"] = ir.AttrInt64("to", F16)
        elif producer.op_type == "Constant":
            tensor = constant_tensor(value)
            array = tensor.numpy() if tensor is not None else _constant_float_attr(producer)
            for name in ("value", "value_float", "value_floats"):
                producer.attributes.pop(name, None)
            producer.attributes["value"] = ir.AttrTensor("value", ir.Tensor(_to_float16(array, clamp)))
            stats.constants_converted += 1
        elif producer.op_type == "ConstantOfShape":
            attr = producer.attributes.get("value")
            array = attr.value.numpy() if attr is not None else np.zeros(1, np.float32)
            producer.attributes["value"] = ir.AttrTensor("value", ir.Tensor(_to_float16(array, clamp)))
        elif producer.op_type in _DTYPE_ATTR_OPS:
            producer.attributes["dtype"] = ir.AttrInt64("dtype", F16)

    # 3. One Cast per tensor and target precision, shared by all consumers that need it.
    names = _Names(index)
    first_nodes = {id(graph): (next(iter(graph), None)) for graph in index.graphs}
    for value in float_values:
        have = assigned[id(value)]
        need_other = [(use, w) for use, w in uses_with_wants(value) if w not in (ANY, None, have)]
        if not need_other:
            continue
        target = F32 if have == F16 else F16
        base = value.name or "tensor"
        cast_out = ir.Value(
            name=names.fresh(f"{base}_{target.name.lower()}"), type=ir.TensorType(target), shape=value.shape
        )
        cast = ir.Node(
            "",
            "Cast",
            [value],
            [ir.AttrInt64("to", target)],
            outputs=[cast_out],
            name=names.fresh(f"{base}_cast_{target.name.lower()}"),
        )
        _insert_after_producer(value, cast, first_nodes)
        stats.casts_inserted += 1
        stats.cast_nodes.append(cast.name)
        _redirect(model, names, value, cast_out, [use for use, _ in need_other], have.name.lower(), stats)
    return stats


def apply_emulation(
    model: ir.Model,
    index: GraphIndex,
    types: ElementTypes,
    classified: ClassifyResult,
    options: ConversionOptions,
) -> ConvertStats:
    """Turn `model` into a float32 model that computes what the float16 candidate would, storage-wise.

    Every tensor that is float16 in the candidate is rounded to float16 where it is produced (a Cast to
    float16 and back), and every consumer that would read a Cast to float16 reads a rounded copy. Overflow
    to inf, loss of small values and rounding then show exactly where they would on a GPU's float16 storage,
    which the CPU execution provider hides (it runs float16 ops in float32 behind Casts). Sessions on the
    result must disable graph optimizations, or ORT may fold the rounding Cast pairs away.
    """
    stats = ConvertStats()
    assignment = assign_precisions(model, index, types, classified, options)
    names = _Names(index)
    first_nodes = {id(graph): (next(iter(graph), None)) for graph in index.graphs}
    for value in assignment.float_values:
        if types.get(value) != F32:
            continue
        uses = list(assignment.uses_with_wants(value))
        if assignment.assigned[id(value)] == F16:
            rounded_uses = [use for use, _ in uses]
            if value.is_initializer() and value.producer() is None and value.const_value is not None:
                clamp = id(value) in classified.clamped
                tensor = value.const_value
                value.const_value = ir.Tensor(_to_float16(tensor.numpy(), clamp).astype(np.float32), name=tensor.name)
                stats.initializers_converted += 1
                continue
        else:
            rounded_uses = [use for use, w in uses if w == F16]
        if not rounded_uses:
            continue
        back = insert_rounding(value, names, first_nodes)
        stats.casts_inserted += 1
        _redirect(model, names, value, back, rounded_uses, "unrounded", stats)
    return stats


def insert_rounding(value: ir.Value, names: _Names, first_nodes: dict[int, ir.Node | None]) -> ir.Value:
    """Cast(float16) -> Cast(float) right after `value` is produced; returns the rounded float32 copy.

    The one way every float16-storage emulation (our plan, any float16 model, the search's gated model)
    rounds a tensor.
    """
    base = value.name or "tensor"
    half = ir.Value(name=names.fresh(f"{base}_f16"), type=ir.TensorType(F16), shape=value.shape)
    back = ir.Value(name=names.fresh(f"{base}_rounded"), type=ir.TensorType(F32), shape=value.shape)
    down = ir.Node("", "Cast", [value], [ir.AttrInt64("to", F16)], outputs=[half], name=names.fresh(f"{base}_r16"))
    up = ir.Node("", "Cast", [half], [ir.AttrInt64("to", F32)], outputs=[back], name=names.fresh(f"{base}_r32"))
    _insert_after_producer(value, down, first_nodes)
    down.graph.insert_after(down, up)
    return back


def _constant_float_attr(node: ir.Node) -> np.ndarray:
    attrs = node.attributes
    if "value_float" in attrs:
        return np.array(attrs["value_float"].value, dtype=np.float32)
    return np.array(attrs["value_floats"].value, dtype=np.float32)


def _free_precision(value, producer, uses, classified: ClassifyResult) -> ir.DataType:
    """A constant or an existing Cast takes the precision all its consumers need, or stays float32."""
    wants = [w for _, w in uses]
    if F16 not in wants or any(w not in (F16, ANY) for w in wants):
        return F32
    if (producer is None or producer.op_type == "Constant") and id(value) not in classified.clamped:
        weight = (classified.ranges or WeightRanges()).of(value)
        if weight is not None and weight.overflows:
            return F32
    return F16


def _insert_after_producer(value: ir.Value, cast: ir.Node, first_nodes: dict[int, ir.Node | None]) -> None:
    producer = value.producer()
    if producer is not None:
        producer.graph.insert_after(producer, cast)
        return
    graph = value.graph
    first = first_nodes.get(id(graph))
    if first is None:
        graph.append(cast)
        first_nodes[id(graph)] = cast
    else:
        graph.insert_before(first, cast)


__all__ = ["ConvertStats", "apply_emulation", "apply_plan", "assign_precisions"]
