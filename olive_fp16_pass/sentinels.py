"""Masking sentinels: values beyond float16's range that only mask, so float16 may hold them saturated.

Exporters write attention masks with float32's lowest value (`torch.finfo(torch.float32).min`, -3.4e38), -1e9
or similar: added to the scores before a Softmax, selected by a Where, or fed to a Min/Max, such a value only
says "this position does not count". In float16 it becomes -65504 (a constant, saturated here as
`torch.finfo(torch.float16).min` would be) or -inf (a computed tensor, or a Cast of an input: onnxruntime's
and numpy's float->float16 casts give inf beyond the range, they do not saturate); the Softmax gives those
positions weight 0 either way. Reading such a tensor as an overflow kept the mask Add and the Softmax of every
attention layer in float32 (issue 10.1): the largest tensors of a transformer, each with two Casts.

A value is recognised as a sentinel by two facts, both required:
- its values: every value beyond the limit has the same sign, is at least `SENTINEL_MIN` in magnitude and at
  least `SENTINEL_GAP` times the largest in-range value (a mask is 0 or scores, and -3.4e38; a true overflow is
  a continuum of values up to and past the limit);
- its uses: every path from it goes through ops that carry a mask (Add, Sub, Mul, Div, Where's values,
  layout ops) to a Softmax (negative sentinel), or to a Min (positive) / Max (negative) where it loses; never
  to a graph output or any other op.

Recognising it is not proving it harmless: a row that is masked everywhere is uniform in float32 but NaN in
float16 (-inf - -inf); the candidate is validated like any other and fails there, so the search keeps float32
what that needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from olive_fp16_pass.weight_ranges import FP16_MAX

SENTINEL_MIN = 1e4  # a sentinel is at least this large (masks use -1e4, -1e9, -3.4e38, -inf)
SENTINEL_GAP = 100.0  # ... and this many times the largest in-range value of its tensor
MAX_STEPS = 64  # ops followed from one tensor before giving up (a mask reaches its Softmax in a few)

# Ops whose output holds the mask where their (float) input does, slot by slot: None = every slot.
_LAYOUT = frozenset(
    {
        "Cast",
        "Reshape",
        "Expand",
        "Unsqueeze",
        "Squeeze",
        "Transpose",
        "Slice",
        "Gather",
        "Concat",
        "Identity",
        "Tile",
        "Flatten",
    }
)
_ADDITIVE = frozenset({"Add", "Sub", "Mul", "Div"})


@dataclass(frozen=True)
class Sentinel:
    """A masking sentinel: its most extreme value and the op where it ends (`"Softmax '/attn/Softmax'"`)."""

    value: float
    feeds: str

    def detail(self, what: str, becomes: str) -> str:
        """Report text, e.g. "weight 'mask': masking sentinel -3.40282e+38 -> -65504 in float16 (feeds ...)"."""
        return f"{what}: masking sentinel {self.value:.6g} -> {becomes} in float16 (feeds {self.feeds})"


@dataclass
class ValueStats:
    """What a tensor's values say about a sentinel, accumulated over samples (only for tensors beyond range)."""

    beyond_min: float = np.inf  # smallest |v| beyond the limit
    extreme: float = 0.0  # the signed value of largest magnitude beyond the limit
    signs: frozenset[int] = frozenset()
    in_range_max: float = 0.0  # largest |v| within the limit

    def update(self, array: np.ndarray, limit: float) -> None:
        values = np.asarray(array, np.float64).ravel()
        values = values[~np.isnan(values)]
        magnitude = np.abs(values)
        beyond = magnitude > limit
        if beyond.any():
            big = values[beyond]
            self.beyond_min = min(self.beyond_min, float(magnitude[beyond].min()))
            peak = big[np.argmax(np.abs(big))]
            if abs(peak) > abs(self.extreme):
                self.extreme = float(peak)
            # not np.unique: its first call imports numpy.ma (0.05-0.1 s, most of a small model's search step)
            signs = {1: bool((big > 0).any()), -1: bool((big < 0).any())}
            self.signs = self.signs | {sign for sign, present in signs.items() if present}
        if (~beyond).any():
            self.in_range_max = max(self.in_range_max, float(magnitude[~beyond].max()))

    def sign(self) -> int | None:
        """The sign of every value beyond the limit when the values look like sentinels, else None."""
        if len(self.signs) != 1:
            return None
        if self.beyond_min < SENTINEL_MIN or self.beyond_min < SENTINEL_GAP * self.in_range_max:
            return None
        return next(iter(self.signs))


def stats_of(array: np.ndarray, limit: float = FP16_MAX) -> ValueStats:
    stats = ValueStats()
    stats.update(array, limit)
    return stats


