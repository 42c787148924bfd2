"""External data from an untrusted model: nothing is read outside the model's folder, nothing hangs, nothing
is believed that the files contradict; the same rules on the path route and the ModelProto route."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import ModelFileError
from tests.helpers import init, make_model, run, vi

ROUTES = ["path", "proto"]


def _matmul_model() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", TensorProto.FLOAT, [2, 3])],
        [vi("y", TensorProto.FLOAT, [2, 3])],
        [init("W", np.arange(9, dtype=np.float32).reshape(3, 3))],
    )


def externalize(tensor: onnx.TensorProto, folder: Path, location: str, **entries: str) -> None:
    """Move a tensor's bytes to `folder/location` (appended) and point the tensor at them."""
    data = numpy_helper.to_array(tensor).tobytes()
    target = folder / location
    offset = target.stat().st_size if target.exists() else 0
    with open(target, "ab") as handle:
        handle.write(data)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    values = {"location": location, "offset": str(offset), "length": str(len(data)), **entries}
    for key, value in values.items():
        tensor.external_data.add(key=key, value=value)


def _point_at(model: onnx.ModelProto, location: str, **entries: str) -> onnx.ModelProto:
    """The model with W referring to `location` (written or not by the caller)."""
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in {"location": location, "offset": "0", "length": "36", **entries}.items():
        tensor.external_data.add(key=key, value=value)
    return model


def _convert(route: str, model: onnx.ModelProto, folder: Path, monkeypatch):
    """Convert through the path route (model saved in `folder`) or the ModelProto route (cwd = `folder`)."""
    if route == "path":
        path = folder / "model.onnx"
        path.write_bytes(model.SerializeToString())
        return fp16.convert_float16(path)
    monkeypatch.chdir(folder)
    return fp16.convert_float16(model)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.mark.parametrize("route", ROUTES)
def test_parent_folder_location_is_refused_and_text_does_not_tell_if_it_exists(route, folder, monkeypatch):
    secret = folder.parent / "secret.bin"
    messages = []
    for exists in (True, False):
        if exists:
            secret.write_bytes(np.ones(9, np.float32).tobytes())
        elif secret.exists():
            secret.unlink()
        with pytest.raises(ModelFileError, match="leads out of the model's folder") as info:
            _convert(route, _point_at(_matmul_model(), "../secret.bin"), folder, monkeypatch)
        messages.append(str(info.value))
    assert messages[0] == messages[1]  # the error text tells nothing about the file outside


@pytest.mark.parametrize("route", ROUTES)
def test_absolute_location_is_refused(route, folder, monkeypatch):
    target = folder / "w.bin"
    target.write_bytes(np.ones(9, np.float32).tobytes())
    with pytest.raises(ModelFileError, match="is an absolute path"):
        _convert(route, _point_at(_matmul_model(), str(target)), folder, monkeypatch)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("inside", [True, False])
def test_symlinked_data_file_is_refused(route, inside, folder, monkeypatch):
    real = (folder if inside else folder.parent) / "real.bin"
    real.write_bytes(np.ones(9, np.float32).tobytes())
    (folder / "w.bin").symlink_to(real)
    expected = "is a symbolic link" if inside else "leads out of the model's folder"
    with pytest.raises(ModelFileError, match=expected):
        _convert(route, _point_at(_matmul_model(), "w.bin"), folder, monkeypatch)


@pytest.mark.parametrize("route", ROUTES)
def test_symlinked_folder_leading_out_is_refused(route, folder, monkeypatch):
    outside = folder.parent / "elsewhere"
    outside.mkdir()
    (outside / "w.bin").write_bytes(np.ones(9, np.float32).tobytes())
    (folder / "sub").symlink_to(outside)
    with pytest.raises(ModelFileError, match="leads out of the model's folder"):
        _convert(route, _point_at(_matmul_model(), "sub/w.bin"), folder, monkeypatch)


