"""Tests for ``olive_fp16_pass.olive.compat`` (workarounds for olive-ai 0.13 bugs).

Once a workaround is applied it cannot be undone in the same process, so every reproduction runs in a fresh
interpreter, twice: without the workaround (must show the bug; skipped when the installed Olive no longer has it) and
after ``compat.apply()`` (must behave correctly). Removing a workaround therefore fails the second half.
All objects are real Olive / ONNX Runtime objects; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from olive_fp16_pass.olive import compat

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT_S = 240
EVAL_VALUE = 0.625  # what the custom metric's evaluate_func returns

B1 = compat.B1_CUSTOM_METRIC_SERIALIZATION
B2 = compat.B2_METRIC_USER_CONFIG
B3 = compat.B3_FOOTPRINT_MODEL_CONFIG_ALIAS

# Shared prelude of every subprocess: argv[1] = JSON list of workarounds to apply ("null" = all, "[]" = none),
# argv[2] = work dir. It prints the olive version, the probe result before patching and what was applied.
PRELUDE = """
import json, sys
from pathlib import Path

from olive_fp16_pass.olive import compat

WANTED = json.loads(sys.argv[1])
WORK = Path(sys.argv[2])
BEFORE = compat.detect()
assert compat.applied() == [], "importing compat must not patch anything"
APPLIED = compat.apply(WANTED) if WANTED != [] else []
OUT = {"olive": compat.olive_version(), "before": BEFORE, "applied": APPLIED}

def emit(**kw):
    OUT.update(kw)
    print("RESULT " + json.dumps(OUT, default=str))

def custom_metric(name="m"):
    return {
        "name": name,
        "type": "custom",
        "sub_types": [{"name": "s", "priority": 1, "higher_is_better": True}],
        "user_config": {"user_script": str(WORK / "user_eval.py"), "evaluate_func": "evaluate"},
    }

def run_config_dict(passes=None, evaluate_input_model=True):
    cfg = {
        "input_model": {"type": "ONNXModel", "model_path": str(WORK / "add_relu.onnx")},
        "systems": {"local": {"type": "LocalSystem"}},
        "evaluators": {"ev": {"metrics": [custom_metric()]}},
        "engine": {
            "evaluator": "ev",
            "evaluate_input_model": evaluate_input_model,
            "cache_dir": str(WORK / "cache"),
            "output_dir": str(WORK / "out"),
            "log_severity_level": 3,
        },
    }
    if passes:
        cfg["passes"] = passes
    return cfg
"""


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """A tiny Add+ReLU ONNX model (ir_version 10, opset 17) and a user script with a fixed-value evaluate_func."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], [1.0, -2.0, 3.0, -4.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["t"]), helper.make_node("Relu", ["t"], ["y"])],
        "add_relu",
        [x],
        [y],
        [bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "add_relu.onnx")
    (tmp_path / "user_eval.py").write_text(
        f"def evaluate(model, device, execution_providers):\n    return {EVAL_VALUE}\n", encoding="utf-8"
    )
    return tmp_path


def run_snippet(code: str, work: Path, workarounds: list[str] | None) -> dict[str, Any]:
    """Run PRELUDE + ``code`` in a fresh interpreter and return its ``RESULT`` JSON; fail on a crash."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # Olive 0.13 sends a telemetry heartbeat (and waits ~10 s on exit without network) unless it thinks it is in CI.
    env.update(CI="1", OLIVE_DISABLE_TELEMETRY="1", OLIVE_TELEMETRY_CACHE_DIR=str(work / "telemetry"))
    # The installed import hook applies every workaround as soon as Olive loads; these tests choose their own.
    env["OLIVE_FP16_NO_AUTOREGISTER"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), json.dumps(workarounds), str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"subprocess failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


def skip_unless_reproduced(result: dict[str, Any], name: str, reproduced: bool) -> None:
    """Skip the 'without workaround' half when the installed Olive does not have the bug any more."""
    if not reproduced:
        assert not result["before"][name], f"probe says {name} is present but the reproduction did not show it"
        pytest.skip(
            f"olive {result['olive']} does not have {name} (affected range {compat.AFFECTED_OLIVE_VERSIONS}); "
            "the workaround can probably be removed"
        )


def assert_applied_if_needed(result: dict[str, Any], name: str) -> None:
    if result["before"][name] and compat.is_affected_version(result["olive"]):
        assert name in result["applied"], result


# ---------------------------------------------------------------------------------------------------------------------
# B1: RunConfig.to_json() crashes on any custom metric
# ---------------------------------------------------------------------------------------------------------------------

B1_CODE = """
from olive.workflows.run.config import RunConfig

rc = RunConfig.model_validate(run_config_dict())
try:
    dumped = rc.to_json()
except Exception as exc:
    emit(error=f"{type(exc).__name__}: {exc}")
