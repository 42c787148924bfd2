"""Calibrated Float16 (issue 10.4): one streamed float32 pass over the calibration feeds keeps in float32 the
nodes whose activations leave float16's range, with the measured value as the reason; no search."""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from olive_fp16_pass import activation_stats
from olive_fp16_pass.activation_stats import ActivationStats, calibrate
from olive_fp16_pass.emulation import emulate_float16_storage
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.float16 import convert_float16
from olive_fp16_pass.precision_plan import Origin, Rule
from tests.helpers import run_cli
from tests.models import matmul_activation_overflow


def _feed(value: float, batch: int = 1, rows: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.full((batch, rows, 64), value, np.float32)}


def _emulated(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The model's output with float16 storage emulated (as on a GPU; the CPU EP would hide the overflow)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    emulated = emulate_float16_storage(model).SerializeToString()
    session = ort.InferenceSession(emulated, options, providers=["CPUExecutionProvider"])
    x = feed["x"].astype(np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32)
    return np.asarray(session.run(None, {"x": x})[0], np.float32)


def test_calibration_keeps_the_activation_overflow_node_fp32_without_a_search():
    model = matmul_activation_overflow()
    feeds = [_feed(1.0), _feed(100.0), _feed(0.5)]  # the MatMul output reaches 16 * 64 * 100 = 102400 on the 2nd
    plain = convert_float16(model, provider=None)
    assert not plain.report.fp32_nodes  # weights in range: plain Float16 converts everything
    assert not np.isfinite(_emulated(plain.model, feeds[1])).all()  # ... and overflows to inf in float16

    calibrated = convert_float16(model, provider=None, calibration_data=feeds)
    report = calibrated.report
    kept = {d.node: d for d in report.fp32_nodes}
    assert set(kept) == {"mm", "scale"}  # the MatMul writes h, the Div reads it; the Relu stays float16
    for decision in kept.values():
        assert decision.rule is Rule.ACTIVATION_OVERFLOW and decision.origin == Origin.CALIBRATION.value
        assert "tensor 'h' reaches |102400| on calibration data > 32752" in decision.detail
    assert {d.node for d in report.fp16_nodes} == {"relu"}
    row = report.to_dict()["fp32_nodes"][0]
    assert row["origin"] == "calibration" and row["rule"] == "activation_overflow"
    assert report.search is None  # no search: no candidate was validated
    assert report.calibration["samples"] == 3 and report.calibration["sessions_created"] == 1
    y = _emulated(calibrated.model, feeds[1])
    np.testing.assert_allclose(y, np.full_like(y, 10.24), rtol=1e-2)


def test_every_feed_counts_and_shapes_may_differ():
    """AutoCast measures only the first sample: here the overflow is in the last feed, of another shape."""
    model = matmul_activation_overflow()
    shapes = [(1, 2), (3, 5), (2, 1), (4, 7)]
    feeds = (_feed(100.0 if k == len(shapes) - 1 else 1.0, *shape) for k, shape in enumerate(shapes))
    result = convert_float16(model, provider=None, calibration_data=feeds)
    assert {d.node for d in result.report.fp32_nodes} == {"mm", "scale"}
    assert result.report.calibration["samples"] == 4
    in_range = convert_float16(model, provider=None, calibration_data=[_feed(1.0, *s) for s in shapes])
    assert not in_range.report.fp32_nodes  # 1024 at most: nothing to keep
    assert any("no tensor left float16's range on 4 calibration feeds" in n for n in in_range.report.notes)


def test_activation_underflow_and_graph_inputs_are_measured():
    model = matmul_activation_overflow()
    tiny = convert_float16(model, provider=None, calibration_data=[_feed(1e-10)])
    rules = {d.node: d.rule for d in tiny.report.fp32_nodes}
    assert rules["mm"] is Rule.ACTIVATION_UNDERFLOW  # h <= 1.6e-8: every value subnormal in float16
    huge_input = convert_float16(model, provider=None, calibration_data=[_feed(1e5)])
    decision = next(d for d in huge_input.report.fp32_nodes if d.node == "mm")
    assert "tensor 'x' reaches |100000|" in decision.detail  # the feed itself: cast to float16 it is inf


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _calibrate_many(count: int, rows: int = 2048) -> tuple[int, int, ActivationStats]:
    """Calibrate over `count` fresh 2048 x 64 feeds (512 KiB each; each run's h, s and y: 1.5 MiB); returns
    the traced Python peak (numpy arrays: the feeds) and the growth of the resident memory between the 10th
    feed and the last (onnxruntime's output arrays are not traced)."""
    rss: list[int] = []

    def feeds():
        for k in range(count):
            rss.append(_rss())
            yield {"x": np.full((1, rows, 64), 1.0 + k % 3, np.float32)}

    model = matmul_activation_overflow(out=64)
    gc.collect()
    tracemalloc.start()
    try:
        calibration = calibrate(model, feeds())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = max(rss[10:], default=0) - rss[min(10, len(rss) - 1)]
    return peak, growth, calibration.stats


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident memory from /proc")
def test_memory_does_not_grow_with_the_number_of_feeds():
    """Feeds are drawn one at a time and each run's outputs dropped: 120 feeds peak like 12. Listing the feeds
    would add 108 x 512 KiB = 54 MiB of traced memory; keeping the runs' outputs, 160 MiB of resident memory."""
    few, _, _ = _calibrate_many(12)
    many, growth, stats = _calibrate_many(120)
    assert stats.feeds == 120
    assert many < few + 4 * 2**20, (few, many)
    assert growth < 40 * 2**20, growth
    # the state: two numbers per tensor (x, h, s, y), whatever the number of feeds, and four more for a tensor
    # beyond the limit (its sentinel test: sentinels.ValueStats)
    assert set(stats.tensors) == {"x", "h", "s", "y"}
    assert all(set(vars(t)) == {"abs_max", "nonfinite", "beyond"} for t in stats.tensors.values())
    beyond = [t.beyond for t in stats.tensors.values() if t.beyond is not None]
    assert all(set(vars(b)) == {"beyond_min", "extreme", "signs", "in_range_max"} for b in beyond)
    assert all(len(b.signs) <= 3 for b in beyond)


def test_running_statistics_leave_nan_and_inf_out_of_the_maximum():
    stats = ActivationStats()
    stats.update("t", np.array([1.0, -np.inf, np.nan, -7.0], np.float32))
    stats.update("t", np.array([3.0], np.float32))
    stats.update("t", np.array([], np.float32))
    stats.update("i", np.array([10**6], np.int64))  # not a float tensor: says nothing about float16
    assert stats.tensors["t"].abs_max == 7.0 and stats.tensors["t"].nonfinite == 2
    assert "i" not in stats.tensors


def test_search_and_calibration_decide_with_the_same_rule():
    """One rule, two data names: the search's detail reads like calibration's."""
    nodes = [("mm", ["x", "W"], ["h"])]
    search = activation_stats.range_decisions(nodes, {"h": 1e5}, 2.0)
    calibrated = activation_stats.range_decisions(
        nodes, {"h": 1e5}, 2.0, data="calibration data", origin=Origin.CALIBRATION
    )
    assert search["mm"].detail.replace("validation", "calibration") == calibrated["mm"].detail
    assert search["mm"].origin is Origin.RANGE and calibrated["mm"].origin is Origin.CALIBRATION


def test_external_data_model_from_another_folder(tmp_path, monkeypatch):
    model = matmul_activation_overflow()
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(
        model,
        folder / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    monkeypatch.chdir(tmp_path)  # the session must find the data beside the model, not in the current folder
    result = convert_float16(folder / "m.onnx", provider=None, calibration_data=[_feed(100.0)])
    assert {d.node for d in result.report.fp32_nodes} == {"mm", "scale"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x": np.ones((1, 2, 64), np.float32)}, "got a single dict: wrap it in a list"),
        (5, "expected an iterable of feeds"),
        ([], "no feeds given"),
        ([_feed(1.0), _feed(1.0), {"y": np.ones(2, np.float32)}], r"calibration_data\[2\]: input names"),
        ([{"x": np.ones((2, 64), np.float32)}], r"calibration_data\[0\]\['x'\]: rank 2"),
    ],
)
def test_bad_calibration_data_is_one_clear_error(data, message):
    with pytest.raises(Float16Error, match=message):
        convert_float16(matmul_activation_overflow(), calibration_data=data)


@pytest.mark.parametrize("margin", [0.5, float("nan"), "2", True])
def test_bad_overflow_margin(margin):
    with pytest.raises(Float16Error, match="overflow_margin"):
        convert_float16(matmul_activation_overflow(), overflow_margin=margin)


def test_cli_convert_with_calibration_data(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(matmul_activation_overflow(), model)
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    for k, (value, rows) in enumerate([(1.0, 2), (100.0, 5), (2.0, 3)]):  # shapes differ per file
        np.savez(feeds / f"{k:02d}.npz", x=_feed(value, 1, rows)["x"])
    report = tmp_path / "report.json"
    command = ["convert", model, "-o", tmp_path / "o.onnx"]
    proc = run_cli(*command, "--calibration-data", feeds, "--provider", "CPUExecutionProvider", "--report", report)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "calibration: 3 feeds" in proc.stdout
    data = json.loads(report.read_text())
    assert {d["node"]: d["origin"] for d in data["fp32_nodes"]} == {"mm": "calibration", "scale": "calibration"}
    assert data["calibration"]["samples"] == 3
    missing = run_cli(*command, "--calibration-data", tmp_path / "nowhere")
    assert missing.returncode == 2 and "--calibration-data" in missing.stderr and "nowhere" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_calibrated_conversion_loads_and_types_the_model_once(tmp_path, monkeypatch):
    """convert_float16(calibration_data=...) read, checked, deserialized and typed the model twice: once for the
    calibration, once for the conversion (993 nodes: ~45 ms of ~500 ms). Now once, with the same result as the
    two steps run separately (the calibration leaves the shared graph as it found it)."""
    from olive_fp16_pass import element_types, float16, model_io
    from olive_fp16_pass.float16 import convert_with_options
    from olive_fp16_pass.options import ConversionOptions

    path = tmp_path / "model.onnx"
    onnx.save(matmul_activation_overflow(), path)
    feeds = [_feed(v) for v in (1.0, 2.0, 600.0)]
    apart = convert_with_options(path, ConversionOptions(), forced=calibrate(path, feeds).forced)
    calls = {"load": 0, "infer": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(model_io, "load", counted("load", model_io.load))
    monkeypatch.setattr(float16, "load", model_io.load)
    monkeypatch.setattr(element_types, "infer", counted("infer", element_types.infer))
    result = convert_float16(path, calibration_data=feeds)
    assert calls == {"load": 1, "infer": 1}
    assert result.model.SerializeToString() == apart.model.SerializeToString()
    assert [d.to_dict() for d in result.report.decisions] == [d.to_dict() for d in apart.report.decisions]
    assert any(d.origin == Origin.CALIBRATION.value for d in result.report.decisions)
