"""Conversion-speed benchmark: olive_fp16_pass vs onnxconverter-common vs onnxruntime's transformers converter.

Usage (from the repository root, in the project's venv):

    python bench/convert_speed.py                  # 1k, 5k, 20k, 100k nodes; 300 s per run; ~1 h worst case
    python bench/convert_speed.py --quick          # 1k and 5k nodes, 60 s per run: a smoke test
    python bench/convert_speed.py --sizes 20k --tools ours --timeout 60

Why it is built this way:

- Each (size, case, tool) runs in its own subprocess, so one converter's memory, caches or lazy imports cannot
  slow down or speed up another, a hung converter can be killed, and the peak RSS of a process measures one
  converter alone.
- The synthetic graph is built once per size and saved; the child loads it from disk and the timer covers only
  the conversion call (up to an `onnx.ModelProto` in hand), never the load or the imports.
- Two cases: a full conversion, and half the float nodes blocked (every other node), which is what makes
  block-list handling and Cast insertion show up: onnxconverter-common is known to be slow there.
- A converter that fails or runs past `--timeout` is reported, not fatal: "ours" is under active development,
  so the harness must still produce the competitors' numbers when it is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import gc
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # run as `python bench/convert_speed.py`: this checkout's package and `bench`
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_env import (  # noqa: E402  (after the path is set)
    check_choices,
    count_op,
    environment,
    machine_lines,
    source_digest,
    write_results,
)

RESULTS_DIR = BENCH_DIR / "results"
TOOLS = ("ours", "occ", "ort")
TOOL_LABELS = {
    "ours": "olive_fp16_pass.convert_float16",
    "occ": "onnxconverter_common.float16.convert_float_to_float16",
    "ort": "onnxruntime.transformers.onnx_model.OnnxModel.convert_float_to_float16",
}
CASES = ("full", "half")
DEFAULT_SIZES = (1_000, 5_000, 20_000, 100_000)
QUICK_SIZES = (1_000, 5_000)
GRACE_S = 120.0  # extra wall time the parent allows a child for loading the model and validating its output


# ----------------------------------------------------------------------------------------------------------------
# Child process: load, convert (timed), validate, report as JSON.
# ----------------------------------------------------------------------------------------------------------------


class ConversionTimeout(BaseException):
    """Raised inside the child by SIGALRM, so a slow converter still reports its peak RSS and the limit hit.

    A BaseException, so that a converter's own `except Exception` cannot swallow it and carry on.
    """


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _converter(tool: str, details: dict[str, Any], settings: dict[str, Any]) -> Callable[[Any, list[str] | None], Any]:
    """Import one converter (outside the timed region) and return a call that yields an `onnx.ModelProto`.

    `settings`: {"load_check": bool, "writer": "auto" | "ir"} for our converter (see --no-load-check, --writer).
    """
    if tool == "ours":
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        import onnx_ir as ir

        import olive_fp16_pass
        from olive_fp16_pass import convert_float16
        from olive_fp16_pass.float16 import convert_with_options
        from olive_fp16_pass.options import ConversionOptions

        details["version"] = getattr(olive_fp16_pass, "__version__", "?")
        details["source_sha"] = source_digest()

        def ours(model: Any, names: list[str] | None) -> Any:
            # Entries are full-match regexes: escape them so a name is only ever itself.
            patterns = [re.escape(name) for name in names] if names is not None else None
            start = time.perf_counter()
            if settings["writer"] == "ir":  # an onnx-ir model takes the onnx-ir writer; deserializing it is timed
                options = ConversionOptions(keep_io_types=False, node_block_list=patterns)
                model = ir.serde.deserialize_model(model)
                result = convert_with_options(model, options, load_check=settings["load_check"])
            else:
                result = convert_float16(
                    model, keep_io_types=False, node_block_list=patterns, load_check=settings["load_check"]
                )
            middle = time.perf_counter()
            proto = result.model  # serialized lazily from onnx-ir: part of the cost of getting a ModelProto
            details["convert_s"] = middle - start
            details["to_proto_s"] = time.perf_counter() - middle
            details["report_casts_inserted"] = result.report.casts_inserted
            details["report_warnings"] = len(result.report.warnings)
            return proto

        return ours
    if tool == "occ":
        from onnxconverter_common import float16

        def occ(model: Any, names: list[str] | None) -> Any:
            return float16.convert_float_to_float16(model, keep_io_types=False, node_block_list=names)

        return occ
    if tool == "ort":
        from onnxruntime.transformers.onnx_model import OnnxModel

        def ort(model: Any, names: list[str] | None) -> Any:
            # OnnxModel converts in place; the child owns `model` (a fresh copy per repeat), so that is safe.
            # The wrapper's construction is timed too: it is part of using this API.
            start = time.perf_counter()
            wrapper = OnnxModel(model)
            details["wrap_s"] = time.perf_counter() - start
            kwargs: dict[str, Any] = {"keep_io_types": False, "use_symbolic_shape_infer": False}
            if names is not None:
                kwargs["node_block_list"] = names
            wrapper.convert_float_to_float16(**kwargs)
            return wrapper.model

        return ort
    raise ValueError(f"unknown tool {tool!r}")


def _ort_check(original: Any, converted: Any) -> dict[str, Any]:
    """Run both models in onnxruntime on one random batch: the converted model must load, run and stay close."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    x = np.random.default_rng(0).uniform(-1, 1, (4, 16)).astype(np.float32)

    def run(model: Any) -> Any:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed_type = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
        return session.run(None, {session.get_inputs()[0].name: x.astype(feed_type)})[0].astype(np.float32)

    reference, got = run(original), run(converted)
    scale = float(np.abs(reference).max()) or 1.0
    return {"ort_runs": True, "max_abs_err": float(np.abs(got - reference).max()), "max_abs_ref": scale}


