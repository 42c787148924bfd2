"""Walking a model's graphs, subgraphs included, in an order that suits type propagation.

Subgraph bodies are visited before the node that owns them, so a control-flow node's output types can be
read off its body; bodies can only refer to outer values produced earlier, which are visited already.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx_ir as ir


def subgraphs(node: ir.Node) -> Iterator[tuple[str, ir.Graph]]:
    for name, attr in node.attributes.items():
        if attr.type == ir.AttributeType.GRAPH:
            yield name, attr.value
        elif attr.type == ir.AttributeType.GRAPHS:
            for i, graph in enumerate(attr.value):
                yield f"{name}[{i}]", graph


def has_subgraphs(node: ir.Node) -> bool:
    return any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attr in node.attributes.values())


def nodes_bodies_first(graph: ir.Graph) -> Iterator[ir.Node]:
    """Every node of `graph` and its subgraphs; a node comes after the nodes of its own bodies."""
    for node in graph:
        for _, sub in subgraphs(node):
            yield from nodes_bodies_first(sub)
        yield node


def all_graphs(graph: ir.Graph) -> Iterator[ir.Graph]:
    yield graph
    for node in graph:
        for _, sub in subgraphs(node):
            yield from all_graphs(sub)


def node_label(node: ir.Node, index: dict[int, int]) -> str:
    """A stable, readable identifier: the node name, or op type and position for unnamed nodes."""
    if node.name:
        return node.name
    return f"<unnamed {node.op_type} #{index.get(id(node), -1)}>"
