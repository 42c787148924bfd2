"""The pipeline use: examples/pipeline.py runs a real workflow, gates on exit codes, reads report.json through its
versioned JSON Schema (olive_fp16_pass/schemas/run_report.schema.json)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.schema_check import schema_errors

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "olive_fp16_pass/schemas/run_report.schema.json"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1"}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    config = json.loads((REPO / "workflows/denoise_fp16_cpu.json").read_text())
    config["evaluators"]["denoise_quality"]["metrics"][0]["user_config"]["evaluate_func_kwargs"]["repeat"] = 5
    workflow = tmp / "workflow_src.json"
    workflow.write_text(json.dumps(config))
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, "examples/pipeline.py", "--config", str(workflow), "--output-dir", str(out)],
        cwd=REPO,
        env={**ENV, "GITHUB_STEP_SUMMARY": str(tmp / "summary.md")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc, out, tmp


def test_pipeline_gates_and_reads_the_chosen_model(pipeline_run):
    proc, out, tmp = pipeline_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "pipeline_result.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert result["status"] == "ok" and Path(result["published"]).is_file()
    assert result["metrics"] == report["chosen"]["metrics"] and "latency_ms" in result["metrics"]
    assert "pipeline: chosen" in proc.stdout
    assert "# olive-fp16 run report" in (tmp / "summary.md").read_text()


def test_report_json_matches_its_versioned_schema(pipeline_run):
    _, out, _ = pipeline_run
    schema = json.loads(SCHEMA.read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == "1.0"
    assert schema_errors(report, schema) == []
    broken = copy.deepcopy(report)
    del broken["schema_version"]
    broken["chosen"]["goals_met"] = "yes"
    errors = schema_errors(broken, schema)
    assert any("schema_version" in e for e in errors) and errors  # the check can fail


def test_pipeline_refuses_an_unknown_major_schema_version(tmp_path):
    from examples import pipeline

    (tmp_path / "report.json").write_text(json.dumps({"schema_version": "2.0", "chosen": None}))
    with pytest.raises(SystemExit, match="schema_version '2.0' is not 1.x"):
        pipeline.read_report(tmp_path)
