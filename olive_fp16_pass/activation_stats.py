"""Activation ranges: one float32 run over calibration feeds, streamed, and the range rule that reads them.

Calibrated Float16 (`convert_float16(..., calibration_data=feeds)`) is ModelOpt AutoCast's idea: measure the
activations once in float32 and keep in float32 the nodes whose tensors leave float16's range. AutoCast
loads every sample into memory and then measures only the first one. Here the feeds are consumed one at a
time from any iterable (a generator, an Olive data loader) and every one of them counts: each run's outputs
are folded into running per-tensor statistics and dropped before the next feed is drawn, so memory is the
model's session plus one feed's tensors plus two numbers per tensor, whatever the number of feeds; and since
only scalars are kept, every feed may have other shapes (dynamic batch, sequence length, image size).

What is kept per tensor, and why that much: the largest finite |value| (and, for the report, how many
values were NaN/Inf). It decides both range rules, which are the search's own (`range_decisions`, shared
with `auto_mixed_precision` so that a node kept for its range reads the same in both reports):
- overflow: the largest |value| beyond 65504 / `overflow_margin` (the margin leaves room for what float16
  arithmetic adds on the way: rounded inputs, a reduction's partial sums);
- underflow: a node output whose largest |value| is below ~3e-6, so that every one of its values loses over
  1% in float16 (the rule the weights follow too, weight_ranges.py).
The smallest non-zero |value| would decide nothing useful: nearly every real tensor holds some tiny values
(a ReLU's, a residual's near-cancellations), so a rule on it would keep almost every node in float32, while
those values are negligible next to the tensor's large ones, which float16 keeps to 0.05%. A share of
underflowing values would need a threshold of its own that the search does not use; abs-max is enough.

Tensors are exposed as extra graph outputs of ONE float32 session (CPU, optimizations off: exact tensors),
as the search does; the session comes from runtime.SessionFactory, which handles external data (the
session names the model's folder, onnxruntime memory-maps the data) and weights held in memory beyond
protobuf's 2 GB (supplied as OrtValues). Only main-graph tensors can be outputs: nodes inside If/Loop/Scan
bodies are not measured (their interface is float32 anyway).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir

from olive_fp16_pass import element_types
from olive_fp16_pass.errors import Float16Error, first_line
from olive_fp16_pass.graph_walk import GraphIndex
from olive_fp16_pass.precision_plan import ForcedDecision, Origin, Rule
from olive_fp16_pass.sentinels import SentinelLookup, ValueStats, sentinel_notes
from olive_fp16_pass.weight_ranges import FP16_MAX, FP16_UNDERFLOW

if TYPE_CHECKING:
    from olive_fp16_pass.model_io import LoadedModel

Feed = Mapping[str, np.ndarray]
DEFAULT_OVERFLOW_MARGIN = 2.0
# tensors of up to this many values are reduced together (ActivationStats.observe)
_BATCHED_SIZE = 1 << 16


@dataclass
class TensorStats:
    """Running statistics of one tensor over every feed seen so far."""

    abs_max: float = 0.0  # largest finite |value|
    nonfinite: int = 0  # NaN/Inf values (left out of abs_max, as the search does)
    # only for tensors that went beyond the limit: could those values be masking sentinels (sentinels.py)?
    beyond: ValueStats | None = None


@dataclass
class ActivationStats:
    """Per-tensor running statistics: O(number of tensors) state, folded in one feed at a time."""

    tensors: dict[str, TensorStats] = field(default_factory=dict)
    feeds: int = 0
    limit: float = FP16_MAX / DEFAULT_OVERFLOW_MARGIN  # beyond it, a tensor's values are kept for the sentinel test

    def update(self, name: str, value: Any) -> None:
        """Fold one array of tensor `name` in; empty and non-float arrays say nothing about float16 ranges."""
        array = np.asarray(value)
        if not array.size or array.dtype.kind != "f":
            return
        # max and -min: two reductions and no |array| copy (the reference run folds every tensor of the model)
        self._fold(name, array, max(float(array.max()), -float(array.min())))

    def _fold(self, name: str, array: np.ndarray, peak: float) -> None:
        """Fold in `array` whose max(max, -min) is `peak` (NaN or inf when the array holds any)."""
        bad = 0
        finite = array
        if not math.isfinite(peak):
            mask = np.isfinite(array)
            kept = int(np.count_nonzero(mask))
            bad = array.size - kept
            finite = array[mask]
            peak = float(np.abs(finite).max()) if kept else 0.0
        stats = self.tensors.get(name)
        if stats is None:
            stats = self.tensors[name] = TensorStats()
        if peak > self.limit or stats.beyond is not None:
            # earlier feeds, all within the limit, count as in-range values (as in the search's reference run)
            if stats.beyond is None:
                stats.beyond = ValueStats(in_range_max=stats.abs_max)
            stats.beyond.update(finite, self.limit)
        stats.abs_max = max(stats.abs_max, peak)
        stats.nonfinite += bad

    def observe(self, values: Iterable[tuple[str, Any]]) -> None:
        """Fold in every tensor of one feed's run.

        The small float32 tensors are reduced together, two numpy calls over one concatenated copy instead of
        two per tensor: most tensors of a model are small, and per-call overhead was most of the reference run's
        cost (enc300 of bench/amp_speed.py: 300 tensors of 512 values a feed, 0.98 ms a feed folded one by one,
        0.43 ms together). Bigger tensors are reduced on their own: no copy of them."""
        small: list[tuple[str, np.ndarray]] = []
        for name, value in values:
            array = np.asarray(value)
            if array.dtype == np.float32 and 0 < array.size <= _BATCHED_SIZE:
                small.append((name, array))
            else:
                self.update(name, array)
        if small:
            sizes = [array.size for _, array in small]
            flat = np.concatenate([array.ravel() for _, array in small])
            starts = np.cumsum([0, *sizes[:-1]])
            peaks = np.maximum(np.maximum.reduceat(flat, starts), -np.minimum.reduceat(flat, starts)).tolist()
            for (name, array), peak in zip(small, peaks, strict=True):
                self._fold(name, array, peak)
        self.feeds += 1

    def abs_max(self) -> dict[str, float]:
        return {name: stats.abs_max for name, stats in self.tensors.items()}

    def beyond(self) -> dict[str, ValueStats]:
        """The tensors that went beyond the limit, with the statistics the sentinel test reads."""
        return {name: stats.beyond for name, stats in self.tensors.items() if stats.beyond is not None}


def range_decisions(
    nodes: Iterable[tuple[str, Sequence[str], Sequence[str]]],
    abs_max: Mapping[str, float],
    overflow_margin: float,
    *,
    data: str = "validation data",
    origin: Origin = Origin.RANGE,
    is_sentinel: Callable[[str], bool] | None = None,
) -> dict[str, ForcedDecision]:
    """The activation-range rule: label -> float32 decision for each node, given as (label, input names,
    output names), that reads or writes a tensor beyond 65504 / `overflow_margin`, or writes one entirely
    subnormal in float16. The mixed-precision search and calibrated Float16 both decide with it. A tensor for
    which `is_sentinel` is true holds masking sentinels (sentinels.py), not an overflow."""
    limit = FP16_MAX / overflow_margin
    forced: dict[str, ForcedDecision] = {}
    for label, inputs, outputs in nodes:
        for name in [*inputs, *outputs]:
            peak = abs_max.get(name)
            if peak is None:
                continue
            if peak > limit and not (is_sentinel is not None and is_sentinel(name)):
                forced[label] = ForcedDecision(
                    Rule.ACTIVATION_OVERFLOW,
                    f"tensor '{name}' reaches |{peak:.6g}| on {data} > {limit:g} "
                    f"(float16 max {FP16_MAX:g} / margin {overflow_margin:g})",
                    origin,
                )
                break
            if 0 < peak < FP16_UNDERFLOW and name in outputs:
                forced[label] = ForcedDecision(
                    Rule.ACTIVATION_UNDERFLOW,
                    f"tensor '{name}' stays below {peak:.3g} on {data}: float16 would lose over 1% of it",
                    origin,
                )
                break
    return forced


def check_overflow_margin(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
        raise Float16Error(f"overflow_margin: expected a finite number >= 1, got {value!r}")
    return float(value)


@dataclass
class Calibration:
    """What one calibration pass measured and decided."""

    forced: dict[str, ForcedDecision]
    stats: ActivationStats
    overflow_margin: float
    seconds: float = 0.0
    tensors_exposed: int = 0
    # tensors beyond the limit whose values only mask (sentinels.py): not an overflow
    sentinels: SentinelLookup = field(default_factory=lambda: SentinelLookup({}, {}))
    # label -> report text, for the float16 nodes that read or write a sentinel tensor
    sentinel_notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        nonfinite = {name: s.nonfinite for name, s in self.stats.tensors.items() if s.nonfinite}
        return {
            "samples": self.stats.feeds,
            "tensors_measured": len(self.stats.tensors),
            "tensors_exposed": self.tensors_exposed,
            "overflow_margin": self.overflow_margin,
            "sessions_created": 1,
            "nodes_fp32": len(self.forced),
            "tensors_with_nan_inf": nonfinite,
            "sentinels": self.sentinels.records(),
            "seconds": round(self.seconds, 3),
        }


def _feed_iterator(feeds: Iterable[Feed]) -> Iterator[Feed]:
    """`feeds` as an iterator, or a Float16Error naming `calibration_data` (a single dict is the usual slip)."""
    if isinstance(feeds, Mapping):
        raise Float16Error(
            "calibration_data: expected an iterable of feeds (dicts input name -> array), got a single dict: "
            "wrap it in a list"
        )
    try:
        return iter(feeds)
    except TypeError:
        raise Float16Error(
            f"calibration_data: expected an iterable of feeds (dicts input name -> array), got {type(feeds).__name__}"
        ) from None


def calibrate(
    model: onnx.ModelProto | str | os.PathLike,
    feeds: Iterable[Feed],
    *,
    overflow_margin: float = DEFAULT_OVERFLOW_MARGIN,
    loaded: LoadedModel | None = None,
) -> Calibration:
    """One float32 run over every feed of `feeds` (consumed once, one at a time): the activation ranges, and the
    nodes they keep in float32 (origin `calibration`), keyed by the labels the converter gives them.

    `loaded`: `model` already loaded (model_io.load), as convert_float16 does so that the conversion after the
    calibration reads, checks and deserializes it once; the graph is left as it was found."""
    from olive_fp16_pass.model_io import load

    start = time.perf_counter()
    margin = check_overflow_margin(overflow_margin)
    iterator = _feed_iterator(feeds)
    if loaded is None:
        loaded = load(model)  # the checks and repairs of every route; external data stays memory-mapped
    base_dir = None
    if loaded.external:
        base_dir = Path.cwd() if isinstance(model, onnx.ModelProto) else Path(model).resolve().parent
    ir_model = loaded.model
    graph = ir_model.graph
    index = GraphIndex(ir_model)
    types = element_types.infer(ir_model, index)
    loaded.analysis = (index, types)  # of the graph as loaded: the outputs added below are removed again
    nodes = [(index.labels[id(node)], node) for node in graph]
    exposed = [v for _, node in nodes for v in node.outputs if v.name and types.is_float32(v)]
    original_outputs = list(graph.outputs)
    present = {id(v) for v in graph.outputs}
    for value in exposed:  # the graph's own float outputs are measured too; the others are added
        if id(value) not in present:
            graph.outputs.append(value)
            present.add(id(value))
    names = [v.name for v in exposed]
    float_inputs = [v.name for v in graph.inputs if v.name and types.is_float32(v)]
    stats = measure(ir_model, loaded.proto, names, float_inputs, iterator, base_dir, FP16_MAX / margin)
    if stats.feeds == 0:
        raise Float16Error("calibration_data: no feeds given (need at least one input feed)")
    graph.outputs.clear()  # the graph as it was: a sentinel's uses must not include the outputs added to measure
    graph.outputs.extend(original_outputs)
    by_name = {v.name: v for v in [*graph.inputs, *exposed] if v.name}
    sentinels = SentinelLookup(by_name, stats.beyond())
    edges = [
        (label, [v.name for v in node.inputs if v is not None], [v.name for v in node.outputs]) for label, node in nodes
    ]
    forced = range_decisions(
        edges,
        stats.abs_max(),
        margin,
        data="calibration data",
        origin=Origin.CALIBRATION,
        is_sentinel=lambda name: sentinels(name) is not None,
    )
    notes = sentinel_notes(edges, sentinels.found, "on calibration data")
    return Calibration(forced, stats, margin, time.perf_counter() - start, len(names), sentinels, notes)


def measure(
    model: ir.Model,
    proto: onnx.ModelProto,
    names: Sequence[str],
    float_inputs: Sequence[str],
    feeds: Iterable[Feed],
    base_dir: Path | None,
    limit: float = FP16_MAX / DEFAULT_OVERFLOW_MARGIN,
) -> ActivationStats:
    """Run `model` (its tensors `names` exposed as outputs) in float32 on each feed and fold the results in.

    `proto` (the graph, weights not needed) checks each feed against the inputs before it runs, so a bad feed
    is a Float16Error naming it. Nothing of a run outlives the next feed.
    """
    from olive_fp16_pass.feeds import check_feeds
    from olive_fp16_pass.model_io import estimate_size
    from olive_fp16_pass.runtime import BIG_MODEL_BYTES, CPU, SessionFactory, ValidationBackend, run_session

    backend = ValidationBackend(CPU, "emulation", CPU, "float32 calibration run")
    sessions = SessionFactory(backend, base_dir, estimate_size(model) >= BIG_MODEL_BYTES)
    try:
        # float32 on the CPU with optimizations off: the exact tensors, as the search's reference run
        session = sessions.session(model, emulation=True)
    except Float16Error:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise Float16Error(f"calibration: onnxruntime cannot load the float32 model: {first}") from exc
    stats = ActivationStats(limit=limit)
    wanted = list(names)
    for k, feed in enumerate(feeds):
        try:
            check_feeds(proto, [feed], what="calibration_data")
        except Float16Error as exc:
            raise Float16Error(str(exc).replace("calibration_data[0]", f"calibration_data[{k}]", 1)) from None
        outputs = run_session(session, feed, wanted)
        stats.observe(zip(wanted, outputs, strict=True))
        for name in float_inputs:  # the feeds themselves: an input beyond float16 overflows when cast
            if name in feed:
                stats.update(name, feed[name])
        del outputs, feed
    return stats


__all__ = [
    "ActivationStats",
    "Calibration",
    "TensorStats",
    "calibrate",
    "check_overflow_margin",
    "measure",
    "range_decisions",
]
