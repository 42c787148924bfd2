"""The model the mixed-precision search works on, analysed once and shared by every stage.

One onnx-ir copy of the source that no stage edits, with its index (each node's label read off the node
object, never paired by position), its element types and the facts the stages read: the float32 tensors
that main-graph nodes write, the bodies of control-flow nodes, the outputs. The gated emulation classifies
every candidate on this same copy (switchable.py), the ranking, the range rules, the node costs and the
fusion units read it; candidates themselves are converted from fresh copies of `proto` (`fresh_ir`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import InitVar, dataclass, field
from functools import cached_property
from pathlib import Path

import onnx
import onnx_ir as ir

from olive_fp16_pass import element_types, ir_serde
from olive_fp16_pass.classify import ClassifyResult, classify_base, with_forced
from olive_fp16_pass.fusion_units import FusionUnit, ir_units
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.model_io import estimate_size, release_external, set_base_dir
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import ForcedDecision, Precision
from olive_fp16_pass.runtime import BIG_MODEL_BYTES


@dataclass
class SearchModel:
    """`proto` (its external tensors, if any, in `base_dir`) and its one analysed onnx-ir copy."""

    proto: onnx.ModelProto
    base_dir: Path | None
    # the onnx-ir copy of `proto` that model_io.load made while checking it, if the caller has it: analysed
    # instead of deserializing `proto` once more (2% of a search on enc300 of bench/amp_speed.py)
    loaded: InitVar[ir.Model | None] = None
    ir: ir.Model = field(init=False)
    index: GraphIndex = field(init=False)
    types: element_types.ElementTypes = field(init=False)

    def __post_init__(self, loaded: ir.Model | None) -> None:
        self.ir = loaded if loaded is not None else self.fresh_ir()
        self.index = GraphIndex(self.ir)
        self.types = element_types.infer(self.ir, self.index)
        self.big = estimate_size(self.ir) >= BIG_MODEL_BYTES
        self.nodes: list[ir.Node] = list(self.ir.graph)  # the main graph, in order
        self.labels: list[str] = [self.label(node) for node in self.nodes]
        self.output_names = [value.name for value in self.ir.graph.outputs]
        # float32 tensors written by main-graph nodes, from the converter's own type propagation; their uses
        # tell a masking sentinel from an overflow (sentinels.py)
        self.values: dict[str, ir.Value] = {
            v.name: v for node in self.nodes for v in node.outputs if v.name and self.types.is_float32(v)
        }
        self.float_names = list(self.values)
        self.bodies = self._bodies()
        self._base: tuple[ConversionOptions, ClassifyResult] | None = None

    def fresh_ir(self) -> ir.Model:
        """A new onnx-ir copy of the source whose external tensors read from the model's folder."""
        model = ir_serde.deserialize_model(self.proto)
        if self.base_dir is not None:
            set_base_dir(model, self.base_dir)
        return model

    def classified(self, options: ConversionOptions, forced: Mapping[str, ForcedDecision]) -> ClassifyResult:
        """The candidate `forced` classified on the analysed copy: the rules run once (per options), then each
        candidate only lays its forced nodes over them (`classify.with_forced`, which reads the rule order off
        `rules.RULES`, so this gives what the Float16 conversion of the candidate gives). The gated emulation
        and the real candidates read this one classification: re-running every rule per candidate was half the
        search time on a 300-node encoder (bench/amp_speed.py)."""
        if self._base is None or self._base[0] != options:
            self._base = (options, classify_base(self.ir, self.index, self.types, options))
            # The weight rules read every weight once; the maps would keep them resident beside the gated
            # session's own (a 2.3 GB model: +2.3 GB of peak RSS, tests/test_big_model_amp.py).
            release_external(self.ir)
        return with_forced(self._base[1], forced)

    @cached_property
    def fusion_units(self) -> list[FusionUnit]:
        """ORT's fusion patterns in the main graph (fusion_units.py), found once for the stages that read them."""
        return ir_units(self.ir.graph)

    def label(self, node: ir.Node) -> str:
        """The node's label, exactly as the converter names it in its report."""
        return self.index.labels[id(node)]

    def edges(self) -> Iterator[tuple[str, list[str], list[str]]]:
        """(label, input names, output names) of each main-graph node; a missing optional input is ''."""
        for node, label in zip(self.nodes, self.labels, strict=True):
            inputs = [value.name if value is not None else "" for value in node.inputs]
            yield label, inputs, [value.name for value in node.outputs]

    def _bodies(self) -> dict[str, list[str]]:
        """Main-graph control-flow node -> the labels of every node in its bodies (nested ones included)."""
        inside: dict[str, list[str]] = {}
        for node, path in self.index.nodes:
            if path != "main":
                owner = path.split("/", 2)[1]  # "main/<owner label>/<attribute>[/...]"
                inside.setdefault(owner, []).append(self.label(node))
        return {label: inside[label] for label in self.labels if label in inside}

    def with_bodies(self, forced: Mapping[str, ForcedDecision]) -> dict[str, ForcedDecision]:
        """`forced` with the body nodes of every control-flow node it keeps in float32 kept there too.

        The search ranks and forces main-graph nodes; a Loop/Scan/If is float32 at its interface whatever it
        computes inside, so forcing only the node itself could never undo a body's float16 error (scikit-learn's
        GaussianProcessRegressor computes its distances in a Scan body: no candidate met the criteria)."""
        expanded = dict(forced)
        for label, record in forced.items():
            if record.precision is Precision.FP32 and label in self.bodies:
                for inner in self.bodies[label]:
                    expanded.setdefault(inner, ForcedDecision(record.rule, record.detail, record.origin, label))
        return expanded


__all__ = ["SearchModel"]
