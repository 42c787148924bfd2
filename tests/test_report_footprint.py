"""A malformed footprint.json (issue 14.10): `olive-fp16 report` exits 2 with one line naming the file."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = {
    "not_json": "{not json",
    "a_list": "[1, 2]",
    "records_not_objects": '{"m1": 3}',
    "metrics_of_wrong_shape": '{"m1": {"parent_model_id": null, "metrics": {"value": {"x-y": 5}}}}',
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_footprint_is_a_clear_error(tmp_path, name):
    (tmp_path / "footprint.json").write_text(CASES[name])
    proc = subprocess.run(
        [sys.executable, "-m", "olive_fp16_pass.cli", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "footprint.json" in proc.stderr
    assert not (tmp_path / "report.json").exists()
