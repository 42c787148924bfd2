"""auto_mixed_precision on models whose weights live in an external data file (torch.onnx.export's default)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import Float16Error
from tests.helpers import run
from tests.models import activation_overflow_chain, benign_mlp, feeds


def save_external(model: onnx.ModelProto, folder, name: str = "model.onnx"):
    """model.onnx + model.onnx.data, as torch.onnx.export writes them (every tensor in the data file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save moves the data of the proto it is given out to the file
    onnx.save(copy, path, save_as_external_data=True, location=f"{name}.data", size_threshold=0)
    return path


def test_external_data_model_searches_from_another_folder(tmp_path, monkeypatch):
    model = activation_overflow_chain()
    path = save_external(model, tmp_path / "src")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # sessions must not look for model.onnx.data in the current directory
    data = feeds((2, 16), n=8)
    result = fp16.auto_mixed_precision(path, data, rtol=1e-2, atol=1e-3, progress=False)
    search = result.report.search
    assert search["criteria_met"] and search["holdout_met"], search["failures"]
    kept = {d.node for d in result.report.fp32_nodes}
    assert {"scale_up2", "scale_down"} <= kept  # the activation overflow is seen through the external weights
    out = result.save(tmp_path / "out" / "mixed.onnx")
    assert (tmp_path / "out" / "mixed.onnx.data").is_file()  # saved like the input
    for feed in feeds((2, 16), n=2, seed=5):
        np.testing.assert_allclose(run(onnx.load(out), feed)[0], run(model, feed)[0], rtol=1e-2, atol=1e-3)


def test_external_data_benign_model_fully_fp16(tmp_path, monkeypatch):
    model = benign_mlp()
    path = save_external(model, tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    result = fp16.auto_mixed_precision(path, feeds((4, 32), n=6), rtol=1e-2, atol=1e-2, progress=False)
    assert result.report.fp32_nodes == []
    assert result.report.search["criteria_met"]


def test_external_data_modelproto_without_data_is_a_clear_error(tmp_path):
    path = save_external(benign_mlp(), tmp_path / "src")
    proto = onnx.load(path, load_external_data=False)
    with pytest.raises(Float16Error, match="pass the model's path"):
        fp16.auto_mixed_precision(proto, feeds((4, 32), n=4), rtol=1e-2, atol=1e-2, progress=False)


def test_torch_export_with_external_data(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(32, 64)
            self.fc2 = torch.nn.Linear(64, 32)
            self.norm = torch.nn.LayerNorm(32)

        def forward(self, x):
            return self.norm(x + self.fc2(torch.nn.functional.gelu(self.fc1(x))))

    torch.manual_seed(0)
    path = tmp_path / "src" / "model.onnx"
    path.parent.mkdir()
    try:
        torch.onnx.export(
            Block().eval(), (torch.randn(2, 8, 32),), str(path), dynamo=True, external_data=True, opset_version=18
        )
    except Exception as exc:  # the exporter needs onnxscript; without it there is nothing to test here
        pytest.skip(f"torch.onnx.export unavailable: {type(exc).__name__}: {exc}")
    if not (path.parent / "model.onnx.data").is_file():
        pytest.skip("this torch wrote no external data file")
    monkeypatch.chdir(tmp_path)
    data = [{"x": np.random.default_rng(i).standard_normal((2, 8, 32)).astype(np.float32)} for i in range(6)]
    result = fp16.auto_mixed_precision(path, data, rtol=1e-2, atol=1e-2, progress=False)
    assert result.report.search["criteria_met"], result.report.search["failures"]
    assert len(result.report.fp16_nodes) > len(result.report.fp32_nodes)
