"""What each node costs: estimated FLOPs and bytes moved, from tensor shapes.

The speed-up float16 brings on a GPU comes from the heavy nodes (MatMul, Conv, attention) running in float16
without Casts around them; a node count weighs a Softmax over batch x heads x seq x seq like a scalar Add. So
the search weighs its choices by these estimates (keep the cheapest nodes in float32, give the most expensive
back first) and the report gives the float16 share by FLOPs beside the share by nodes: a CPU-side proxy for
GPU speed, not a measurement.

Shapes come from the model (initializers, declared inputs/outputs/value_info with static dims) overlaid with
the shapes seen on the validation data (the search's reference run exposes every float tensor). A node with a
tensor of unknown shape costs what its known tensors say (0 when none is known): an estimate, said so in
the report (`nodes_without_shape`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import onnx
import onnx_ir as ir

# Per element of the larger of input/output: ops that do a few operations per element (exp, sum, divide).
_PER_ELEMENT = {
    "Softmax": 5,
    "LogSoftmax": 5,
    "LayerNormalization": 8,
    "GroupNormalization": 8,
    "InstanceNormalization": 8,
    "BatchNormalization": 2,
    "SkipLayerNormalization": 9,
    "Gelu": 8,
    "FastGelu": 8,
}
CAST_BYTES_PER_ELEMENT = 6  # a Cast float32 <-> float16 reads 4 bytes and writes 2 per element


@dataclass(frozen=True)
class NodeCost:
    """Estimated float operations and float32 bytes read and written by one node."""

    flops: float
    bytes: float
    known: bool  # every float tensor of the node had a known shape

    @property
    def weight(self) -> float:
        """One number to order nodes by: FLOPs, plus bytes (memory-bound ops cost their traffic)."""
        return self.flops + self.bytes


def static_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Fully static shapes the model declares: initializers, inputs, outputs and value_info of the main graph."""
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    for info in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        tensor = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor.HasField("shape"):
            dims = tensor.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                shapes.setdefault(info.name, tuple(d.dim_value for d in dims))
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            shapes.setdefault(node.output[0], tuple(node.attribute[0].t.dims))
    return shapes


def _size(shape: tuple[int, ...] | None) -> int:
    return math.prod(shape) if shape is not None else 0


def _edges(node: onnx.NodeProto | ir.Node) -> tuple[str, list[str], list[str], int]:
    """(op_type, input names, output names, transA) of a protobuf or onnx-ir node; a missing input is ''."""
    if isinstance(node, ir.Node):
        inputs = [value.name or "" if value is not None else "" for value in node.inputs]
        return node.op_type, inputs, [value.name or "" for value in node.outputs], node.attributes.get_int("transA", 0)
    trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
    return node.op_type, list(node.input), list(node.output), trans_a


