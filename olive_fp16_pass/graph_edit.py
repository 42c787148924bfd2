"""Small onnx-ir graph edits shared by the converter, the emulations and the search.

Everything here is mechanical (fresh names, where a new node goes, moving readers to a new tensor); what to
edit is decided elsewhere (precision_edits.py). A *use* of a tensor is a node input slot or a graph output
slot, so that graph outputs are moved exactly like node inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import onnx
import onnx_ir as ir

from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.weight_ranges import FP16_MAX

F32 = ir.DataType.FLOAT
F16 = ir.DataType.FLOAT16


# One reader of a tensor: ("node", node, input index) or ("output", graph, output index). A plain tuple, not a
# NamedTuple: a conversion makes one per use of every tensor, twice, and NamedTuple's constructor was a tenth
# of the protobuf writer's time on a 20k-node graph (bench/convert_speed.py).
Use = tuple[str, "ir.Node | ir.Graph", int]


class FreshNames:
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


class OutputSlots:
    """Where each tensor is a graph output, in every graph: graph outputs are readers too."""

    def __init__(self, graphs: Iterable[ir.Graph]) -> None:
        self._slots: dict[int, list[tuple[ir.Graph, int]]] = {}
        for graph in graphs:
            for i, value in enumerate(graph.outputs):
                self._slots.setdefault(id(value), []).append((graph, i))

    def of(self, value: ir.Value) -> list[tuple[ir.Graph, int]]:
        return self._slots.get(id(value), [])

    def uses(self, value: ir.Value) -> Iterator[Use]:
        """Every reader of `value`: node inputs first, then graph outputs."""
        for node, i in value.uses():
            yield ("node", node, i)
        for graph, i in self.of(value):
            yield ("output", graph, i)


class Placement:
    """Inserts new nodes right after a tensor's producer, or at the start of its graph for inputs/constants."""

    def __init__(self, graphs: Iterable[ir.Graph]) -> None:
        self._first = {id(graph): next(iter(graph), None) for graph in graphs}

    def after_producer(self, value: ir.Value, node: ir.Node, after: ir.Node | None = None) -> None:
        """Place `node` after `after` when given (a node placed earlier for the same producer), else after
        the producer of `value`; a value without producer is read at the start of its graph."""
        producer = after or value.producer()
        if producer is not None:
            producer.graph.insert_after(producer, node)
            return
        graph = value.graph
        first = self._first.get(id(graph))
        if first is None:
            graph.append(node)
            self._first[id(graph)] = node
        else:
            graph.insert_before(first, node)


def insert_rounding(value: ir.Value, names: FreshNames, placement: Placement) -> ir.Value:
    """Cast(float16) -> Cast(float) right after `value` is produced; returns the rounded float32 copy.

    How the emulation of a float16 model (emulation.py) rounds a tensor; the search's gated model writes the
    same Cast pair as protobuf (switchable._cast_pair, for speed).
    """
    base = value.name or "tensor"
    half = ir.Value(name=names.fresh(f"{base}_f16"), type=ir.TensorType(F16), shape=value.shape)
    back = ir.Value(name=names.fresh(f"{base}_rounded"), type=ir.TensorType(F32), shape=value.shape)
    down = ir.Node("", "Cast", [value], [ir.AttrInt64("to", F16)], outputs=[half], name=names.fresh(f"{base}_r16"))
    up = ir.Node("", "Cast", [half], [ir.AttrInt64("to", F32)], outputs=[back], name=names.fresh(f"{base}_r32"))
    placement.after_producer(value, down)
    down.graph.insert_after(down, up)
    return back


def redirect(main: ir.Graph, value: ir.Value, new: ir.Value, uses: Iterable[Use], rename: Callable[[str], str]) -> None:
    """Point `uses` of `value` at `new`. A model output keeps its name: `new` takes it and `value` is renamed
    to `rename(its name)`, once, however many output slots of `main` it fills."""
    renamed = False
    for kind, owner, index in uses:
        if kind == "node":
            owner.replace_input_with(index, new)
            continue
        if owner is main and not renamed:
            original = value.name or ""
            value.name = rename(original)
            new.name = original
            renamed = True
        owner.outputs[index] = new


def to_float16(array: np.ndarray, clamp: bool) -> np.ndarray:
    """float32 data stored as float16; `clamp` clips to ±65504 first (else beyond-range values become inf)."""
    if clamp:
        array = np.clip(array, -FP16_MAX, FP16_MAX)
    with np.errstate(over="ignore"):
        return array.astype(np.float16)


def expose_outputs(proto: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `proto` with the named tensors added as (untyped) graph outputs, to read them in a session."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return exposed


__all__ = [
    "F16",
    "F32",
    "FreshNames",
    "OutputSlots",
    "Placement",
    "Use",
    "expose_outputs",
    "insert_rounding",
    "redirect",
    "to_float16",
]