else:
    metric = dumped["evaluators"]["ev"]["metrics"][0]
    again = RunConfig.model_validate(dumped).evaluators["ev"].metrics[0]
    emit(
        error=None,
        backend=metric["backend"],
        sub_metric_config=metric["sub_types"][0]["metric_config"],
        roundtrip_evaluate_func=again.user_config.evaluate_func,
        roundtrip_user_script=str(again.user_config.user_script),
    )
"""


def test_b1_custom_metric_to_json_crashes_without_compat(work_dir: Path) -> None:
    result = run_snippet(B1_CODE, work_dir, [])
    skip_unless_reproduced(result, B1, bool(result["error"]))
    assert "PydanticSerializationError" in result["error"]
    assert "'NoneType' object has no attribute 'model_dump'" in result["error"]


def test_b1_custom_metric_to_json_works_with_compat(work_dir: Path) -> None:
    result = run_snippet(B1_CODE, work_dir, None)
    assert_applied_if_needed(result, B1)
    assert result["error"] is None
    assert result["backend"] is None
    assert result["sub_metric_config"] is None
    assert result["roundtrip_evaluate_func"] == "evaluate"
    assert result["roundtrip_user_script"] == str(work_dir / "user_eval.py")


# ---------------------------------------------------------------------------------------------------------------------
# B2: Metric.user_config (evaluate_func, user_script, ...) is dropped whenever the config is dumped
# ---------------------------------------------------------------------------------------------------------------------

B2_CODE = """
from olive.workflows.run.config import RunConfig

pass_with_own_evaluator = {"type": "OnnxPeepholeOptimizer", "evaluator": {"metrics": [custom_metric("pm")]}}
rc = RunConfig.model_validate(run_config_dict(passes={"peephole": [pass_with_own_evaluator]}))
dumped = rc.to_json()
user_config = dumped["evaluators"]["ev"]["metrics"][0]["user_config"]
again = RunConfig.model_validate(dumped)
emit(
    dumped_user_config=user_config,
    roundtrip_evaluate_func=again.evaluators["ev"].metrics[0].user_config.evaluate_func,
    # RunConfig.validate_pass_search re-validates pass configs from model_dump(): the loss happens while parsing
    pass_evaluator_evaluate_func=rc.passes["peephole"][0].evaluator.metrics[0].user_config.evaluate_func,
    # RunEngineConfig.create_engine hands Engine a model_dump() of the engine config
    engine_evaluator_user_config=rc.engine.model_dump()["evaluator"]["metrics"][0]["user_config"],
)
"""


def test_b2_user_config_lost_without_compat(work_dir: Path) -> None:
    # B1 must be worked around first, otherwise to_json() crashes before it can lose anything
    result = run_snippet(B2_CODE, work_dir, [B1])
    lost = result["dumped_user_config"].get("evaluate_func") is None
    skip_unless_reproduced(result, B2, lost)
    assert result["dumped_user_config"] == {}
    assert result["roundtrip_evaluate_func"] is None
    assert result["pass_evaluator_evaluate_func"] is None
    assert result["engine_evaluator_user_config"] == {}


def test_b2_user_config_kept_with_compat(work_dir: Path) -> None:
    result = run_snippet(B2_CODE, work_dir, None)
    assert_applied_if_needed(result, B2)
    user_script = str(work_dir / "user_eval.py")
    assert result["dumped_user_config"]["evaluate_func"] == "evaluate"
    assert result["dumped_user_config"]["user_script"] == user_script
    assert result["dumped_user_config"]["io_bind"] is False
    assert "inference_settings" in result["dumped_user_config"]
    assert result["roundtrip_evaluate_func"] == "evaluate"
    assert result["pass_evaluator_evaluate_func"] == "evaluate"
    assert result["engine_evaluator_user_config"]["evaluate_func"] == "evaluate"
    assert result["engine_evaluator_user_config"]["user_script"] == user_script


B2_WORKFLOW_CODE = """
from olive.workflows import run as olive_run

cfg = run_config_dict(passes={"peephole": [{"type": "OnnxPeepholeOptimizer"}]})
try:
    output = olive_run(cfg)
except Exception as exc:
    emit(error=f"{type(exc).__name__}: {exc}")
else:
    emit(
        error=None,
        input_metrics=output.get_input_model_metrics(),
        output_metrics=[model.metrics_value for model in output.get_output_models()],
    )