def worker(
    tool: str,
    model_path: str,
    names_path: str,
    result_path: str,
    timeout: float,
    repeat: int,
    check_max_nodes: int,
    ours: dict[str, Any],
) -> int:
    """Child entry point: every outcome, including an import error or a timeout, ends in the JSON result file."""
    result: dict[str, Any] = {"tool": tool, "status": "error", "details": {}}
    try:
        import onnx

        convert = _converter(tool, result["details"], ours)
        names = json.loads(Path(names_path).read_text()) if names_path else None
        original = onnx.load(model_path)
        result["input_nodes"] = len(original.graph.node)
        result["rss_after_load_mb"] = _peak_rss_mb()

        def on_alarm(signum: int, frame: Any) -> None:
            raise ConversionTimeout

        signal.signal(signal.SIGALRM, on_alarm)
        times: list[float] = []
        cpu_times: list[float] = []  # CPU time is steadier than wall time on a shared, overloaded machine
        converted = None
        for _ in range(repeat):
            model = copy.deepcopy(original)
            converted = None
            gc.collect()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                start, cpu_start = time.perf_counter(), time.process_time()
                converted = convert(model, names)
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            del model
        result.update(status="ok", seconds=min(times), all_seconds=times, peak_rss_mb=_peak_rss_mb())
        result["details"]["cpu_s"] = cpu_times[times.index(min(times))]
        result["details"]["load_avg_after"] = os.getloadavg()[0]
        assert converted is not None
        result["output_nodes"] = len(converted.graph.node)
        result["casts"] = count_op(converted, "Cast")
        result["input_casts"] = count_op(original, "Cast")
        try:
            onnx.checker.check_model(converted)
            result["checker"] = "ok"
        except Exception as exc:
            result["checker"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if result["input_nodes"] <= check_max_nodes:
            try:
                result["details"].update(_ort_check(original, converted))
            except Exception as exc:
                result["details"]["ort_runs"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    except ConversionTimeout:
        result.update(status="timeout", seconds=timeout, peak_rss_mb=_peak_rss_mb())
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        result["traceback"] = traceback.format_exc()[-3000:]
        result["peak_rss_mb"] = _peak_rss_mb()
    Path(result_path).write_text(json.dumps(result, indent=1))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parent: build graphs, launch children, tabulate, save.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One (size, case, tool) measurement as the parent saw it."""

    size: int
    nodes: int
    case: str
    tool: str
    status: str  # ok | timeout | error
    seconds: float | None = None
    casts: int | None = None
    checker: str | None = None
    peak_rss_mb: float | None = None
    rss_after_load_mb: float | None = None
    error: str | None = None
    wall_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def run_child(
    tool: str,
    model_path: Path,
    names_path: Path | None,
    timeout: float,
    repeat: int,
    check_max_nodes: int,
    workdir: Path,
    ours: dict[str, Any],
) -> dict[str, Any]:
    """Run one conversion in a fresh interpreter; kill it if it outlives its timeout plus load/validation slack."""
    result_path = workdir / f"result-{tool}-{os.getpid()}-{time.monotonic_ns()}.json"
    log_path = result_path.with_suffix(".log")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        tool,
        str(model_path),
        str(names_path) if names_path else "",
        str(result_path),
        str(timeout),
        str(repeat),
        str(check_max_nodes),
        json.dumps(ours),
    ]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=timeout * repeat + GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wall = time.perf_counter() - start
    if result_path.exists():
        result = json.loads(result_path.read_text())
    elif process.returncode is not None and process.returncode < 0 and wall >= timeout:
        result = {"status": "timeout", "seconds": timeout, "details": {}}
    else:
        tail = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
        result = {"status": "error", "error": f"child exited {process.returncode} with no result: {tail}"}
    result["wall_s"] = wall
    return result


def parse_size(text: str) -> int:
    """Accept 1000, 1k, 100K, 1.5k: sizes are easier to type and read in thousands."""
    text = text.strip().lower()
    factor = 1000 if text.endswith("k") else 1
    return int(float(text.rstrip("k")) * factor)


def size_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def fmt_seconds(run: Run | None, timeout: float) -> str:
    if run is None:
        return "-"
    if run.status == "timeout":
        return f"> {timeout:g} s"
    if run.status == "error":
        return "error"
    assert run.seconds is not None
    return f"{run.seconds:.3f}" if run.seconds < 10 else f"{run.seconds:.1f}"


def fmt_ratio(other: Run | None, ours: Run | None) -> str:
    """other/ours; a timeout gives a bound, since only a lower (or upper) limit of that time is known."""
    if other is None or ours is None or "error" in (other.status, ours.status):
        return "-"
    if other.status == "timeout" and ours.status == "timeout":
        return "?"
    assert other.seconds is not None and ours.seconds is not None
    ratio = other.seconds / max(ours.seconds, 1e-9)
    if other.status == "timeout":
        return f"> {ratio:.1f}x"
    if ours.status == "timeout":
        return f"< {ratio:.1f}x"
    return f"{ratio:.1f}x"


def fmt_casts(run: Run | None) -> str:
    if run is None or run.casts is None:
        return "-"
    return str(run.casts) + ("" if run.checker in (None, "ok") else "!")


def fmt_rss(run: Run | None) -> str:
    return "-" if run is None or run.peak_rss_mb is None else f"{run.peak_rss_mb:.0f}"


def table_rows(runs: list[Run], timeout: float) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: one row per (size, case); `!` after a Cast count means onnx.checker failed."""
    header = [
        "size",
        "nodes",
        "case",
        "ours s",
        "occ s",
        "ort s",
        "occ/ours",
        "ort/ours",
        "casts ours/occ/ort",
        "peak RSS MB ours/occ/ort",
    ]
    index = {(r.size, r.case, r.tool): r for r in runs}
    rows = []
    for size, case in dict.fromkeys((r.size, r.case) for r in runs):
        got = {tool: index.get((size, case, tool)) for tool in TOOLS}
        nodes = next(r.nodes for r in got.values() if r is not None)
        rows.append(
            [
                size_label(size),
                str(nodes),
                case,
                *(fmt_seconds(got[t], timeout) for t in TOOLS),
                fmt_ratio(got["occ"], got["ours"]),
                fmt_ratio(got["ort"], got["ours"]),
                "/".join(fmt_casts(got[t]) for t in TOOLS),
                "/".join(fmt_rss(got[t]) for t in TOOLS),
            ]
        )
    return header, rows


def per_1k_lines(runs: list[Run]) -> list[str]:
    """Ours' seconds per 1k nodes by size: flat numbers mean linear growth, rising numbers mean super-linear."""
    lines = []
    for case in CASES:
        ours = [r for r in runs if r.tool == "ours" and r.case == case and r.status == "ok" and r.seconds]
        if ours:
            cells = ", ".join(f"{size_label(r.size)}: {1000 * (r.seconds or 0.0) / r.nodes:.4f}" for r in ours)
            lines.append(f"ours s per 1k nodes ({case}): {cells}")
            if all("cpu_s" in r.details for r in ours):
                cells = ", ".join(f"{size_label(r.size)}: {1000 * r.details['cpu_s'] / r.nodes:.4f}" for r in ours)
                lines.append(f"ours CPU s per 1k nodes ({case}): {cells}")
    return lines


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def problems(runs: list[Run]) -> Iterator[str]:
    """Errors, rejected outputs, and a package that changed between runs: anything that makes a number suspect.

    Messages are flattened to one line each, since they become Markdown list items.
    """
    shas = {r.details["source_sha"] for r in runs if r.details.get("source_sha")}
    if len(shas) > 1:
        yield f"olive_fp16_pass sources changed during the benchmark (hashes {', '.join(sorted(shas))})"
    for r in runs:
        where = f"{size_label(r.size)} {r.case} {r.tool}"
        if r.status == "error":
            yield f"{where}: {' '.join(str(r.error).split())}"
        elif r.checker not in (None, "ok"):
            yield f"{where}: onnx.checker failed: {' '.join(str(r.checker).split())}"
        ort_runs = r.details.get("ort_runs")
        if isinstance(ort_runs, str):
            yield f"{where}: onnxruntime could not run the output: {' '.join(ort_runs.split())}"


def save(
    runs: list[Run], args: argparse.Namespace, env: dict[str, Any], started: dt.datetime, stem: Path, finished: bool
) -> None:
    """Write JSON and Markdown; called after every run so a long job killed midway still leaves its numbers."""
    header, rows = table_rows(runs, args.timeout)
    payload = {
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "settings": {
            "sizes": args.sizes,
            "timeout_s": args.timeout,
            "repeat": args.repeat,
            "seed": args.seed,
            "tools": {t: TOOL_LABELS[t] for t in args.tools},
            "cases": args.cases,
            "ours": ours_settings(args),
        },
        "machine": env,
        "table": {"header": header, "rows": rows},
        "runs": [asdict(r) for r in runs],
    }
    notes = list(problems(runs))
    md = [
        f"# Float16 conversion speed, {payload['date']}" + ("" if finished else " (partial: still running)"),
        "",
        f"Command: `{payload['command']}`  ",
        *machine_lines(env),
        f"Timeout {args.timeout:g} s per run; best of {args.repeat}; each run in its own process; the time covers "
        "the conversion call only (ours: `convert_float16(...).model`, ort: `OnnxModel(...)` + "
        "`convert_float_to_float16(use_symbolic_shape_infer=False)`), not loading the model.  ",
        f"Ours: load check {'on' if not args.no_load_check else 'off'} (`load_check`), writer {args.writer} "
        "(auto: a ModelProto input goes through the protobuf writer; ir: the input deserialized to onnx-ir inside "
        "the timer, through the onnx-ir writer).",
        "",
        "Synthetic transformer-like graph (`bench/synthetic.py`, 16 nodes per block, 16x16 weights); "
        "`half` blocks every other float node (`node_block_list`), the worst case for Cast insertion. "
        "`!` after a Cast count: onnx.checker rejected that output.",
        "",
        render_markdown(header, rows),
        "",
        *(f"- {line}" for line in per_1k_lines(runs)),
    ]
    if notes:
        md += ["", "Problems:", "", *(f"- {line}" for line in notes)]
    write_results(stem, payload, md)


def ours_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"load_check": not args.no_load_check, "writer": args.writer}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in s.split(",") if x.strip()],
        default=None,
        help="comma-separated node counts, e.g. 1k,5k,20k,100k (default)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per conversion (default 300; quick 60)")
    parser.add_argument("--quick", action="store_true", help="sizes 1k,5k and timeout 60 s: a smoke run")
    parser.add_argument("--tools", type=lambda s: s.split(","), default=list(TOOLS), help="subset of ours,occ,ort")
    parser.add_argument("--cases", type=lambda s: s.split(","), default=list(CASES), help="subset of full,half")
    parser.add_argument("--repeat", type=int, default=1, help="conversions per child; the best time is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check-max-nodes",
        type=int,
        default=5000,
        help="also run outputs in onnxruntime against fp32 up to this many nodes",
    )
    parser.add_argument(
        "--no-load-check",
        action="store_true",
        help="ours: convert_float16(load_check=False), as every figure recorded before 2026-12-01 (the load check, "
        "on by default since, opens one onnxruntime session per result)",
    )
    parser.add_argument(
        "--writer",
        choices=("auto", "ir"),
        default="auto",
        help="ours: auto (default) = the library's choice, the protobuf writer for this ModelProto input; "
        "ir = give it the model as onnx-ir (deserialized inside the timer), which takes the onnx-ir writer",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result path without suffix (default bench/results/<date>-convert_speed[-quick])",
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.timeout is None:
        args.timeout = 60.0 if args.quick else 300.0
    check_choices(parser, args, {"tools": TOOLS, "cases": CASES})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnx

    from bench.synthetic import build_graph, half_block_list

    started = dt.datetime.now()
    stem = args.out or RESULTS_DIR / f"{started.date().isoformat()}-convert_speed{'-quick' if args.quick else ''}"
    env = environment("olive_fp16_pass (sha256 of sources at start)")
    runs: list[Run] = []
    print(f"sizes {args.sizes}, cases {args.cases}, tools {args.tools}, timeout {args.timeout:g} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="convert_speed-") as tmp:
        workdir = Path(tmp)
        for size in args.sizes:
            model = build_graph(size, seed=args.seed)
            nodes = len(model.graph.node)
            model_path = workdir / f"synthetic-{size}.onnx"
            onnx.save(model, model_path)
            names_path = workdir / f"block-{size}.json"
            names_path.write_text(json.dumps(half_block_list(model)))
            del model
            for case in args.cases:
                for tool in args.tools:
                    result = run_child(
                        tool,
                        model_path,
                        names_path if case == "half" else None,
                        args.timeout,
                        args.repeat,
                        args.check_max_nodes,
                        workdir,
                        ours_settings(args),
                    )
                    run = Run(
                        size=size,
                        nodes=nodes,
                        case=case,
                        tool=tool,
                        status=result.get("status", "error"),
                        seconds=result.get("seconds"),
                        casts=result.get("casts"),
                        checker=result.get("checker"),
                        peak_rss_mb=result.get("peak_rss_mb"),
                        rss_after_load_mb=result.get("rss_after_load_mb"),
                        error=result.get("error"),
                        wall_s=result.get("wall_s"),
                        details=result.get("details", {}),
                    )
                    runs.append(run)
                    print(
                        f"  {size_label(size):>5} {case:4} {tool:4}: {fmt_seconds(run, args.timeout):>9}  "
                        f"casts {fmt_casts(run):>6}  peak {fmt_rss(run):>5} MB  (wall {run.wall_s:.1f} s)"
                        + (f"  {run.error}" if run.error else ""),
                        flush=True,
                    )
                    save(runs, args, env, started, stem, finished=False)
    save(runs, args, env, started, stem, finished=True)
    header, rows = table_rows(runs, args.timeout)
    print()
    print(render_text(header, rows))
    print()
    for line in [*per_1k_lines(runs), *(f"problem: {p}" for p in problems(runs))]:
        print(line)
    print(f"\nresults: {stem.with_suffix('.json')}, {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        tool_, model_, names_, result_, timeout_, repeat_, check_, ours_ = sys.argv[2:10]
        sys.exit(worker(tool_, model_, names_, result_, float(timeout_), int(repeat_), int(check_), json.loads(ours_)))
    sys.exit(main())
