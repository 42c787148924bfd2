"""`convert_float16`: full float16 conversion that keeps in float32 only what must stay there.

The public entry point of the Olive-free core: load -> element types -> classify -> apply the plan -> report.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from olive_fp16_pass import classify as classify_mod
from olive_fp16_pass import cuda_kernels, element_types, ir_serde
from olive_fp16_pass.activation_stats import calibrate, check_overflow_margin
from olive_fp16_pass.convert import write_ir
from olive_fp16_pass.emit_proto import write_proto
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.fusion_units import ir_units, keep_units_whole
from olive_fp16_pass.gc_pause import paused_gc
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.load_check import SaveCheck, load_checked, unit_labels
from olive_fp16_pass.model_io import LoadedModel, load, save_model
from olive_fp16_pass.options import OPTION_NAMES, ConversionOptions
from olive_fp16_pass.precision_edits import plan_edits
from olive_fp16_pass.precision_plan import ForcedDecision, Origin, Precision, Rule
from olive_fp16_pass.report import ConversionReport

logger = logging.getLogger(__name__)

ModelLike = onnx.ModelProto | str | os.PathLike


@dataclass
class ConversionResult:
    """The converted model and its report; held as onnx-ir or protobuf, the other form made on demand."""

    _ir: ir.Model | None
    report: ConversionReport
    external_data: bool = False
    _proto: onnx.ModelProto | None = field(default=None, repr=False)
    # Set by the user-facing conversion for its load check: fusion units by label, a known IR/opset problem.
    fusion: dict = field(default_factory=dict, repr=False)
    runtime_problem: str | None = field(default=None, repr=False)
    inputs: tuple[Path, ...] = ()  # files the model was read from: save refuses to overwrite them
    # The load check of an external-data result, which needs the written files: run by `save` (load_check.py).
    save_check: SaveCheck | None = field(default=None, repr=False)

    @property
    def ir_model(self) -> ir.Model:
        if self._ir is None:
            self._ir = ir_serde.deserialize_model(self._proto)
            _drop_initializer_types(self._ir.graphs())  # else saving writes a value_info per weight
        return self._ir

    @property
    def model(self) -> onnx.ModelProto:
        if self._proto is None:
            self._proto = ir_serde.serialize_model(self._ir)
        return self._proto

    def held_form(self) -> onnx.ModelProto | ir.Model:
        """The model as it is held (the proto if there is one): a session takes either form, and making the
        other one costs a copy of the model."""
        return self._proto if self._proto is not None else self._ir

    def save(
        self,
        path: str | os.PathLike,
        *,
        external_data: bool | None = None,
        external_data_name: str | None = None,
        in_place: bool = False,
    ) -> Path:
        """Write the model atomically; external data if asked, if the input had it, or if it needs it (>2 GB).

        Writing over the input's own model or data file is refused unless `in_place=True`. A result with
        external data is load-checked here, on the written files, before they are published (a repair then
        updates `model` and `report`; an unloadable model raises Float16Error and writes nothing).
        """
        if external_data is None and self.external_data:
            external_data = True

        def write(result: ConversionResult, check) -> Path:
            return save_model(
                result.ir_model,
                path,
                external_data=external_data,
                external_data_name=external_data_name,
                inputs=result.inputs,
                in_place=in_place,
                check=check,
            )

        return write(self, None) if self.save_check is None else self.save_check.run(self, write)


def _checked_model(model: ModelLike) -> ModelLike:
    if isinstance(model, (onnx.ModelProto, str, os.PathLike)):
        return model
    raise Float16Error(f"model: expected an onnx.ModelProto or a path to an .onnx file, got {type(model).__name__}")


def _load(model: ModelLike) -> LoadedModel:
    return load(_checked_model(model))


def convert_float16(
    model: ModelLike,
    *,
    keep_io_types: bool | list[str] = False,
    op_block_list: list[str] | None = None,
    node_block_list: list[str] | None = None,
    op_include_list: list[str] | None = None,
    node_include_list: list[str] | None = None,
    clamp_weights: bool = False,
    max_reduction_elements: int | None = None,
    extra_rules: list | None = None,
    provider: str | None = "CUDAExecutionProvider",
    load_check: bool = True,
    calibration_data: Iterable[Mapping[str, Any]] | None = None,
    overflow_margin: float = 2.0,
) -> ConversionResult:
    """Convert a float32 model to float16, keeping in float32 only the nodes that must stay there.

    A node stays float32 when a rule says so (user block/include lists; no float16 type in its schema; a weight
    beyond float16's range, unless `clamp_weights`; control-flow interfaces; unknown ops; with
    `provider="CUDAExecutionProvider"`, no CUDA float16 kernel in onnxruntime), and the report says which rule
    and the value it measured. `provider` is the execution provider the model is meant for (None: no
    provider-specific rule). Node names in the node lists are exact names or regular expressions (full match).
    `max_reduction_elements` (opt-in): reductions, MatMul, Gemm and Conv summing over more elements stay float32.
    `extra_rules`: your own rules (functions or objects with `decide`, see user_rules.py); a reason they return
    keeps the node float32, reported under the rule's name.
    The input model is never modified.

    `load_check`: open the result in onnxruntime with every graph optimization (CPU, and CUDA where it works)
    and repair or refuse a model that would not load (see load_check.py). It costs one session per provider,
    several times the conversion itself on large graphs (5k nodes: ~0.5 s to convert, ~2.5 s for the session);
    turn it off only where something else loads the model right after.

    `calibration_data`: an iterable of input feeds (dicts name -> array, like `auto_mixed_precision`'s data;
    a generator is fine, each feed is read once and dropped, and feeds may differ in shape). The model is run
    once in float32 over all of them and nodes that read or write a tensor beyond 65504 / `overflow_margin`, or
    write one entirely subnormal in float16, stay float32 with the measured value as the reason (origin
    `calibration`); no search, no accuracy validation (activation_stats.py).
    """
    options = ConversionOptions.from_mapping({k: v for k, v in locals().items() if k in OPTION_NAMES})  # options.py
    if calibration_data is None:
        check_overflow_margin(overflow_margin)  # even without data: a typo must not wait for the day data comes
        return convert_with_options(model, options, load_check=load_check)
    # Loaded (read, checked, repaired, deserialized) once for both: the calibration leaves the graph as it found it.
    start = time.perf_counter()
    loaded = _load(model)
    load_seconds = time.perf_counter() - start
    calibration = calibrate(model, calibration_data, overflow_margin=overflow_margin, loaded=loaded)
    result = convert_with_options(model, options, forced=calibration.forced, load_check=load_check, loaded=loaded)
    report = result.report
    report.calibration = calibration.to_dict()
    report.seconds += load_seconds + calibration.seconds
    mark_sentinels(report, calibration.sentinel_notes)
    if calibration.stats.tensors and not calibration.forced:
        report.notes.append(
            f"calibration: no tensor left float16's range on {calibration.stats.feeds} calibration feeds"
        )
    return result


def mark_sentinels(report: ConversionReport, notes: Mapping[str, str]) -> None:
    """Float16 nodes that read or write a masking-sentinel tensor say so (rule mask_sentinel), with the value:
    their tensor left float16's range, and the report must say why they converted all the same."""
    for decision in report.decisions:
        if decision.precision is Precision.FP16 and decision.rule is Rule.CONVERTED and decision.node in notes:
            decision.rule, decision.detail = Rule.MASK_SENTINEL, notes[decision.node]


