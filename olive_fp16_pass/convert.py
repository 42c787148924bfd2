"""The onnx-ir writer: carry out the edits of precision_edits.py on an onnx-ir model, in place.

Used for models read from a path (the Olive passes, the command line), models with external data and the
mixed-precision search's candidates; emit_proto.py writes the same edits into a ModelProto. This module also
builds the float32 storage-emulation model of a plan (`apply_emulation`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from olive_fp16_pass.classify import ClassifyResult
from olive_fp16_pass.element_types import ElementTypes
from olive_fp16_pass.graph_edit import F16, F32, FreshNames, Placement, insert_rounding, redirect, to_float16
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_edits import CastEdit, ConvertStats, Edits, Retype, assign_precisions


def write_ir(model: ir.Model, index: GraphIndex, edits: Edits) -> None:
    """Retype tensors, rewrite constants and insert the Casts of `edits` into `model`."""
    for edit in edits.retypes:
        _retype(edit)
    placement = Placement(index.graphs)
    last: dict[int, ir.Node] = {}  # producer id -> its last Cast: Casts follow their producer in edit order
    for edit in edits.casts:
        cast = _insert_cast(model.graph, edit, placement, last)
        if edit.value.producer() is not None:
            last[id(edit.value.producer())] = cast


def _retype(edit: Retype) -> None:
    value, holder = edit.value, edit.holder
    if value.type is not None or value.is_graph_input() or value.is_graph_output():
        value.type = ir.TensorType(F16)  # no value_info is invented for tensors that had none
    producer = value.producer()
    if holder == "initializer":
        value.const_value = ir.Tensor(edit.float16_data(), name=value.const_value.name)
    elif holder == "Cast":
        producer.attributes["to"] = ir.AttrInt64("to", F16)
    elif holder == "Constant":
        data = edit.float16_data()
        for name in ("value", "value_float", "value_floats"):
            producer.attributes.pop(name, None)
        producer.attributes["value"] = ir.AttrTensor("value", ir.Tensor(data))
    elif holder == "ConstantOfShape":
        producer.attributes["value"] = ir.AttrTensor("value", ir.Tensor(edit.float16_data()))
    elif holder == "dtype":
        producer.attributes["dtype"] = ir.AttrInt64("dtype", F16)


def _insert_cast(main: ir.Graph, edit: CastEdit, placement: Placement, last: dict[int, ir.Node]) -> ir.Node:
    value = edit.value
    out = ir.Value(name=edit.output, type=ir.TensorType(edit.target), shape=value.shape)
    cast = ir.Node("", "Cast", [value], [ir.AttrInt64("to", edit.target)], outputs=[out], name=edit.node)
    producer = value.producer()
    placement.after_producer(value, cast, last.get(id(producer)) if producer is not None else None)
    redirect(main, value, out, edit.taken, lambda _: edit.renamed)
    return cast


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
    names = FreshNames(index)
    placement = Placement(index.graphs)
    for value in assignment.float_values:
        if types.get(value) != F32:
            continue
        uses = list(assignment.uses_with_wants(value))
        if assignment.assigned[id(value)] == F16:
            rounded_uses = [use for use, _ in uses]
            if value.is_initializer() and value.producer() is None and value.const_value is not None:
                clamp = id(value) in classified.clamped
                tensor = value.const_value
                value.const_value = ir.Tensor(to_float16(tensor.numpy(), clamp).astype(np.float32), name=tensor.name)
                stats.initializers_converted += 1
                continue
        else:
            rounded_uses = [use for use, w in uses if w == F16]
        if not rounded_uses:
            continue
        back = insert_rounding(value, names, placement)
        stats.casts_inserted += 1
        redirect(model.graph, value, back, rounded_uses, lambda old: names.fresh(f"{old}_unrounded"))
    return stats


__all__ = ["apply_emulation", "write_ir"]
