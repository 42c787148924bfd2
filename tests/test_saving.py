"""Saving, as an attacker's and a careless user's inputs try it: one clear error each, nothing written
outside the output's folder, the input never overwritten by accident, no leftovers after a kill -9, and a
model never left beside a data file from another save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import ModelFileError, OptionError
from olive_fp16_pass.model_io import TMP_MARK
from tests.helpers import init, make_model, run, vi

ROOT = Path(__file__).resolve().parents[1]


def _model(scale: float = 1.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", TensorProto.FLOAT, [2, 64])],
        [vi("y", TensorProto.FLOAT, [2, 64])],
        [init("W", (rng.standard_normal((64, 64)) * scale).astype(np.float32))],
    )


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_output_parent_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OptionError, match=r"output path .*afile/model.onnx: .*afile is a file, not a folder"):
        fp16.convert_float16(_model()).save(tmp_path / "afile" / "model.onnx")
    with pytest.raises(OptionError, match="afile is a file, not a folder"):
        fp16.convert_float16(_model()).save(tmp_path / "afile" / "deeper" / "model.onnx")
    assert _files(tmp_path) == ["afile"]


@pytest.mark.parametrize("name", ["sub/w.data", "../../x.data", "/tmp/olive_fp16_abs.data", "..", "a\\b.data"])
def test_external_data_name_must_be_a_plain_file_name(tmp_path, name):
    result = fp16.convert_float16(_model())
    with pytest.raises(OptionError, match="external_data_name: .* must be a plain file name"):
        result.save(tmp_path / "out" / "model.onnx", external_data=True, external_data_name=name)
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []
    assert not Path("/tmp/olive_fp16_abs.data").exists()


def test_output_equal_to_input_is_refused_unless_in_place(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(_model(), source, save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    before = (source.read_bytes(), (tmp_path / "model.onnx.data").read_bytes())
    result = fp16.convert_float16(source)
    with pytest.raises(OptionError, match="is the input's own file .*ask for in-place explicitly"):
        result.save(source)
    # Another model name, but the data file would replace the input's: refused too.
    with pytest.raises(OptionError, match=r"model.onnx.data: is the input's own file"):
        result.save(tmp_path / "other.onnx", external_data_name="model.onnx.data")
    # Through a different spelling of the same path.
    with pytest.raises(OptionError, match="is the input's own file"):
        result.save(tmp_path / "." / "model.onnx")
    assert (source.read_bytes(), (tmp_path / "model.onnx.data").read_bytes()) == before
    result.save(source, in_place=True)
    converted = onnx.load(source)
    assert converted.graph.initializer[0].data_type == TensorProto.FLOAT16
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(run(converted, {"x": x})[0].astype(np.float32), run(_model(), {"x": x})[0], rtol=2e-2)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "olive_fp16_pass.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def test_cli_in_place_flag(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(_model(), source)
    before = source.read_bytes()
    done = _cli("convert", str(source), "-o", str(source))
    assert done.returncode == 2 and "is the input's own file" in done.stderr and "--in-place" in done.stderr
    assert "Traceback" not in done.stderr
    assert source.read_bytes() == before
    done = _cli("convert", str(source), "-o", str(source), "--in-place")
    assert done.returncode == 0, done.stderr
    assert onnx.load(source).graph.initializer[0].data_type == TensorProto.FLOAT16


@pytest.mark.parametrize("target", ["folder", "file_parent", "unwritable"])
def test_cli_unwritable_report_is_refused_before_any_output(tmp_path, target):
    source = tmp_path / "model.onnx"
    onnx.save(_model(), source)
    if target == "folder":
        report = tmp_path / "reports"
        report.mkdir()
        expected = "is a directory"
    elif target == "file_parent":
        (tmp_path / "afile").write_text("x")
        report = tmp_path / "afile" / "r.json"
        expected = "is a file, not a folder"
    else:
        report = Path("/proc/olive_fp16_report.json")  # not writable even as root
        expected = "--report /proc/olive_fp16_report.json"
    done = _cli("convert", str(source), "-o", str(tmp_path / "out.onnx"), "--report", str(report))
    assert done.returncode == 2, done.stderr
    assert "olive-fp16: error: --report" in done.stderr and expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.onnx").exists()


KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import onnx
    import olive_fp16_pass as fp16
    from olive_fp16_pass import model_io

    source, target, when = sys.argv[1], sys.argv[2], sys.argv[3]
    result = fp16.convert_float16(source)
    real_replace = model_io._rename
    calls = []

    def replace(a, b):
        if when == "before_rename" or (when == "between_renames" and calls):
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9, at a chosen point of the save
        calls.append(b)
        real_replace(a, b)

    model_io._rename = replace
    result.save(target, external_data=True)
    """
)


