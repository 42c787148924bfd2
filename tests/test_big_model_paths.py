"""The memory-sparing code path of the mixed-precision search, on a small model, so that CI runs it.

Models of `runtime.BIG_MODEL_BYTES` (1 GiB) or more take another path: the emulation rounds where tensors are
used (`round_at_use`), sessions skip prepacking and the memory arena, and the load check runs the candidate from
a temporary file so that onnxruntime memory-maps its weights. The only tests of that path with a real big model
are marked slow (tests/test_big_model_amp.py, 2.3 GB), which CI deselects; here the threshold is lowered so a
model of a few kB takes it, and its result must be the one the ordinary path gives.
"""

from __future__ import annotations

import onnx
import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass import search_model
from tests.models import feeds, layernorm_overflow_model


def _search(path, data):
    result = fp16.auto_mixed_precision(path, data, rtol=1e-2, atol=1e-3, progress=False)
    search = result.report.search
    return result, search, sorted(d.node for d in result.report.fp32_nodes)


@pytest.fixture
def external_model(tmp_path):
    path = tmp_path / "src" / "ln.onnx"
    path.parent.mkdir()
    onnx.save(layernorm_overflow_model(), path, save_as_external_data=True, location="ln.data", size_threshold=0)
    return path


def test_big_model_path_gives_the_ordinary_result(external_model, tmp_path, monkeypatch):
    data = feeds((2, 8, 16), n=8)
    _, ordinary, ordinary_fp32 = _search(external_model, data)
    monkeypatch.setattr(search_model, "BIG_MODEL_BYTES", 0)  # every model counts as big
    result, big, big_fp32 = _search(external_model, data)
    assert ordinary["criteria_met"] and big["criteria_met"], (ordinary["failures"], big["failures"])
    assert ordinary_fp32 and big_fp32 == ordinary_fp32  # the LayerNorm's variance stays float32 on both paths
    assert big["validation_errors"] == ordinary["validation_errors"]
    assert [h["stage"] for h in big["history"]] == [h["stage"] for h in ordinary["history"]]
    # the big path's load check opened the candidate from a file (a session more): it really ran
    assert big["sessions_created"] > ordinary["sessions_created"]
    out = tmp_path / "dst" / "ln_mixed.onnx"
    result.save(out)
    assert (out.parent / "ln_mixed.onnx.data").is_file()  # saved like the input, weights in a data file
    onnx.checker.check_model(str(out))
