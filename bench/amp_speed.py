"""Mixed-precision search benchmark: olive_fp16_pass vs onnxconverter-common, same models, feeds and tolerance.

Compares `olive_fp16_pass.auto_mixed_precision` ("ours") with onnxconverter-common's
`auto_mixed_precision.auto_convert_mixed_precision` ("occ") on the models of `bench/amp_models.py`: wall time,
ONNX Runtime sessions created, nodes kept in float16, and accuracy on held-out feeds that neither search saw.

Usage (from the repository root, in the project's venv):

    python bench/amp_speed.py                                # all 7 models, 600 s per search (~6 min on 2 cores)
    python bench/amp_speed.py --models enc300 --timeout 120  # one model, a smoke run
    python bench/amp_speed.py --runs ours-all,ours-1          # skip occ
    python bench/amp_speed.py --repeat 3                      # fastest of 3 runs each (a loaded machine)

Models (`bench/amp_models.py`): `enc300` and `enc1500` (encoder-like, ~300 and ~1,500 nodes, one overflow and
one cancellation spot: the rows the 10x targets apply to), `denoiser` (the shipped 114-node U-Net, a small
real model), and `enc300ln` (enc300 with the overflow flowing into a LayerNorm, which onnxconverter-common's
converter cannot keep in float32: its search can only fail there; a separate row for that reason), and the
CI's exported models of tests/data/real (`gpt2_past_tiny`, `bert_tiny_dynamo`, `mobilenet_v3_small_w05`, with
their 3 stored feeds: 2 validate, 1 is held out).

Why it is built this way:

- Each (model, run) executes in its own subprocess, so one tool's caches, imports or thread pools cannot help
  or hurt the other, and a search that runs past `--timeout` is stopped (SIGALRM in the child, so it still
  reports the sessions it had created: a lower bound) or killed. A timed-out occ run makes its ratios lower
  bounds ("> 12.3x").
- Same data: 8 feeds per model, the last 2 held out. occ accepts ONE feed dict (`feed_dict`), so it validates on
  the first validation feed. Ours runs twice: `ours-all` gets the 6 validation feeds plus the 2 held-out ones
  (it holds out the last 25% itself), `ours-1` gets the same single validation feed as occ plus the 2 held-out
  ones: the strictly equal comparison.
- Same tolerance, numpy `allclose(rtol, atol)` for both; `keep_io_types=True` for both, so rounding of the
  model's inputs and outputs does not dominate the error.
- Fair validation: occ builds its sessions on the CPU execution provider, which computes float16 ops in float32
  and so hides float16 overflow. In the occ child only, `onnxruntime.InferenceSession` is replaced by a subclass
  that, for a model holding float16 tensors (occ's candidates), first applies
  `olive_fp16_pass.emulation.emulate_float16_storage` and disables graph optimizations (which could fold the
  rounding Casts): occ's validator then sees true float16 storage, as ours does with
  `provider="CPUExecutionProvider"`. The time spent in that wrapper is measured and reported ("patch s"); the
  headline time ratio subtracts it, so the wrapper can only make occ look faster, never slower.
- Sessions are counted the same way for both: every `onnxruntime.InferenceSession` constructed during the timed
  call, by the same subclass (ours' own `report.search["sessions_created"]` is kept in the JSON too).
- Same judge: both final models are run through `emulate_float16_storage` (true float16 storage) on the
  held-out feeds and compared with the FP32 model run on the CPU execution provider.
- Same FP16 node count: for both final models, a node of the original graph counts as float16 when ONNX shape
  inference (value_info stripped first) types one of its outputs float16; the denominator is the nodes of the
  original graph that output a float32 tensor. Ours' own report counts are in the JSON. The FLOPs share
  weighs those nodes by `olive_fp16_pass.node_cost` estimates from one FP32 run's shapes (a CPU-side proxy for
  GPU speed), and `Casts` counts the Cast nodes each final model adds. At equal tolerance, wherever occ's
  result is accurate on held-out data, ours must keep at least as many nodes and FLOPs in FP16 (no slack).
- Baseline rows (full FP16 with onnxconverter-common's plain converter, FP16 with only the injected spots kept in
  FP32, and FP32) show that the tolerance rejects full FP16 and accepts a model with only the truly sensitive
  nodes in FP32, so both searches have a real but small job.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO_ROOT) not in sys.path:  # run as `python bench/amp_speed.py`: this checkout's package and `bench`
    sys.path.insert(0, str(REPO_ROOT))

from bench.amp_models import MODEL_KEYS, build_all  # noqa: E402  (after the path is set)
from bench.bench_env import (  # noqa: E402
    check_choices,
    count_op,
    cpu_session,
    environment,
    machine_lines,
    source_digest,
    write_results,
)

MODELS = MODEL_KEYS
RUNS = ("ours-all", "ours-1", "occ")
RUN_LABELS = {
    "ours-all": "olive_fp16_pass.auto_mixed_precision, 6 validation feeds (+2 held out)",
    "ours-1": "olive_fp16_pass.auto_mixed_precision, validation feed 0 only, as occ (+2 held out)",
    "occ": "onnxconverter_common.auto_mixed_precision.auto_convert_mixed_precision, feed_dict = validation feed 0",
}
DEFAULT_RTOL = 1e-2
DEFAULT_ATOL = 2e-2
GRACE_S = 120.0  # parent's slack over the child's timeout: loading, held-out evaluation, node counting
TARGET_RATIO = 10.0
DIGEST_KEY = "olive_fp16_pass (sha256 of sources)"
FLOAT = onnx.TensorProto.FLOAT
FLOAT16 = onnx.TensorProto.FLOAT16


# ----------------------------------------------------------------------------------------------------------------
# Shared by parent and child: judging a final model, counting its float16 nodes.
# ----------------------------------------------------------------------------------------------------------------


def _session(model: onnx.ModelProto, *, optimize: bool) -> Any:
    """A CPU session; `optimize=False` for emulated models, whose rounding Cast pairs ORT could fold away."""
    return cpu_session(model, optimize=optimize)


def reference_outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """FP32 outputs on the CPU execution provider: what both tools' final models are judged against."""
    session = _session(model, optimize=True)
    return [[np.asarray(o) for o in session.run(None, feed)] for feed in feeds]


