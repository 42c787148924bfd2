"""Float16's limits, and the range of every constant tensor measured once per model.

A constant read by many nodes (a shared embedding, a mask) is measured once however many nodes and
candidates ask about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

if TYPE_CHECKING:
    from olive_fp16_pass.sentinels import Sentinel

FP16_MAX = 65504.0
# Below 2**-14 float16 values are subnormal, with a fixed step of 2**-24, so the rounding error of a value v is
# up to 2**-25 / v relative. A tensor whose LARGEST |value| is below FP16_UNDERFLOW (~3e-6) loses more than 1%
# even there (and values under 2**-25 become 0). Above it the tensor survives: LayerNorm's eps of 1e-5 is
# stored within 0.3%, and flagging it (an earlier threshold of 2**-14) kept every LayerNorm's Add(eps) in
# float32 for nothing (bench/amp_speed.py, enc300: 14 needless float32 nodes).
FP16_MIN_NORMAL = 2.0**-14
FP16_UNDERFLOW = 2.0**-25 / 0.01
# Half the smallest subnormal step: values below it become 0 in float16.
FP16_ROUNDS_TO_ZERO = 2.0**-25
# The rounding error (relative, in norm) beyond which a tensor is said to underflow: float16 stores normal
# values within 2**-11 (0.05%); 1% is twenty times that.
UNDERFLOW_REL_ERROR = 0.01


@dataclass
class WeightRange:
    """Range of a constant tensor, measured once however many nodes read it."""

    name: str
    abs_max: float
    overflows: bool
    all_underflow: bool
    # measured only for tensors below FP16_UNDERFLOW (else 0): ||fp16(w) - w|| / ||w||, and whether every
    # value of the tensor becomes 0 in float16
    fp16_rel_error: float = 0.0
    vanishes: bool = False
    # Set when the values beyond ±65504 are masking sentinels (sentinels.py): float16 holds them as ±65504.
    sentinel: Sentinel | None = None


class WeightRanges:
    """Cache of `WeightRange` by value, shared by every candidate of a search."""

    def __init__(self) -> None:
        self._cache: dict[int, WeightRange | None] = {}

    def of(self, value: ir.Value) -> WeightRange | None:
        key = id(value)
        if key not in self._cache:
            self._cache[key] = _measure(value)
        return self._cache[key]


def constant_tensor(value: ir.Value) -> ir.TensorProtocol | None:
    """The tensor behind an initializer or a Constant node's output; None for computed values.

    Not `ir.convenience.get_const_tensor`: it renames a Constant's `value` tensor to the output's name in
    place (onnx-ir 1.1), which would change the written model where we only read it.
    """
    if value.const_value is not None and (value.is_initializer() or value.producer() is None):
        return value.const_value
    producer = value.producer()
    if producer is None or producer.op_type != "Constant":
        return None
    attributes = producer.attributes
    if "value" in attributes:
        return attributes["value"].value
    # value_float / value_floats hold float32 data too: leaving them out skipped the range check, and a
    # Constant of 1e6 became inf in float16 with no warning (issue 14.1)
    for name in ("value_float", "value_floats"):
        if name in attributes:
            return ir.tensor(np.asarray(attributes[name].value, dtype=np.float32), name=value.name)
    return None


def _through_identity(value: ir.Value) -> ir.Value:
    """The value an Identity chain copies: TorchScript routes every deduplicated initializer through Identity
    nodes (ConvNeXt's equal layer scales), and a node reading such a copy reads that constant all the same.
    Only for measuring: the conversion still rewrites constants where they are defined."""
    for _ in range(64):  # chains are short; a bound keeps a malformed graph from looping
        producer = value.producer()
        if producer is None or producer.op_type != "Identity" or producer.domain not in ("", "ai.onnx"):
            break
        source = producer.inputs[0] if producer.inputs else None
        if source is None:
            break
        value = source
    return value


def _measure(value: ir.Value) -> WeightRange | None:
    tensor = constant_tensor(_through_identity(value))
    if tensor is None or tensor.dtype != ir.DataType.FLOAT:
        return None
    array = tensor.numpy()
    if array.size == 0:
        return WeightRange(value.name or "", 0.0, False, False)
    abs_max = float(np.max(np.abs(array)))
    finite_max = abs_max if np.isfinite(abs_max) else float(np.max(np.abs(array[np.isfinite(array)]), initial=0.0))
    rel_error = 0.0
    if 0.0 < abs_max < FP16_UNDERFLOW:
        # the error float16 really makes, not a bound: a value on float16's subnormal grid (2**-20) is exact
        exact = array.astype(np.float64)
        rel_error = float(np.linalg.norm(exact.astype(np.float16).astype(np.float64) - exact) / np.linalg.norm(exact))
    overflows = finite_max > FP16_MAX
    sentinel = None
    if overflows:
        from olive_fp16_pass.sentinels import constant_sentinel  # it reads FP16_MAX from here

        sentinel = constant_sentinel(value, array)
    return WeightRange(
        name=value.name or "",
        abs_max=abs_max,
        overflows=overflows,
        all_underflow=rel_error > UNDERFLOW_REL_ERROR,
        fp16_rel_error=rel_error,
        vanishes=0.0 < abs_max < FP16_ROUNDS_TO_ZERO,
        sentinel=sentinel,
    )


__all__ = [
    "FP16_MAX",
    "FP16_MIN_NORMAL",
    "FP16_ROUNDS_TO_ZERO",
    "FP16_UNDERFLOW",
    "UNDERFLOW_REL_ERROR",
    "WeightRange",
    "WeightRanges",
    "constant_tensor",
]
