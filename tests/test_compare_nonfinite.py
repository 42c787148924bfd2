"""Comparison figures when the candidate overflows: the 99.9th percentile of |error| is inf, never NaN.

numpy's linear quantile reads inf - inf = NaN when both neighbours of the quantile are inf, i.e. as soon as
more than 0.1% of an output overflowed; NaN compares false with every bound and prints as a figure nobody can
read. NaN and Inf stay separate counts beside it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from olive_fp16_pass.compare import abs_error_quantile, output_error
from tests.helpers import init, make_model, vi

REPO = Path(__file__).resolve().parent.parent


def test_quantile_of_errors_with_many_infinities_is_inf():
    diff = np.array([0.0] * 1000 + [np.inf] * 3)  # numpy: inf - inf between the two neighbours
    with np.errstate(invalid="ignore"):  # the behaviour worked around (fails if numpy changes it)
        assert math.isnan(float(np.quantile(diff, 0.999)))
    assert abs_error_quantile(diff, 0.999) == math.inf


def test_quantile_is_numpys_where_it_is_defined():
    rng = np.random.default_rng(0)
    finite = rng.uniform(0, 1, 5000)
    assert abs_error_quantile(finite, 0.999) == float(np.quantile(finite, 0.999))
    # one inf in 10,001 values lies above the 99.9th percentile: the figure stays finite (numpy agrees)
    few = np.array([0.5] * 10000 + [np.inf])
    assert abs_error_quantile(few, 0.999) == 0.5 == float(np.quantile(few, 0.999))
    # the upper neighbour inf, interpolated part > 0: inf
    assert abs_error_quantile(np.array([0.0, 1.0, np.inf]), 0.75) == math.inf
    assert abs_error_quantile(np.zeros(0), 0.999) == 0.0


def test_output_error_p999_is_inf_and_nonfinite_counted():
    ref = np.linspace(0, 1, 1000, dtype=np.float32)
    cand = ref.copy()
    cand[-10:] = np.inf
    cand[:5] = np.nan
    error = output_error([ref], [cand])
    assert error.p999_abs == math.inf and error.max_abs == math.inf
    assert error.nonfinite == 15
    assert error.to_dict()["p999_abs"] == "inf"


def _overflowing_pair(root: Path) -> tuple[Path, Path]:
    """y = x*300*300 and z = y - y: finite in float32; in float16 y overflows where x > ~0.73 (about a quarter
    of the values) and z is NaN there."""

    def model(dtype: int) -> onnx.ModelProto:
        k = np.array(300, np.float16 if dtype == TensorProto.FLOAT16 else np.float32)
        nodes = [helper.make_node("Cast", ["x"], ["x16"], to=dtype)]
        nodes += [
            helper.make_node("Mul", ["x16", "k"], ["a"]),
            helper.make_node("Mul", ["a", "k"], ["b"]),
            helper.make_node("Sub", ["b", "b"], ["c"]),
            helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["c"], ["z"], to=TensorProto.FLOAT),
        ]
        return make_model(
            nodes, [vi("x", shape=[1, 4096])], [vi("y", shape=[1, 4096]), vi("z", shape=[1, 4096])], [init("k", k)]
        )

    reference, candidate = root / "fp32.onnx", root / "fp16.onnx"
    onnx.save(model(TensorProto.FLOAT), reference)
    onnx.save(model(TensorProto.FLOAT16), candidate)
    return reference, candidate


def test_compare_reports_inf_percentile_and_separate_nan_inf_counts(tmp_path):
    reference, candidate = _overflowing_pair(tmp_path)
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.random.default_rng(0).uniform(0, 1, (1, 4096)).astype(np.float32))
    report = tmp_path / "compare.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "olive_fp16_pass.cli",
            "compare",
            reference,
            candidate,
            "--data",
            feeds,
            "--report",
            report,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # NaN/Inf where float32 is finite
    outputs = json.loads(report.read_text())["outputs"]
    y, z = outputs["y"], outputs["z"]
    assert y["p999_abs"] == "inf" and z["p999_abs"] == "inf", (y, z)
    assert y["candidate"]["inf"] > 4 and y["candidate"]["nan"] == 0  # more than 0.1% overflowed
    assert z["candidate"]["nan"] == y["candidate"]["inf"] and z["candidate"]["inf"] == 0
    assert y["reference"] == z["reference"] == {"nan": 0, "inf": 0}
    assert "nan" not in {y["max_abs"], y["p999_abs"], z["max_abs"], z["p999_abs"]}
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["y"], ["z"])]
    assert len(rows) == 2 and all(row[3] == "inf" and "nan" not in row for row in rows), proc.stdout