"""


def test_b2_workflow_custom_metric_fails_without_compat(work_dir: Path) -> None:
    result = run_snippet(B2_WORKFLOW_CODE, work_dir, [B1])
    skip_unless_reproduced(result, B2, bool(result["error"]))
    assert "evaluate_func or metric_func is not specified" in result["error"]


def test_b2_workflow_custom_metric_value_in_result_with_compat(work_dir: Path) -> None:
    result = run_snippet(B2_WORKFLOW_CODE, work_dir, None)
    assert_applied_if_needed(result, B2)
    assert result["error"] is None
    assert result["input_metrics"]["m-s"]["value"] == EVAL_VALUE
    assert result["output_metrics"], result
    assert all(metrics["m-s"]["value"] == EVAL_VALUE for metrics in result["output_metrics"])


# ---------------------------------------------------------------------------------------------------------------------
# B3: FootprintNode.update(model_config=...) raises (cached model re-recorded during a joint search)
# ---------------------------------------------------------------------------------------------------------------------

B3_CODE = """
from olive.engine.footprint import Footprint, FootprintNode
from olive.model import ModelConfig

model_config = ModelConfig.model_validate(
    {"type": "ONNXModel", "config": {"model_path": str(WORK / "add_relu.onnx")}}
).to_json()
node = FootprintNode(model_id="m1", parent_model_id="m0")
try:
    node.update(model_config=model_config, from_pass="OnnxPeepholeOptimizer")
except ValueError as exc:
    emit(error=f"{type(exc).__name__}: {exc}")
else:
    # what Engine._run_pass does for a model it finds in the cache: record the same model id again
    footprint = Footprint()
    footprint.record(model_id="m1", model_config={"is_pruned": True}, parent_model_id="m0")
    footprint.record(model_id="m1", model_config=model_config, parent_model_id="m0", from_pass="OnnxPeepholeOptimizer")
    emit(
        error=None,
        node_model_config=node.model_config_data,
        node_from_pass=node.from_pass,
        footprint_model_path=footprint.get_model_path("m1"),
        footprint_model_type=footprint.get_model_type("m1"),
    )
"""


def test_b3_footprint_update_model_config_fails_without_compat(work_dir: Path) -> None:
    result = run_snippet(B3_CODE, work_dir, [])
    skip_unless_reproduced(result, B3, bool(result["error"]))
    assert 'object has no field "model_config"' in result["error"]


def test_b3_footprint_update_model_config_works_with_compat(work_dir: Path) -> None:
    result = run_snippet(B3_CODE, work_dir, None)
    assert_applied_if_needed(result, B3)
    assert result["error"] is None
    assert result["node_model_config"]["type"].lower() == "onnxmodel"
    assert result["node_model_config"]["config"]["model_path"] == str(work_dir / "add_relu.onnx")
    assert result["node_from_pass"] == "OnnxPeepholeOptimizer"
    assert result["footprint_model_path"] == str(work_dir / "add_relu.onnx")
    assert result["footprint_model_type"].lower() == "onnxmodel"


# ---------------------------------------------------------------------------------------------------------------------
# API behaviour
# ---------------------------------------------------------------------------------------------------------------------

API_CODE = """
first = list(APPLIED)
second = compat.apply()
emit(first=first, second=second, applied=compat.applied(), after=compat.detect())
"""


def test_apply_is_idempotent_and_fixes_every_probe(work_dir: Path) -> None:
    result = run_snippet(API_CODE, work_dir, None)  # PRELUDE also asserts that importing compat patched nothing
    assert result["first"] == result["second"] == result["applied"]
    assert len(set(result["applied"])) == len(result["applied"])
    assert set(result["applied"]) <= set(compat.WORKAROUNDS)
    # decided by the live probes, whatever the version: every bug found is fixed
    assert result["after"] == dict.fromkeys(compat.WORKAROUNDS, False)
    assert set(result["applied"]) == {name for name, present in result["before"].items() if present}


def test_guard_follows_the_probes_not_the_version_string(work_dir: Path) -> None:
    """Olive's main reports 0.11.0.dev0 and still has B1/B2: a version guard keyed on 0.13 would skip them."""
    code = """
import olive
from olive_fp16_pass.olive import compat
olive.__version__ = "0.11.0.dev0"  # what an install of Olive's main branch reports
before = compat.detect()
applied = compat.apply()
print("RESULT " + json.dumps({"before": before, "applied": applied, "after": compat.detect(),
                              "affected": compat.is_affected_version()}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stdout + proc.stderr
    result = json.loads(line[7:])
    assert result["affected"] is False
    present = {name for name, found in result["before"].items() if found}
    if not present:
        pytest.skip("the installed Olive has none of the bugs")
    assert set(result["applied"]) == present
    assert result["after"] == dict.fromkeys(compat.WORKAROUNDS, False)


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.13.0", True), ("0.13.2rc1", True), ("0.13.0.dev20250101", True), ("0.12.9", False), ("0.14.0", False)],
)
def test_version_guard(version: str, affected: bool) -> None:
    assert compat.is_affected_version(version) is affected


def test_unknown_workaround_name_is_rejected_before_patching() -> None:
    with pytest.raises(ValueError, match="unknown olive compat workarounds"):
        compat.apply(["B9_does_not_exist"])
