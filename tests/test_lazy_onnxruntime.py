"""Converting needs no onnxruntime unless a session is really created (issue 14.11).

Importing onnxruntime and creating a session write a device id and a database under ~/.cache/Microsoft; a
conversion that needs no session must leave the user's home alone. Checked in a fresh interpreter, since
this test process has long imported onnxruntime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, os, sys
import numpy as np
from onnx import helper, numpy_helper
import onnx_ir as ir
import olive_fp16_pass as fp16
from olive_fp16_pass import float16

def model(opset):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", 1, [2, 3])], [helper.make_tensor_value_info("y", 1, [2, 3])],
        [numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)

seen = {}
# the public call with its load check off (the check is what opens a session by default, issue 9.3)
result = float16.convert_float16(model(17), load_check=False)
result.save(sys.argv[1])
seen["after_convert_and_save"] = "onnxruntime" in sys.modules
seen["probe_opset17"] = float16._runtime_problem(ir.serde.deserialize_model(model(17)))
seen["after_probe_opset17"] = "onnxruntime" in sys.modules
seen["home_before_a_session"] = sorted(os.listdir(os.environ["HOME"]))
seen["probe_opset30"] = float16._runtime_problem(ir.serde.deserialize_model(model(30)))
seen["after_probe_opset30"] = "onnxruntime" in sys.modules
print(json.dumps(seen))
"""


def test_convert_without_a_session_imports_no_onnxruntime(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "out.onnx")], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["after_convert_and_save"] is False
    # The IR/opset probe: versions every supported onnxruntime loads need no session, hence no import...
    assert seen["probe_opset17"] is None and seen["after_probe_opset17"] is False
    assert seen["home_before_a_session"] == []  # nothing written under ~/.cache
    # ...while a version beyond them is really probed (and onnxruntime 1.32 cannot load opset 30).
    assert "cannot load IR version 10 / opset 30" in seen["probe_opset30"]
    assert seen["after_probe_opset30"] is True
