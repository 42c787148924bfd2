"""The protobuf writer: carry out the edits of precision_edits.py on a copy of the input ModelProto.

Same edits as `convert.write_ir`, written into protobuf instead: for a model given as a ModelProto (no
external data) this skips re-serializing the whole graph through onnx-ir and creating an IR node per Cast.
Measured with bench/convert_speed.py --writer ir|auto (bench/results/2026-12-02-convert_speed-layout-vs-main.md):
the whole conversion to a ModelProto takes 1.3-1.8x as long through the onnx-ir writer (20k-100k nodes).
tests/test_emit_backends.py checks that both writers give the same model.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import numpy_helper

from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.precision_edits import CastEdit, Edits, Retype

_FLOAT16 = onnx.TensorProto.FLOAT16


class _ProtoGraphs:
    """The copy being written, with the protobuf counterpart of every onnx-ir graph, node and declared type."""

    def __init__(self, proto: onnx.ModelProto, model: ir.Model, index: GraphIndex) -> None:
        self.out = onnx.ModelProto()
        self.out.CopyFrom(proto)
        self.graphs: dict[int, onnx.GraphProto] = {}
        self.nodes: dict[int, onnx.NodeProto] = {}
        self._map(model.graph, self.out.graph)
        # Declared types (inputs, outputs, value_info) and initializers by (graph, name), to edit them in place.
        self.declared: dict[tuple[int, str], list[onnx.ValueInfoProto]] = {}
        self.initializers: dict[tuple[int, str], onnx.TensorProto] = {}
        self.output_graphs: dict[int, list[int]] = {}  # value id -> graphs it is an output of
        for graph in index.graphs:
            pg = self.graphs[id(graph)]
            for info in (*pg.input, *pg.output, *pg.value_info):
                self.declared.setdefault((id(graph), info.name), []).append(info)
            for tensor in pg.initializer:
                self.initializers[(id(graph), tensor.name)] = tensor
            for value in graph.outputs:
                self.output_graphs.setdefault(id(value), []).append(id(graph))

    def _map(self, graph: ir.Graph, proto_graph: onnx.GraphProto) -> None:
        self.graphs[id(graph)] = proto_graph
        for node, proto_node in zip(graph, proto_graph.node, strict=True):
            self.nodes[id(node)] = proto_node
            if not node.attributes:  # read onnx-ir's attributes: touching the protobuf ones makes objects
                continue
            for name, attr in node.attributes.items():
                if attr.type not in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                    continue
                proto_attr = next(a for a in proto_node.attribute if a.name == name)
                if attr.type == ir.AttributeType.GRAPH:
                    self._map(attr.value, proto_attr.g)
                else:
                    for sub, proto_sub in zip(attr.value, proto_attr.graphs, strict=True):
                        self._map(sub, proto_sub)

    @staticmethod
    def owner(value: ir.Value) -> ir.Graph:
        producer = value.producer()
        return producer.graph if producer is not None else value.graph


def _set_attr(node: onnx.NodeProto, attribute: onnx.AttributeProto, drop: tuple[str, ...] = ()) -> None:
    """Set `attribute` on `node`, replacing the one of that name and removing those named in `drop`."""
    for i in reversed(range(len(node.attribute))):
        if node.attribute[i].name in drop:
            del node.attribute[i]
    for i, existing in enumerate(node.attribute):
        if existing.name == attribute.name:
            node.attribute[i].CopyFrom(attribute)
            return
    node.attribute.append(attribute)


def _retype(pg: _ProtoGraphs, edit: Retype) -> None:
    value = edit.value
    owner = pg.owner(value)
    for gid in {id(owner), *pg.output_graphs.get(id(value), ())}:
        for info in pg.declared.get((gid, value.name), ()):
            info.type.tensor_type.elem_type = _FLOAT16
    holder = edit.holder
    if holder == "initializer":
        tensor = pg.initializers.get((id(owner), value.name))
        if tensor is not None:
            tensor.CopyFrom(numpy_helper.from_array(edit.float16_data(), value.name))
        return
    if holder is None:
        return
    node = pg.nodes[id(value.producer())]
    make = onnx.helper.make_attribute
    if holder == "Cast":
        _set_attr(node, make("to", _FLOAT16))
    elif holder == "Constant":
        data = numpy_helper.from_array(edit.float16_data())
        _set_attr(node, make("value", data), drop=("value_float", "value_floats"))
    elif holder == "ConstantOfShape":
        _set_attr(node, make("value", numpy_helper.from_array(edit.float16_data())))
    elif holder == "dtype":
        _set_attr(node, make("dtype", _FLOAT16))


def _rename(pg: _ProtoGraphs, edit: CastEdit) -> None:
    """`edit.value` becomes `edit.renamed` where it is produced, declared and read by the uses it keeps."""
    value, new_name = edit.value, edit.renamed
    owner = pg.owner(value)
    producer = value.producer()
    if producer is not None:
        pg.nodes[id(producer)].output[value.index()] = new_name
    else:
        tensor = pg.initializers.get((id(owner), value.name))
        if tensor is not None:
            tensor.name = new_name
    value_infos = {id(info) for info in pg.graphs[id(owner)].value_info}
    for info in pg.declared.get((id(owner), value.name), ()):
        if id(info) in value_infos:  # graph inputs/outputs keep their names
            info.name = new_name
    for kind, node, position in edit.kept:
        if kind == "node":
            pg.nodes[id(node)].input[position] = new_name


def _cast(pg: _ProtoGraphs, edit: CastEdit, template: onnx.NodeProto, main: ir.Graph) -> onnx.NodeProto:
    source = edit.value.name
    if edit.renamed is not None:
        _rename(pg, edit)
        source = edit.renamed
    cast = onnx.NodeProto()
    cast.CopyFrom(template)  # copying a template is ~5x faster than onnx.helper.make_node
    cast.input.append(source)
    cast.output.append(edit.output)
    cast.name = edit.node
    for kind, owner, position in edit.taken:
        if kind == "node":
            pg.nodes[id(owner)].input[position] = edit.output
            continue
        slot = pg.graphs[id(owner)].output[position]
        if owner is not main:
            slot.name = edit.output
        slot.type.tensor_type.elem_type = int(edit.target)
    return cast


def write_proto(proto: onnx.ModelProto, model: ir.Model, index: GraphIndex, edits: Edits) -> onnx.ModelProto:
    """The converted copy of `proto`; `model` must be `ir.serde.deserialize_model(proto)`, unmodified (the edits
    name its values). `proto` is not modified."""
    pg = _ProtoGraphs(proto, model, index)
    for edit in edits.retypes:
        _retype(pg, edit)
    templates = {t: onnx.helper.make_node("Cast", [], [], to=int(t)) for t in (ir.DataType.FLOAT16, ir.DataType.FLOAT)}
    after: dict[int, list[onnx.NodeProto]] = {}
    at_start: dict[int, list[onnx.NodeProto]] = {}
    for edit in edits.casts:
        cast = _cast(pg, edit, templates[edit.target], model.graph)
        producer = edit.value.producer()
        if producer is not None:
            after.setdefault(id(pg.nodes[id(producer)]), []).append(cast)
        else:
            at_start.setdefault(id(pg.graphs[id(edit.value.graph)]), []).append(cast)
    # Innermost graphs first: rebuilding a graph copies its nodes, subgraph attributes included, so a body
    # must be complete before the graph that holds it is rebuilt.
    for graph in reversed(index.graphs):
        proto_graph = pg.graphs[id(graph)]
        start = at_start.get(id(proto_graph), [])
        if not start and not any(id(n) in after for n in proto_graph.node):
            continue
        ordered = onnx.GraphProto()
        ordered.node.extend(start)
        for node in proto_graph.node:
            ordered.node.append(node)
            ordered.node.extend(after.get(id(node), ()))
        proto_graph.ClearField("node")
        proto_graph.node.extend(ordered.node)
    return pg.out


__all__ = ["write_proto"]
