"""What every benchmark records about the run: which package sources ran, on what machine, with what versions.

Shared by convert_speed.py, amp_speed.py and conformance.py so their result files describe runs the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
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

