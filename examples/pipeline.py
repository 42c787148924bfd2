"""A pipeline step (CI / MLOps): optimize with an Olive workflow, gate on the exit codes, read the chosen model.

    python examples/pipeline.py --config workflows/denoise_fp16_cpu.json --output-dir build/fp16

1. `olive run` on a copy of the workflow whose output_dir (and cache_dir) point at --output-dir; a non-zero exit
   stops the pipeline (3: the workflow's execution provider cannot run on this machine, see `olive-fp16 doctor`).
2. `olive-fp16 report OUTPUT_DIR`, which exits 1 when no candidate met the goals (Olive itself exits 0 then).
3. report.json is read through its versioned schema (olive_fp16_pass/schemas/run_report.schema.json): the script
   refuses a major schema_version it does not know, and writes the chosen model's path and figures to
   OUTPUT_DIR/pipeline_result.json (and to $GITHUB_STEP_SUMMARY when it runs in GitHub Actions).

Exit codes: 0 a model met every goal; 1 no candidate did; 2 bad input or an unknown report schema; other codes
are `olive run`'s own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SUPPORTED_SCHEMA_MAJOR = 1


def run(cmd: list[str]) -> int:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def workflow_copy(config: Path, output_dir: Path, cache_dir: Path | None) -> Path:
    """The workflow with its outputs redirected, so that concurrent pipeline runs never share a folder."""
    data = json.loads(config.read_text())
    data["output_dir"] = str(output_dir)
    data["cache_dir"] = str(cache_dir or output_dir / "cache")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "workflow.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def read_report(output_dir: Path) -> dict:
    report = json.loads((output_dir / "report.json").read_text())
    version = str(report.get("schema_version", ""))
    major = version.split(".")[0]
    if not major.isdigit() or int(major) != SUPPORTED_SCHEMA_MAJOR:
        raise SystemExit(f"pipeline: report.json schema_version {version!r} is not {SUPPORTED_SCHEMA_MAJOR}.x")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="the Olive workflow (JSON)")
    parser.add_argument("--output-dir", required=True, type=Path, help="where the run and its report go")
    parser.add_argument("--cache-dir", type=Path, help="Olive's cache (default: OUTPUT_DIR/cache)")
    args = parser.parse_args(argv)
    if not args.config.is_file():
        print(f"pipeline: --config {args.config}: no such file", file=sys.stderr)
        return 2
    workflow = workflow_copy(args.config, args.output_dir.resolve(), args.cache_dir)
    code = run([sys.executable, "-m", "olive", "run", "--config", str(workflow)])
    if code != 0:
        print(f"pipeline: olive run failed (exit {code}); nothing to publish", file=sys.stderr)
        return code
    code = run([sys.executable, "-m", "olive_fp16_pass.cli", "report", str(args.output_dir)])
    if code not in (0, 1):
        return code
    report = read_report(args.output_dir)
    chosen = report["chosen"]
    result = {
        "schema_version": report["schema_version"],
        "status": report["status"],
        "model": chosen["model_path"] if chosen else None,
        "published": str(args.output_dir / "model.onnx") if chosen else None,
        "passes": chosen["passes"] if chosen else None,
        "metrics": chosen["metrics"] if chosen else None,
        "input_model_metrics": report.get("input_model_metrics"),
    }
    (args.output_dir / "pipeline_result.json").write_text(json.dumps(result, indent=2))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and (args.output_dir / "report.md").is_file():
        with open(summary, "a") as f:
            f.write((args.output_dir / "report.md").read_text())
    if not chosen:
        print("pipeline: no candidate met the goals: failing the job", file=sys.stderr)
        return 1
    figures = ", ".join(f"{k}={v}" for k, v in chosen["metrics"].items())
    print(f"pipeline: chosen {' -> '.join(chosen['passes'])}: {figures}; model at {result['published']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
