"""`olive-fp16 amp` and `olive-fp16 compare` run as a user runs them: subprocesses on real models and files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from olive_fp16_pass.feeds import load_feeds
from tests.helpers import run_cli
from tests.models import small_transformer
from tests.schema_check import load_schema, schema_errors

REPO = Path(__file__).resolve().parent.parent
DENOISER = REPO / "olive_fp16_pass/showcase/models/denoiser.onnx"


cli = run_cli


def images(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32) for _ in range(n)])


@pytest.fixture(scope="module")
def stacked_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feeds") / "denoiser_feeds.npz"
    np.savez(path, noisy=images(6))  # one axis more than the input: a stack of 6 feeds
    return path


@pytest.fixture(scope="module")
def transformer(tmp_path_factory) -> tuple[Path, Path]:
    """The small transformer on disk and a folder of .npz feeds, one file each."""
    root = tmp_path_factory.mktemp("transformer")
    model = root / "encoder.onnx"
    onnx.save(small_transformer(), model)
    folder = root / "feeds"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for k in range(8):
        np.savez(folder / f"{k:03d}.npz", hidden_in=rng.standard_normal((1, 16, 32)).astype(np.float32))
    return model, folder


def test_amp_from_npz_file_meets_criteria_and_exits_0(stacked_npz, tmp_path):
    out, report = tmp_path / "amp.onnx", tmp_path / "amp.json"
    proc = cli("amp", DENOISER, "-o", out, "--data", stacked_npz, "--max-abs", "0.01", "--report", report)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(report.read_text())
    assert schema_errors(record, load_schema("cli_report.schema.json")) == []
    assert record["schema_version"] and record["status"] == "criteria_met" and record["exit_code"] == 0
    assert record["data"] == {"kind": "npz", "origin": str(stacked_npz), "samples": 6, "random": False}
    search = record["conversion"]["search"]
    assert search["criteria"] == {"max_abs": 0.01}  # only the criterion given, not the API's rtol/atol too
    assert search["criteria_met"] and search["holdout_met"] and search["holdout_samples"] >= 1
    model = onnx.load(out)
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


def test_amp_from_folder_on_a_transformer_meets_criteria_and_exits_0(transformer, tmp_path):
    model, folder = transformer
    out = tmp_path / "encoder_amp.onnx"
    proc = cli("amp", model, "-o", out, "--data", folder, "--min-cosine", "0.999", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "criteria met on validation and held-out data" in proc.stdout
    assert out.is_file()


def test_amp_impossible_tolerance_exits_1_and_writes_nothing_unless_asked(stacked_npz, tmp_path):
    out = tmp_path / "never.onnx"
    proc = cli("amp", DENOISER, "-o", out, "--data", stacked_npz, "--max-abs", "0", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "criteria NOT met" in proc.stdout and "nothing written" in proc.stdout
    assert not out.exists()
    report = tmp_path / "r.json"
    proc = cli(
        "amp", DENOISER, "-o", out, "--data", stacked_npz, "--max-abs", "0", "--save-on-failure", "--report", report
    )
    assert proc.returncode == 1 and out.is_file()
    record = json.loads(report.read_text())
    assert record["status"] == "criteria_not_met" and record["output"] == str(out)
    assert schema_errors(record, load_schema("cli_report.schema.json")) == []
    record["exit_code"] = 2  # the schema check can fail: amp's report never holds exit code 2
    assert schema_errors(record, load_schema("cli_report.schema.json"))


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"image": np.zeros((1, 3, 8, 8), np.float32)}, "missing: ['noisy']; unknown: ['image']"),
        ({"noisy": np.zeros((1, 4, 8, 8), np.float32)}, "['noisy']: shape (1, 4, 8, 8), the model expects 3 on axis 1"),
    ],
)
def test_amp_bad_feeds_exit_2_naming_the_file_and_input(tmp_path, arrays, expected):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    proc = cli("amp", DENOISER, "-o", tmp_path / "x.onnx", "--data", bad)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(bad) in proc.stderr and expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_amp_missing_data_and_dynamic_shape_without_shape_exit_2(tmp_path):
    proc = cli("amp", DENOISER, "-o", tmp_path / "x.onnx", "--data", tmp_path / "nowhere")
    assert proc.returncode == 2 and "nowhere: no such file or folder" in proc.stderr
    proc = cli("amp", DENOISER, "-o", tmp_path / "x.onnx", "--random", "3")
    assert proc.returncode == 2 and "input 'noisy' has dynamic dimensions" in proc.stderr
    assert "--shape noisy:Nx3xNxN" in proc.stderr


def test_amp_random_data_is_announced_in_the_report(tmp_path):
    report = tmp_path / "r.json"
    proc = cli(
        "amp", DENOISER, "-o", tmp_path / "x.onnx", "--random", "4", "--shape", "noisy:1x3x32x32", "--report", report
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())["data"]
    assert data["random"] is True and "random input data" in data["warning"]
    assert "RANDOM" in proc.stdout and "RANDOM" in proc.stderr


def test_polygraphy_json_feeds_are_read(tmp_path):
    """The JSON `polygraphy run --save-inputs` writes: a list of feeds, arrays as base64 of np.save."""
    arrays = images(3, size=16)

    def encode(array):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return {"array": base64.b64encode(buffer.getvalue()).decode(), "polygraphy_class": "ndarray"}

    path = tmp_path / "inputs.json"
    path.write_text(json.dumps([{"noisy": encode(a)} for a in arrays]))
    feedset = load_feeds(str(path), onnx.load(DENOISER))
    assert feedset.kind == "polygraphy-json" and len(feedset.feeds) == 3
    np.testing.assert_array_equal(feedset.feeds[2]["noisy"], arrays[2])


def faulty_denoiser(path: Path) -> str:
    """The denoiser with x*300*300/9e4 after one mid-network Conv: the same function in float32, but the second
    Mul overflows float16 (its values reach ~1e6). Returns the tensor that goes wrong first."""
    model = onnx.load(DENOISER)
    graph = model.graph
    nodes = list(graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    target = convs[len(convs) // 2]
    tensor = target.output[0]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == tensor:
                node.input[i] = "fault_out"
    graph.initializer.extend(
        [numpy_helper.from_array(np.float32(300), "fault_k"), numpy_helper.from_array(np.float32(9e4), "fault_kk")]
    )
    position = nodes.index(target) + 1
    injected = [
        helper.make_node("Mul", [tensor, "fault_k"], ["fault_a"], name="fault_mul1"),
        helper.make_node("Mul", ["fault_a", "fault_k"], ["fault_b"], name="fault_mul2"),
        helper.make_node("Div", ["fault_b", "fault_kk"], ["fault_out"], name="fault_div"),
    ]
    for k, node in enumerate(injected):
        graph.node.insert(position + k, node)
    onnx.save(model, path)
    return "fault_b"


@pytest.fixture(scope="module")
def fault(tmp_path_factory) -> tuple[Path, Path, str]:
    from olive_fp16_pass import convert_float16

    root = tmp_path_factory.mktemp("fault")
    reference = root / "faulty_fp32.onnx"
    tensor = faulty_denoiser(reference)
    candidate = root / "faulty_fp16.onnx"
    convert_float16(str(reference)).save(candidate)  # no data: nothing tells the converter about the overflow
    return reference, candidate, tensor


def test_compare_localizes_the_injected_overflow(fault, stacked_npz, tmp_path):
    reference, candidate, tensor = fault
    report = tmp_path / "compare.json"
    proc = cli("compare", reference, candidate, "--data", stacked_npz, "--localize", "--report", report)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    record = json.loads(report.read_text())
    assert schema_errors(record, load_schema("cli_report.schema.json")) == []
    out = record["outputs"]["denoised"]
    assert out["nonfinite_where_reference_finite"] > 0 and out["candidate"]["nan"] > 0
    assert record["candidate"]["emulated"] and not record["criteria_met"]
    first = record["localize"]["first_jumps"][0]
    assert (first["tensor"], first["node"], first["op_type"]) == (tensor, "fault_mul2", "Mul")
    assert first["nonfinite"] > 0
    assert f"{tensor} from Mul 'fault_mul2'" in proc.stdout


def test_compare_without_emulation_shows_what_the_cpu_provider_hides(fault, stacked_npz):
    """The CPU EP computes float16 ops in float32 behind Casts: run as is, the overflow does not show."""
    reference, candidate, _ = fault
    proc = cli("compare", reference, candidate, "--data", stacked_npz, "--no-emulation", "--max-abs", "0.05")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hides overflow" in proc.stdout


def test_compare_good_fp16_meets_criteria_with_every_figure(stacked_npz, tmp_path):
    from olive_fp16_pass import convert_float16

    candidate = tmp_path / "fp16.onnx"
    convert_float16(str(DENOISER)).save(candidate)
    report = tmp_path / "c.json"
    proc = cli(
        "compare",
        DENOISER,
        candidate,
        "--data",
        stacked_npz,
        "--max-abs",
        "0.01",
        "--min-psnr",
        "50",
        "--report",
        report,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(report.read_text())["outputs"]["denoised"]
    assert set(out) >= {"max_abs", "mean_abs", "p999_abs", "cosine", "psnr_db", "candidate", "reference"}
    assert 0 < out["max_abs"] <= 0.01 and out["cosine"] > 0.999 and out["candidate"] == {"nan": 0, "inf": 0}
    proc = cli("compare", DENOISER, candidate, "--data", stacked_npz, "--max-abs", "0.00001")
    assert proc.returncode == 1 and "max_abs" in proc.stdout


def test_compare_candidate_with_other_outputs_exits_2(tmp_path, stacked_npz):
    model = onnx.load(DENOISER)
    model.graph.output[0].name = "renamed"
    model.graph.node[-1].output[0] = "renamed"
    other = tmp_path / "other.onnx"
    onnx.save(model, other)
    proc = cli("compare", DENOISER, other, "--data", stacked_npz)
    assert proc.returncode == 2 and f"{other}: has no output named ['denoised']" in proc.stderr
