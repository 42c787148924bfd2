"""auto_mixed_precision on a model over 2 GB with external data, peak memory near its size (marked slow).

Run: `python -m pytest -m slow tests/test_big_model_amp.py -s` (writes ~2.3 GB to a temporary folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from tests.models import write_big_model

CHILD = """
import json, resource, sys, time
import numpy as np
import olive_fp16_pass as fp16
rng = np.random.default_rng(0)
data = [{"x": rng.standard_normal((1, 8192)).astype(np.float32)} for _ in range(4)]
start = time.perf_counter()
result = fp16.auto_mixed_precision(sys.argv[1], data, rtol=1e-2, atol=1e-2, progress=False)
searched = time.perf_counter() - start
result.save(sys.argv[2])
search = result.report.search
print("RESULT " + json.dumps({"seconds": searched, "criteria_met": search["criteria_met"],
      "history": [h["stage"] for h in search["history"]], "fp32_nodes": len(result.report.fp32_nodes),
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def search_in_child(src: Path, dst: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(dst)], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


@pytest.mark.slow
def test_mixed_precision_over_2gb_with_external_data(tmp_path):
    src = write_big_model(tmp_path / "src")
    size_mib = (src.stat().st_size + (src.parent / "big.onnx.data").stat().st_size) / 2**20
    assert size_mib > 2048
    figures = search_in_child(src, tmp_path / "dst" / "big_mixed.onnx")
    assert figures["criteria_met"] and figures["fp32_nodes"] == 0, figures
    out = tmp_path / "dst" / "big_mixed.onnx"
    converted = onnx.load(out, load_external_data=False)
    assert all(t.data_type == TensorProto.FLOAT16 for t in converted.graph.initializer)
    assert (tmp_path / "dst" / "big_mixed.onnx.data").is_file()
    # Weights are memory-mapped by onnxruntime in place: the mapped model (1x), the float16 candidate (0.5x) and
    # one run's transient rounded copies. Measured 2.0x (4625 MiB for 2304 MiB, 2026-12-03: the analysis copy's
    # weight maps released after classifying, the gated session closed while the candidate is converted);
    # 3.2x just before that (7314 MiB), 5.9x at first (13654 MiB).
    assert figures["peak_rss_mib"] < 2.5 * size_mib, (figures, size_mib)
    seconds, peak = figures["seconds"], figures["peak_rss_mib"]
    print(f"\nmodel {size_mib:.0f} MiB: searched in {seconds:.1f} s, peak RSS {peak:.0f} MiB")
