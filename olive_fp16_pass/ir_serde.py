"""protobuf <-> onnx-ir for every model ONNX Runtime runs, map types included.

onnx-ir (1.1) cannot hold map types: deserializing a model whose graph declares one raises "Map types are not
supported yet". scikit-learn exports (skl2onnx, onnxmltools) declare one on every classifier: ZipMap's
`output_probability` is a `seq(map(int64, tensor(float)))`. Such values are never float tensors, so the
conversion has nothing to decide about them: they cross onnx-ir untyped and get their declared type back when
the model is written. The declared type travels in the value's `meta`, so it survives renames; a model
without map types goes through onnx-ir untouched and uncopied.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
import onnx_ir as ir

from olive_fp16_pass.graph_walk import proto_graphs

# Value.meta key holding the TypeProto onnx-ir could not represent.
OPAQUE_TYPE = "olive_fp16_pass.opaque_type"

__all__ = ["deserialize_model", "opaque_types", "restore_types", "serialize_model"]


def _value_infos(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def _has_map(type_proto: onnx.TypeProto) -> bool:
    kind = type_proto.WhichOneof("value")
    if kind == "map_type":
        return True
    if kind in ("sequence_type", "optional_type"):
        return _has_map(getattr(type_proto, kind).elem_type)
    return False


def _opaque_names(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    return {
        info.name: info.type
        for graph in proto_graphs(proto.graph)
        for info in _value_infos(graph)
        if info.HasField("type") and _has_map(info.type)
    }


def _ir_values(model: ir.Model) -> Iterator[ir.Value]:
    for graph in model.graphs():
        yield from graph.inputs
        for node in graph:
            yield from node.outputs


def deserialize_model(proto: onnx.ModelProto) -> ir.Model:
    """`ir.serde.deserialize_model`, with map-typed values held untyped (their type kept in `meta`)."""
    opaque = _opaque_names(proto)
    if not opaque:
        return ir.serde.deserialize_model(proto)
    stripped = onnx.ModelProto()
    stripped.CopyFrom(proto)
    for graph in proto_graphs(stripped.graph):
        for info in _value_infos(graph):
            if info.name in opaque:
                info.ClearField("type")
    model = ir.serde.deserialize_model(stripped)
    for value in _ir_values(model):
        if value.name in opaque:
            value.meta[OPAQUE_TYPE] = opaque[value.name].SerializeToString()
    return model


def opaque_types(model: ir.Model) -> dict[str, bytes]:
    """Name -> serialized TypeProto of the values whose type onnx-ir could not hold."""
    return {value.name: value.meta[OPAQUE_TYPE] for value in _ir_values(model) if OPAQUE_TYPE in value.meta}


def restore_types(proto: onnx.ModelProto, types: dict[str, bytes]) -> bool:
    """Give the untyped value infos of `proto` named in `types` their declared types; True if any changed."""
    changed = False
    if not types:
        return changed
    for graph in proto_graphs(proto.graph):
        for info in _value_infos(graph):
            if info.name in types and info.type.WhichOneof("value") is None:
                info.type.ParseFromString(types[info.name])
                changed = True
    return changed


def serialize_model(model: ir.Model) -> onnx.ModelProto:
    """`ir.serde.serialize_model`, with the map types `deserialize_model` set aside written back."""
    proto = ir.serde.serialize_model(model)
    restore_types(proto, opaque_types(model))
    return proto
