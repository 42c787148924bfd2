"""Groups of nodes that ONNX Runtime fuses into one kernel and that must therefore share a precision.

A LayerNorm or GELU written out as primitive ops is fused by ORT's graph optimizer; if the search puts part
of such a pattern in float32 and the rest in float16, the fusion either fails or drops the Casts in between.
Moving the whole unit together avoids both and matches what the GPU really runs.
"""

from __future__ import annotations

import onnx


def _index(graph: onnx.GraphProto):
    producer = {}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for out in node.output:
            producer[out] = node
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producer, consumers


def _only(nodes: list[onnx.NodeProto], *ops: str) -> list[onnx.NodeProto]:
    return [n for n in nodes if n.op_type in ops]


def fusion_units(graph: onnx.GraphProto, labels: list[str]) -> list[set[str]]:
    """Sets of node labels (`labels[i]` names `graph.node[i]`) forming LayerNorm (with affine) and GELU patterns."""
    producer, consumers = _index(graph)
    position = {id(n): i for i, n in enumerate(graph.node)}

    def lab(node: onnx.NodeProto) -> str:
        return labels[position[id(node)]]

    units: list[set[str]] = []
    for node in graph.node:
        if node.op_type == "ReduceMean":  # mean -> Sub -> Pow/Mul -> ReduceMean -> Add -> Sqrt -> Div
            unit = {id(node): node}
            for sub in _only(consumers.get(node.output[0], []), "Sub"):
                unit[id(sub)] = sub
                for sq in _only(consumers.get(sub.output[0], []), "Pow", "Mul"):
                    for var in _only(consumers.get(sq.output[0], []), "ReduceMean"):
                        unit.update({id(sq): sq, id(var): var})
                        for eps in _only(consumers.get(var.output[0], []), "Add"):
                            unit[id(eps)] = eps
                            for root in _only(consumers.get(eps.output[0], []), "Sqrt"):
                                unit[id(root)] = root
                                for div in _only(consumers.get(root.output[0], []), "Div", "Reciprocal"):
                                    unit[id(div)] = div
                for div in _only(consumers.get(sub.output[0], []), "Div"):
                    unit[id(div)] = div
                    # ORT's LayerNormalization fusion also takes the affine Mul (gamma) and Add (beta).
                    for scale in _only(consumers.get(div.output[0], []), "Mul"):
                        unit[id(scale)] = scale
                        for shift in _only(consumers.get(scale.output[0], []), "Add"):
                            unit[id(shift)] = shift
            if len(unit) >= 5:
                units.append({lab(n) for n in unit.values()})
        elif node.op_type == "Erf":  # x/sqrt(2) -> Erf -> +1 -> *x -> *0.5
            unit = {id(node): node}
            before = producer.get(node.input[0])
            if before is not None and before.op_type in ("Div", "Mul"):
                unit[id(before)] = before
            for add in _only(consumers.get(node.output[0], []), "Add"):
                unit[id(add)] = add
                for mul in _only(consumers.get(add.output[0], []), "Mul"):
                    unit[id(mul)] = mul
                    for half in _only(consumers.get(mul.output[0], []), "Mul"):
                        unit[id(half)] = half
            if len(unit) >= 3:
                units.append({lab(n) for n in unit.values()})
    return units
