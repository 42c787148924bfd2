"""Compare two models on the same feeds: the float32 reference and a float16 / mixed candidate.

Both run on the CUDA execution provider when it really works here (checked by a probe session, not by the
provider list). Otherwise they run on the CPU, and a candidate that holds float16 is run as its float16-storage
emulation (`emulation.emulate_float16_storage`): the CPU provider computes float16 ops in float32 behind
Casts and would hide the very overflow a user is looking for. `emulate=False` runs the float16 graph on the
CPU as it is, and the report says that such figures hide intermediate overflow.

The statistics are `compare.output_error`'s (max / mean / 99.9th percentile absolute error, cosine, PSNR),
plus NaN/Inf counts of each side, and the criteria are `compare.Criteria`'s: the same meaning as in the
mixed-precision search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from olive_fp16_pass.compare import Criteria, output_error
from olive_fp16_pass.errors import Float16Error, first_line
from olive_fp16_pass.graph_walk import proto_graphs
from olive_fp16_pass.runtime import SessionFactory, ValidationBackend, choose_backend, run_session

F16 = onnx.TensorProto.FLOAT16


def load_proto(path: str) -> onnx.ModelProto:
    """A model file with its external data in memory, after the loader's checks (clear errors naming the file)."""
    from olive_fp16_pass.model_io import load_model_file

    load_model_file(path)  # missing file, bad protobuf, missing external data: a Float16Error naming it
    try:
        return onnx.load(path, load_external_data=True)
    except Exception as exc:
        raise Float16Error(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from exc


def load_graph(path: str) -> onnx.ModelProto:
    """The model's graph without its external weights (enough to check feeds), after the loader's checks."""
    from olive_fp16_pass.model_io import load_model_file

    load_model_file(path)
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise Float16Error(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from exc


def holds_float16(proto: onnx.ModelProto) -> bool:
    """Whether any tensor of the model is float16 (initializer, input/output, value info, Cast or Constant)."""
    for graph in proto_graphs(proto.graph):
        if any(t.data_type == F16 for t in graph.initializer):
            return True
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.tensor_type.elem_type == F16:
                return True
        for node in graph.node:
            for attr in node.attribute:
                if (node.op_type == "Cast" and attr.name == "to" and attr.i == F16) or (
                    attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == F16
                ):
                    return True
    return False


@dataclass
class Side:
    """How one model is run: the model actually executed, and on what."""

    label: str
    model: onnx.ModelProto
    emulated: bool  # float16 storage emulated on the CPU
    how: str

    def to_dict(self) -> dict:
        return {"emulated": self.emulated, "how": self.how}


def prepare(label: str, proto: onnx.ModelProto, backend: ValidationBackend, emulate: bool) -> Side:
    """The model to execute for one side, and a sentence saying how it runs."""
    if not backend.emulated:
        return Side(label, proto, False, f"as is on {backend.provider}")
    if not holds_float16(proto):
        return Side(label, proto, False, "float32 model on the CPU execution provider")
    if emulate:
        from olive_fp16_pass.emulation import emulate_float16_storage

        try:
            emulated = emulate_float16_storage(proto)
        except Float16Error:
            raise
        except Exception as exc:
            raise Float16Error(f"{label}: float16-storage emulation failed ({type(exc).__name__}: {exc})") from exc
        return Side(label, emulated, True, "float16 storage emulated on the CPU (each float16 tensor rounded)")
    return Side(
        label,
        proto,
        False,
        "float16 graph as is on the CPU execution provider (computes float16 ops in float32: hides overflow)",
    )


def session_for(side: Side, sessions: SessionFactory, backend: ValidationBackend, label: str):
    """A session for one side; optimizations off on the CPU (they could fold the emulation's rounding pairs)."""
    try:
        return sessions.session(side.model, emulation=backend.emulated)
    except Float16Error:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise Float16Error(f"{label}: onnxruntime cannot load it: {first[:400]}") from exc


def _as_float(array) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def _counts(arrays: list[np.ndarray]) -> dict[str, int]:
    nan = inf = 0
    for a in arrays:
        if np.issubdtype(a.dtype, np.floating):
            nan += int(np.count_nonzero(np.isnan(a)))
            inf += int(np.count_nonzero(np.isinf(a)))
    return {"nan": nan, "inf": inf}


def _json_float(value: float):
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


def compare_models(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    *,
    reference_label: str = "reference",
    candidate_label: str = "candidate",
    provider: str = "CUDAExecutionProvider",
    strict: bool = False,
    emulate: bool = True,
    criteria: Criteria | None = None,
    localize: int = 0,
    localize_threshold: float = 1e-2,
) -> dict:
    """Run both models on `feeds`; per-output statistics, criteria, and with `localize` > 0 the first
    tensors where the candidate's error jumps. Returns a JSON-safe dict."""
    ref_outputs = [o.name for o in reference.graph.output]
    cand_outputs = {o.name for o in candidate.graph.output}
    missing = [n for n in ref_outputs if n not in cand_outputs]
    if missing:
        raise Float16Error(
            f"{candidate_label}: has no output named {missing} (its outputs: {sorted(cand_outputs)}); "
            "the two models must have the same output names"
        )
    backend = choose_backend(provider, strict=strict)
    sessions = SessionFactory(backend)
    ref_side = prepare(reference_label, reference, backend, emulate)
    cand_side = prepare(candidate_label, candidate, backend, emulate)
    ref_session = session_for(ref_side, sessions, backend, reference_label)
    cand_session = session_for(cand_side, sessions, backend, candidate_label)
    ref_runs, cand_runs = _run_all(ref_session, cand_session, feeds, ref_outputs)
    outputs, errors = _statistics(ref_outputs, ref_runs, cand_runs, criteria)
    failures = _failures(outputs, errors, criteria)
    result = {
        "reference": {"path": reference_label, **ref_side.to_dict()},
        "candidate": {"path": candidate_label, **cand_side.to_dict()},
        "backend": backend.to_dict(),
        "providers_used": sorted(sessions.providers_seen),
        "samples": len(feeds),
        "outputs": outputs,
        "criteria": criteria.to_dict() if criteria else None,
        "criteria_met": not failures,
        "failures": failures,
    }
    if localize:
        from olive_fp16_pass.localize import localize_error

        result["localize"] = localize_error(
            ref_side, cand_side, feeds, sessions, backend, top=localize, threshold=localize_threshold
        )
    return result


def _run_all(ref_session, cand_session, feeds: list[dict[str, np.ndarray]], outputs: list[str]):
    """Both models' outputs on every feed, as float32 where they are floating point."""
    ref_runs, cand_runs = [], []
    for k, feed in enumerate(feeds):
        try:
            ref_runs.append([_as_float(v) for v in run_session(ref_session, feed, outputs)])
            cand_runs.append([_as_float(v) for v in run_session(cand_session, feed, outputs)])
        except Exception as exc:
            first = first_line(exc)
            raise Float16Error(f"feed {k}: a model failed to run on it: {first[:400]}") from exc
    return ref_runs, cand_runs


def _statistics(names: list[str], ref_runs, cand_runs, criteria: Criteria | None) -> tuple[dict, dict]:
    """Per output: the JSON-safe figures, and the `OutputError` the criteria are checked against."""
    outputs = {}
    errors = {}
    for j, name in enumerate(names):
        refs, cands = [r[j] for r in ref_runs], [c[j] for c in cand_runs]
        if not np.issubdtype(refs[0].dtype, np.floating):
            same = all(np.array_equal(r, c) for r, c in zip(refs, cands, strict=True))
            outputs[name] = {"dtype": str(refs[0].dtype), "identical": same}
            continue
        limits = criteria.for_output(name) if criteria else {}
        error = output_error(refs, cands, limits.get("rtol", 0.0), limits.get("atol", 0.0))
        errors[name] = error
        outputs[name] = {
            "max_abs": _json_float(error.max_abs),
            "mean_abs": _json_float(error.mean_abs),
            "p999_abs": _json_float(error.p999_abs),
            "cosine": _json_float(error.cosine),
            "psnr_db": _json_float(error.psnr),
            "nonfinite_where_reference_finite": error.nonfinite,
            "candidate": _counts(cands),
            "reference": _counts(refs),
        }
    return outputs, errors


def _failures(outputs: dict, errors: dict, criteria: Criteria | None) -> list[str]:
    if criteria is not None:
        failures = criteria.check(errors)
    else:  # no thresholds: only NaN/Inf where float32 is finite fails
        failures = [
            f"{n}: {e.nonfinite} NaN/Inf values where the reference is finite" for n, e in errors.items() if e.nonfinite
        ]
    return failures + [f"{n}: integer output differs" for n, o in outputs.items() if o.get("identical") is False]


def summary_table(result: dict) -> str:
    """The figures a person reads: one line per output, then the criteria and the localized tensors."""
    lines = [
        f"reference: {result['reference']['path']} ({result['reference']['how']})",
        f"candidate: {result['candidate']['path']} ({result['candidate']['how']})",
        f"backend: {result['backend']['mode']} on {result['backend']['provider']} ({result['backend']['reason']}); "
        f"{result['samples']} feeds",
        "",
        f"{'output':24s} {'max_abs':>10s} {'mean_abs':>10s} {'p99.9_abs':>10s} {'cosine':>10s} {'PSNR dB':>8s} "
        f"{'NaN':>6s} {'Inf':>6s}",
    ]

    def fmt(v, width=10, spec=".4g"):
        return f"{v:>{width}{spec}}" if isinstance(v, (int, float)) else f"{v!s:>{width}s}"

    for name, o in result["outputs"].items():
        if "max_abs" not in o:
            lines.append(f"{name:24s} {'identical' if o['identical'] else 'DIFFERENT'} ({o['dtype']})")
            continue
        lines.append(
            f"{name:24s} {fmt(o['max_abs'])} {fmt(o['mean_abs'])} {fmt(o['p999_abs'])} {fmt(o['cosine'], 10, '.6f')} "
            f"{fmt(o['psnr_db'], 8, '.2f')} {o['candidate']['nan']:>6d} {o['candidate']['inf']:>6d}"
        )
    lines.append("")
    if result["criteria"]:
        lines.append(f"criteria {result['criteria']}: {'met' if result['criteria_met'] else 'NOT met'}")
    else:
        lines.append(
            f"no criteria given; NaN/Inf where the reference is finite: {'no' if result['criteria_met'] else 'YES'}"
        )
    lines.extend(f"  - {f}" for f in result["failures"])
    loc = result.get("localize")
    if loc:
        lines.append("")
        if loc["first_jumps"]:
            lines.append("first tensors (topological order) where the error jumps:")
            for t in loc["first_jumps"]:
                lines.append(
                    f"  #{t['position']} {t['tensor']} from {t['op_type']} '{t['node']}': relative error "
                    f"{t['rel_error']} (inputs {t['input_rel_error']}), NaN/Inf {t['nonfinite']}, "
                    f"|max| {t['reference_abs_max']} in the reference"
                )
        else:
            lines.append(f"no tensor's error jumps above {loc['threshold']}; largest increases over the inputs:")
            for t in loc["largest_increases"]:  # sorted by the increase, so that is the figure shown first
                inc = t["increase"]
                lines.append(
                    f"  #{t['position']} {t['tensor']} from {t['op_type']} '{t['node']}': "
                    f"{f'{inc:+g}' if isinstance(inc, (int, float)) else '+' + str(inc)} "
                    f"(relative error {t['rel_error']}, inputs {t['input_rel_error']})"
                )
    return "\n".join(lines)


__all__ = ["compare_models", "holds_float16", "load_proto", "summary_table"]
