"""Element types of every tensor in a model, without shape inference.

The converter only needs to know which tensors are float32. onnx's shape inference does not know contrib ops
and stops at the first unknown op, and ORT's symbolic shape inference is slow on large graphs; propagating
element types alone through the op schemas is linear in the graph and covers every op that has a schema.
Types already recorded in the model (inputs, outputs, value_info) are trusted first.
"""

from __future__ import annotations

import onnx_ir as ir

from olive_fp16_pass import op_signatures
from olive_fp16_pass.graph_walk import GraphIndex, subgraphs

_TYPE_STRS = {
    f"tensor({name})": dtype
    for name, dtype in {
        "float": ir.DataType.FLOAT,
        "float16": ir.DataType.FLOAT16,
        "bfloat16": ir.DataType.BFLOAT16,
        "double": ir.DataType.DOUBLE,
        "int8": ir.DataType.INT8,
        "int16": ir.DataType.INT16,
        "int32": ir.DataType.INT32,
        "int64": ir.DataType.INT64,
        "uint8": ir.DataType.UINT8,
        "uint16": ir.DataType.UINT16,
        "uint32": ir.DataType.UINT32,
        "uint64": ir.DataType.UINT64,
        "bool": ir.DataType.BOOL,
        "string": ir.DataType.STRING,
    }.items()
}
# Ops whose output type is set by an attribute rather than by an input.
_DTYPE_ATTR_DEFAULT_FLOAT = {"RandomNormal", "RandomUniform", "EyeLike", "RandomNormalLike", "RandomUniformLike"}


