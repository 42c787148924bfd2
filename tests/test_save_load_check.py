"""Results whose weights live in external data are load-checked when saved, on the files being written.

onnxruntime reads external data from files next to the model, so `convert_float16` cannot open a session on
such a result in memory; `ConversionResult.save` opens it (ORT_ENABLE_ALL, CPU and CUDA where it works) in
its hidden temporary folder, repairs toward float32 as the in-memory check does, and publishes nothing when
the model still would not load.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass import float16 as float16_mod
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.load_check import SaveCheck
from olive_fp16_pass.runtime import provider_status
from tests.helpers import feeds_for
from tests.test_fusion_safe import ln_on_input


def save_external(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    """The model with every initializer in `<name>.data` beside it."""
    path = folder / name
    onnx.save(copy.deepcopy(model), path, save_as_external_data=True, location=f"{name}.data", size_threshold=0)
    return path


def load_all_optimizations(path: Path, provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=[provider])


def check_runs_like(original: onnx.ModelProto, path: Path, provider: str = "CPUExecutionProvider") -> None:
    session = load_all_optimizations(path, provider)
    feeds = feeds_for(original, dims={"b": 4})
    typed = {i.name: feeds[i.name].astype(np.float16 if "16" in i.type else np.float32) for i in session.get_inputs()}
    got = session.run(None, typed)[0].astype(np.float32)
    reference = load_all_optimizations_bytes(original).run(None, feeds)[0]
    np.testing.assert_allclose(got, reference, atol=2e-2, rtol=2e-2)


def load_all_optimizations_bytes(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("keep_io", [True, False])
def test_external_data_result_is_checked_on_its_saved_files(tmp_path, keep_io):
    model = ln_on_input()
    source = save_external(model, tmp_path)
    result = fp16.convert_float16(source, keep_io_types=keep_io)
    assert result.external_data and SaveCheck.PENDING in result.report.notes
    out = result.save(tmp_path / "out" / "model.onnx")
    assert (out.parent / "model.onnx.data").exists()
    assert SaveCheck.DONE in result.report.notes and SaveCheck.PENDING not in result.report.notes
    check_runs_like(model, out)


@pytest.mark.parametrize("keep_io", [True, False])
def test_save_repairs_an_external_data_result_that_would_not_load(tmp_path, monkeypatch, keep_io):
    """With the unit rules off, the LayerNorm on the float32 input fails in ORT: the save finds and repairs it."""
    monkeypatch.setattr(float16_mod, "keep_units_whole", lambda *args: [])
    model = ln_on_input()
    source = save_external(model, tmp_path)
    result = fp16.convert_float16(source, keep_io_types=keep_io)
    if keep_io:  # unrepaired, this model fails "bound to different types": show it, then let save repair it
        unchecked = fp16.convert_float16(source, keep_io_types=True, load_check=False)
        bad = unchecked.save(tmp_path / "bad" / "model.onnx")
        with pytest.raises(Exception, match="LayerNormalization"):
            load_all_optimizations(bad)
    out = result.save(tmp_path / "out" / "model.onnx")
    check_runs_like(model, out)
    notes = result.report.notes
    assert any(n.startswith("load check: moved") for n in notes) is keep_io, notes
    if keep_io:
        repaired = [d for d in result.report.fp32_nodes if "onnxruntime failed to load" in d.detail]
        assert repaired and {d.rule.value for d in repaired} == {"fusion_boundary"}
    assert SaveCheck.DONE in notes
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.data"]


@pytest.mark.parametrize("external_out", [True, False])
def test_unloadable_external_data_result_writes_nothing(tmp_path, external_out):
    """A float32 LayerNorm reading a float16 graph input cannot load: clear error, no file, no temporary left."""
    model = ln_on_input()
    source = save_external(model, tmp_path)
    ln_nodes = [n.name for n in model.graph.node if n.name.startswith("ln_")]
    result = fp16.convert_float16(source, keep_io_types=False, node_block_list=ln_nodes)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(Float16Error, match="does not load in onnxruntime.*LayerNormalization"):
        result.save(out_dir / "model.onnx", external_data=external_out)
    assert list(out_dir.iterdir()) == []


def test_cli_convert_of_unloadable_external_data_model_exits_cleanly(tmp_path, capsys):
    from olive_fp16_pass.cli import main

    model = ln_on_input()
    source = save_external(model, tmp_path)
    out = tmp_path / "out.onnx"
    code = main(["convert", str(source), "-o", str(out), "--node-block-list", "ln_.*"])
    assert code != 0
    assert "does not load in onnxruntime" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.onnx.data").exists()


@pytest.mark.skipif(
    not provider_status("CUDAExecutionProvider")[0],
    reason="the CUDA execution provider does not work here (onnxruntime without CUDA, or no GPU)",
)
@pytest.mark.parametrize("keep_io", [True, False])
def test_external_data_result_is_checked_on_cuda_too(tmp_path, keep_io):
    model = ln_on_input()
    source = save_external(model, tmp_path)
    out = fp16.convert_float16(source, keep_io_types=keep_io).save(tmp_path / "out" / "model.onnx")
    check_runs_like(model, out, "CUDAExecutionProvider")
