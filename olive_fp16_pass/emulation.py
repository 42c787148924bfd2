"""Float16-storage emulation of ANY float16/mixed model, for honest accuracy checks without a GPU.

The mixed-precision search emulates its own candidates in one gated float32 model (switchable.py). This
module emulates a model that is already float16 (ours, Olive's `OnnxFloatToFloat16`,
onnxconverter-common's, a user's): every float16 tensor becomes float32, rounded to float16 where it is
produced (a Cast to float16 and back), so overflow to inf and lost precision show as on a GPU, while the CPU
execution provider would compute the float16 graph in float32 and hide them. Run the result with ORT graph
optimizations disabled (they may fold the rounding pairs).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from olive_fp16_pass import element_types, ir_serde
from olive_fp16_pass.graph_edit import F16, F32, FreshNames, OutputSlots, Placement, insert_rounding, redirect
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.precision_edits import DTYPE_ATTR_OPS


def _to_f32(tensor: ir.TensorProtocol) -> ir.Tensor:
    return ir.Tensor(tensor.numpy().astype(np.float32), name=tensor.name)


def emulate_float16_storage(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 model computing what `model` computes with float16 storage; inputs/outputs become float32."""
    ir_model = ir_serde.deserialize_model(model)
    index = GraphIndex(ir_model)
    types = element_types.infer(ir_model, index)
    main = ir_model.graph
    names = FreshNames(index)
    placement = Placement(index.graphs)
    outputs = OutputSlots(index.graphs)

    def round_after(value: ir.Value) -> None:
        """Round `value` where it is produced and move every reader (outputs too) to the rounded copy."""
        uses = list(outputs.uses(value))
        back = insert_rounding(value, names, placement)
        redirect(main, value, back, uses, lambda old: names.fresh(f"{old}_unrounded"))

    for graph in index.graphs:
        for value in graph.initializers.values():
            if value.const_value is not None and value.const_value.dtype == F16:
                value.const_value = _to_f32(value.const_value)
                value.type = ir.TensorType(F32)
        for value in list(graph.inputs):
            if types.get(value) == F16:
                value.type = ir.TensorType(F32)
                if graph is main:
                    round_after(value)
    for node, _ in list(index.nodes):
        if node.op_type == "Cast" and node.attributes["to"].value == F16:
            node.attributes["to"] = ir.AttrInt64("to", F32)
        elif node.op_type == "Constant" and "value" in node.attributes and node.attributes["value"].value.dtype == F16:
            node.attributes["value"] = ir.AttrTensor("value", _to_f32(node.attributes["value"].value))
        elif node.op_type == "ConstantOfShape" and "value" in node.attributes:
            if node.attributes["value"].value.dtype == F16:
                node.attributes["value"] = ir.AttrTensor("value", _to_f32(node.attributes["value"].value))
        elif node.op_type in DTYPE_ATTR_OPS and "dtype" in node.attributes and node.attributes["dtype"].value == F16:
            node.attributes["dtype"] = ir.AttrInt64("dtype", F32)
        for out in node.outputs:
            if out.name and types.get(out) == F16:  # an omitted optional output ('') cannot be read
                if out.type is not None:
                    out.type = ir.TensorType(F32)
                round_after(out)
    for graph in index.graphs:
        for value in graph.outputs:
            if value.type is not None and value.dtype == F16:
                value.type = ir.TensorType(F32)
    if "" not in ir_model.opset_imports and "ai.onnx" not in ir_model.opset_imports:
        ir_model.opset_imports[""] = 13  # the rounding Casts need the default domain
    return ir_serde.serialize_model(ir_model)
