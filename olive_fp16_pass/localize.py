"""Where float16 starts to go wrong: the first tensors, in topological order, whose error jumps.

Both models run once more with every intermediate tensor exposed. A tensor's error is its mean absolute
difference relative to the reference's mean magnitude, the measure the mixed-precision search ranks nodes by.
A tensor "jumps" when it holds NaN/Inf where the reference is finite while none of its producer's inputs do,
or when its error is above `threshold` and `JUMP_FACTOR` times its inputs' worst error: the node that
produced it added the error, rather than passing on what came in. Tensors are matched by name, which our
converter, Olive's and onnxconverter-common's all keep for the original tensors; in an emulated candidate a
tensor is read after its rounding to float16 (what the next node really reads).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from olive_fp16_pass.graph_edit import expose_outputs  # every named tensor as an output, as the search does
from olive_fp16_pass.runtime import SessionFactory, ValidationBackend, run_session

JUMP_FACTOR = 10.0
SAMPLES = 4  # feeds used: enough to see a fault, cheap for a big model


def _rounded_names(proto: onnx.ModelProto) -> dict[str, str]:
    """name -> its float16-rounded copy (Cast to float16 then back to float), as the emulation inserts them."""
    to_half = {}
    for node in proto.graph.node:
        if node.op_type == "Cast" and node.attribute and node.attribute[0].i == onnx.TensorProto.FLOAT16:
            to_half[node.output[0]] = node.input[0]
    rounded = {}
    for node in proto.graph.node:
        if node.op_type == "Cast" and node.attribute and node.attribute[0].i == onnx.TensorProto.FLOAT:
            source = to_half.get(node.input[0])
            if source is not None:
                rounded[source] = node.output[0]
    return rounded


def _json(value: float):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "nan"
    return round(value, 6) if isinstance(value, float) else value


def localize_error(
    reference,
    candidate,
    feeds: list[dict[str, np.ndarray]],
    sessions: SessionFactory,
    backend: ValidationBackend,
    *,
    top: int = 5,
    threshold: float = 1e-2,
) -> dict:
    """The first `top` tensors where the error jumps, and the `top` largest error increases (both sides are
    `model_compare.Side`)."""
    ref_proto, cand_proto = reference.model, candidate.model
    cand_produced = {o for n in cand_proto.graph.node for o in n.output if o}
    nodes = list(ref_proto.graph.node)
    names = [o for n in nodes for o in n.output if o and o in cand_produced]
    rounded = _rounded_names(cand_proto) if candidate.emulated else {}
    cand_names = [rounded.get(n, n) for n in names]
    ref_session = sessions.session(expose_outputs(ref_proto, names), emulation=backend.emulated)
    cand_session = sessions.session(expose_outputs(cand_proto, cand_names), emulation=backend.emulated)
    used = feeds[:SAMPLES]
    stats = _TensorStats(names)
    ref_out = [o.name for o in ref_session.get_outputs()]
    cand_out = [o.name for o in cand_session.get_outputs()]
    for feed in used:
        ref = dict(zip(ref_out, run_session(ref_session, feed), strict=True))
        cand = dict(zip(cand_out, run_session(cand_session, feed), strict=True))
        for name, cand_name in zip(names, cand_names, strict=True):
            stats.add(name, np.asarray(ref[name]), np.asarray(cand[cand_name]), len(used))
    rows = _rows(nodes, stats, threshold)
    first = [r for r in rows if r["jump"]][:top]
    largest = sorted(rows, key=lambda r: -r["increase"])[:top]
    for row in rows:
        row["increase"] = _json(row["increase"])
    return {
        "threshold": threshold,
        "jump_factor": JUMP_FACTOR,
        "samples": len(used),
        "tensors_compared": len(stats.error),
        "first_jumps": [{k: v for k, v in r.items() if k != "jump"} for r in first],
        "largest_increases": [{k: v for k, v in r.items() if k != "jump"} for r in largest],
    }


class _TensorStats:
    """Per tensor, over the feeds: mean relative error, new NaN/Inf count, the reference's largest magnitude."""

    def __init__(self, names: list[str]) -> None:
        self.error = dict.fromkeys(names, 0.0)  # a tensor that is not a comparable float array leaves it
        self.nonfinite = dict.fromkeys(names, 0)
        self.abs_max = dict.fromkeys(names, 0.0)

    def add(self, name: str, r: np.ndarray, c: np.ndarray, samples: int) -> None:
        if not (np.issubdtype(r.dtype, np.floating) and r.size and r.shape == c.shape):
            self.error.pop(name, None)
            return
        r64, c64 = r.astype(np.float64), c.astype(np.float64)
        finite = np.isfinite(r64)
        self.nonfinite[name] += int(np.count_nonzero(finite & ~np.isfinite(c64)))
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(c64[finite] - r64[finite])
            scale = float(np.mean(np.abs(r64[finite]))) if finite.any() else 0.0
            e = float(np.mean(diff) / (scale + 1e-12)) if diff.size else 0.0
        if name in self.error:
            self.error[name] += (e if math.isfinite(e) else math.inf) / samples
        self.abs_max[name] = max(self.abs_max[name], float(np.max(np.abs(r64[finite]))) if finite.any() else 0.0)


def _rows(nodes: list[onnx.NodeProto], stats: _TensorStats, threshold: float) -> list[dict]:
    """One row per compared node output, in graph order, with the error it adds over its inputs' worst."""
    error, nonfinite = stats.error, stats.nonfinite
    rows = []
    for position, node in enumerate(nodes):
        inputs = [i for i in node.input if i in error]
        e_in = max((error[i] for i in inputs), default=0.0)
        bad_in = any(nonfinite.get(i, 0) for i in inputs)
        for out in node.output:
            if out not in error:
                continue
            e_out = error[out]
            jump = not bad_in and (nonfinite[out] > 0 or (e_out > threshold and e_out > JUMP_FACTOR * e_in))
            rows.append(
                {
                    "position": position,
                    "tensor": out,
                    "node": node.name,
                    "op_type": node.op_type,
                    "rel_error": _json(e_out),
                    "input_rel_error": _json(e_in),
                    "increase": e_out - e_in if math.isfinite(e_out - e_in) else math.inf,
                    "nonfinite": nonfinite[out],
                    "reference_abs_max": _json(stats.abs_max[out]),
                    "jump": jump,
                }
            )
    return rows


__all__ = ["localize_error"]