def _errors(
    outputs: list[list[np.ndarray]], reference: list[list[np.ndarray]], rtol: float, atol: float
) -> dict[str, Any]:
    """Max abs error (inf when the candidate is non-finite where FP32 is finite) and allclose over all feeds."""
    worst, met, need = 0.0, True, 0.0
    for got_feed, ref_feed in zip(outputs, reference, strict=True):
        for got, ref in zip(got_feed, ref_feed, strict=True):
            got64, ref64 = np.asarray(got, np.float64), np.asarray(ref, np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                diff = np.abs(got64 - ref64)
            bad = ~np.isfinite(got64) & np.isfinite(ref64)
            worst = max(worst, math.inf if bad.any() else (float(np.nanmax(diff)) if diff.size else 0.0))
            met = met and bool(np.allclose(got64, ref64, rtol=rtol, atol=atol))
            with np.errstate(invalid="ignore"):
                excess = diff - rtol * np.abs(ref64)
            need = max(need, math.inf if bad.any() or np.isnan(excess).any() else float(excess.max(initial=0.0)))
    return {"max_abs_err": worst, "tol_met": met, "atol_needed_at_rtol": need}


def judge(
    final: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    reference: list[list[np.ndarray]],
    n_holdout: int,
    rtol: float,
    atol: float,
) -> dict[str, Any]:
    """Accuracy of a float16/mixed model with true float16 storage, on validation and held-out feeds.

    Also checks that the real (non-emulated) model loads and runs on the CPU execution provider: an emulation
    that passes is worthless if the model itself is broken.
    """
    from olive_fp16_pass.emulation import emulate_float16_storage

    session = _session(emulate_float16_storage(final), optimize=False)
    outputs = [[np.asarray(o) for o in session.run(None, feed)] for feed in feeds]
    split = len(feeds) - n_holdout
    result = {
        "validation": _errors(outputs[:split], reference[:split], rtol, atol),
        "holdout": _errors(outputs[split:], reference[split:], rtol, atol),
    }
    try:
        real = _session(final, optimize=True)
        feed = {
            i.name: feeds[0][i.name].astype(np.float16 if "float16" in i.type else feeds[0][i.name].dtype)
            for i in real.get_inputs()
        }
        real.run(None, feed)
        result["real_model_runs"] = True
    except Exception as exc:
        result["real_model_runs"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return result


def _output_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor from ONNX shape inference, with the model's own value_info dropped first."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=False)
    types = {t.name: t.data_type for t in inferred.graph.initializer}
    for info in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the main-graph nodes that output a float32 tensor: the denominator of "nodes in FP16"."""
    types = _output_types(model)
    return [n.name for n in model.graph.node if any(types.get(o) == FLOAT for o in n.output)]


def node_flops(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Estimated FLOPs of each named main-graph node (olive_fp16_pass.node_cost), from the shapes of one FP32 run
    with every node output exposed: the same weights for both tools' results."""
    import onnxruntime as ort

    from olive_fp16_pass.node_cost import node_costs

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in present:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = {n: np.shape(v) for n, v in zip(names, session.run(None, feed), strict=True)}
    shapes.update({n: np.shape(v) for n, v in feed.items()})
    labels = [node.name for node in model.graph.node]
    return {label: cost.flops for label, cost in node_costs(model, labels, shapes).items() if label}


def fp16_count(
    original: onnx.ModelProto, final: onnx.ModelProto, flops: dict[str, float] | None = None
) -> dict[str, Any]:
    """Which float nodes of `original` output float16 in `final` (matched by node name), their share of the
    estimated FLOPs (`flops` by node name), and the Casts `final` adds: measured alike for all."""
    candidates = float_nodes(original)
    types = _output_types(final)
    by_name = {n.name: n for n in final.graph.node}
    fp16, fp32, missing = [], [], []
    for name in candidates:
        node = by_name.get(name)
        if node is None:
            missing.append(name)
        elif any(types.get(o) == FLOAT16 for o in node.output):
            fp16.append(name)
        else:
            fp32.append(name)
    flops = flops or {}
    total = sum(flops.get(name, 0.0) for name in candidates)
    half = sum(flops.get(name, 0.0) for name in fp16)
    return {
        "float_nodes": len(candidates),
        "fp16_nodes": len(fp16),
        "fp16_pct": 100.0 * len(fp16) / max(1, len(candidates)),
        "flops_total": total,
        "fp16_flops": half,
        "fp16_flops_pct": 100.0 * half / total if total else None,
        "casts_added": count_op(final, "Cast") - count_op(original, "Cast"),
        "fp32_node_names": fp32,
        "missing_node_names": missing,
    }


# ----------------------------------------------------------------------------------------------------------------
# Child process: one search, timed, with sessions counted; then judged.
# ----------------------------------------------------------------------------------------------------------------


class SearchTimeout(BaseException):
    """Raised by SIGALRM in the child; a BaseException so that a tool's `except Exception` cannot swallow it."""


class SessionHook:
    """Counts `onnxruntime.InferenceSession` constructions; for occ, also emulates float16 storage.

    Installed by replacing the module attribute: both tools look `ort.InferenceSession` up at call time.
    A subclass rather than a function, so `isinstance(..., InferenceSession)` in either tool still holds.
    """

    def __init__(self, *, emulate: bool) -> None:
        import onnxruntime as ort

        self.ort = ort
        self.original = ort.InferenceSession
        self.created = 0
        self.emulated = 0
        self.overhead_s = 0.0
        hook = self

        class CountingSession(self.original):  # type: ignore[misc, valid-type]
            def __init__(
                self, path_or_bytes: Any, sess_options: Any = None, providers: Any = None, *args: Any, **kwargs: Any
            ) -> None:
                hook.created += 1
                if emulate and isinstance(path_or_bytes, bytes):
                    path_or_bytes, sess_options = hook.emulate(path_or_bytes, sess_options)
                super().__init__(path_or_bytes, sess_options, providers, *args, **kwargs)

        self.session_class = CountingSession

    def emulate(self, data: bytes, options: Any) -> tuple[bytes, Any]:
        """occ's float16 candidates become float32 models with float16 storage emulated; FP32 models pass through."""
        from olive_fp16_pass.emulation import emulate_float16_storage

        start = time.perf_counter()
        try:
            proto = onnx.load_from_string(data)
            if not _has_float16(proto.graph):
                return data, options
            self.emulated += 1
            options = options if options is not None else self.ort.SessionOptions()
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            return emulate_float16_storage(proto).SerializeToString(), options
        finally:
            self.overhead_s += time.perf_counter() - start

    def install(self) -> None:
        self.ort.InferenceSession = self.session_class

    def uninstall(self) -> None:
        self.ort.InferenceSession = self.original


def _has_float16(graph: onnx.GraphProto) -> bool:
    """A candidate from a float16 converter: float16 weights, a Cast to float16, or a float16-typed value."""
    if any(t.data_type == FLOAT16 for t in graph.initializer):
        return True
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type == FLOAT16:
            return True
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT16:
                return True
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT16:
                return True
            if attr.type == onnx.AttributeProto.GRAPH and _has_float16(attr.g):
                return True
    return False


def _prepare(
    run: str, model: onnx.ModelProto, spec: dict[str, Any], feeds: list[dict[str, np.ndarray]], details: dict[str, Any]
) -> Callable[[], onnx.ModelProto]:
    """Import the tool and build its call (outside the timed region); the call returns the final ModelProto."""
    n_val, n_hold = spec["n_validation"], spec["n_holdout"]
    validation, holdout = feeds[:n_val], feeds[n_val:]
    rtol, atol = spec["rtol"], spec["atol"]
    if run in ("ours-all", "ours-1"):
        from olive_fp16_pass import auto_mixed_precision

        data = validation + holdout if run == "ours-all" else validation[:1] + holdout
        # Exactly the last n_hold feeds are held out: floor(len * fraction) == n_hold.
        fraction = (n_hold + 0.5) / len(data)
        details.update(validation_feeds=len(data) - n_hold, holdout_feeds=n_hold, holdout_fraction=fraction)

        def ours() -> onnx.ModelProto:
            result = auto_mixed_precision(
                model,
                data,
                rtol=rtol,
                atol=atol,
                provider="CPUExecutionProvider",
                keep_io_types=True,
                holdout_fraction=fraction,
                progress=False,
                # 1.0: the tolerance occ gets. Ours defaults to 0.8 under emulation (a GPU safety margin occ has
                # not): equal tolerance is the comparison the targets ask for.
                emulation_margin=spec.get("emulation_margin", 1.0),
            )
            final = result.model  # serialized lazily from onnx-ir: part of the cost of getting a ModelProto
            report = result.report
            details["report"] = {
                "search": report.search.to_dict() if hasattr(report.search, "to_dict") else report.search,
                "nodes_fp16": len(report.fp16_nodes),
                "nodes_fp32": len(report.fp32_nodes),
                "fp32_nodes": [
                    {"node": d.node, "op_type": d.op_type, "rule": d.rule.value, "detail": d.detail}
                    for d in report.fp32_nodes
                ],
                "warnings": report.warnings,
                "notes": report.notes,
            }
            return final

        return ours
    if run == "occ":
        from onnxconverter_common import auto_mixed_precision as occ_amp
        from onnxconverter_common import float16 as occ_float16

        convert = occ_float16.convert_float_to_float16
        details.update(validation_feeds=1, holdout_feeds=n_hold, attempts=0)

        def counting_convert(*args: Any, **kwargs: Any) -> Any:
            # occ calls float16.convert_float_to_float16 once per candidate: count them, keep the last block list.
            details["attempts"] += 1
            details["last_node_block_list"] = list(kwargs.get("node_block_list") or [])
            return convert(*args, **kwargs)

        occ_float16.convert_float_to_float16 = counting_convert
        feed = validation[0]

        def occ() -> onnx.ModelProto:
            # occ prints every block list it tries; send that to /dev/null rather than the benchmark's log.
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                return occ_amp.auto_convert_mixed_precision(model, feed, rtol=rtol, atol=atol, keep_io_types=True)

        return occ
    raise ValueError(f"unknown run {run!r}")


def child(spec_path: str) -> int:
    """Child entry point: every outcome, an import error or a timeout included, ends in the JSON result file."""
    spec = json.loads(Path(spec_path).read_text())
    run = spec["run"]
    # The package is edited concurrently: record which sources this run imported.
    result: dict[str, Any] = {"run": run, "model": spec["model"], "status": "error", "details": {}}
    result["source_digest"] = source_digest()
    hook: SessionHook | None = None
    start: float | None = None
    try:
        model = onnx.load(spec["model_path"])
        with open(spec["data_path"], "rb") as f:
            feeds, reference = pickle.load(f)
        details = result["details"]
        call = _prepare(run, copy.deepcopy(model), spec, feeds, details)
        import onnxruntime  # noqa: F401  (imported before timing, as ours and occ both need it)

        hook = SessionHook(emulate=run == "occ")

        def on_alarm(signum: int, frame: Any) -> None:
            raise SearchTimeout

        signal.signal(signal.SIGALRM, on_alarm)
        hook.install()
        signal.setitimer(signal.ITIMER_REAL, spec["timeout"])
        start = time.perf_counter()
        try:
            final = call()
            seconds = time.perf_counter() - start
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            hook.uninstall()
        result.update(status="ok", seconds=seconds, sessions=hook.created)
        result["patch_s"] = hook.overhead_s
        result["sessions_emulated"] = hook.emulated
        result["accuracy"] = judge(final, feeds, reference, spec["n_holdout"], spec["rtol"], spec["atol"])
        result["fp16"] = fp16_count(model, final, spec.get("node_flops"))
    except SearchTimeout:
        assert hook is not None
        result.update(status="timeout", seconds=spec["timeout"], sessions=hook.created, patch_s=hook.overhead_s)
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc)[:800]}"
        result["traceback"] = traceback.format_exc()[-4000:]
        if hook is not None and start is not None:  # failed inside the search: how long and how many sessions
            result.update(seconds=time.perf_counter() - start, sessions=hook.created, patch_s=hook.overhead_s)
    Path(spec["result_path"]).write_text(json.dumps(result, indent=1, default=_json_default))
    return 0


