"""A model over 2 GB with external data converts with peak memory near the model's size (marked slow).

Run: `python -m pytest -m slow tests/test_big_model.py -s` (writes ~3.5 GB to a temporary folder).
Measured figures are recorded in bench/results/ by `python tests/test_big_model.py`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

WIDTH = 8192  # one 8192x8192 float32 weight = 256 MiB
LAYERS = 9  # 2.25 GiB of weights: over protobuf's 2 GB limit


def write_big_model(folder: Path) -> Path:
    """Write the weights straight to the data file (never holding the whole model in memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "big.onnx.data"
    inits, nodes, offset = [], [], 0
    rng = np.random.default_rng(0)
    with open(data, "wb") as f:
        for i in range(LAYERS):
            weight = (rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / np.sqrt(WIDTH)).astype(np.float32)
            raw = weight.tobytes()
            f.write(raw)
            tensor = TensorProto(name=f"W{i}", data_type=TensorProto.FLOAT, dims=[WIDTH, WIDTH])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            inits.append(tensor)
            nodes.append(helper.make_node("MatMul", [f"h{i}" if i else "x", f"W{i}"], [f"h{i + 1}"], name=f"mm{i}"))
    nodes.append(helper.make_node("Tanh", [f"h{LAYERS}"], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path


CHILD = """
import resource, sys, time, json
import olive_fp16_pass as fp16
start = time.perf_counter()
result = fp16.convert_float16(sys.argv[1])
result.save(sys.argv[2])
print("RESULT " + json.dumps({"seconds": time.perf_counter() - start,
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def convert_in_child(src: Path, dst: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(dst)], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


@pytest.mark.slow
def test_over_2gb_with_external_data(tmp_path):
    src = write_big_model(tmp_path / "src")
    size_mib = (src.stat().st_size + (src.parent / "big.onnx.data").stat().st_size) / 2**20
    figures = convert_in_child(src, tmp_path / "dst" / "big_fp16.onnx")
    out_dir = tmp_path / "dst"
    assert (out_dir / "big_fp16.onnx.data").is_file()  # external data kept
    converted = onnx.load(out_dir / "big_fp16.onnx", load_external_data=False)
    assert all(
        t.data_type == TensorProto.FLOAT16 and t.data_location == TensorProto.EXTERNAL
        for t in converted.graph.initializer
    )
    onnx.checker.check_model(str(out_dir / "big_fp16.onnx"))
    # Peak memory near the model's size, not several times it.
    assert figures["peak_rss_mib"] < 1.6 * size_mib, (figures, size_mib)
    seconds, peak = figures["seconds"], figures["peak_rss_mib"]
    print(f"\nmodel {size_mib:.0f} MiB: converted in {seconds:.1f} s, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":  # record the figure
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = write_big_model(Path(tmp) / "src")
        size_mib = (src.stat().st_size + (src.parent / "big.onnx.data").stat().st_size) / 2**20
        figures = convert_in_child(src, Path(tmp) / "dst" / "big_fp16.onnx")
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "model_mib": round(size_mib),
        **figures,
        "peak_over_model": figures["peak_rss_mib"] / size_mib,
        "command": "python tests/test_big_model.py",
        "machine": "2 CPU cores, 24 GiB (no GPU)",
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = Path(__file__).resolve().parent.parent / "bench" / "results" / f"{record['date']}-big_model.json"
    out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
