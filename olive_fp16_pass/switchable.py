"""One emulation session for every candidate of the mixed-precision search.

Each candidate differs only in which tensors are rounded to float16, and for whom. So the search builds one
float32 model in which every (tensor, consumer) edge reads `Where(gate[e], rounded(tensor), tensor)`, with the
gates fed as boolean inputs: validating a candidate is then a run with other gate values, not a new
conversion plus a new session. A constant's edge into a node needs no Where: the node reads an input of its
own, bound to the constant or to its rounded copy (`choices`). That is what makes the search ~10x cheaper in
sessions than bisection (bench/amp_speed.py). The gates of a candidate come from the very same plan/assignment
code that converts the final model (`precision_edits.assign_precisions`), so the emulation cannot drift from the
conversion.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from olive_fp16_pass import classify as classify_mod
from olive_fp16_pass import element_types
from olive_fp16_pass.classify import FP16_MAX
from olive_fp16_pass.graph_edit import F16, F32, FreshNames
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_edits import assign_precisions, float_values
from olive_fp16_pass.precision_plan import ForcedDecision
from olive_fp16_pass.search_model import SearchModel

GATES = "olive_fp16_gates"


def _edge_key(kind: str, owner, index: int, labels: dict[int, str], graph_paths: dict[int, str]) -> tuple:
    if kind == "node":
        return ("node", labels[id(owner)], index)
    return ("output", graph_paths[id(owner)], index)


# Where exists from opset 9; older models (onnxmltools' LightGBM exports import opset 8) select with an If.
WHERE_OPSET = 9


def _cast(source: str, target: str, name: str, to: int) -> onnx.NodeProto:
    # the NodeProto made directly: helper.make_node took twice as long (6.5 vs 3.3 us), for a thousand Casts
    # per gated model of enc300 (bench/amp_speed.py)
    node = onnx.NodeProto(op_type="Cast", input=[source], output=[target], name=name)
    attribute = node.attribute.add()
    attribute.name, attribute.type, attribute.i = "to", onnx.AttributeProto.INT, to
    return node


def _cast_pair(name: str, names: FreshNames) -> tuple[list[onnx.NodeProto], str]:
    """Cast(float16) -> Cast(float) of tensor `name`, and the name of the rounded float32 copy."""
    half, back = names.fresh(f"{name}_f16"), names.fresh(f"{name}_rounded")
    down = _cast(name, half, names.fresh(f"{name}_r16"), onnx.TensorProto.FLOAT16)
    up = _cast(half, back, names.fresh(f"{name}_r32"), onnx.TensorProto.FLOAT)
    return [down, up], back


def _rounded_constant(data: np.ndarray) -> np.ndarray:
    """A constant as the converted model stores it in float16, read back as float32. A finite weight beyond
    ±65504 is float16 only when `clamp_weights` clamps it: the clamp is emulated (infinities stay infinities,
    as in the converted model)."""
    data = np.where(np.isfinite(data), np.clip(data, -FP16_MAX, FP16_MAX), data)
    return data.astype(np.float16).astype(np.float32)  # finite values clipped: nothing overflows


# The two gate values, shared by every gate binding (no array per gate and candidate).
_TRUE, _FALSE = np.array(True), np.array(False)


def _select(gate: str, rounded: str, value: str, chosen: str, names: FreshNames, where: bool) -> onnx.NodeProto:
    """`chosen = gate ? rounded : value`: a Where, or before opset 9 an If whose branches return either tensor.

    The gated model is only ever run here, so an If costs only its (small) per-run overhead on old models, and
    raising the model's opset instead would change the meaning of its other ops (Upsample, Scan, BatchNorm).
    """
    if where:
        return helper.make_node("Where", [gate, rounded, value], [chosen], name=names.fresh("gated"))
    branches = []
    for kind, source in (("then", rounded), ("else", value)):
        out = names.fresh(f"{chosen}_{kind}")
        identity = helper.make_node("Identity", [source], [out], name=names.fresh(f"gated_{kind}"))
        info = helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)
        branches.append(helper.make_graph([identity], f"{kind}_branch", [], [info]))
    return helper.make_node(
        "If", [gate], [chosen], name=names.fresh("gated"), then_branch=branches[0], else_branch=branches[1]
    )


class _ProtoTwin:
    """The protobuf twin of each analysed graph and node (the analysis was read from this very proto, so both
    walk in the same order), and the nodes to write around each proto node.

    Why protobuf and not onnx-ir: the gated model has about ten nodes per original node, and building them
    as onnx-ir objects and serializing them was 80% of its cost (enc300 of bench/amp_speed.py: 88 ms of CPU
    per build through onnx-ir)."""

    def __init__(self, model: ir.Model, proto: onnx.ModelProto) -> None:
        self.proto = proto
        self.graphs: dict[int, onnx.GraphProto] = {}
        self.nodes: dict[int, onnx.NodeProto] = {}
        self.before: dict[int, list[onnx.NodeProto]] = {}  # id(NodeProto) -> nodes written right before it
        self.after: dict[int, list[onnx.NodeProto]] = {}
        self.start: dict[int, list[onnx.NodeProto]] = {}  # id(GraphProto) -> nodes written first / last
        self.end: dict[int, list[onnx.NodeProto]] = {}
        self._pair(model.graph, proto.graph)

    def _pair(self, graph: ir.Graph, proto: onnx.GraphProto) -> None:
        self.graphs[id(graph)] = proto
        for node, twin in zip(graph, proto.node, strict=True):
            self.nodes[id(node)] = twin
            for attr in twin.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self._pair(node.attributes[attr.name].value, attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub, sub_twin in zip(node.attributes[attr.name].value, attr.graphs, strict=True):
                        self._pair(sub, sub_twin)

    def after_producer(self, value: ir.Value, nodes: list[onnx.NodeProto]) -> None:
        producer = value.producer()
        if producer is not None:
            self.after.setdefault(id(self.nodes[id(producer)]), []).extend(nodes)
        else:  # a graph input or initializer: read from the start of its graph
            self.start.setdefault(id(self.graphs[id(value.graph)]), []).extend(nodes)

    def write(self) -> None:
        """Lay the new nodes into every graph, inner graphs first (an outer node carries its bodies)."""
        for graph in reversed(list(self.graphs.values())):
            order = list(self.start.get(id(graph), ()))
            for node in graph.node:
                order += self.before.get(id(node), ())
                order.append(node)
                order += self.after.get(id(node), ())
            order += self.end.get(id(graph), ())
            if len(order) == len(graph.node):
                continue
            copied = onnx.GraphProto()
            copied.node.extend(order)  # copies: the originals still belong to `graph` until it is cleared
            graph.ClearField("node")
            graph.node.extend(copied.node)


def _float32_values(values: list[ir.Value], types: element_types.ElementTypes) -> list[ir.Value]:
    """Of precision_edits.float_values, every float32 tensor; a node output only when it has a name."""
    return [v for v in values if types.get(v) == F32 and (v.name or v.producer() is None)]


class SwitchableEmulation:
    """Float16-storage emulation of any candidate plan of one model, selected at run time by a gate vector."""

    def __init__(
        self,
        model: SearchModel | onnx.ModelProto,
        expose: list[str] | None = None,
        base_dir: str | os.PathLike | None = None,
        round_at_use: bool = False,
    ) -> None:
        """`model`: the search's analysed model (its onnx-ir copy is classified for every candidate, never
        modified), or a ModelProto, analysed here. `base_dir`: the folder of a ModelProto's external data.
        `round_at_use`: round constants with a Cast pair right before each reader instead of storing a rounded
        copy: no second copy of the weights (a >2 GB model), and each rounded copy lives only while its reader
        runs."""
        if not isinstance(model, SearchModel):
            model = SearchModel(model, Path(base_dir) if base_dir is not None else None)
        self.search_model = model
        self.analysis, self.index, self.types = model.ir, model.index, model.types
        self.graph_paths = self._graph_paths(self.index, self.analysis)
        self.float_values = float_values(self.index, self.types)  # every candidate's assignment walks them
        values = _float32_values(self.float_values, self.types)
        gated = onnx.ModelProto()
        gated.CopyFrom(model.proto)  # the emulation model itself, edited here
        twin = _ProtoTwin(self.analysis, gated)
        self.edge_index: dict[tuple, int] = {}
        # gate position -> (the constant, its float16-rounded copy), for a constant's edge into a node
        self.choices: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.gate_names = self._gate_edges(twin, values, round_at_use)
        twin.write()
        main = gated.graph
        self._declare_inputs(main)
        wanted = set(expose or [])
        extra = [v.name for v in values if v.name in wanted]
        outputs = {o.name for o in main.output}
        main.output.extend(
            helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in extra if name not in outputs
        )
        if not any(o.domain in ("", "ai.onnx") for o in gated.opset_import):
            gated.opset_import.append(helper.make_opsetid("", 13))
        self.model = gated
        self.exposed = extra

    def _gate_edges(self, twin: _ProtoTwin, values: list[ir.Value], round_at_use: bool) -> list[str]:
        """Make every (float32 tensor, reader) edge read `Where(gate, rounded, tensor)`, or for a constant read
        by a node an input of its own (`choices`); returns the inputs, one per edge, numbered in
        `self.edge_index`."""
        index, labels = self.index, self.index.labels
        names = FreshNames(index)
        opsets = {o.domain: o.version for o in twin.proto.opset_import}
        where = opsets.get("", opsets.get("ai.onnx", WHERE_OPSET)) >= WHERE_OPSET
        output_slots: dict[int, list[tuple[ir.Graph, int]]] = {}
        for graph in index.graphs:
            for i, value in enumerate(graph.outputs):
                output_slots.setdefault(id(value), []).append((graph, i))
        gates: list[str] = []
        # per named tensor, its edges: (gate position, use kind, reader, slot), walked by gates() per candidate
        self._edges: list[tuple[ir.Value, list[tuple[int, str, object, int]]]] = []
        for value in values:
            uses = [("node", n, i) for n, i in value.uses()] + [
                ("output", g, i) for g, i in output_slots.get(id(value), [])
            ]
            if not uses:
                continue
            edges: list[tuple[int, str, object, int]] = []
            if value.name:
                self._edges.append((value, edges))
            at_use = round_at_use and value.producer() is None and value.const_value is not None
            data = None if at_use else self._constant_data(value)
            rounded = None
            for kind, owner, i in uses:
                position = self.edge_index.setdefault(_edge_key(kind, owner, i, labels, self.graph_paths), len(gates))
                edges.append((position, kind, owner, i))
                if data is not None and kind == "node":
                    # A constant read by a node: the reader reads an input of its own, bound to the constant or
                    # its rounded copy per candidate. No Where, which copied the constant on every run (a
                    # weight's whole size), and 12% fewer nodes in enc300's gated model (bench/amp_speed.py).
                    choice = names.fresh(f"{value.name}_choice")
                    gates.append(choice)
                    self.choices[position] = (np.asarray(data, np.float32, order="C"), _rounded_constant(data))
                    twin.nodes[id(owner)].input[i] = choice
                    continue
                gate = f"{GATES}_{position}"
                gates.append(gate)
                if rounded is None and not at_use:
                    rounded = self._rounded(value, data, names, twin)
                chosen = names.fresh(f"{value.name}_seen")
                pair, seen = _cast_pair(value.name, names) if at_use else ([], rounded)
                new = [*pair, _select(gate, seen, value.name, chosen, names, where)]
                if kind == "node":
                    reader = twin.nodes[id(owner)]
                    twin.before.setdefault(id(reader), []).extend(new)
                    reader.input[i] = chosen
                else:
                    graph = twin.graphs[id(owner)]
                    twin.end.setdefault(id(graph), []).extend(new)
                    graph.output[i].name = chosen
        return gates

    @staticmethod
    def _graph_paths(index: GraphIndex, model: ir.Model) -> dict[int, str]:
        paths = {id(model.graph): "main"}
        for node, path in index.nodes:
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    paths[id(attr.value)] = f"{path}/{index.labels[id(node)]}/{attr.name}"
                elif attr.type == ir.AttributeType.GRAPHS:
                    for k, sub in enumerate(attr.value):
                        paths[id(sub)] = f"{path}/{index.labels[id(node)]}/{attr.name}[{k}]"
        return paths

    @staticmethod
    def _constant_data(value: ir.Value) -> np.ndarray | None:
        """The data of a constant float32 tensor (an initializer or a Constant node's output), else None."""
        constant = value.const_value if value.is_initializer() and value.producer() is None else None
        producer = value.producer()
        if constant is None and producer is not None and producer.op_type == "Constant":
            # A Constant node's tensor is saturated like an initializer's when clamped (a masking sentinel):
            # a Cast pair would make -3.4e38 -inf where the converted model holds -65504.
            constant = classify_mod.constant_tensor(value)
        return None if constant is None else constant.numpy()

    @staticmethod
    def _rounded(value: ir.Value, data: np.ndarray | None, names: FreshNames, twin: _ProtoTwin) -> str:
        """The float16-rounded copy of `value`: an initializer of its own for a constant (`data`), else two
        Casts."""
        if data is None:
            pair, rounded = _cast_pair(value.name, names)
            twin.after_producer(value, pair)
            return rounded
        rounded = names.fresh(f"{value.name}_r")
        producer = value.producer()
        graph = producer.graph if producer is not None else value.graph
        twin.graphs[id(graph)].initializer.append(numpy_helper.from_array(_rounded_constant(data), rounded))
        return rounded

    def _declare_inputs(self, main: onnx.GraphProto) -> None:
        """One scalar boolean input per edge: a Gather of a gate vector per edge made every run execute two
        extra nodes per edge (a 1,500-node encoder: 43 ms a run; bench/amp_speed.py). A constant's edge into a
        node is instead an input of the constant's shape (`choices`)."""
        for position, name in enumerate(self.gate_names):
            choice = self.choices.get(position)
            if choice is None:
                main.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, []))
            else:
                main.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, choice[0].shape))

    def gate_values(self, gates: np.ndarray, changed: Iterable[int]) -> Iterator[tuple[str, np.ndarray]]:
        """(input name, value) of the gates at positions `changed`, for the candidate whose gates are `gates`:
        a boolean scalar, or for a constant's edge the constant or its rounded copy."""
        names, choices = self.gate_names, self.choices
        for k in changed:
            choice = choices.get(k)
            on = bool(gates[k])
            yield names[k], (choice[on] if choice is not None else _TRUE if on else _FALSE)

    def classify(self, options: ConversionOptions, forced: Mapping[str, ForcedDecision]) -> classify_mod.ClassifyResult:
        """The candidate's classification, on the analysed model (SearchModel.classified)."""
        return self.search_model.classified(options, forced)

    def gate_feed(self, gates: np.ndarray) -> dict[str, np.ndarray]:
        return dict(self.gate_values(gates, range(len(gates))))

    def gates(
        self, options: ConversionOptions, forced: Mapping[str, ForcedDecision] | None = None
    ) -> tuple[np.ndarray, classify_mod.ClassifyResult]:
        """The gate vector of the candidate that `options` and `forced` describe (and its classification)."""
        classified = self.classify(options, forced or {})
        assignment = assign_precisions(self.analysis, self.index, self.types, classified, options, self.float_values)
        gates = np.zeros(len(self.edge_index), np.bool_)
        assigned, want = assignment.assigned, assignment.want
        for value, edges in self._edges:
            stored16 = assigned[id(value)] == F16
            for position, kind, owner, i in edges:
                gates[position] = stored16 or want(kind, owner, i, value) == F16
        return gates, classified
