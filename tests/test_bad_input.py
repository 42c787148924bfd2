"""Bad input: one clear error naming the file or option, the input untouched, no partial output."""

from __future__ import annotations

import os
import stat

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import ModelFileError, OptionError
from tests.helpers import init, make_model, vi


def _model() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", TensorProto.FLOAT, [2, 3])],
        [vi("y", TensorProto.FLOAT, [2, 3])],
        [init("W", np.eye(3, dtype=np.float32))],
    )


def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelFileError, match=f"^{path}: no such file$"):
        fp16.convert_float16(path)


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory, expected an ONNX model file"):
        fp16.convert_float16(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.onnx: empty file"):
        fp16.convert_float16(path)


def test_not_onnx(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="junk.onnx: not an ONNX model"):
        fp16.convert_float16(path)
    text = tmp_path / "readme.onnx"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(ModelFileError, match="readme.onnx: not an ONNX model"):
        fp16.convert_float16(text)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_model(tmp_path, fraction):
    data = _model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match="cut.onnx: not (an ONNX model or a truncated one|a valid ONNX model)"):
        fp16.convert_float16(path)
    assert path.read_bytes() == before


def test_missing_external_data(tmp_path):
    model = _model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelFileError, match="m.onnx: external data file 'weights.bin' of initializer 'W' not found"):
        fp16.convert_float16(path)


def test_contradictory_options():
    with pytest.raises(OptionError, match="op_block_list and op_include_list are mutually exclusive"):
        fp16.convert_float16(_model(), op_block_list=["MatMul"], op_include_list=["Add"])
    with pytest.raises(OptionError, match="node_block_list and node_include_list are mutually exclusive"):
        fp16.convert_float16(_model(), node_block_list=["mm"], node_include_list=["mm"])


def test_bad_option_values():
    with pytest.raises(OptionError, match=r"keep_io_types: 'z' is not an input or output of the model \(inputs: x"):
        fp16.convert_float16(_model(), keep_io_types=["z"])
    with pytest.raises(OptionError, match="op_block_list: expected a list of strings, got the string 'MatMul'"):
        fp16.convert_float16(_model(), op_block_list="MatMul")
    with pytest.raises(OptionError, match=r"node_block_list: 'mm\(' is not a valid regular expression"):
        fp16.convert_float16(_model(), node_block_list=["mm("])
    with pytest.raises(fp16.Float16Error, match="model: expected an onnx.ModelProto or a path"):
        fp16.convert_float16(42)


def test_no_float_tensors_unchanged_with_note(tmp_path):
    model = make_model(
        [helper.make_node("Add", ["a", "b"], ["c"], name="add")],
        [vi("a", TensorProto.INT32, [2]), vi("b", TensorProto.INT32, [2])],
        [vi("c", TensorProto.INT32, [2])],
    )
    result = fp16.convert_float16(model)
    assert result.report.notes == ["no float32 tensor was converted: the model is unchanged"]
    assert [n.op_type for n in result.model.graph.node] == ["Add"]


UNWRITABLE_SAVE = """
import sys
import numpy as np
from onnx import TensorProto, helper
import olive_fp16_pass as fp16
from olive_fp16_pass.errors import OptionError
from tests.helpers import init, make_model, vi

model = make_model(
    [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
    [vi("x", TensorProto.FLOAT, [2, 3])],
    [vi("y", TensorProto.FLOAT, [2, 3])],
    [init("W", np.eye(3, dtype=np.float32))],
)
try:
    fp16.convert_float16(model).save(sys.argv[1], external_data=sys.argv[2] == "1")
except OptionError as exc:
    print("OptionError:", exc)
else:
    print("saved")
"""


def _drop_permission_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so the
    exec'd interpreter, though root, obeys permission bits (not-a-user switch: the interpreter may live under
    /root, which other users cannot enter)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.mark.parametrize("external_data", [False, True])
