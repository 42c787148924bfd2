"""Every model the Float16 conversion returns loads in onnxruntime with all graph optimizations on.

The checker validates a model as ONNX; onnxruntime then rewrites it (fusions, constant folding, Cast
elimination) before it runs, and some rewrites fail on a precision boundary the checker finds fine (see
fusion_units.py). The conversion therefore opens one session per usable provider (CPU, and CUDA where it
really works) with ORT_ENABLE_ALL on the result. If one fails, the node ORT names guides a repair that only
ever moves nodes to float32 (the whole fusion unit it belongs to, or the node that feeds it), and the model is
converted again; a model that still fails is never returned: Float16Error says which node and why.
A model whose input already fails to load in this onnxruntime (custom ops it lacks) is checked structurally
only, and the report says so.

A result whose weights live in external data is checked where its files exist: when it is saved
(`SaveCheck`). The session is opened on the files written in the save's hidden temporary folder, before they
are renamed into place; a failure there is repaired the same way (the result is converted again, and its
model and report replaced), and a model that still fails is never published: nothing is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir

from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.fusion_units import FusionUnit
from olive_fp16_pass.precision_plan import Precision, Rule

MAX_REPAIRS = 16
_NODE_PATTERNS = (
    re.compile(r"in node \(([^()]*)\)"),
    re.compile(r"node with name '([^']*)'"),
    re.compile(r"[Nn]ode \(([^()]*)\)"),
    re.compile(r"[Nn]ode '([^']*)'"),
    re.compile(r"[Nn]ode:([^\s]+)"),
)


def unit_labels(units: list[FusionUnit], labels: dict[int, str]) -> dict[str, tuple[frozenset[str], str | None]]:
    """label -> (labels of its fusion unit, label of the node producing the unit's entry tensor)."""
    table: dict[str, tuple[frozenset[str], str | None]] = {}
    for unit in units:
        members = frozenset(labels[id(n)] for n in unit.nodes)
        producer = unit.entry.producer() if isinstance(unit.entry, ir.Value) else None
        entry = labels.get(id(producer)) if producer is not None else None
        for member in members:
            table[member] = (members, entry)
    return table


def _providers() -> list[str]:
    from olive_fp16_pass.runtime import CPU, provider_status

    providers = [CPU]
    if provider_status("CUDAExecutionProvider")[0]:
        providers.append("CUDAExecutionProvider")
    return providers


def load_problem(model: bytes | str, provider: str) -> str | None:
    """Why onnxruntime cannot create a session on `model` with every optimization, or None."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The session only loads, never runs: a pool of intra-op threads (one per core by default) is started and
    # joined for nothing. One thread changes no graph rewrite (onnxruntime hands the pool to transformers only
    # to parallelize weight repacking) and saves ~35 ms per session: 1k-node synthetic graph, CPU, 30 runs,
    # median 0.201 -> 0.164 s CPU (bench/results/2026-12-03-loadcheck-cost.md).
    options.intra_op_num_threads = 1
    # Prepacking (a second, repacked copy of MatMul/Gemm/Conv weights for faster runs) happens after every
    # graph rewrite and after the kernels are created (SessionState::FinalizeSessionState), so skipping it
    # changes nothing about which fusions run or whether a fused kernel can be created. It is the part of a
    # session that grows with the weights: BERT-base in float16, CPU, 6 interleaved sessions, CPU s median
    # 0.624 -> 0.437; the 2.3 GB external-data model of tests/test_big_model.py, 2 each: 6.4-14.1 -> 1.9-3.0 s
    # wall, peak RSS -128 MiB (bench/results/2026-12-03-loadcheck-cost.md).
    options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        session = ort.InferenceSession(model, options, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        return str(exc).strip() or type(exc).__name__
    del session
    return None


def _failing_label(message: str, labels: set[str]) -> str | None:
    """The model node that onnxruntime's message names: itself, or the node a fused one is named after."""
    for pattern in _NODE_PATTERNS:
        for name in pattern.findall(message):
            if name in labels:
                return name
            prefixes = [label for label in labels if label and name.startswith(label + "/")]
            if prefixes:
                return max(prefixes, key=len)
    return None


def _repair(result, message: str) -> tuple[dict[str, tuple[Rule, str]], str] | None:
    """Nodes to move to float32 for the failure in `message`, and a note; None when nothing can be moved."""
    decisions = {d.node: d for d in result.report.decisions}
    label = _failing_label(message, set(decisions))
    if label is None:
        return None
    first_line = message.splitlines()[0][:300]
    unit, entry = result.fusion.get(label, (frozenset({label}), None))
    fp16 = sorted(m for m in unit if m in decisions and decisions[m].precision is Precision.FP16)
    if fp16:
        detail = f"onnxruntime failed to load the model at '{label}' ({first_line}); its fusion unit runs in float32"
        note = f"load check: moved {len(fp16)} node(s) around '{label}' to float32 so that onnxruntime loads the model"
        return {m: (Rule.FUSION_BOUNDARY, detail) for m in fp16}, note
    if entry is not None and entry in decisions and decisions[entry].precision is Precision.FP16:
        detail = f"feeds the float32 unit at '{label}' that onnxruntime failed to load ({first_line})"
        return {entry: (Rule.FUSION_BOUNDARY, detail)}, f"load check: moved '{entry}' to float32 (feeds '{label}')"
    return None


def _source_bytes(model) -> bytes | str | None:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return None


def load_checked(model, convert: Callable[[dict[str, tuple[Rule, str]]], object]):
    """`convert({})`, then check, repair and re-convert until the result loads; never an unloadable model.

    `convert(forced)` converts the model with the nodes in `forced` (label -> rule, detail) kept in float32.
    """
    forced_all: dict[str, tuple[Rule, str]] = {}
    result = convert(forced_all)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # converting needs no onnxruntime; nothing to check against
        return result
    if result.runtime_problem:
        return result  # this onnxruntime cannot load the IR version / opset at all: already a warning
    if result.external_data:
        result.save_check = SaveCheck(model, convert)
        result.report.notes.append(SaveCheck.PENDING)
        return result
    notes: list[str] = []
    for _ in range(MAX_REPAIRS):
        data = result.model.SerializeToString()
        failure = first_failure(data)
        if failure is None:
            result.report.notes.extend(notes)
            return result
        provider, message = failure
        repair = _repair(result, message)
        if repair is None:
            break
        forced, note = repair
        notes.append(note)
        forced_all = {**forced_all, **forced}
        result = convert(forced_all)
    if _input_fails_too(result, model, provider, notes):
        return result
    raise unloadable(provider, message)


def first_failure(model: bytes | str) -> tuple[str, str] | None:
    """(provider, onnxruntime's message) for the first usable provider that cannot load `model`, or None."""
    return next(((p, m) for p in _providers() if (m := load_problem(model, p)) is not None), None)


def unloadable(provider: str, message: str) -> Float16Error:
    return Float16Error(
        f"the converted model does not load in onnxruntime on {provider} with all graph optimizations, and no "
        f"float32 repair fixed it: {message.splitlines()[0][:500]}"
    )


def _input_fails_too(result, model, provider: str, notes: list[str]) -> bool:
    """True (and a warning in the report) when the input itself does not load on `provider`: not our doing."""
    source = _source_bytes(model)
    source_problem = load_problem(source, provider) if source is not None else None
    if source_problem is None:
        return False
    first = source_problem.splitlines()[0][:200]
    result.report.warnings.append(
        f"the input model does not load in onnxruntime on {provider} either ({first}); "
        "the converted model was checked structurally only"
    )
    result.report.notes.extend(notes)
    return True


class _LoadFailure(Exception):
    """Raised inside a save's temporary folder so that the save publishes nothing."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(message)
        self.provider, self.message = provider, message


def _check_written(model_path: Path) -> None:
    failure = first_failure(str(model_path))
    if failure is not None:
        raise _LoadFailure(*failure)


@dataclass
class SaveCheck:
    """The load check of an external-data result, run by its `save` on the files it writes.

    onnxruntime resolves external data against the model file's folder, so the check needs the written files:
    `run` has `write(result, check)` save the model into its hidden temporary folder and call `check(path)` on
    the model file there before anything is renamed into place. A failure discards that folder, repairs as
    the in-memory check does (re-converting with the failing fusion unit in float32), adopts the repaired
    model and report into `result`, and writes again.
    """

    source: object  # what was converted: a path (or a ModelProto), to tell whether the input itself loads
    convert: Callable[[dict[str, tuple[Rule, str]]], object]
    forced: dict[str, tuple[Rule, str]] = field(default_factory=dict)

    PENDING = "load-checked in onnxruntime when saved: the weights live in external data, which it reads from files"
    DONE = "load-checked in onnxruntime on the saved files (the weights live in external data)"

    def run(self, result, write: Callable[[object, Callable[[Path], None] | None], Path]) -> Path:
        notes: list[str] = []
        for _ in range(MAX_REPAIRS):
            try:
                path = write(result, _check_written)
            except _LoadFailure as failure:
                provider, message = failure.provider, failure.message
            else:
                self._done(result, notes)
                return path
            repair = _repair(result, message)
            if repair is None:
                break
            forced, note = repair
            notes.append(note)
            self.forced = {**self.forced, **forced}
            _adopt(result, self.convert(self.forced))
        if _input_fails_too(result, self.source, provider, notes):
            result.report.notes[:] = [n for n in result.report.notes if n != self.PENDING]
            result.save_check = None
            return write(result, None)
        raise unloadable(provider, message)

    def _done(self, result, notes: list[str]) -> None:
        report_notes = result.report.notes
        if self.PENDING in report_notes:
            report_notes[report_notes.index(self.PENDING)] = self.DONE
        report_notes.extend(notes)
        result.save_check = None


def _adopt(result, repaired) -> None:
    """Make `result` the repaired conversion: the caller holds `result`, and its report must tell the repair."""
    notes = [n for n in repaired.report.notes if n != SaveCheck.PENDING]
    repaired.report.notes[:] = [*notes, SaveCheck.PENDING]
    result._ir, result._proto = repaired._ir, repaired._proto
    result.report, result.fusion = repaired.report, repaired.fusion
