"""One emulation session for every candidate of the mixed-precision search.

Each candidate differs only in which tensors are rounded to float16, and for whom. So the search builds one
float32 model in which every (tensor, consumer) edge reads `Where(gate[e], rounded(tensor), tensor)`, with the
gates fed as boolean inputs: validating a candidate is then a run with other gate values, not a new
conversion plus a new session. That is what makes the search ~10x cheaper in sessions than bisection
(bench/amp_speed.py). The gates of a candidate come from the very same plan/assignment code that converts the
final model (`precision_edits.assign_precisions`), so the emulation cannot drift from the conversion.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from olive_fp16_pass import classify as classify_mod
from olive_fp16_pass import element_types, ir_serde
from olive_fp16_pass.classify import FP16_MAX
from olive_fp16_pass.graph_edit import F16, F32, FreshNames, Placement, insert_rounding
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_edits import assign_precisions
from olive_fp16_pass.precision_plan import ForcedDecision
from olive_fp16_pass.search_model import SearchModel

GATES = "olive_fp16_gates"


def _edge_key(kind: str, owner, index: int, labels: dict[int, str], graph_paths: dict[int, str]) -> tuple:
    if kind == "node":
        return ("node", labels[id(owner)], index)
    return ("output", graph_paths[id(owner)], index)


def release_external(model: ir.Model) -> None:
    """Unmap external tensors once read: a later read maps them again. Every mapped copy of a >2 GB model's
    weights would otherwise stay resident in this process, once per copy of the model the search holds."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                with contextlib.suppress(BufferError):  # an array still reads it: keep that map
                    value.const_value.release()


def _cast_pair(value: ir.Value, names: FreshNames) -> list[ir.Node]:
    """Cast(float16) -> Cast(float) of `value`, not yet placed in a graph."""
    base = value.name or "tensor"
    half = ir.Value(name=names.fresh(f"{base}_f16"), type=ir.TensorType(F16), shape=value.shape)
    back = ir.Value(name=names.fresh(f"{base}_rounded"), type=ir.TensorType(F32), shape=value.shape)
    down = ir.Node("", "Cast", [value], [ir.AttrInt64("to", F16)], outputs=[half], name=names.fresh(f"{base}_r16"))
    up = ir.Node("", "Cast", [half], [ir.AttrInt64("to", F32)], outputs=[back], name=names.fresh(f"{base}_r32"))
    return [down, up]


# Where exists from opset 9; older models (onnxmltools' LightGBM exports import opset 8) select with an If.
WHERE_OPSET = 9


def _select(
    gate: ir.Value, rounded: ir.Value, value: ir.Value, chosen: ir.Value, names: FreshNames, where_available: bool
) -> ir.Node:
    """`chosen = gate ? rounded : value`: a Where, or before opset 9 an If whose branches return either tensor.

    The gated model is only ever run here, so an If costs only its (small) per-run overhead on old models, and
    raising the model's opset instead would change the meaning of its other ops (Upsample, Scan, BatchNorm).
    """
    if where_available:
        return ir.Node("", "Where", [gate, rounded, value], outputs=[chosen], name=names.fresh("gated"))
    branches = []
    for kind, source in (("then", rounded), ("else", value)):
        out = ir.Value(name=names.fresh(f"{chosen.name}_{kind}"), type=chosen.type, shape=chosen.shape)
        identity = ir.Node("", "Identity", [source], outputs=[out], name=names.fresh(f"gated_{kind}"))
        branches.append(ir.Graph([], [out], nodes=[identity], name=f"{kind}_branch"))
    attributes = [ir.AttrGraph("then_branch", branches[0]), ir.AttrGraph("else_branch", branches[1])]
    return ir.Node("", "If", [gate], attributes, outputs=[chosen], name=names.fresh("gated"))