def _finite(value: Any) -> Any:
    """inf/NaN as strings ("inf"), so the JSON files stay standard JSON (Python would write bare Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    """numpy scalars and inf/nan from the search reports, as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


# ----------------------------------------------------------------------------------------------------------------
# Parent: build models and feeds, baselines, children, tables, files.
# ----------------------------------------------------------------------------------------------------------------


def run_child(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One search in a fresh interpreter; killed if it outlives its timeout plus loading/judging slack."""
    stem = workdir / f"{spec['model']}-{spec['run']}"
    spec = {**spec, "result_path": str(stem) + ".result.json"}
    spec_path = Path(str(stem) + ".spec.json")
    spec_path.write_text(json.dumps(spec))
    log_path = Path(str(stem) + ".log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=spec["timeout"] + GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wall = time.perf_counter() - start
    result_path = Path(spec["result_path"])
    if result_path.exists():
        result = json.loads(result_path.read_text())
    elif wall >= spec["timeout"]:
        result = {
            "run": spec["run"],
            "model": spec["model"],
            "status": "timeout",
            "seconds": spec["timeout"],
            "details": {},
        }
    else:
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        result = {
            "run": spec["run"],
            "model": spec["model"],
            "status": "error",
            "error": f"child exited {process.returncode} with no result: {tail}",
            "details": {},
        }
    result["child_wall_s"] = wall
    return result


def baselines(
    bm: Any, reference: list[list[np.ndarray]], rtol: float, atol: float, flops: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """Full FP16, FP16 with only the injected spots in FP32, and FP32, judged like the searches' results.

    Why: they show the tolerance is meaningful (full FP16 fails it; FP32 and "only the truly sensitive nodes in
    FP32" meet it, on validation and held-out feeds alike). The spot rows are converted with each tool's plain
    converter and the same node block list: what each search could reach at best, given its converter (occ's
    round-trips tensors with several consumers through float16 even between blocked nodes; ours adds its
    static rules, e.g. weight_underflow).
    """
    from onnxconverter_common import float16 as occ_float16

    from olive_fp16_pass import convert_float16

    rows = []
    spots = [name for names in bm.injected.values() for name in names]
    checks: list[tuple[str, list[str] | None, str]] = [("full FP16", [], "occ")]
    if spots:
        checks.append((f"FP16, injected spots ({len(spots)} nodes) FP32, occ converter", spots, "occ"))
        checks.append((f"FP16, injected spots ({len(spots)} nodes) FP32, ours converter", spots, "ours"))
    checks.append(("FP32 (no conversion)", None, ""))
    for label, block, converter in checks:
        row: dict[str, Any] = {"check": label}
        try:
            if block is None:
                final = bm.model
            elif converter == "ours":
                # Names as full-match patterns; ours also applies its static rules (e.g. weight_underflow).
                patterns = [re.escape(n) for n in block]
                final = convert_float16(bm.model, keep_io_types=True, node_block_list=patterns).model
            else:
                with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "truncated to 10000.0": the overflow spot
                    final = occ_float16.convert_float_to_float16(
                        copy.deepcopy(bm.model), keep_io_types=True, node_block_list=block or None
                    )
            row["accuracy"] = judge(final, bm.feeds, reference, bm.n_holdout, rtol, atol)
            row["fp16"] = {k: v for k, v in fp16_count(bm.model, final, flops).items() if k != "fp32_node_names"}
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
    return rows


# -- formatting ---------------------------------------------------------------------------------------------------


def _fmt_s(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if r["status"] == "timeout":
        return f"> {r['seconds']:g} s"
    if r["status"] != "ok":
        return "error" if r.get("seconds") is None else f"failed at {r['seconds']:.0f} s"
    s = r["seconds"]
    return f"{s:.2f}" if s < 10 else f"{s:.1f}"


def _fmt_err(x: float | None) -> str:
    return "-" if x is None else ("inf/NaN" if math.isinf(x) else f"{x:.2e}")


def _ok(r: dict[str, Any] | None) -> bool:
    return r is not None and r.get("status") == "ok"


def ratio(occ: dict[str, Any] | None, ours: dict[str, Any] | None, key: str) -> tuple[float | None, bool]:
    """occ/ours for `key` ("seconds", "seconds_net" or "sessions"), and whether it is only a lower bound.

    A failed occ run (no model) gives its time/sessions until it gave up: shown, but never counted as a target met.
    """
    if occ is None or ours is None or not _ok(ours) or occ.get("seconds") is None:
        return None, False
    if key == "seconds_net":
        num = occ["seconds"] - occ.get("patch_s", 0.0)
        den = ours["seconds"]
    else:
        num, den = occ.get(key), ours.get(key)
    if num is None or not den:
        return None, False
    return num / den, occ["status"] == "timeout"


def _fmt_ratio(value: tuple[float | None, bool], failed: bool = False) -> str:
    r, bound = value
    if r is None:
        return "-"
    return f"{'> ' if bound else ''}{r:.1f}x" + (" (occ failed)" if failed else "")


def run_rows(models: list[Any], results: dict[tuple[str, str], dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per (model, run): time, sessions, candidates, FP16 nodes, held-out accuracy."""
    header = [
        "model",
        "nodes",
        "run",
        "feeds val+hold",
        "wall s",
        "patch s",
        "sessions",
        "candidates",
        "FP16 nodes",
        "FP16 %",
        "FP16 % FLOPs",
        "Casts",
        "val tol",
        "held-out max abs err",
        "held-out tol",
    ]
    rows = []
    for bm in models:
        for run in RUNS:
            r = results.get((bm.key, run))
            if r is None:
                continue
            d = r.get("details", {})
            candidates = (
                d.get("report", {}).get("search", {}).get("candidates_tried") if run != "occ" else d.get("attempts")
            )
            acc = r.get("accuracy", {})
            fp16 = r.get("fp16", {})
            sessions = r.get("sessions")
            rows.append(
                [
                    bm.key,
                    str(len(bm.model.graph.node)),
                    run,
                    f"{d.get('validation_feeds', '-')}+{d.get('holdout_feeds', '-')}",
                    _fmt_s(r),
                    f"{r['patch_s']:.2f}" if r.get("patch_s") else "-",
                    "-" if sessions is None else (f"> {sessions}" if r["status"] == "timeout" else str(sessions)),
                    "-" if candidates is None else (f"> {candidates}" if r["status"] == "timeout" else str(candidates)),
                    f"{fp16['fp16_nodes']}/{fp16['float_nodes']}" if fp16 else "-",
                    f"{fp16['fp16_pct']:.1f}" if fp16 else "-",
                    _pct(fp16.get("fp16_flops_pct")),
                    str(fp16["casts_added"]) if "casts_added" in fp16 else "-",
                    _yes(acc.get("validation", {}).get("tol_met")),
                    _fmt_err(acc.get("holdout", {}).get("max_abs_err")),
                    _yes(acc.get("holdout", {}).get("tol_met")),
                ]
            )
    return header, rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def targets(bm: Any, ours: dict[str, Any] | None, occ: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's acceptance targets for one ours variant against occ on one model."""
    t_net, t_bound = ratio(occ, ours, "seconds_net")
    s_r, s_bound = ratio(occ, ours, "sessions")
    out: dict[str, Any] = {
        "time_ratio": ratio(occ, ours, "seconds")[0],
        "time_ratio_net_of_patch": t_net,
        "sessions_ratio": s_r,
        "lower_bound": t_bound or s_bound,
    }
    fp16_ours = (ours or {}).get("fp16")
    fp16_occ = (occ or {}).get("fp16")
    out["fp16_pct_ours_minus_occ"] = fp16_ours["fp16_pct"] - fp16_occ["fp16_pct"] if fp16_ours and fp16_occ else None
    flops_ours = (fp16_ours or {}).get("fp16_flops_pct")
    flops_occ = (fp16_occ or {}).get("fp16_flops_pct")
    out["fp16_flops_pct_ours_minus_occ"] = (
        flops_ours - flops_occ if flops_ours is not None and flops_occ is not None else None
    )
    holdout_ok = _ok(ours) and bool(ours.get("accuracy", {}).get("holdout", {}).get("tol_met")) if ours else False
    # The FP16 comparison counts only where occ's own result is accurate (issue 10.3): at equal tolerance, ours
    # must keep at least as many nodes and FLOPs in FP16.
    occ_accurate = _ok(occ) and bool(occ.get("accuracy", {}).get("holdout", {}).get("tol_met"))
    diff_nodes, diff_flops = out["fp16_pct_ours_minus_occ"], out["fp16_flops_pct_ours_minus_occ"]
    checks = {
        "time >= 10x": None if t_net is None else t_net >= TARGET_RATIO,
        "sessions >= 10x": None if s_r is None else s_r >= TARGET_RATIO,
        "FP16 nodes >= occ": None if diff_nodes is None or not occ_accurate else diff_nodes >= -1e-9,
        "FP16 FLOPs >= occ": None if diff_flops is None or not occ_accurate else diff_flops >= -1e-9,
        "held-out tol met": holdout_ok,
    }
    if not bm.targets:  # small models: the speed targets do not apply, the FP16 ones do
        checks = {k: v for k, v in checks.items() if not k.endswith("10x")}
    # A ratio below 10x from a timed-out occ is a lower bound, not a miss: unknown.
    for key, (value, bound) in (("time >= 10x", (t_net, t_bound)), ("sessions >= 10x", (s_r, s_bound))):
        if bound and value is not None and value < TARGET_RATIO:
            checks[key] = None
    if occ is not None and occ.get("status") == "error":  # occ produced no model: nothing to compare against
        checks = {k: (v if k == "held-out tol met" else None) for k, v in checks.items()}
    out["occ_failed"] = occ is not None and occ.get("status") == "error"
    out["checks"] = checks
    out["applies"] = bm.targets
    out["met"] = all(v is True for v in checks.values())
    return out


def _verdict(checks: dict[str, bool | None]) -> str:
    """ "met", or which targets were missed and which are unknown (occ timed out below 10x, or no occ model)."""
    missed = [k for k, v in checks.items() if v is False]
    unknown = [k for k, v in checks.items() if v is None]
    if not missed and not unknown:
        return "met"
    parts = ([f"MISSED: {', '.join(missed)}"] if missed else []) + (
        [f"unknown: {', '.join(unknown)}"] if unknown else []
    )
    return "; ".join(parts)


def ratio_rows(models: list[Any], results: dict[tuple[str, str], dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """occ/ours per model and ours variant, with the acceptance verdict where the targets apply."""
    header = [
        "model",
        "nodes",
        "ours run",
        "time occ/ours",
        "net of patch",
        "sessions occ/ours",
        "FP16 % ours-occ",
        "FP16 % FLOPs ours-occ",
        "ours held-out tol",
        "targets",
    ]
    rows = []
    for bm in models:
        occ = results.get((bm.key, "occ"))
        for run in ("ours-all", "ours-1"):
            ours = results.get((bm.key, run))
            if ours is None or occ is None:
                continue
            t = targets(bm, ours, occ)
            diff = t["fp16_pct_ours_minus_occ"]
            verdict = _verdict(t["checks"])
            failed = t["occ_failed"]
            if failed:
                verdict = "n/a: occ produced no model" + ("" if t["checks"]["held-out tol met"] else "; ours MISSED")
            rows.append(
                [
                    bm.key,
                    str(len(bm.model.graph.node)),
                    run,
                    _fmt_ratio(ratio(occ, ours, "seconds"), failed),
                    _fmt_ratio((t["time_ratio_net_of_patch"], t["lower_bound"]), failed),
                    _fmt_ratio(ratio(occ, ours, "sessions"), failed),
                    "-" if diff is None else f"{diff:+.1f}",
                    "-" if t["fp16_flops_pct_ours_minus_occ"] is None else f"{t['fp16_flops_pct_ours_minus_occ']:+.1f}",
                    _yes(ours.get("accuracy", {}).get("holdout", {}).get("tol_met")),
                    verdict if bm.targets else f"(small model: no speed target) {verdict}",
                ]
            )
    return header, rows


def baseline_rows(models: list[Any], base: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "check", "FP16 nodes", "val max abs err", "val tol", "held-out max abs err", "held-out tol"]
    rows = []
    for bm in models:
        for row in base.get(bm.key, []):
            acc = row.get("accuracy", {})
            fp16 = row.get("fp16", {})
            rows.append(
                [
                    bm.key,
                    row["check"] + (f" (error: {row['error']})" if "error" in row else ""),
                    f"{fp16['fp16_nodes']}/{fp16['float_nodes']}" if fp16 else "-",
                    _fmt_err(acc.get("validation", {}).get("max_abs_err")),
                    _yes(acc.get("validation", {}).get("tol_met")),
                    _fmt_err(acc.get("holdout", {}).get("max_abs_err")),
                    _yes(acc.get("holdout", {}).get("tol_met")),
                ]
            )
    return header, rows


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fp32_lines(models: list[Any], results: dict[tuple[str, str], dict[str, Any]], limit: int = 40) -> list[str]:
    """Which nodes each run kept in FP32 (by the common measure), and the injected spots for comparison."""
    lines = []
    for bm in models:
        if bm.injected:
            spots = "; ".join(f"{k}: {', '.join(v)}" for k, v in bm.injected.items())
            lines.append(f"{bm.key} injected spots (truly need FP32): {spots}")
        for run in RUNS:
            r = results.get((bm.key, run))
            if not r or not r.get("fp16"):
                continue
            names = r["fp16"]["fp32_node_names"]
            shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
            lines.append(f"{bm.key} {run} kept {len(names)} float nodes in FP32: {shown or '(none)'}")
    return lines


def failure_lines(models: list[Any], results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """For the package owner: every run that crashed or timed out, and ours' search details where a target missed."""
    lines = []
    for bm in models:
        occ = results.get((bm.key, "occ"))
        for run in RUNS:
            r = results.get((bm.key, run))
            if r is None:
                continue
            if r["status"] == "error":
                lines.append(f"{bm.key} {run} FAILED: {r.get('error')}\n{r.get('traceback', '')[-1500:]}")
            elif r["status"] == "timeout":
                lines.append(f"{bm.key} {run} timed out after {r['seconds']:g} s")
            runs_on_ort = r.get("accuracy", {}).get("real_model_runs", True)
            if runs_on_ort is not True:
                lines.append(f"{bm.key} {run}: the final (non-emulated) model does not run on ORT CPU: {runs_on_ort}")
            if run == "occ" or r["status"] != "ok":
                continue
            if occ is None:
                continue
            t = targets(bm, r, occ)
            if t["met"] or not bm.targets:
                continue
            report = r.get("details", {}).get("report", {})
            search = report.get("search") or {}
            lines.append(
                f"{bm.key} {run}: targets {_verdict(t['checks'])}; "
                f"criteria_met={search.get('criteria_met')}, holdout_met={search.get('holdout_met')}, "
                f"candidates={search.get('candidates_tried')}, sessions={search.get('sessions_created')}, "
                f"seconds={search.get('seconds')}, failures={search.get('failures')}, "
                f"warnings={report.get('warnings')}"
            )
            for step in search.get("history", []):
                lines.append(f"    history: {json.dumps(step, default=_json_default)}")
            for d in report.get("fp32_nodes", []):
                lines.append(f"    fp32: {d['node']} ({d['op_type']}) {d['rule']}: {d['detail']}")
    return lines


def source_notes(payload: dict[str, Any], results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The package is edited concurrently: say whether all runs imported the same sources, and if they changed."""
    runs = {r["source_digest"] for r in results.values() if r.get("source_digest")}
    start = payload["machine"]["versions"].get(DIGEST_KEY)
    end = payload.get("source_digest_at_end")
    if len(runs) > 1:
        return [
            f"**Warning**: the runs imported different olive_fp16_pass sources ({', '.join(sorted(runs))}); "
            "see `source_digest` per run in the JSON."
        ]
    if end and (runs | {start}) != {end}:
        return [
            f"Note: every run imported the same olive_fp16_pass sources ({', '.join(sorted(runs))}); they changed "
            f"after the last run (digest at the end {end})."
        ]
    return []


def save(
    stem: Path,
    payload: dict[str, Any],
    models: list[Any],
    results: dict[tuple[str, str], dict[str, Any]],
    base: dict[str, list[dict[str, Any]]],
    finished: bool,
) -> None:
    """Write JSON and Markdown; called after every run so a job killed midway still leaves its numbers."""
    payload = {**payload, "finished": finished, "results": list(results.values()), "baselines": base}
    tables = {
        "runs": run_rows(models, results),
        "ratios": ratio_rows(models, results),
        "baselines": baseline_rows(models, base),
    }
    payload["tables"] = {k: {"header": h, "rows": r} for k, (h, r) in tables.items()}
    payload["targets"] = {
        f"{bm.key}/{run}": targets(bm, results[(bm.key, run)], results.get((bm.key, "occ")))
        for bm in models
        for run in ("ours-all", "ours-1")
        if (bm.key, run) in results
    }
    env = payload["machine"]
    s = payload["settings"]
    md = [
        f"# Mixed-precision search: ours vs onnxconverter-common, {payload['date']}"
        + ("" if finished else " (partial: still running)"),
        "",
        f"Command: `{payload['command']}`  ",
        *machine_lines(env, payload.get("load_avg_at_end")),
        f"Tolerance (both): allclose rtol={s['rtol']:g}, atol={s['atol']:g} (ours: emulation_margin="
        f"{s.get('emulation_margin', 0.8):g}); keep_io_types=True (both); "
        f"timeout {s['timeout_s']:g} s per search, each search in its own process; times cover the search call "
        "only (ours: `auto_mixed_precision(...).model`), not imports or loading.",
        "",
        "Runs: " + "; ".join(f"`{k}` = {v}" for k, v in RUN_LABELS.items()) + ". occ's candidate sessions see "
        "float16 storage emulated (`emulate_float16_storage`, graph optimizations off) instead of the CPU "
        "provider's float32 compute; `patch s` is the time spent in that wrapper, and `net of patch` subtracts it "
        "from occ's time. Sessions: every `onnxruntime.InferenceSession` built during the search call. "
        "FP16 nodes: nodes of the original graph whose outputs ONNX shape inference types float16 in the final "
        "model, over nodes that output float32 originally (same measure for both); `FP16 % FLOPs`: their share "
        "of the estimated FLOPs (`olive_fp16_pass.node_cost`, shapes of one FP32 run); `Casts`: Cast nodes the "
        "final model adds. Held-out: the last feeds (2; 1 for the tests/data/real models), never seen by either "
        "search, run with float16 storage emulated and compared with FP32 on the CPU."
        + (f" Each search ran {s['repeat']} times; the fastest run is shown." if s.get("repeat", 1) > 1 else ""),
        "",
        "Models: " + "; ".join(f"`{bm.key}` ({len(bm.model.graph.node)} nodes): {bm.description}" for bm in models),
        "",
        "## Side by side",
        "",
        render_markdown(*tables["runs"]),
        "",
        "## Ratios and targets (>= 10x time and sessions on the encoder models, a few hundred nodes or more; on "
        "every model where occ's result meets the tolerance on held-out data, FP16 nodes and FP16 FLOPs >= occ's; "
        "held-out tolerance met)",
        "",
        render_markdown(*tables["ratios"]),
        "",
        "## Baselines (tolerance check)",
        "",
        render_markdown(*tables["baselines"]),
        "",
        "## Nodes kept in FP32",
        "",
        *(f"- {line}" for line in fp32_lines(models, results)),
    ]
    notes = source_notes(payload, results)
    if notes:
        md += ["", *notes]
    failures = failure_lines(models, results)
    if failures:
        md += ["", "## Failures and misses", "", "```", *failures, "```"]
    write_results(stem, _finite(payload), md, default=_json_default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS), help=",".join(MODELS))
    parser.add_argument("--runs", type=lambda s: s.split(","), default=list(RUNS), help=",".join(RUNS))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per search (default 600)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each search N times (own process each), keep the fastest"
    )
    parser.add_argument(
        "--emulation-margin",
        type=float,
        default=1.0,
        help="ours' emulation_margin (default 1.0: the same tolerance as occ; the library's default is 0.8)",
    )
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL)
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    parser.add_argument(
        "--out", type=Path, default=None, help="result path without suffix (default bench/results/<date>-amp_speed)"
    )
    args = parser.parse_args(argv)
    check_choices(parser, args, {"models": MODELS, "runs": RUNS})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    stem = args.out or RESULTS_DIR / f"{started.date().isoformat()}-amp_speed"
    env = environment(DIGEST_KEY)
    payload: dict[str, Any] = {
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/amp_speed.py", *sys.argv[1:]]) if argv is None else str(argv),
        "settings": {
            "models": args.models,
            "runs": {r: RUN_LABELS[r] for r in args.runs},
            "rtol": args.rtol,
            "atol": args.atol,
            "keep_io_types": True,
            "timeout_s": args.timeout,
            "repeat": args.repeat,
            "emulation_margin": args.emulation_margin,
        },
        "machine": env,
    }
    models = build_all(args.models)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    base: dict[str, list[dict[str, Any]]] = {}
    print(
        f"models {args.models}, runs {args.runs}, rtol {args.rtol:g}, atol {args.atol:g}, timeout {args.timeout:g} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="amp_speed-") as tmp:
        workdir = Path(tmp)
        for bm in models:
            model_path = workdir / f"{bm.key}.onnx"
            onnx.save(bm.model, model_path)
            reference = reference_outputs(bm.model, bm.feeds)
            data_path = workdir / f"{bm.key}.pkl"
            with open(data_path, "wb") as f:
                pickle.dump((bm.feeds, reference), f)
            flops = node_flops(bm.model, bm.feeds[0])
            base[bm.key] = baselines(bm, reference, args.rtol, args.atol, flops)
            for row in base[bm.key]:
                acc = row.get("accuracy", {})
                print(
                    f"  {bm.key:9} baseline {row['check']}: held-out max abs err "
                    f"{_fmt_err(acc.get('holdout', {}).get('max_abs_err'))}, tol met "
                    f"val/held-out {_yes(acc.get('validation', {}).get('tol_met'))}/"
                    f"{_yes(acc.get('holdout', {}).get('tol_met'))}" + (f" {row['error']}" if "error" in row else ""),
                    flush=True,
                )
            spec = {
                "model": bm.key,
                "model_path": str(model_path),
                "data_path": str(data_path),
                "n_validation": len(bm.validation),
                "n_holdout": bm.n_holdout,
                "rtol": args.rtol,
                "atol": args.atol,
                "timeout": args.timeout,
                "node_flops": flops,
                "emulation_margin": args.emulation_margin,
            }
            for run in args.runs:
                # --repeat: the fastest of N runs (each its own process; the others are kept in the JSON), as
                # load from other processes on a shared machine only ever adds time.
                tries = [run_child({**spec, "run": run}, workdir) for _ in range(args.repeat)]
                ok = [t for t in tries if _ok(t)]
                r = min(ok, key=lambda t: t["seconds"]) if ok else tries[-1]
                if args.repeat > 1:
                    r["repeats_seconds"] = [t.get("seconds") for t in tries]
                results[(bm.key, run)] = r
                fp16 = r.get("fp16", {})
                acc = r.get("accuracy", {})
                print(
                    f"  {bm.key:9} {run:8}: time {_fmt_s(r):>9}, sessions {r.get('sessions', '-')}, FP16 "
                    f"{fp16.get('fp16_nodes', '-')}/{fp16.get('float_nodes', '-')}, held-out max abs err "
                    f"{_fmt_err(acc.get('holdout', {}).get('max_abs_err'))} "
                    f"(tol met {_yes(acc.get('holdout', {}).get('tol_met'))})"
                    + (f"  {r.get('error')}" if r.get("error") else ""),
                    flush=True,
                )
                save(stem, payload, models, results, base, finished=False)
    payload["load_avg_at_end"] = os.getloadavg()
    payload["source_digest_at_end"] = source_digest()
    payload["finished_at"] = dt.datetime.now().isoformat(timespec="seconds")
    save(stem, payload, models, results, base, finished=True)
    print()
    print(render_text(*run_rows(models, results)))
    print()
    print(render_text(*ratio_rows(models, results)))
    print()
    print(render_text(*baseline_rows(models, base)))
    print()
    for line in [*fp32_lines(models, results), *failure_lines(models, results), *source_notes(payload, results)]:
        print(line)
    print(f"\nresults: {stem.with_suffix('.json')}, {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2]))
    sys.exit(main())