def convert_with_options(
    model: ModelLike | ir.Model,
    options: ConversionOptions,
    *,
    forced: Mapping[str, ForcedDecision] | None = None,
    check_runtime: bool = True,
    load_check: bool = True,
    loaded: LoadedModel | None = None,
    classified: classify_mod.ClassifyResult | None = None,
):
    """The pipeline behind `convert_float16`.

    `forced`: nodes the mixed-precision search keeps in float32 (by label), each with its rule and detail.
    An `ir.Model` given here is converted in place (the search builds many candidates from one proto).
    `check_runtime=False` (the search, which loads every candidate itself) skips the fusion-unit rules and the
    load check; `load_check=False` skips only the load check. `loaded`: `model` as model_io.load gave it, used by
    the first conversion instead of loading it again (it converts that copy in place, unless `model` is a
    ModelProto without external data: that is written as protobuf and the copy only read); a repair loads
    afresh. `classified`: the classification of `forced` on that very copy, made already (the search's,
    SearchModel.classified), used instead of running the rules again; only with `check_runtime=False`.
    """
    # The conversion allocates millions of small objects and frees none of them before it ends: the cyclic
    # garbage collector's passes over them cost 30% of the time and grew faster than the graph (100k nodes:
    # 10.1 s with it, 7.4 s without; bench/convert_speed.py).
    with paused_gc():
        base_forced = dict(forced or {})
        if not check_runtime or not load_check:
            return _convert(model, options, base_forced, check_runtime, loaded, classified)
        if classified is not None:
            raise ValueError("classified: only for a conversion without load check (check_runtime=False)")
        # A repair converts again from the untouched input; an ir.Model is edited in place, so keep a copy.
        source = ir_serde.serialize_model(model) if isinstance(model, ir.Model) else model
        attempts = iter([(model, loaded)])

        def convert(repairs: dict) -> ConversionResult:
            moved = {
                label: ForcedDecision(rule, detail, Origin.LOAD_CHECK) for label, (rule, detail) in repairs.items()
            }
            target, preloaded = next(attempts, (source, None))
            return _convert(target, options, {**base_forced, **moved}, True, preloaded)

        return load_checked(source, convert)