@pytest.mark.timeout(120)  # a guard only: before the fix, opening the FIFO blocked forever
@pytest.mark.parametrize("route", ROUTES)
def test_fifo_data_file_is_refused_without_reading(route, folder, monkeypatch):
    os.mkfifo(folder / "w.bin")
    with pytest.raises(ModelFileError, match="is not a regular file"):
        _convert(route, _point_at(_matmul_model(), "w.bin"), folder, monkeypatch)


@pytest.mark.parametrize("route", ROUTES)
def test_device_reached_through_a_link_is_refused(route, folder, monkeypatch):
    """/dev/zero would "hold" any length; a location in the folder linking to it is still refused."""
    (folder / "w.bin").symlink_to("/dev/zero")
    with pytest.raises(ModelFileError, match="leads out of the model's folder"):
        _convert(route, _point_at(_matmul_model(), "w.bin"), folder, monkeypatch)


@pytest.mark.parametrize("route", ROUTES)
def test_socket_data_file_is_refused(route, folder, monkeypatch):
    """Another kind of non-regular file, which any user can create (a device node needs privileges)."""
    import socket

    monkeypatch.chdir(folder)  # AF_UNIX paths are short: bind by relative name
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("w.bin")
        with pytest.raises(ModelFileError, match="is not a regular file"):
            _convert(route, _point_at(_matmul_model(), "w.bin"), folder, monkeypatch)
    finally:
        server.close()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"offset": "abc"}, "malformed offset 'abc'"),
        ({"offset": "-4"}, "malformed offset '-4'"),
        ({"length": "1e3"}, "malformed length '1e3'"),
        ({"length": "8"}, r"declares length 8, but its type and shape \[3, 3\] need 36 bytes"),
        ({"offset": "8"}, "is truncated: initializer 'W' needs bytes up to 44, the file has 36"),
    ],
)
def test_bad_offset_or_length_is_refused(route, entries, message, folder, monkeypatch):
    (folder / "w.bin").write_bytes(np.ones(9, np.float32).tobytes())
    with pytest.raises(ModelFileError, match=message):
        _convert(route, _point_at(_matmul_model(), "w.bin", **entries), folder, monkeypatch)


@pytest.mark.parametrize("route", ROUTES)
def test_missing_length_is_checked_against_the_shape(route, folder, monkeypatch):
    """Without `length`, the bytes the shape needs must be there (the old check took the length as 0)."""
    (folder / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    model = _point_at(_matmul_model(), "w.bin")
    del model.graph.initializer[0].external_data[2]  # length
    with pytest.raises(ModelFileError, match="is truncated: initializer 'W' needs bytes up to 36, the file has 16"):
        _convert(route, model, folder, monkeypatch)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route", ROUTES)
def test_huge_sparse_data_file_is_refused_before_reading(route, folder, monkeypatch):
    """A tiny model declaring a 1 TiB tensor in a sparse 1 TiB file: refused with the figures, no allocation."""
    with open(folder / "w.bin", "wb") as handle:
        handle.truncate(2**40)
    model = make_model(
        [helper.make_node("Relu", ["W"], ["y"], name="relu")],
        [],
        [vi("y", TensorProto.FLOAT, [2**38])],
        [TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**38])],
    )
    _point_at(model, "w.bin", length=str(2**40))
    with pytest.raises(ModelFileError, match=r"declares 1024.0 GiB of tensors; converting needs about as much"):
        _convert(route, model, folder, monkeypatch)


def _constant_model(folder: Path, values: np.ndarray) -> onnx.ModelProto:
    const = numpy_helper.from_array(values, "c")
    externalize(const, folder, "c.bin")
    return make_model(
        [
            helper.make_node("Constant", [], ["k"], name="const", value=const),
            helper.make_node("Add", ["x", "k"], ["y"], name="add"),
        ],
        [vi("x", TensorProto.FLOAT, [3])],
        [vi("y", TensorProto.FLOAT, [3])],
    )


