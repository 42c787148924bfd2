"""The onnx-ir writer: carry out the edits of precision_edits.py on an onnx-ir model, in place.

Used for models read from a path (the Olive passes, the command line), models with external data and the
mixed-precision search's candidates; emit_proto.py writes the same edits into a ModelProto. (The search
emulates its candidates in one gated model instead: switchable.py.)
"""

from __future__ import annotations

import onnx_ir as ir

from olive_fp16_pass.graph_edit import F16, Placement, redirect
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.precision_edits import CastEdit, Edits, Retype


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


__all__ = ["write_ir"]