class ElementTypes:
    """Maps each value to its element type; None when unknown or when the value is not a plain tensor."""

    def __init__(self) -> None:
        self._types: dict[int, ir.DataType | None] = {}
        self.by_id = self._types  # id(value) -> dtype, for hot loops
        self.non_tensor: set[int] = set()

    def get(self, value: ir.Value | None) -> ir.DataType | None:
        if value is None:
            return None
        return self._types.get(id(value))

    def set(self, value: ir.Value, dtype: ir.DataType | None) -> None:
        self._types[id(value)] = dtype

    def is_float32(self, value: ir.Value | None) -> bool:
        return self.get(value) == ir.DataType.FLOAT

    def is_float(self, value: ir.Value | None) -> bool:
        return self.get(value) in (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def _declared(value: ir.Value, types: ElementTypes) -> bool:
    """Record the type the model itself declares for `value`; return whether one was found."""
    vtype = value.type
    if vtype is None:
        if value.const_value is not None:
            types.set(value, value.const_value.dtype)
            return True
        return False
    if isinstance(vtype, ir.TensorType):
        types.set(value, vtype.dtype)
    else:  # sequence, optional, map: left untouched by the converter
        types.set(value, None)
        types.non_tensor.add(id(value))
    return True


def _attr_dtype(node: ir.Node) -> ir.DataType | None:
    attrs = node.attributes
    op = node.op_type
    if op == "Cast":
        return ir.DataType(attrs["to"].value) if "to" in attrs else None
    if op == "Constant":
        for name, attr in attrs.items():
            if name == "value":
                return attr.value.dtype
            if name in ("value_float", "value_floats"):
                return ir.DataType.FLOAT
            if name in ("value_int", "value_ints"):
                return ir.DataType.INT64
            if name in ("value_string", "value_strings"):
                return ir.DataType.STRING
        return None
    if op == "ConstantOfShape":
        return attrs["value"].value.dtype if "value" in attrs else ir.DataType.FLOAT
    if op in _DTYPE_ATTR_DEFAULT_FLOAT:
        if "dtype" in attrs:
            return ir.DataType(attrs["dtype"].value)
        return None if op.endswith("Like") or op == "EyeLike" else ir.DataType.FLOAT
    return None


def _control_flow_outputs(node: ir.Node, types: ElementTypes) -> list[ir.DataType | None] | None:
    bodies = dict(subgraphs(node))
    if node.op_type == "If" and "then_branch" in bodies:
        return [types.get(v) for v in bodies["then_branch"].outputs]
    if node.op_type == "Loop" and "body" in bodies:
        return [types.get(v) for v in bodies["body"].outputs][1:]
    if node.op_type == "Scan" and "body" in bodies:
        return [types.get(v) for v in bodies["body"].outputs]
    return None


def infer(model: ir.Model, index: GraphIndex | None = None) -> ElementTypes:
    """Element types for every value of `model`, subgraphs included."""
    index = index or GraphIndex(model)
    types = ElementTypes()
    opsets = model.opset_imports
    # Every graph's declared types first: a body's inputs must be known before its nodes propagate.
    for graph in index.graphs:
        for value in (*graph.inputs, *graph.initializers.values(), *graph.outputs):
            _declared(value, types)
    for node, _ in index.nodes:
        _propagate(node, types, opsets, id(node) in index.control_flow)
    for _ in range(_REFINE_PASSES):
        if not _refine_backwards(index, types, opsets):
            break
        for node, _ in index.nodes:
            _propagate(node, types, opsets, id(node) in index.control_flow, retry=True)
    return types


# Rounds of backward-then-forward inference; each round crosses one op without a schema (rare: custom ops).
_REFINE_PASSES = 4


def _signature(node: ir.Node, opsets: dict[str, int]) -> op_signatures.OpSignature | None:
    version = opsets.get(node.domain if node.domain != "ai.onnx" else "")
    return op_signatures.lookup(node.domain, node.op_type, version) if version is not None else None


def _refine_backwards(index: GraphIndex, types: ElementTypes, opsets: dict[str, int]) -> bool:
    """Type the outputs of ops without a schema from what their consumers' schemas require.

    A custom-domain op's output with no value_info has no known type, and every node after it would stay
    float32 for "unknown type". But a consumer whose schema binds that input to a constraint (Relu's T) already
    knows it from its other tensors (its output, declared as a graph output, or a sibling input).
    """
    changed = False
    for node, _ in reversed(index.nodes):
        unknown = [
            (i, v)
            for i, v in enumerate(node.inputs)
            if v is not None and types.get(v) is None and id(v) not in types.non_tensor
        ]
        if not unknown or id(node) in index.control_flow:
            continue
        signature = _signature(node, opsets)
        if signature is None:
            continue
        bound: dict[str, ir.DataType] = {}
        for i, value in enumerate(node.inputs):
            slot = signature.input_slot(i)
            if slot is not None and slot.constraint and slot.homogeneous and types.get(value) is not None:
                bound.setdefault(slot.constraint, types.get(value))
        for i, value in enumerate(node.outputs):
            slot = signature.output_slot(i)
            if slot is not None and slot.constraint and types.get(value) is not None:
                bound.setdefault(slot.constraint, types.get(value))
        for i, value in unknown:
            slot = signature.input_slot(i)
            if slot is not None and slot.constraint in bound and slot.homogeneous:
                types.set(value, bound[slot.constraint])
                changed = True
    return changed


def _propagate(
    node: ir.Node, types: ElementTypes, opsets: dict[str, int], control_flow: bool, retry: bool = False
) -> None:
    known = types._types
    if retry:  # a second look at outputs still untyped, now that more inputs may be known
        pending = [out for out in node.outputs if known.get(id(out), 0) is None and id(out) not in types.non_tensor]
    else:
        pending = [out for out in node.outputs if id(out) not in known and not _declared(out, types)]
    if not pending:
        return
    attr_dtype = _attr_dtype(node)
    if attr_dtype is not None and node.op_type in {"Cast", "Constant", "ConstantOfShape"}:
        for out in pending:
            types.set(out, attr_dtype)
        return
    flow = _control_flow_outputs(node, types) if control_flow else None
    if flow is not None:
        for i, out in enumerate(node.outputs):
            if out in pending:
                types.set(out, flow[i] if i < len(flow) else None)
        return
    signature = _signature(node, opsets)
    if signature is None:
        for out in pending:
            types.set(out, None)
        return
    bound: dict[str, ir.DataType] = {}
    for i, value in enumerate(node.inputs):
        slot = signature.input_slot(i)
        dtype = types.get(value)
        if slot is not None and slot.constraint and dtype is not None and slot.homogeneous:
            bound.setdefault(slot.constraint, dtype)
    for i, out in enumerate(node.outputs):
        if out not in pending:
            continue
        slot = signature.output_slot(i)
        dtype: ir.DataType | None = None
        if slot is not None:
            if slot.constraint and slot.constraint in bound:
                dtype = bound[slot.constraint]
            elif attr_dtype is not None:
                dtype = attr_dtype
            elif len(slot.allowed) == 1:
                dtype = _TYPE_STRS.get(next(iter(slot.allowed)))
        types.set(out, dtype)