# ~85 lines, on purpose: the pipeline read top to bottom (load, types, rules, fusion units, edits, report); the
# report reads nearly every step's result, so pieces of it would pass them all around.
def _convert(
    model: ModelLike | ir.Model,
    options: ConversionOptions,
    forced: Mapping[str, ForcedDecision],
    check_runtime: bool,
    loaded: LoadedModel | None = None,
    classified: classify_mod.ClassifyResult | None = None,
):
    start = time.perf_counter()
    # A ModelProto without external data is edited as protobuf (emit_proto); anything else through onnx-ir.
    if loaded is None and not isinstance(model, ir.Model):
        loaded = _load(model)
    source_proto = loaded.proto if isinstance(model, onnx.ModelProto) else None
    if loaded is None:
        ir_model, external = model, False
    else:
        ir_model, external = loaded.model, loaded.external
    if external:
        source_proto = None
    graph = ir_model.graph
    options.check_io_names([v.name or "" for v in graph.inputs], [v.name or "" for v in graph.outputs])

    if loaded is not None and loaded.analysis is not None:
        index, types = loaded.analysis  # the calibration's, on this very graph
    else:
        index = GraphIndex(ir_model)
        types = element_types.infer(ir_model, index)
    shared = classified is not None  # the search's: its decisions are every other candidate's too
    if classified is None:
        classified = classify_mod.classify(ir_model, index, types, options, forced)
    fusion_notes: list[str] = []
    units = []
    if check_runtime:  # the search keeps its own fusion units (precision_search.py)
        units = [unit for graph in index.graphs for unit in ir_units(graph)]
        fusion_notes = keep_units_whole(ir_model, units, classified, options, index.labels)
    fusion_table = unit_labels(units, index.labels)  # read before the graph is edited
    converted_proto = None
    edits = plan_edits(ir_model, index, types, classified, options)  # decided once, written by one writer:
    if source_proto is not None:
        converted_proto = write_proto(source_proto, ir_model, index, edits)  # protobuf: a ModelProto input
    else:
        write_ir(ir_model, index, edits)  # onnx-ir: paths, external data, the search's candidates
    stats = edits.stats()

    if stats.casts_inserted and _add_default_opset(ir_model, converted_proto):
        added_note = f"added an opset import for the default domain (version {CAST_OPSET}) for the inserted Casts"
    else:
        added_note = None
    report = ConversionReport(
        # the report's decisions are edited later (mark_sentinels): copies of a shared classification's
        decisions=[copy.copy(d) if shared else d for d in classified.plan.decisions.values()],
        casts_inserted=stats.casts_inserted,
        initializers_converted=stats.initializers_converted,
        constants_converted=stats.constants_converted,
        values_retyped=stats.values_retyped,
        options=options.to_dict(),
        cpu_fallback_risks=cuda_kernels.cpu_fallback_risks(
            (node for node, _ in index.nodes), ir_model.opset_imports, options.provider
        ),
    )
    for message in classified.context.option_warnings():
        report.warnings.append(message)
        logger.warning(message)
    if stats.values_retyped == 0:
        has_fp16 = any(d.precision.value == "fp16" for d in report.decisions)
        report.notes.append(
            "no float32 tensor was converted: the model is unchanged"
            + (" (it already holds float16 tensors)" if not has_fp16 and _has_float16(index, types) else "")
        )
    if added_note:
        report.notes.append(added_note)
    report.notes.extend(fusion_notes)
    report.notes.extend(_other_float_notes(index, types))
    if loaded is not None:
        report.notes.extend(f"repaired the input: {r}" for r in loaded.repairs)
        report.warnings.extend(loaded.warnings)
    problem = _runtime_problem(ir_model) if check_runtime else None
    if problem:
        report.warnings.append(f"{problem}; the converted model keeps the input's IR version and opset")
    report.seconds = time.perf_counter() - start
    if converted_proto is None:
        _drop_initializer_types(index.graphs)
    inputs = loaded.files if loaded is not None else ()
    if converted_proto is not None:
        result = ConversionResult(None, report, external, converted_proto, inputs=inputs)
    else:
        result = ConversionResult(ir_model, report, external, inputs=inputs)
    if check_runtime:
        result.fusion = fusion_table
        result.runtime_problem = problem
    return result