def node_cost(node: onnx.NodeProto | ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> NodeCost:
    """FLOPs and bytes of one node (main-graph tensors; a control-flow node counts only its interface)."""
    op, inputs, outputs, trans_a = _edges(node)
    ins = [shapes.get(name) if name else None for name in inputs]
    outs = [shapes.get(name) for name in outputs]
    known = all(s is not None for name, s in zip(inputs, ins, strict=True) if name) and all(s is not None for s in outs)
    moved = 4.0 * (sum(_size(s) for s in ins) + sum(_size(s) for s in outs))
    out = _size(outs[0]) if outs else 0
    flops: float
    if op in ("MatMul", "FusedMatMul") and len(ins) >= 2 and ins[0]:
        flops = 2.0 * out * ins[0][-1]
    elif op == "Gemm" and len(ins) >= 2 and ins[0] and len(ins[0]) == 2:
        flops = 2.0 * out * ins[0][0 if trans_a else 1] + (out if len(ins) > 2 else 0)
    elif op in ("Conv", "FusedConv") and len(ins) >= 2 and ins[1]:
        flops = 2.0 * out * math.prod(ins[1][1:])
    elif op == "ConvTranspose" and len(ins) >= 2 and ins[1] and ins[0]:
        flops = 2.0 * _size(ins[0]) * math.prod(ins[1][1:])
    else:
        largest = max([out, *(_size(s) for s in ins)], default=0)
        flops = float(_PER_ELEMENT.get(op, 1) * largest)
    return NodeCost(flops, moved, known)


Labelled = Iterable[tuple[str, "onnx.NodeProto | ir.Node"]]


def _labelled(nodes: onnx.ModelProto | Labelled, labels: Iterable[str] | None) -> list[tuple[str, object]]:
    """(label, node) pairs: given as such (the search: labels read off the node objects), or a ModelProto's
    main-graph nodes with `labels` in node order."""
    if isinstance(nodes, onnx.ModelProto):
        return list(zip(labels or (), nodes.graph.node, strict=True))
    return list(nodes)


def node_costs(
    nodes: onnx.ModelProto | Labelled,
    labels: Iterable[str] | None = None,
    observed: Mapping[str, tuple[int, ...]] | None = None,
    *,
    static: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, NodeCost]:
    """Cost of each main-graph node by label, the shapes seen on data over the shapes the model declares
    (`static`; a ModelProto's own by default)."""
    shapes = dict(static if static is not None else static_shapes(nodes) if isinstance(nodes, onnx.ModelProto) else {})
    shapes.update(observed or {})
    return {label: node_cost(node, shapes) for label, node in _labelled(nodes, labels)}


def fp16_share(costs: Mapping[str, NodeCost], fp16: set[str], fp32: set[str]) -> dict[str, float | int | None]:
    """Float16 share by nodes and by estimated FLOPs over the nodes the converter decided (`fp16` | `fp32`)."""
    decided = [label for label in costs if label in fp16 or label in fp32]
    total = sum(costs[label].flops for label in decided)
    half = sum(costs[label].flops for label in decided if label in fp16)
    moved = sum(costs[label].bytes for label in decided)
    return {
        "flops_total": total,
        "flops_fp16": half,
        "fp16_flops_pct": round(100.0 * half / total, 2) if total else None,
        "bytes_total": moved,
        "bytes_fp16": sum(costs[label].bytes for label in decided if label in fp16),
        "nodes_without_shape": sum(not costs[label].known for label in decided),
    }


def give_back_order(
    labels: Iterable[str],
    costs: Mapping[str, NodeCost],
    links: Mapping[str, list[tuple[str, int]]],
    fp32: set[str],
) -> list[str]:
    """`labels` (nodes kept in float32), those whose return to float16 gains most first, by decade of gain;
    within a decade the given order stays (the search passes its ranking, least suspicious first).

    The gain of a node is its own cost plus the Casts its return saves or adds: each float tensor it shares
    with a float16 neighbour loses its Cast, each one shared with a float32 neighbour (`fp32`) gains one.
    `links`: label -> (neighbour label, elements of the tensor between them). Decades, not exact gains: the
    give-back splits failing chunks in halves, and keeping the nodes a ranking put together together (the
    truly needed ones) keeps that to a few tries; a strict sort by gain scattered them (enc300 of
    bench/amp_speed.py: 14 tries instead of 8)."""

    def gain(label: str) -> float:
        cost = costs.get(label)
        own = cost.weight if cost is not None else 0.0
        casts = sum(elements if other not in fp32 else -elements for other, elements in links.get(label, ()))
        return own + CAST_BYTES_PER_ELEMENT * casts

    def decade(label: str) -> float:
        value = gain(label)
        return math.floor(math.log10(value)) if value > 0 else -math.inf

    order = list(labels)
    position = {label: i for i, label in enumerate(order)}
    return sorted(order, key=lambda label: (-decade(label), position[label]))


def links_of(
    nodes: onnx.ModelProto | Labelled, labels: Iterable[str] | None, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, list[tuple[str, int]]]:
    """label -> [(neighbour label, elements of the float tensor between them)] for main-graph nodes."""
    pairs = [(label, _edges(node)) for label, node in _labelled(nodes, labels)]
    producer = {o: label for label, (_, _, outputs, _) in pairs for o in outputs}
    links: dict[str, list[tuple[str, int]]] = {}
    for label, (_, inputs, _, _) in pairs:
        for name in inputs:
            other = producer.get(name)
            if other is not None and other != label and name in shapes:
                size = _size(shapes[name])
                links.setdefault(label, []).append((other, size))
                links.setdefault(other, []).append((label, size))
    return links


__all__ = [
    "CAST_BYTES_PER_ELEMENT",
    "NodeCost",
    "fp16_share",
    "give_back_order",
    "links_of",
    "node_cost",
    "node_costs",
    "static_shapes",
]