def _float32_values(index: GraphIndex, types: element_types.ElementTypes) -> list[ir.Value]:
    """Every float32 tensor of the model once: graph inputs and initializers of every graph, then node outputs."""
    values: list[ir.Value] = []
    seen: set[int] = set()
    for graph in index.graphs:
        for value in (*graph.inputs, *graph.initializers.values()):
            if id(value) not in seen and types.get(value) == F32:
                seen.add(id(value))
                values.append(value)
    for node, _ in index.nodes:
        for value in node.outputs:
            if id(value) not in seen and value.name and types.get(value) == F32:
                seen.add(id(value))
                values.append(value)
    return values


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
        self.analysis, self.index, self.types = model.ir, model.index, model.types
        self.graph_paths = self._graph_paths(self.index, self.analysis)
        gated = model.fresh_ir()  # the emulation model itself, edited here
        index = GraphIndex(gated)
        types = element_types.infer(gated, index)
        values = _float32_values(index, types)
        self.edge_index: dict[tuple, int] = {}
        gate_inputs = self._gate_edges(gated, index, values, round_at_use)
        # One scalar boolean input per edge: a Gather of a gate vector per edge made every run execute two
        # extra nodes per edge (a 1,500-node encoder: 43 ms a run; bench/amp_speed.py).
        gated.graph.inputs.extend(gate_inputs)
        self.gate_names = [g.name for g in gate_inputs]
        wanted = set(expose or [])
        extra = [v for v in values if v.name in wanted]
        for value in extra:
            if not value.is_graph_output():
                gated.graph.outputs.append(value)
        if "" not in gated.opset_imports and "ai.onnx" not in gated.opset_imports:
            gated.opset_imports[""] = 13
        self.model = ir_serde.serialize_model(gated)
        self.exposed = [v.name for v in extra]

    def _gate_edges(
        self, gated: ir.Model, index: GraphIndex, values: list[ir.Value], round_at_use: bool
    ) -> list[ir.Value]:
        """Make every (float32 tensor, reader) edge of `gated` read `Where(gate, rounded, tensor)`; the gates,
        one boolean input per edge, numbered in `self.edge_index`."""
        paths = self._graph_paths(index, gated)
        names = FreshNames(index)
        placement = Placement(index.graphs)
        default_opset = gated.opset_imports.get("", gated.opset_imports.get("ai.onnx", WHERE_OPSET))
        where_available = default_opset >= WHERE_OPSET
        output_slots: dict[int, list[tuple[ir.Graph, int]]] = {}
        for graph in index.graphs:
            for i, value in enumerate(graph.outputs):
                output_slots.setdefault(id(value), []).append((graph, i))
        gate_inputs: list[ir.Value] = []
        for value in values:
            uses = [("node", n, i) for n, i in value.uses()] + [
                ("output", g, i) for g, i in output_slots.get(id(value), [])
            ]
            if not uses:
                continue
            at_use = round_at_use and value.producer() is None and value.const_value is not None
            rounded = None if at_use else self._rounded(value, names, placement)
            for kind, owner, i in uses:
                position = self.edge_index.setdefault(_edge_key(kind, owner, i, index.labels, paths), len(gate_inputs))
                gate = ir.Value(name=f"{GATES}_{position}", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([]))
                gate_inputs.append(gate)
                chosen = ir.Value(name=names.fresh(f"{value.name}_seen"), type=ir.TensorType(F32), shape=value.shape)
                pair = _cast_pair(value, names) if at_use else []
                where = _select(gate, pair[-1].outputs[0] if pair else rounded, value, chosen, names, where_available)
                if kind == "node":
                    for new in (*pair, where):
                        owner.graph.insert_before(owner, new)
                    owner.replace_input_with(i, chosen)
                else:
                    for new in (*pair, where):
                        owner.append(new)
                    owner.outputs[i] = chosen
        return gate_inputs

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
    def _rounded(value: ir.Value, names: FreshNames, placement: Placement) -> ir.Value:
        """The float16-rounded copy of `value`: an initializer of its own for constants, else two Casts."""
        base = value.name or "tensor"
        constant = value.const_value if value.is_initializer() and value.producer() is None else None
        if constant is None and value.producer() is not None and value.producer().op_type == "Constant":
            # A Constant node's tensor is saturated like an initializer's when clamped (a masking sentinel):
            # a Cast pair would make -3.4e38 -inf where the converted model holds -65504.
            constant = classify_mod.constant_tensor(value)
        if constant is not None:
            data = constant.numpy()
            # A finite weight beyond ±65504 is float16 only when `clamp_weights` clamps it: emulate the clamp
            # (infinities stay infinities, as in the converted model).
            data = np.where(np.isfinite(data), np.clip(data, -FP16_MAX, FP16_MAX), data)
            with np.errstate(over="ignore"):
                data = data.astype(np.float16).astype(np.float32)
            rounded = ir.Value(
                name=names.fresh(f"{base}_r"), type=ir.TensorType(F32), shape=value.shape, const_value=ir.Tensor(data)
            )
            value.graph.register_initializer(rounded)
            return rounded
        return insert_rounding(value, names, placement)

    def classify(self, options: ConversionOptions, forced: Mapping[str, ForcedDecision]) -> classify_mod.ClassifyResult:
        """Classify once without the search's forced nodes, then per candidate only lay those over it.

        Candidates differ only in `forced`; re-running every rule per candidate was half the search time
        on a 300-node encoder (bench/amp_speed.py). `classify.with_forced` reads the rule order off
        `rules.RULES`, so this gives what the Float16 conversion of the candidate gives."""
        if getattr(self, "_base_options", None) != options:
            self._base = classify_mod.classify_base(self.analysis, self.index, self.types, options)
            self._base_options = options
        return classify_mod.with_forced(self._base, forced)

    def gate_feed(self, gates: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.array(bool(g)) for name, g in zip(self.gate_names, gates, strict=True)}

    def gates(
        self, options: ConversionOptions, forced: Mapping[str, ForcedDecision] | None = None
    ) -> tuple[np.ndarray, classify_mod.ClassifyResult]:
        """The gate vector of the candidate that `options` and `forced` describe (and its classification)."""
        classified = self.classify(options, forced or {})
        assignment = assign_precisions(self.analysis, self.index, self.types, classified, options)
        gates = np.zeros(len(self.edge_index), np.bool_)
        for value in assignment.float_values:
            if self.types.get(value) != F32 or not value.name:
                continue
            stored16 = assignment.assigned[id(value)] == F16
            for (kind, owner, i), want in assignment.uses_with_wants(value):
                key = _edge_key(kind, owner, i, self.index.labels, self.graph_paths)
                position = self.edge_index.get(key)
                if position is not None:
                    gates[position] = stored16 or want == F16
        return gates, classified
