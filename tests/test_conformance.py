"""Conformance of our converter over the ONNX backend node tests (`bench/conformance.py` does the work).

Why these tests: the unit tests cover the model shapes we thought of; the ONNX node tests cover every operator
and most attribute combinations, with expected outputs computed by the ONNX reference. For every case with
float32 IO that onnxruntime runs correctly in FP32, our FP16 conversion must give a model that passes the ONNX
checker, loads and runs in onnxruntime, and stays accurate under FP16-storage emulation.

The default test runs a fixed, evenly spaced subset of the cases (about 15 s on 2 cores, most of it collecting
the cases); the full suite is `-m slow`. The harness itself is tested first, on sabotaged converters, so a
passing conformance test cannot come from a harness that accepts anything.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBSET_SIZE = 200  # ~27% of the ~730 float32-IO cases; chosen for time (~15 s), not by which cases it holds
MIN_ACCURATE_PCT = 98.0
MIN_SELECTED_FRACTION = 0.9  # fewer selected means ORT or the selection changed: look before trusting the rates
TIMEOUT_S = 60.0  # per case and step; a tiny node test that needs more is hung


def bench() -> ModuleType:
    """The harness, bench/conformance.py (imported on first use: collecting the cases is slow)."""
    from bench import conformance

    return conformance


def _failure_text(report: dict[str, Any]) -> str:
    rows = bench().failures(report["cases"], "ours")
    lines = [f"{row['case']}: {', '.join(row['failed'])}: {row['errors']}" for row in rows]
    return "\n".join(lines) or "(no failing case)"


def _assert_conformance(report: dict[str, Any], expected_cases: int) -> None:
    summary = report["summary"]
    selected = summary["cases_selected"]
    assert selected >= MIN_SELECTED_FRACTION * expected_cases, (
        f"only {selected} of {expected_cases} cases selected; skips: {summary['skip_reasons']}"
    )
    ours = summary["tools"]["ours"]
    failures = _failure_text(report)
    for check in ("valid", "loads", "runs"):
        assert ours["counts"][check] == selected, (
            f"{check}: {ours['counts'][check]}/{selected} cases; failing cases:\n{failures}"
        )
    assert ours["rates"]["accurate"] >= MIN_ACCURATE_PCT, (
        f"accurate {ours['rates']['accurate']:.1f}% < {MIN_ACCURATE_PCT}%; failing cases:\n{failures}"
    )


# ----------------------------------------------------------------------------------------------------------------
# The harness can fail: tolerance and sabotaged converters
# ----------------------------------------------------------------------------------------------------------------


def test_compare_tolerance_rejects_and_accepts() -> None:
    """1% of value + 1% of scale: a 0.5% error passes, a 5% error fails, NaN/inf must match exactly."""
    compare = bench().compare
    expected = np.array([1.0, -2.0, 4.0], dtype=np.float32)
    assert compare(expected * 1.005, expected, 1e-2, 1e-2, scaled=True)[0]
    assert not compare(expected * 1.05, expected, 1e-2, 1e-2, scaled=True)[0]
    assert not compare(expected[:2], expected, 1e-2, 1e-2, scaled=True)[0]
    with_nan = np.array([np.nan, 1.0], dtype=np.float32)
    assert compare(with_nan, with_nan, 1e-2, 1e-2, scaled=True)[0]
    assert not compare(np.array([0.0, 1.0], dtype=np.float32), with_nan, 1e-2, 1e-2, scaled=True)[0]
    assert not compare(np.array([np.inf, 1.0]), np.array([65504.0, 1.0], dtype=np.float32), 1e-2, 1e-2, True)[0]


def _case(name: str) -> Any:
    return next(c for c in bench().collect_cases() if c.name == name)


def test_harness_catches_wrong_and_invalid_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter whose output is 5% off must fail 'accurate'; one whose graph is not SSA must fail 'valid'."""
    module = bench()
    case = _case("test_relu")
    baseline = module.baseline_step(case)
    assert baseline["status"] == "selected", baseline

    def off_by_five_percent(tool: str, model: onnx.ModelProto, details: dict[str, Any]) -> onnx.ModelProto:
        graph = model.graph
        out = graph.output[0].name
        graph.node[-1].output[0] = "pre_scale"
        scale = helper.make_tensor("five_percent", onnx.TensorProto.FLOAT, [], [1.05])
        graph.initializer.append(scale)
        graph.node.append(helper.make_node("Mul", ["pre_scale", "five_percent"], [out]))
        return model

    monkeypatch.setattr(module, "_convert", off_by_five_percent)
    result = module.tool_step(case, "ours", baseline)
    assert result["valid"] and result["loads"] and result["runs"], result
    assert not result["strict"] and not result["accurate"], result

    def not_ssa(tool: str, model: onnx.ModelProto, details: dict[str, Any]) -> onnx.ModelProto:
        model.graph.node.append(helper.make_node("Identity", [model.graph.input[0].name], [model.graph.output[0].name]))
        return model

    monkeypatch.setattr(module, "_convert", not_ssa)
    result = module.tool_step(case, "ours", baseline)
    assert not result["valid"] and not result["loads"], result


# ----------------------------------------------------------------------------------------------------------------
# Conformance of our converter
# ----------------------------------------------------------------------------------------------------------------


def test_conformance_subset() -> None:
    """Ours on a fixed subset: 100% valid, loading and running, and >= 98% accurate under FP16 emulation."""
    report = bench().evaluate(SUBSET_SIZE, tools=("ours",), jobs=1, timeout=TIMEOUT_S)
    _assert_conformance(report, SUBSET_SIZE)


@pytest.mark.slow
def test_conformance_full_suite() -> None:
    """Ours on every float32-IO node test: the same targets as the subset."""
    module = bench()
    candidates = [c for c in module.collect_cases() if module.io_skip_reason(c) is None]
    report = module.evaluate(None, tools=("ours",), jobs=2, timeout=TIMEOUT_S)
    _assert_conformance(report, len(candidates))
