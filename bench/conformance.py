"""Conformance of FP16 converters over the ONNX backend node tests: ours vs onnxconverter-common vs onnxruntime's.

Usage (from the repository root, in the project's venv):

    python bench/conformance.py --subset 200        # a fixed, deterministic subset (evenly spaced cases): CI-sized
    python bench/conformance.py --all               # every eligible case: ~35 s for all tools on 2 cores
    python bench/conformance.py --all --tools ours --jobs 2

Results: bench/results/<date>-conformance.{json,md} (--all) or <date>-conformance-subset<N>.{json,md}.

What it does and why:

- The onnx wheel ships the *definitions* of its node tests (`onnx.backend.test.case.node`), not their data
  files. `collect_testcases()` runs every `export*` method, whose `expect(...)` calls record (model, inputs,
  outputs) in memory; nothing is written to disk or into site-packages.
- Eligible cases: every input and output is a plain float32 tensor (the converters are about float tensors),
  and onnxruntime's CPU EP loads, runs and matches the expected outputs in FP32 (the rule below with
  `FP32_RTOL`/`FP32_ATOL`, so the DFT cases' float32 round-off at large scale is not a mismatch):
  a case ORT cannot run in FP32 says nothing about a converter. Every skip is recorded with its reason.
  The IR version is lowered to at most 10 (onnx 1.23 writes IR 11+; the opsets used still allow it), and the
  case is skipped if that breaks the checker.
- Each converter's output gets four independent checks: (1) valid: `onnx.checker.check_model(full_check=True)`
  (plain `check_model` if the original already fails the full check); (2) loads in an ORT CPU session;
  (3) runs on the case's inputs; (4) accurate: the float32 model from `emulate_float16_storage` (every fp16
  tensor rounded to fp16 where it is produced, so overflow and lost precision show as on a GPU, which the CPU
  EP would hide by computing in fp32) run with graph optimizations off, compared with the expected outputs.
- Tolerance for (4), per output, elementwise: |got - expected| <= RTOL*|expected| + ATOL*scale, with
  scale = max(max finite |expected|, 2**-14) (2**-14: fp16's smallest normal) and RTOL = ATOL = 1e-2, i.e. 1% of
  the value plus 1% of the output's scale, ~10 fp16 ulps. NaNs must be at the same places, infinities equal.
  A case passes "strict" if every output is within it.
- Ill-conditioned cases get one looser, documented rule. A case is ill-conditioned when the FP32 model itself,
  with only its inputs and outputs rounded to fp16, already misses the tolerance (seen: Softmax/LogSoftmax of
  inputs 10000..10003, whose differences fp16 cannot hold; a ReduceProd beyond 65504; a TreeEnsemble threshold
  crossed by rounding). No converter can do better than that with fp16 storage of the IO, so for such a case
  the converter's output may instead match that fp16-IO reference within the same tolerance ("accurate", as
  opposed to "strict"). Both figures are reported.
  A converter that keeps the relevant node in FP32 (our report says which rule, e.g. `no_fp16_in_schema`) simply
  matches the expected outputs and passes strict.
- Tools: ours; onnxconverter-common; onnxruntime's transformers converter (`OnnxModel(m).convert_float_to_float16(...)`,
  then `.model`) and "ort_sorted", the same followed by its own `topological_sort()`, which its
  `save_model_to_file()` runs: without it, its input Casts come after their readers and nearly every model fails
  the checker, which says more about that API's in-memory result than about its conversion.
- Inputs are copied for every ORT run: ORT 1.32's CPU EP was seen writing into a caller's input array.
- `emulate_float16_storage` mishandles omitted optional outputs (LSTM/GRU/RNN, Attention): when the emulation
  fails, it is retried once with those slots named (see `_name_omitted_outputs`), and the case records it.
- Every (case, step) runs in a forked worker process with a wall-clock timeout (`--timeout`): a converter
  or ORT that hangs or crashes costs only that step, recorded as a failure, and the worker is replaced.
  Workers use one ORT thread each and `--jobs` workers (default 1: the machines this runs on are shared).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO_ROOT) not in sys.path:  # run as `python bench/conformance.py`: this checkout's package and `bench`
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_env import cpu_session, source_digest, write_results  # noqa: E402  (after the path is set)

TOOLS = ("ours", "occ", "ort", "ort_sorted")
TOOL_LABELS = {
    "ours": "olive_fp16_pass.convert_float16(keep_io_types=True)",
    "occ": "onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)",
    "ort": "onnxruntime.transformers OnnxModel.convert_float_to_float16(keep_io_types=True), then `.model`",
    # The same, then OnnxModel.topological_sort(), which its save_model_to_file() does before writing: the
    # converter appends the input Casts after their readers, so `.model` alone fails the checker's order rule.
    "ort_sorted": "the same as ort, then OnnxModel.topological_sort() (what its save_model_to_file does)",
}
CHECKS = ("valid", "loads", "runs", "strict", "accurate")
MAX_IR_VERSION = 10
FP32_RTOL, FP32_ATOL = 1e-3, 1e-5  # screening ORT's own FP32 result (the onnx runner uses rtol 1e-3)
RTOL, ATOL = 1e-2, 1e-2  # FP16 emulation vs expected, ATOL relative to the output's scale
SCALE_FLOOR = 2.0**-14  # fp16's smallest normal: below it fp16 has no relative precision to speak of
DEFAULT_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One node test: the model as onnx built it (IR not yet lowered), its inputs and its expected outputs."""

    name: str
    model: onnx.ModelProto
    inputs: list[Any]
    outputs: list[Any]