def test_constant_external_data_is_read_from_the_model_folder_not_cwd(folder, tmp_path, monkeypatch):
    model = _constant_model(folder, np.array([1, 2, 3], np.float32))
    path = folder / "model.onnx"
    onnx.save(model, path)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "c.bin").write_bytes(np.array([100, 200, 300], np.float32).tobytes())
    monkeypatch.chdir(elsewhere)
    result = fp16.convert_float16(path)
    out = tmp_path / "out" / "model.onnx"
    result.save(out)
    loaded = onnx.load(out)
    x = np.zeros(3, np.float32)
    np.testing.assert_allclose(run(loaded, {"x": x})[0].astype(np.float32), [1, 2, 3])


def test_constant_external_data_outside_the_folder_is_refused(folder, monkeypatch):
    model = _constant_model(folder, np.array([1, 2, 3], np.float32))
    const = model.graph.node[0].attribute[0].t
    for entry in const.external_data:
        if entry.key == "location":
            entry.value = "../c.bin"
    (folder.parent / "c.bin").write_bytes(np.ones(3, np.float32).tobytes())
    with pytest.raises(ModelFileError, match="node 'const' attribute 'value' location '../c.bin' leads out"):
        _convert("path", model, folder, monkeypatch)
    with pytest.raises(ModelFileError, match="leads out of the model's folder"):
        _convert("proto", model, folder, monkeypatch)


def test_proto_route_reads_external_data_inside_cwd(folder, monkeypatch):
    """The ModelProto route is not refused wholesale: data inside the current folder is used, as onnx does."""
    model = _matmul_model()
    externalize(model.graph.initializer[0], folder, "w.bin")
    result = _convert("proto", model, folder, monkeypatch)
    out = folder / "out.onnx"
    result.save(out)
    x = np.ones((2, 3), np.float32)
    expected = x @ np.arange(9, dtype=np.float32).reshape(3, 3)
    np.testing.assert_allclose(run(onnx.load(out), {"x": x})[0].astype(np.float32), expected, rtol=1e-3)


def test_proto_route_refuses_a_cycle():
    model = make_model(
        [
            helper.make_node("Add", ["x", "b"], ["a"], name="add"),
            helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("Identity", ["a"], ["y"], name="out"),
        ],
        [vi("x", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ModelFileError, match=r"^model: the graph has a cycle through nodes 'add', 'relu'$"):
        fp16.convert_float16(model)
    feeds = [{"x": np.ones(2, np.float32)}]
    with pytest.raises(ModelFileError, match=r"^model: the graph has a cycle through nodes 'add', 'relu'$"):
        fp16.auto_mixed_precision(model, feeds, provider="CPUExecutionProvider", progress=False)


def test_proto_route_refuses_an_undefined_input():
    model = make_model(
        [helper.make_node("Relu", ["nothing"], ["y"], name="relu")],
        [vi("x", TensorProto.FLOAT, [2])],
        [vi("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ModelFileError, match="node 'relu' reads 'nothing', which no node, graph input or initializer"):
        fp16.convert_float16(model)


@pytest.mark.parametrize(
    ("location", "message"),
    [("../secret.bin", "leads out of the model's folder"), ("/etc/hostname", "is an absolute path")],
)
def test_cli_refuses_data_outside_the_folder_without_a_traceback(folder, location, message):
    """The same refusals through `olive-fp16 convert` (and `amp`): exit 2, one line, nothing written."""
    (folder.parent / "secret.bin").write_bytes(np.ones(9, np.float32).tobytes())
    model = folder / "model.onnx"
    model.write_bytes(_point_at(_matmul_model(), location).SerializeToString())
    out = folder / "out.onnx"
    for command in (["convert", str(model), "-o", str(out)], ["amp", str(model), "-o", str(out), "--random", "2"]):
        proc = subprocess.run(
            [sys.executable, "-m", "olive_fp16_pass.cli", *command], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2, (command, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()