def test_no_partial_output_on_failure(tmp_path, external_data):
    """A folder the user cannot write: one clear error and nothing left in it.

    Root ignores permission bits, and CI runs as root: there the save runs in a child without the
    capabilities that let root override them, so the test checks the same behaviour on every machine instead
    of skipping itself.
    """
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    base = Path(tempfile.mkdtemp(prefix="olive_fp16_ro_"))  # outside tmp_path: its parents are 0700 for root
    try:
        base.chmod(0o755)
        folder = base / "out"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        target = folder / "model.onnx"
        as_user = {"preexec_fn": _drop_permission_override} if os.geteuid() == 0 else {}
        done = subprocess.run(
            [sys.executable, "-c", UNWRITABLE_SAVE, str(target), "1" if external_data else "0"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root), "HOME": str(base), "PYTHONDONTWRITEBYTECODE": "1"},
            **as_user,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"OptionError: output path {target}: folder {folder} is not writable" in done.stdout
        assert list(folder.iterdir()) == []
    finally:
        (base / "out").chmod(stat.S_IRWXU)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_read_only_mount_refused_even_for_root():
    """Root passes os.access everywhere; a folder that still refuses files (here /proc) gives the same error."""
    with pytest.raises(OptionError, match=r"output path /proc/model.onnx: folder /proc is not writable"):
        fp16.convert_float16(_model()).save("/proc/model.onnx")


def test_failed_save_leaves_nothing_behind(tmp_path):
    """A failure in the middle of writing (here: a tensor that cannot be serialized) leaves no file."""
    import onnx_ir as ir

    result = fp16.convert_float16(_model())

    class Boom(ir.Tensor):
        def tobytes(self):
            raise RuntimeError("disk full")

    weight = result.ir_model.graph.initializers["W"]
    weight.const_value = Boom(weight.const_value.numpy())
    with pytest.raises(Exception, match="serialize"):  # onnx-ir wraps the RuntimeError in SerdeErrors
        result.save(tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_output_folder_cannot_be_created():
    """Works as root too (root ignores permission bits, but nothing can create folders under /proc)."""
    with pytest.raises(OptionError, match="output path /proc/olive_fp16_no/model.onnx: cannot create folder"):
        fp16.convert_float16(_model()).save("/proc/olive_fp16_no/model.onnx")


def test_output_path_is_a_directory(tmp_path):
    with pytest.raises(OptionError, match="is a directory, expected a file name"):
        fp16.convert_float16(_model()).save(tmp_path)


def test_opset_onnxruntime_cannot_load():
    model = _model()
    model.opset_import[0].version = 30  # newer than any onnxruntime release supports
    result = fp16.convert_float16(model)
    assert any("cannot load IR version 10 / opset 30" in w for w in result.report.warnings)
    assert result.model.opset_import[0].version == 30  # kept, never changed
    with pytest.raises(fp16.Float16Error, match=r"^model: onnxruntime .* cannot load IR version 10 / opset 30"):
        fp16.auto_mixed_precision(model, [{"x": np.ones((2, 3), np.float32)}], progress=False)


def test_amp_on_a_path_names_the_file(tmp_path):
    model = _model()
    model.opset_import[0].version = 30
    path = tmp_path / "future.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(fp16.Float16Error, match="future.onnx"):
        fp16.auto_mixed_precision(path, [{"x": np.ones((2, 3), np.float32)}], progress=False)


def test_conversion_is_deterministic(tmp_path):
    from tests.models import random_mixed_graph

    model = random_mixed_graph(3)
    blocked = [f"n{i}" for i in range(0, 80, 4)]
    a = fp16.convert_float16(model, node_block_list=blocked).model.SerializeToString()
    b = fp16.convert_float16(model, node_block_list=blocked).model.SerializeToString()
    assert a == b
    source = tmp_path / "m.onnx"
    onnx.save(model, source)
    fp16.convert_float16(source, node_block_list=blocked).save(tmp_path / "one.onnx")
    fp16.convert_float16(source, node_block_list=blocked).save(tmp_path / "two.onnx")
    assert (tmp_path / "one.onnx").read_bytes() == (tmp_path / "two.onnx").read_bytes()