def _killed_save(tmp_path: Path, source: Path, target: Path, when: str) -> None:
    script = tmp_path / "killed_save.py"
    script.write_text(KILLED_SAVE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), str(source), str(target), when], env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL


def test_kill_during_save_leaves_a_folder_the_next_save_removes(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(_model(), source)
    out = tmp_path / "out"
    out.mkdir()
    _killed_save(tmp_path, source, out / "model.onnx", "before_rename")
    leftovers = [p for p in out.iterdir() if TMP_MARK in p.name]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".model.onnx" + TMP_MARK)
    assert sorted(p.name for p in leftovers[0].iterdir()) == ["model.onnx", "model.onnx.data"]
    fp16.convert_float16(source).save(out / "model.onnx")
    assert _files(out) == ["model.onnx"]


def test_save_keeps_a_live_writers_temporary_folder(tmp_path):
    """Another process saving to the same place right now (pid alive) keeps its folder."""
    out = tmp_path / "out"
    out.mkdir()
    busy = out / f".model.onnx{TMP_MARK}1.abcd"  # pid 1 is always alive
    busy.mkdir()
    fp16.convert_float16(_model()).save(out / "model.onnx")
    assert busy.exists()


def test_kill_between_the_two_renames_is_refused_on_load(tmp_path):
    """Old model beside new data: ONNX Runtime would load it and compute garbage; we refuse it."""
    source = tmp_path / "model.onnx"
    onnx.save(_model(), source)
    retrained = tmp_path / "retrained.onnx"
    onnx.save(_model(scale=0.5), retrained)  # the same layout, other values: sizes cannot tell them apart
    out = tmp_path / "out"
    out.mkdir()
    fp16.convert_float16(source).save(out / "model.onnx", external_data=True)
    old_model = (out / "model.onnx").read_bytes()
    _killed_save(tmp_path, retrained, out / "model.onnx", "between_renames")
    assert (out / "model.onnx").read_bytes() == old_model  # the model was not switched yet, the data was
    with pytest.raises(ModelFileError, match="written by a different save than the model"):
        fp16.convert_float16(out / "model.onnx")
    # The next complete save makes a consistent pair again (and removes the killed save's folder).
    fp16.convert_float16(source).save(out / "model.onnx", external_data=True)
    fp16.convert_float16(out / "model.onnx")
    assert _files(out) == ["model.onnx", "model.onnx.data"]


def test_sealed_pair_loads_in_onnx_and_onnxruntime(tmp_path):
    out = tmp_path / "model.onnx"
    fp16.convert_float16(_model()).save(out, external_data=True)
    loaded = onnx.load(out)
    onnx.checker.check_model(str(out), full_check=True)
    assert any(e.key.startswith("olive_fp16.data_seal:") for e in loaded.metadata_props)
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(run(loaded, {"x": x})[0].astype(np.float32), run(_model(), {"x": x})[0], rtol=2e-2)
    assert json.dumps(fp16.convert_float16(out).report.warnings) == "[]"
