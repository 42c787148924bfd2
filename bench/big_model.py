"""A 2.3 GB model with external data: conversion time and peak memory, recorded in bench/results/.

Usage: `python bench/big_model.py` (writes ~3.5 GB to a temporary folder). The slow test
tests/test_big_model.py checks the same conversion (external data kept, peak memory near the model's size).
Each conversion runs in a fresh interpreter, so its peak RSS measures the conversion alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as `python bench/big_model.py`: this checkout's package and `tests`
    sys.path.insert(0, str(REPO_ROOT))

CHILD = """
import resource, sys, time, json
import olive_fp16_pass as fp16
start = time.perf_counter()
result = fp16.convert_float16(sys.argv[1])
converted = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result.save(sys.argv[2])
print("RESULT " + json.dumps({"seconds": time.perf_counter() - start, "peak_rss_converting_mib": converted,
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def convert_in_child(src: Path, dst: Path) -> dict:
    """Convert `src` to `dst` in a fresh interpreter: seconds and that process's peak RSS (MiB)."""
    # The child imports this checkout's package, not whichever one is installed (`-c` puts no folder on the path).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(dst)], capture_output=True, text=True, timeout=1800, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"conversion failed: {proc.stderr[-3000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def model_mib(src: Path) -> float:
    return (src.stat().st_size + (src.parent / "big.onnx.data").stat().st_size) / 2**20


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)  # --help, and no stray options
    from bench.bench_env import environment
    from tests.models import write_big_model

    with tempfile.TemporaryDirectory() as tmp:
        src = write_big_model(Path(tmp) / "src")
        size_mib = model_mib(src)
        figures = convert_in_child(src, Path(tmp) / "dst" / "big_fp16.onnx")
    record = {
        "date": dt.date.today().isoformat(),
        "model_mib": round(size_mib),
        **figures,
        "peak_over_model": figures["peak_rss_mib"] / size_mib,  # conversion and save (its load check's session)
        "peak_converting_over_model": figures["peak_rss_converting_mib"] / size_mib,
        "command": "python bench/big_model.py",
        "machine": environment("olive_fp16_pass (sha256 of sources at start)"),
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = REPO_ROOT / "bench" / "results" / f"{record['date']}-big_model.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
