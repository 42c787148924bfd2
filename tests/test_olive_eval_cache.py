"""Olive 0.13's evaluation cache must not hand back the figures of an evaluator that has since changed.

Reproduced with our workflow: run the CPU denoiser workflow, change the evaluator (the noise level its images
get), rerun with the same cache_dir. Without the compat workaround (B4_evaluation_cache_key) Olive reuses the
cached evaluation and the second report shows the first run's figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("olive")

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1"}


def _workflow(tmp_path: Path, sigma: float, out: str) -> Path:
    config = json.loads((REPO / "workflows/denoise_fp16_cpu.json").read_text())
    config["passes"] = {"precision": {"type": "OnnxFloat16"}}
    metric = config["evaluators"]["denoise_quality"]["metrics"][0]
    metric["user_config"]["evaluate_func_kwargs"].update(image_size=64, repeat=2, sigma=sigma)
    config.update(output_dir=str(tmp_path / out), cache_dir=str(tmp_path / "cache"))  # one cache for both runs
    path = tmp_path / f"{out}.json"
    path.write_text(json.dumps(config))
    return path


def _input_psnr_vs_clean(tmp_path: Path, sigma: float, out: str) -> float:
    proc = subprocess.run(
        [sys.executable, "-m", "olive", "run", "--config", str(_workflow(tmp_path, sigma, out))],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / out / "input_model_metrics.json").read_text())
    return metrics["denoise-psnr_vs_clean"]["value"]


def test_changed_evaluator_is_not_answered_from_the_cache(tmp_path):
    light = _input_psnr_vs_clean(tmp_path, 10 / 255, "light")
    heavy = _input_psnr_vs_clean(tmp_path, 50 / 255, "heavy")
    # Much more noise, same model: a much lower PSNR against the clean photo. Equal figures = stale cache.
    assert heavy < light - 1.0, (light, heavy)


def test_probe_sees_the_bug_and_the_workaround_cures_it():
    code = (
        "import olive.workflows.run.config\n"
        "from olive_fp16_pass.olive import compat\n"
        "print(compat.B4_EVALUATION_CACHE_KEY in compat.applied(), compat.evaluation_cache_ignores_evaluator())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied, still_present = proc.stdout.split()[-2:]
    assert still_present == "False"  # fixed here, by the hook's workaround or by Olive itself
    no_hook = {**ENV, "OLIVE_FP16_NO_AUTOREGISTER": "1"}
    bare = subprocess.run(
        [sys.executable, "-c", code.replace("print(compat.B4", "print(False and compat.B4")],
        capture_output=True,
        text=True,
        env=no_hook,
        timeout=300,
    )
    assert bare.returncode == 0, bare.stderr[-2000:]
    if applied == "True":  # the workaround was needed: without the hook the probe must find the bug
        assert bare.stdout.split()[-1] == "True"