_ALL_CASES: list[Case] | None = None


def collect_cases() -> list[Case]:
    """Every node test of the installed onnx, sorted by name, built in memory once per process.

    `collect_testcases` appends to a module-level list and refuses a second registration of a name, so it can be
    called only once per interpreter: cache it. Its export functions warn about intended overflows; hide those.
    """
    global _ALL_CASES
    if _ALL_CASES is None:
        from onnx.backend.test.case.node import collect_testcases

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cases = collect_testcases()
        _ALL_CASES = sorted(
            (Case(c.name, c.model, list(c.data_sets[0][0]), list(c.data_sets[0][1])) for c in cases if c.data_sets),
            key=lambda c: c.name,
        )
    return _ALL_CASES


def _is_f32(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == np.float32


def io_skip_reason(case: Case) -> str | None:
    """Why a case is not about float32 tensors (None when every input and output is one)."""
    if not case.outputs:
        return "non-float IO: no outputs"
    for kind, values in (("input", case.inputs), ("output", case.outputs)):
        for value in values:
            if not _is_f32(value):
                what = type(value).__name__ if not isinstance(value, np.ndarray) else f"ndarray[{value.dtype}]"
                return f"non-float IO: an {kind} is {what}"
    for value in (*case.model.graph.input, *case.model.graph.output):
        tensor = value.type.tensor_type if value.type.WhichOneof("value") == "tensor_type" else None
        if tensor is None or tensor.elem_type != onnx.TensorProto.FLOAT:
            return f"non-float IO: graph value {value.name!r} is not a float tensor"
    return None


def select_subset(names: Sequence[str], size: int | None) -> list[str]:
    """`size` names evenly spaced over the sorted list (index i*len//size), starting at the first.

    Deterministic for a given onnx version, spread over every op type, and exactly `size` long (a plain every-k-th
    with an integer k would give fewer). Chosen by position only, never by outcome.
    """
    if size is None or size >= len(names):
        return list(names)
    if size <= 0:
        raise ValueError(f"subset size must be positive, got {size}")
    return [names[i * len(names) // size] for i in range(size)]


def prepared_model(case: Case) -> onnx.ModelProto:
    """A copy of the case's model with IR version lowered to MAX_IR_VERSION (onnxruntime 1.32 loads up to IR 13)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


# ----------------------------------------------------------------------------------------------------------------
# Comparisons and ORT helpers (worker side)
# ----------------------------------------------------------------------------------------------------------------


def compare(got: Any, expected: np.ndarray, rtol: float, atol: float, scaled: bool) -> tuple[bool, str]:
    """Elementwise closeness with NaN/inf handled exactly; `scaled` multiplies atol by the output's scale.

    Returns (ok, detail); the detail names the worst element so a failure can be diagnosed from the report.
    """
    got = np.asarray(got)
    if got.shape != expected.shape:
        return False, f"shape {list(got.shape)} != expected {list(expected.shape)}"
    g, e = got.astype(np.float64), expected.astype(np.float64)
    if e.size == 0:
        return True, ""
    nan_g, nan_e = np.isnan(g), np.isnan(e)
    if not np.array_equal(nan_g, nan_e):
        extra, missing = int((nan_g & ~nan_e).sum()), int((nan_e & ~nan_g).sum())
        return False, f"NaN at {extra} places expected finite, {missing} expected NaN missing"
    inf_e, inf_g = np.isinf(e), np.isinf(g)
    if not np.array_equal(g[inf_e], e[inf_e]) or (inf_g & ~inf_e).any():
        return False, f"inf mismatch: {int((inf_g & ~inf_e).sum())} unexpected inf, expected {int(inf_e.sum())} inf"
    finite = ~(nan_e | inf_e)
    if not finite.any():
        return True, ""
    scale = max(float(np.abs(e[finite]).max()), SCALE_FLOOR) if scaled else 1.0
    err = np.where(finite, np.abs(g - e), 0.0)
    bound = rtol * np.abs(e) + atol * scale
    bad = finite & (err > bound)
    if not bad.any():
        return True, ""
    worst = int(np.argmax(np.where(finite, err - bound, -np.inf)))
    return False, (
        f"{int(bad.sum())}/{e.size} elements off; worst got {g.flat[worst]:.6g} expected {e.flat[worst]:.6g} "
        f"(|err| {err.flat[worst]:.3g} > tol {bound.flat[worst]:.3g}, scale {scale:.3g})"
    )


def compare_all(got: Sequence[Any], expected: Sequence[np.ndarray], rtol: float, atol: float, scaled: bool) -> str:
    """'' when every output matches, else the first mismatch prefixed by its output index."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        ok, detail = compare(g, e, rtol, atol, scaled)
        if not ok:
            return f"output {index}: {detail}"
    return ""


def _session(model: onnx.ModelProto, optimize: bool) -> Any:
    return cpu_session(model, optimize=optimize, log_level=4, threads=1)


def _run(session: Any, model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[Any]:
    """Feed inputs by `model`'s input order (how `expect` paired them) and return outputs in its output order.

    For a converted model, `model` is the original: inputs and outputs are looked up by the original names, so a
    converter that renamed or reordered them fails 'runs' instead of being compared on the wrong tensors.
    """
    initializers = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    # Copies: onnxruntime 1.32's CPU EP was seen writing BatchNormalization(training_mode=1)'s running mean/var
    # into the caller's input arrays (fp16 model, Casts folded), which corrupted every later run of the case.
    feeds = {name: np.array(value, copy=True) for name, value in zip(names, inputs, strict=True)}
    return session.run([v.name for v in model.graph.output], feeds)


def _error(exc: BaseException) -> str:
    """One line: exception type and the first meaningful line of its message (ORT messages are long)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"


def _round16(values: Sequence[np.ndarray]) -> list[np.ndarray]:
    with np.errstate(over="ignore"):
        return [np.asarray(v).astype(np.float16).astype(np.float32) for v in values]


# ----------------------------------------------------------------------------------------------------------------
# Steps (worker side): baseline, then one step per converter
# ----------------------------------------------------------------------------------------------------------------


def _full_check(model: onnx.ModelProto) -> str:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # the checker raises several types
        return _error(exc)
    return ""


def baseline_step(case: Case) -> dict[str, Any]:
    """Decide eligibility (FP32 ORT matches expected) and compute the fp16-IO reference for the looser rule."""
    reason = io_skip_reason(case)
    if reason:
        return {"status": "skipped", "reason": reason}
    original_check = _full_check(case.model)
    model = prepared_model(case)
    lowered_check = _full_check(model)
    if lowered_check and not original_check:
        return {"status": "skipped", "reason": f"IR lowering to {MAX_IR_VERSION} breaks the checker: {lowered_check}"}
    try:
        session = _session(model, optimize=True)
    except Exception as exc:
        return {"status": "skipped", "reason": f"ORT cannot load FP32: {_error(exc)}"}
    try:
        got = _run(session, model, case.inputs)
    except Exception as exc:
        return {"status": "skipped", "reason": f"ORT cannot run FP32: {_error(exc)}"}
    mismatch = compare_all(got, case.outputs, FP32_RTOL, FP32_ATOL, scaled=True)
    if mismatch:
        return {"status": "skipped", "reason": f"ORT FP32 mismatch: {mismatch}"}
    result: dict[str, Any] = {
        "status": "selected",
        "original_full_check": original_check,
        "ill_conditioned": "",
        "reference": None,
    }
    try:
        reference = _round16(_run(_session(model, optimize=False), model, _round16(case.inputs)))
    except Exception as exc:  # rounding can e.g. change a shape-defining input; then there is no reference
        result["ill_conditioned"] = f"fp32 on fp16-rounded inputs fails: {_error(exc)}"
        return result
    mismatch = compare_all(reference, case.outputs, RTOL, ATOL, scaled=True)
    if mismatch:
        result["ill_conditioned"] = mismatch
        result["reference"] = reference
    return result


def _convert(tool: str, model: onnx.ModelProto, details: dict[str, Any]) -> onnx.ModelProto:
    """Run one converter on a fresh copy (two of them mutate their input); ours also reports its FP32 nodes."""
    if tool == "ours":
        import olive_fp16_pass as fp16

        result = fp16.convert_float16(model, keep_io_types=True)
        details["fp32_nodes"] = [
            {"node": d.node, "op_type": d.op_type, "rule": d.rule.value, "detail": d.detail}
            for d in result.report.fp32_nodes
        ]
        return result.model
    if tool == "occ":
        from onnxconverter_common import float16

        return float16.convert_float_to_float16(model, keep_io_types=True)
    if tool in ("ort", "ort_sorted"):
        from onnxruntime.transformers.onnx_model import OnnxModel

        wrapper = OnnxModel(model)
        wrapper.convert_float_to_float16(keep_io_types=True, use_symbolic_shape_infer=False)
        if tool == "ort_sorted":
            wrapper.topological_sort()
        return wrapper.model
    raise ValueError(f"unknown tool {tool!r}")


def _emulated_outputs(model: onnx.ModelProto, io_model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[Any]:
    """Outputs of the fp16-storage emulation of `model`, run unoptimized (ORT would fold the rounding Casts)."""
    from olive_fp16_pass.emulation import emulate_float16_storage

    emulated = emulate_float16_storage(model)
    return _run(_session(emulated, optimize=False), io_model, inputs)


def _name_omitted_outputs(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy whose omitted optional outputs ('' before a present one, e.g. LSTM's Y) get unique names, or None.

    `emulate_float16_storage` (olive_fp16_pass 0.1.0) inserts its rounding Casts after '' outputs too, reading the
    empty name, which ORT rejects: that is a bug of the emulation, not of the converter under test. Naming the
    slot makes the node compute that output, which nothing reads, so the other outputs are unchanged. Used only
    after the emulation of the model as converted failed, and recorded per case, so the bug stays visible.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    count = 0

    def walk(graph: onnx.GraphProto) -> None:
        nonlocal count
        for node in graph.node:
            for slot, name in enumerate(node.output):
                if not name:
                    count += 1
                    node.output[slot] = f"conformance_omitted_output_{count}"
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        walk(sub)

    walk(copy.graph)
    return copy if count else None


def tool_step(case: Case, tool: str, baseline: dict[str, Any]) -> dict[str, Any]:
    """Convert with one tool and run the four checks independently, each with its error message on failure.

    Independent because each answers a different question: an fp16 model the CPU EP cannot load may still be
    right on a GPU (accuracy is judged by emulation), and a model failing the checker may still run.
    """
    result: dict[str, Any] = {check: False for check in CHECKS}
    errors: dict[str, str] = {}
    result["errors"] = errors
    model = prepared_model(case)  # the converters' copy (two of them edit it in place)
    io_model = prepared_model(case)  # IO names and order of the original: keep_io_types must keep them
    start = time.perf_counter()
    try:
        converted = _convert(tool, model, result)
    except Exception as exc:
        errors["convert"] = _error(exc)
        return result
    finally:
        result["convert_s"] = round(time.perf_counter() - start, 4)
    full = not baseline.get("original_full_check")
    try:
        onnx.checker.check_model(converted, full_check=full)
        result["valid"] = True
    except Exception as exc:
        errors["valid"] = _error(exc)
    try:
        session = _session(converted, optimize=True)
        result["loads"] = True
    except Exception as exc:
        errors["loads"] = _error(exc)
    else:
        try:
            _run(session, io_model, case.inputs)
            result["runs"] = True
        except Exception as exc:
            errors["runs"] = _error(exc)
    try:
        got = _emulated_outputs(converted, io_model, case.inputs)
    except Exception as exc:
        raw_error = _error(exc)
        named = _name_omitted_outputs(converted)
        if not named:
            errors["accurate"] = f"emulation failed or does not run: {raw_error}"
            return result
        try:
            got = _emulated_outputs(named, io_model, case.inputs)
        except Exception as exc2:
            errors["accurate"] = (
                f"emulation failed or does not run: {raw_error}; with omitted outputs named: {_error(exc2)}"
            )
            return result
        result["emulation_workaround"] = (
            f"omitted optional outputs named; emulation of the model as converted: {raw_error}"
        )
    mismatch = compare_all(got, case.outputs, RTOL, ATOL, scaled=True)
    if not mismatch:
        result["strict"] = result["accurate"] = True
        return result
    errors["strict"] = mismatch
    if baseline.get("ill_conditioned") and baseline.get("reference") is not None:
        vs_reference = compare_all(got, baseline["reference"], RTOL, ATOL, scaled=True)
        if not vs_reference:
            result["accurate"] = True
            result["accurate_rule"] = "ill-conditioned: matches the fp16-IO reference"
            return result
        errors["accurate"] = f"{mismatch}; vs fp16-IO reference: {vs_reference}"
    else:
        errors["accurate"] = mismatch
    return result


def run_step(case: Case, step: str, baseline: dict[str, Any] | None) -> dict[str, Any]:
    if step == "baseline":
        return baseline_step(case)
    return tool_step(case, step, baseline or {})


# ----------------------------------------------------------------------------------------------------------------
# Worker pool: forked processes, one step at a time each, wall-clock timeouts, replaced on a crash
# ----------------------------------------------------------------------------------------------------------------


def _worker_main(conn: multiprocessing.connection.Connection, cases: list[Case], quiet: bool) -> None:
    """Child loop: receive (case index, step, baseline), answer a result dict; every exception is an answer."""
    if quiet:  # converters print warnings and ORT logs from C++: keep the parent's output readable
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    warnings.simplefilter("ignore")
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, step, baseline = message
        try:
            answer = run_step(cases[index], step, baseline)
        except BaseException as exc:
            answer = {"status": "error", "errors": {"harness": _error(exc)}, "traceback": traceback.format_exc()}
        conn.send(answer)


@dataclass
class _Worker:
    process: Any
    conn: multiprocessing.connection.Connection
    task: tuple[int, str, Any] | None = None
    started: float = 0.0


@dataclass
class _Pool:
    """A few forked workers. Fork, not spawn: children inherit the collected cases (collection takes seconds)."""

    cases: list[Case]
    jobs: int
    quiet: bool
    workers: list[_Worker] = field(default_factory=list)

    def _start(self) -> _Worker:
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        process = context.Process(target=_worker_main, args=(child, self.cases, self.quiet), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def __enter__(self) -> _Pool:
        self.workers = [self._start() for _ in range(self.jobs)]
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.conn.send(None)
        for worker in self.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()

    def replace(self, worker: _Worker) -> None:
        """Kill one worker (hung or crashed) by its own pid and start a fresh one in its slot."""
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.conn.close()
        self.workers[self.workers.index(worker)] = self._start()


def run_tasks(
    cases: list[Case],
    names: Sequence[str],
    tools: Sequence[str],
    jobs: int,
    timeout: float,
    quiet: bool,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Baseline each named case, then every tool on the selected ones; returns per-case results keyed by name."""
    index_of = {case.name: i for i, case in enumerate(cases)}
    results: dict[str, dict[str, Any]] = {name: {"name": name} for name in names}
    queue: list[tuple[int, str, Any]] = [(index_of[name], "baseline", None) for name in names]
    queue.reverse()  # pop() from the end: tool steps pushed later run before the next baselines
    baselines: dict[int, dict[str, Any]] = {}
    done_cases, start = 0, time.perf_counter()

    def record(task: tuple[int, str, Any], answer: dict[str, Any]) -> None:
        nonlocal done_cases
        index, step, _ = task
        entry = results[cases[index].name]
        if step == "baseline":
            if answer.get("status") == "selected":
                baselines[index] = answer
                entry["status"] = "selected"
                entry["ill_conditioned"] = answer.get("ill_conditioned", "")
                if answer.get("original_full_check"):
                    entry["original_full_check"] = answer["original_full_check"]
                queue.extend((index, tool, answer) for tool in reversed(tools))
                return
            entry["status"] = "skipped" if answer.get("status") == "skipped" else "error"
            entry["reason"] = answer.get("reason") or json.dumps(answer.get("errors"))
        else:
            answer.pop("status", None)
            entry.setdefault("tools", {})[step] = answer
            if len(entry["tools"]) < len(tools):
                return
        done_cases += 1
        if progress and (done_cases % 25 == 0 or done_cases == len(names)):
            print(f"  {done_cases}/{len(names)} cases, {time.perf_counter() - start:.0f} s", flush=True)

    def failed(step: str, reason: str) -> dict[str, Any]:
        if step == "baseline":
            return {"status": "error", "reason": reason}
        return {**{check: False for check in CHECKS}, "errors": {"harness": reason}}

    with _Pool(cases, jobs, quiet) as pool:
        while queue or any(w.task for w in pool.workers):
            for worker in pool.workers:
                if worker.task is None and queue:
                    worker.task = queue.pop()
                    worker.started = time.perf_counter()
                    worker.conn.send(worker.task)
            busy = [w for w in pool.workers if w.task is not None]
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=1.0)
            now = time.perf_counter()
            for worker in busy:
                task = worker.task
                assert task is not None
                if worker.conn in ready:
                    try:
                        answer = worker.conn.recv()
                    except (EOFError, OSError):
                        code = worker.process.exitcode if not worker.process.is_alive() else None
                        worker.process.join(timeout=1)
                        code = worker.process.exitcode if code is None else code
                        answer = failed(task[1], f"worker crashed (exit code {code})")
                        pool.replace(worker)
                    else:
                        worker.task = None
                    record(task, answer)
                    continue
                if now - worker.started > timeout:
                    record(task, failed(task[1], f"timeout after {timeout:.0f} s"))
                    pool.replace(worker)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Summary and reports (parent side)
# ----------------------------------------------------------------------------------------------------------------


def summarize(results: dict[str, dict[str, Any]], tools: Sequence[str]) -> dict[str, Any]:
    """Pass counts and rates per tool over the selected cases, and the skip reasons grouped by kind."""
    selected = [r for r in results.values() if r.get("status") == "selected"]
    skipped = [r for r in results.values() if r.get("status") != "selected"]
    kinds = Counter(str(r.get("reason", "")).split(":")[0] for r in skipped)
    summary: dict[str, Any] = {
        "cases_considered": len(results),
        "cases_selected": len(selected),
        "cases_skipped": len(skipped),
        "skip_reasons": dict(kinds.most_common()),
        "ill_conditioned": sum(1 for r in selected if r.get("ill_conditioned")),
        "tools": {},
    }
    for tool in tools:
        if tool == "ours":  # which rules kept nodes in FP32 over the suite: the "accurate because FP32" part
            rules = Counter(d["rule"] for r in selected for d in r.get("tools", {}).get(tool, {}).get("fp32_nodes", []))
            summary["ours_fp32"] = {
                "cases_with_fp32_nodes": sum(1 for r in selected if r.get("tools", {}).get(tool, {}).get("fp32_nodes")),
                "nodes_by_rule": dict(rules.most_common()),
            }
        counts = {check: sum(1 for r in selected if r.get("tools", {}).get(tool, {}).get(check)) for check in CHECKS}
        total = len(selected)
        summary["tools"][tool] = {
            "counts": counts,
            "rates": {check: (100.0 * counts[check] / total if total else 0.0) for check in CHECKS},
            "emulation_workarounds": sum(
                1 for r in selected if r.get("tools", {}).get(tool, {}).get("emulation_workaround")
            ),
            "failing_cases": sorted(r["name"] for r in selected if not _passes_all(r.get("tools", {}).get(tool, {}))),
        }
    return summary


def _passes_all(tool_result: dict[str, Any]) -> bool:
    return all(tool_result.get(check) for check in ("valid", "loads", "runs", "accurate"))


def failures(results: dict[str, dict[str, Any]], tool: str) -> list[dict[str, Any]]:
    """One row per selected case the tool fails: which checks failed, their errors, and (ours) its FP32 nodes."""
    rows = []
    for name, entry in sorted(results.items()):
        if entry.get("status") != "selected":
            continue
        outcome = entry.get("tools", {}).get(tool, {})
        if _passes_all(outcome):
            continue
        failed_checks = [c for c in ("valid", "loads", "runs", "accurate") if not outcome.get(c)]
        rows.append(
            {
                "case": name,
                "failed": failed_checks,
                "errors": outcome.get("errors", {}),
                "fp32_nodes": outcome.get("fp32_nodes", []),
                "ill_conditioned": entry.get("ill_conditioned", ""),
            }
        )
    return rows


def environment(command: str) -> dict[str, Any]:
    """Date, machine and versions, so a result file says what produced it (the package changes under work)."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "date": dt.date.today().isoformat(),
        "timestamp": dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {
            name: version(name)
            for name in ("olive-fp16", "onnx", "onnxruntime", "onnxconverter-common", "onnx-ir", "numpy")
        },
        "git_commit": git("rev-parse", "HEAD").strip(),
        "git_dirty": bool(git("status", "--porcelain", "--", "olive_fp16_pass").strip()),
        "package_source_sha": source_digest(),
        "tolerances": {
            "fp32_screen": {"rule": "same form as fp16, atol relative to scale", "rtol": FP32_RTOL, "atol": FP32_ATOL},
            "fp16": {
                "rule": "|got-exp| <= rtol*|exp| + atol*max(max finite |exp|, 2**-14); NaN positions and infs exact",
                "rtol": RTOL,
                "atol": ATOL,
            },
            "ill_conditioned": "if the FP32 model with fp16-rounded inputs and outputs misses the fp16 rule, the "
            "converter's emulated output may match that fp16-IO reference under the same rule instead",
        },
        "max_ir_version": MAX_IR_VERSION,
    }


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def format_table(summary: dict[str, Any]) -> str:
    header = "| tool | valid | loads | runs | accurate (strict) | accurate | all four |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for tool, data in summary["tools"].items():
        rates, total = data["rates"], summary["cases_selected"]
        passing = total - len(data["failing_cases"])
        all_four = _pct(100.0 * passing / total if total else 0.0)
        lines.append(
            f"| {tool} | {_pct(rates['valid'])} | {_pct(rates['loads'])} | {_pct(rates['runs'])} | "
            f"{_pct(rates['strict'])} | {_pct(rates['accurate'])} | {all_four} |"
        )
    return "\n".join(lines)


def _short(errors: dict[str, str], width: int = 300) -> str:
    text = "; ".join(f"{k}: {v}" for k, v in errors.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def markdown(report: dict[str, Any]) -> str:
    """The human-readable result file: table, our failures in full, competitors' failures grouped, skips."""
    env, summary, results = report["environment"], report["summary"], report["cases"]
    machine = env["machine"]
    lines = [
        f"# FP16 conformance over the ONNX node tests — {env['date']}",
        "",
        f"Command: `{env['command']}`  ",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + "  ",
        f"Git: {env['git_commit'][:12]}{' (package sources modified)' if env['git_dirty'] else ''}, "
        f"package source sha256 {env['package_source_sha']}  ",
        f"Runtime: {report['seconds']:.0f} s with {report['jobs']} worker(s)",
        "",
        f"Cases: {summary['cases_considered']} considered (float32 IO candidates{report['selection_note']}), "
        f"{summary['cases_selected']} selected (ORT FP32 matches expected), {summary['cases_skipped']} skipped; "
        f"{summary['ill_conditioned']} selected cases are ill-conditioned in fp16."
        + (
            f" Ours kept nodes in FP32 in {summary['ours_fp32']['cases_with_fp32_nodes']} cases "
            f"(nodes by rule: {summary['ours_fp32']['nodes_by_rule']})."
            if "ours_fp32" in summary
            else ""
        ),
        f"Not considered at all: {report['non_float_cases']} of {report['total_node_tests']} node tests have "
        "non-float32 or non-tensor IO.",
        "",
        format_table(summary),
        "",
        "Rates are over the selected cases; the checks are independent. Tolerance (emulated FP16 vs expected): "
        f"|got-exp| <= {RTOL}·|exp| + {ATOL}·max(max finite |exp|, 2^-14), NaNs/infs exact. 'accurate' also "
        "accepts, for an ill-conditioned case (the FP32 model with only its IO rounded to fp16 already misses "
        "that tolerance), a match with that fp16-IO reference under the same tolerance.",
        "",
        "Emulation workaround (`emulate_float16_storage` reads omitted optional outputs named ''; see "
        "`_name_omitted_outputs`), cases per tool: "
        + ", ".join(f"{tool} {data['emulation_workarounds']}" for tool, data in summary["tools"].items())
        + ".",
        "",
    ]
    for tool in summary["tools"]:
        rows = failures(results, tool)
        lines.append(f"## {tool}: {len(rows)} failing case(s) — {TOOL_LABELS[tool]}")
        lines.append("")
        if tool == "ours":
            for row in rows:
                lines.append(f"- `{row['case']}` fails {', '.join(row['failed'])}: {_short(row['errors'], 1200)}")
                if row["fp32_nodes"]:
                    kept = ", ".join(f"{n['op_type']} ({n['rule']})" for n in row["fp32_nodes"])
                    lines.append(f"  - kept FP32: {kept}")
        else:
            for row in rows[:200]:
                lines.append(f"- `{row['case']}` fails {', '.join(row['failed'])}: {_short(row['errors'])}")
            if len(rows) > 200:
                lines.append(f"- ... {len(rows) - 200} more in the JSON file")
        lines.append("")
    lines.append("## Skipped cases")
    lines.append("")
    for name, entry in sorted(results.items()):
        if entry.get("status") != "selected":
            lines.append(f"- `{name}`: {str(entry.get('reason', ''))[:300]}")
    return "\n".join(lines) + "\n"


def evaluate(
    subset: int | None,
    tools: Sequence[str] = TOOLS,
    jobs: int = 1,
    timeout: float = DEFAULT_TIMEOUT_S,
    quiet: bool = True,
    progress: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Collect, select (subset of the float32-IO candidates), run, summarize: the whole benchmark as one call."""
    start = time.perf_counter()
    cases = collect_cases()
    candidates = [c.name for c in cases if io_skip_reason(c) is None]
    names = select_subset(candidates, subset)
    results = run_tasks(cases, names, tools, jobs, timeout, quiet, progress)
    return {
        "environment": environment(command),
        "total_node_tests": len(cases),
        "non_float_cases": len(cases) - len(candidates),
        "selection_note": "" if subset is None else f", {len(names)} evenly spaced of {len(candidates)}",
        "subset": subset,
        "jobs": jobs,
        "timeout_s": timeout,
        "tools": list(tools),
        "seconds": round(time.perf_counter() - start, 1),
        "summary": summarize(results, tools),
        "cases": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--subset", type=int, metavar="N", help="a fixed subset: N cases evenly spaced by name")
    group.add_argument("--all", action="store_true", help="every float32-IO case")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1: shared machines)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per case and step")
    parser.add_argument("--out", type=Path, default=None, help="result path stem (default bench/results/DATE-...)")
    parser.add_argument("--verbose", action="store_true", help="let workers print converter and ORT messages")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := [t for t in tools if t not in TOOLS]:
        parser.error(f"unknown tools: {unknown}")
    command = "python bench/conformance.py " + " ".join(sys.argv[1:] if argv is None else argv)
    subset = None if args.all else args.subset
    report = evaluate(subset, tools, args.jobs, args.timeout, not args.verbose, progress=True, command=command)
    summary = report["summary"]
    print()
    print(
        f"{summary['cases_selected']} cases selected of {summary['cases_considered']} considered "
        f"({summary['cases_skipped']} skipped: {summary['skip_reasons']}); {report['seconds']:.0f} s"
    )
    print(format_table(summary))
    if "ours" in tools:
        rows = failures(report["cases"], "ours")
        print(f"\nours: {len(rows)} failing case(s)")
        for row in rows:
            kept = ", ".join(f"{n['op_type']}({n['rule']})" for n in row["fp32_nodes"])
            print(
                f"  {row['case']}: {', '.join(row['failed'])}: {_short(row['errors'], 400)}"
                + (f" [kept FP32: {kept}]" if kept else "")
            )
    stem = args.out
    if stem is None:
        suffix = "" if subset is None else f"-subset{subset}"
        stem = RESULTS_DIR / f"{report['environment']['date']}-conformance{suffix}"
    write_results(stem, report, markdown(report), default=str)
    print(f"\nwrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