def masking_use(value: ir.Value, sign: int) -> str | None:
    """Where a sentinel of `sign` in `value` ends ("Softmax 'name'"), if every path from it only masks; else None."""
    terminals: list[str] = []
    pending = [(value, sign)]
    seen: set[tuple[int, int]] = set()
    while pending:
        current, s = pending.pop(0)  # breadth first: the nearest terminal is the one reported
        if (id(current), s) in seen:
            continue
        seen.add((id(current), s))
        if len(seen) > MAX_STEPS or current.is_graph_output():
            return None
        uses = list(current.uses())
        if not uses:
            return None  # an unused tensor masks nothing: not a reason to convert it
        for node, slot in uses:
            op = node.op_type if node.domain in ("", "ai.onnx") else None
            label = f"{node.op_type} '{node.name}'"
            if op == "Softmax" and s < 0:
                terminals.append(label)
            elif (op == "Min" and s > 0) or (op == "Max" and s < 0):
                terminals.append(label)  # the other operand wins wherever the sentinel is
            elif op in _LAYOUT and (op == "Concat" or slot == 0):  # the data slot (others: indices, shapes)
                pending.extend((out, s) for out in node.outputs)
            elif op in _ADDITIVE and not (op == "Div" and slot == 1):
                flipped = -s if op == "Sub" and slot == 1 else s
                pending.extend((out, flipped) for out in node.outputs)
            elif op == "Where" and slot in (1, 2):
                pending.extend((out, s) for out in node.outputs)
            elif op == "Neg":
                pending.extend((out, -s) for out in node.outputs)
            else:
                return None
    return terminals[0] if terminals else None


def constant_sentinel(value: ir.Value, array: np.ndarray) -> Sentinel | None:
    """The sentinel of a constant beyond float16's range, or None when it is a true overflow."""
    sign = stats_of(array).sign()
    if sign is None:
        return None
    feeds = masking_use(value, sign)
    if feeds is None:
        return None
    finite = array[np.isfinite(array)]
    extreme = float(finite[np.argmax(np.abs(finite))]) if finite.size else float(sign) * np.inf
    return Sentinel(extreme, feeds)


def activation_sentinel(value: ir.Value, stats: ValueStats) -> Sentinel | None:
    """The sentinel of a computed tensor whose measured values (`stats`) go beyond the limit, or None."""
    sign = stats.sign()
    if sign is None:
        return None
    feeds = masking_use(value, sign)
    return Sentinel(stats.extreme, feeds) if feeds is not None else None


class SentinelLookup:
    """Which measured tensors beyond the limit hold masking sentinels: the search's reference run and
    calibration ask the same question of the same statistics. The sentinels found are kept for the report."""

    def __init__(self, values: Mapping[str, ir.Value], beyond: Mapping[str, ValueStats]) -> None:
        self.values = values  # tensor name -> its value in the unmodified graph (its uses decide)
        self.beyond = beyond  # tensor name -> its statistics, for tensors that went beyond the limit
        self.found: dict[str, Sentinel] = {}

    def __call__(self, name: str) -> Sentinel | None:
        """The masking sentinel tensor `name` holds, or None: an overflow (or never beyond the limit)."""
        stats = self.beyond.get(name)
        if stats is None or name not in self.values:
            return None
        if name not in self.found:
            sentinel = activation_sentinel(self.values[name], stats)
            if sentinel is None:
                return None
            self.found[name] = sentinel
        return self.found[name]

    def records(self) -> list[dict]:
        """The report's list: each sentinel tensor, its most extreme value, and the op where it ends."""
        return [{"tensor": n, "value": s.value, "feeds": s.feeds} for n, s in self.found.items()]


def sentinel_notes(
    nodes: Iterable[tuple[str, Sequence[str], Sequence[str]]], sentinels: Mapping[str, Sentinel], data: str
) -> dict[str, str]:
    """label -> report text for each node that reads or writes a sentinel tensor (the first one it touches):
    the rule mask_sentinel says why such a node converts although its tensor leaves float16's range."""
    notes: dict[str, str] = {}
    for label, inputs, outputs in nodes:
        for name in [*outputs, *inputs]:
            sentinel = sentinels.get(name)
            if sentinel is not None and label not in notes:
                sign = math.copysign(1.0, sentinel.value)
                notes[label] = sentinel.detail(f"tensor '{name}' {data}", f"{sign * FP16_MAX:g} or {sign * math.inf}")
    return notes


__all__ = [
    "SENTINEL_GAP",
    "SENTINEL_MIN",
    "Sentinel",
    "SentinelLookup",
    "ValueStats",
    "activation_sentinel",
    "constant_sentinel",
    "masking_use",
    "sentinel_notes",
    "stats_of",
]
