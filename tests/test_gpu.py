"""Real CUDA execution provider checks; skipped cleanly where no usable CUDA EP exists (CI has none).

Run on a GPU machine with `pytest -m gpu` (bench/gpu_check.sh does).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import olive_fp16_pass as fp16
from olive_fp16_pass.compare import Criteria, compare_outputs
from olive_fp16_pass.emulation import emulate_float16_storage
from olive_fp16_pass.runtime import provider_status
from tests.models import activation_overflow_chain, benign_mlp, feeds, layernorm_overflow_model

CUDA = "CUDAExecutionProvider"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not provider_status(CUDA)[0], reason=f"no usable CUDA EP: {provider_status(CUDA)[1]}"),
]


def _run(model: onnx.ModelProto, feed: dict, provider: str, emulation: bool = False) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if emulation:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider])
    assert session.get_providers()[0] == provider
    typed = {}
    for arg in session.get_inputs():
        typed[arg.name] = feed[arg.name].astype(np.float16 if arg.type == "tensor(float16)" else np.float32)
    return [np.asarray(o, np.float32) for o in session.run(None, typed)]


MODELS = [
    ("overflow_chain", activation_overflow_chain, (2, 16)),
    ("layernorm_overflow", layernorm_overflow_model, (2, 8, 16)),
    ("benign_mlp", benign_mlp, (4, 32)),
]


@pytest.mark.parametrize("name,builder,shape", MODELS, ids=[m[0] for m in MODELS])
def test_emulation_flags_what_cuda_kernels_do(name, builder, shape):
    """The same accuracy verdict from CPU emulation and from real float16 CUDA kernels."""
    model = builder()
    full = fp16.convert_float16(model).model
    criteria = Criteria(rtol=1e-2, atol=1e-3)
    names = [o.name for o in model.graph.output]
    samples = feeds(shape, n=4)
    reference = [_run(model, f, "CPUExecutionProvider") for f in samples]
    on_gpu = [_run(full, f, CUDA) for f in samples]
    emulated = [_run(emulate_float16_storage(full), f, "CPUExecutionProvider", emulation=True) for f in samples]
    gpu_fail = bool(criteria.check(compare_outputs(names, reference, on_gpu, criteria)))
    emu_fail = bool(criteria.check(compare_outputs(names, reference, emulated, criteria)))
    assert gpu_fail == emu_fail, f"{name}: CUDA says fail={gpu_fail}, emulation says fail={emu_fail}"
    gpu_nonfinite = any(not np.isfinite(o).all() for out in on_gpu for o in out)
    emu_nonfinite = any(not np.isfinite(o).all() for out in emulated for o in out)
    assert gpu_nonfinite == emu_nonfinite


def test_fp16_and_amp_denoisers_on_gpu_match_fp32():
    from olive_fp16_pass.showcase.denoise_eval import FP32_MODEL, eval_images
    from olive_fp16_pass.showcase.image_quality import fidelity

    model = onnx.load(FP32_MODEL)
    _, noisy = eval_images(256, 25 / 255, 0)
    full = fp16.convert_float16(model).model
    amp = fp16.auto_mixed_precision(
        model, [{"noisy": x} for x in noisy * 3], rtol=None, atol=None, min_psnr=50, provider=CUDA, progress=False
    )
    assert amp.report.search["backend"]["mode"] == "provider"
    assert CUDA in amp.report.search["providers_used"]
    for candidate in (full, amp.model):
        for x in noisy:
            reference = _run(model, {"noisy": x}, "CPUExecutionProvider")[0]
            out = _run(candidate, {"noisy": x}, CUDA)[0]
            figures = fidelity(out, reference)
            assert figures["nonfinite"] == 0
            assert figures["max_8bit_change"] <= 2
            assert figures["psnr_vs_fp32"] >= 50
