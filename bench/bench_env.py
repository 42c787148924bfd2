"""What every benchmark shares: which package sources ran, on what machine, with what versions; the result
files' header lines and writing; a CPU session; command-line choice checks.

Shared by every bench/ script so their result files describe runs the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONED = ("onnx", "onnxruntime", "onnxruntime-gpu", "onnxconverter-common", "onnx-ir", "numpy", "protobuf")


def source_digest() -> str:
    """Short hash of the package's sources: it changes under active development, so record which one ran."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "olive_fp16_pass").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def environment(digest_key: str) -> dict[str, Any]:
    """Machine and versions, so results from different days or machines are not compared blindly."""
    versions = {}
    for dist in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    versions[digest_key] = source_digest()
    git = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "git_head": git.stdout.strip() or None,
        "versions": versions,
    }


def count_op(model: Any, op_type: str) -> int:
    """Nodes of one op type in the main graph and every subgraph (Casts may land in bodies too)."""
    import onnx

    def walk(graph: onnx.GraphProto) -> int:
        total = 0
        for node in graph.node:
            total += node.op_type == op_type
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    total += sum(walk(g) for g in attr.graphs)
        return total

    return walk(model.graph)


def machine_lines(env: dict[str, Any], load_at_end: Sequence[float] | None = None) -> list[str]:
    """The "Machine:" and "Versions:" lines of a Markdown result file (Markdown line breaks included)."""
    load = ", ".join(f"{x:.2f}" for x in env["load_avg_at_start"])
    end = f", at end {', '.join(f'{x:.2f}' for x in load_at_end)}" if load_at_end else ""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return [
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs ({env['affinity_cpus']} usable, shared), "
        f"Python {env['python']}, load average at start {load}{end}  ",
        f"Versions: {versions}  ",
    ]


def write_results(stem: Path, payload: Any, markdown: Iterable[str] | str, default: Any = None) -> None:
    """`stem`.json (the payload) and `stem`.md (the lines, or one text) side by side; folders created."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(json.dumps(payload, indent=1, default=default) + "\n")
    text = markdown if isinstance(markdown, str) else "\n".join(markdown) + "\n"
    stem.with_name(stem.name + ".md").write_text(text)


def check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace, allowed: Mapping[str, Sequence]) -> None:
    """Every value of the list options named in `allowed` is one of its choices, else a usage error."""
    for name, choices in allowed.items():
        unknown = set(getattr(args, name)) - set(choices)
        if unknown:
            parser.error(f"--{name}: unknown {sorted(unknown)}; choose from {','.join(map(str, choices))}")


def cpu_session(model: Any, *, optimize: bool, log_level: int = 3, threads: int | None = None) -> Any:
    """A CPU onnxruntime session; `optimize=False` for emulated models, whose rounding Casts ORT could fold."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = log_level
    if threads is not None:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