# Casts need the default ONNX domain; a model importing only other domains (ai.onnx.ml) gets this version.
CAST_OPSET = 13


def _add_default_opset(ir_model: ir.Model, proto: onnx.ModelProto | None) -> bool:
    if proto is not None:
        if any(o.domain in ("", "ai.onnx") for o in proto.opset_import):
            return False
        proto.opset_import.append(onnx.helper.make_opsetid("", CAST_OPSET))
        return True
    if "" in ir_model.opset_imports or "ai.onnx" in ir_model.opset_imports:
        return False
    ir_model.opset_imports[""] = CAST_OPSET
    return True


# Every onnxruntime this package supports (>= 1.20, pyproject.toml) loads IR <= 10 and default opset <= 21.
# Within that no probe session is needed, so onnxruntime is not even imported (importing it and creating a
# session write a device id and a database under ~/.cache/Microsoft): only a session creates one.
LOADABLE_BY_EVERY_ORT = (10, 21)


def _runtime_problem(model: ir.Model) -> str | None:
    max_ir, max_opset = LOADABLE_BY_EVERY_ORT
    if model.ir_version <= max_ir and model.opset_imports.get("", 1) <= max_opset:
        return None
    try:
        from olive_fp16_pass.runtime import onnxruntime_load_problem
    except ImportError:  # converting needs no onnxruntime
        return None
    return onnxruntime_load_problem(model.ir_version, model.opset_imports.get("", 1))


_KEPT_FLOATS = {
    ir.DataType.DOUBLE: "float64 tensors kept in float64 (only float32 tensors are converted)",
    ir.DataType.BFLOAT16: "bfloat16 tensors left as they are (already 16-bit, with float32's range)",
}


def _other_float_notes(index: GraphIndex, types: element_types.ElementTypes) -> list[str]:
    """Say which tensors of other float types the conversion saw and left alone, so none is a surprise."""
    found: dict[ir.DataType, list[str]] = {}
    seen: set[int] = set()
    for graph in index.graphs:
        values = [*graph.inputs, *graph.initializers.values(), *(v for node in graph for v in node.outputs)]
        for value in values:
            dtype = types.get(value)
            if dtype in _KEPT_FLOATS and id(value) not in seen:
                seen.add(id(value))
                found.setdefault(dtype, []).append(value.name or "?")
    notes = []
    for dtype, names in found.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        notes.append(f"{len(names)} {_KEPT_FLOATS[dtype]}: {shown}")
    return notes


def _drop_initializer_types(graphs: Iterable[ir.Graph]) -> None:
    """Forget the type and shape onnx-ir gives every initializer, where they only repeat the tensor's own.

    onnx-ir's deserializer types all initializers and its serializer then writes a value_info for each: a model
    read from a file gained one per weight, so converting an already-float16 model did not return it unchanged.
    The tensor itself carries its type and dims; the value_info said nothing more.
    """
    for graph in graphs:
        inputs = {id(v) for v in graph.inputs}
        for value in graph.initializers.values():
            tensor = value.const_value
            if id(value) in inputs or tensor is None or value.metadata_props or value.doc_string:
                continue
            vtype, shape = value.type, value.shape
            redundant = isinstance(vtype, ir.TensorType) and vtype.dtype == tensor.dtype and shape is not None
            if redundant and tuple(shape) == tuple(tensor.shape):
                value.type = None
                value.shape = None


def _has_float16(index: GraphIndex, types: element_types.ElementTypes) -> bool:
    return any(types.get(v) == ir.DataType.FLOAT16 for node, _ in index.nodes for v in node.outputs)


__all__ = ["ConversionResult", "convert_float16", "convert_with_options"]
