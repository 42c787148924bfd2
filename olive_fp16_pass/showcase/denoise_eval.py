"""Olive custom metric for the denoiser: fidelity to the float32 model, quality vs the truth, latency.

`evaluate_denoiser` is an Olive `evaluate_func` (model, device, execution_providers) returning one value per
sub-metric. It runs the candidate on the requested execution provider with I/O binding (inputs and outputs
stay on the device during the timed runs) and refuses to report anything when the session fell back to
another provider.

Fidelity is measured against the float32 reference model run with the *same* session set-up as the candidate
(`accuracy_outputs`): two set-ups (e.g. one with graph optimizations, one without) differ by rounding, and the
float32 input model would then differ from itself (1 level of 255, PSNR 135 dB), which Olive's
`max-degradation` goals add to every allowance. With one set-up the float32 baseline is exact against itself.

Latency is the median of `repeat` timed runs with its spread (min and 90th percentile), so that the report
does not call one candidate faster than another within the noise.

Everything it measured, the providers really used included, is also written next to the candidate model in
Olive's cache (`<model>.eval.json`, and `<model>.eval.npz` with the first noisy image, the reference output
and the candidate's output) for the report, never next to the reference model (a tracked file).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from olive_fp16_pass.runtime import ProviderFallbackError
from olive_fp16_pass.showcase.image_quality import PSNR_IDENTICAL_DB, fidelity, task_quality

MODELS_DIR = Path(__file__).resolve().parent / "models"
FP32_MODEL = MODELS_DIR / "denoiser.onnx"
_reference_cache: dict[tuple, list[np.ndarray]] = {}


def _provider(execution_providers: Any) -> str:
    if not execution_providers:
        return "CPUExecutionProvider"
    first = execution_providers[0] if isinstance(execution_providers, (list, tuple)) else execution_providers
    return first[0] if isinstance(first, (list, tuple)) else str(first)


def eval_images(size: int, sigma: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from olive_fp16_pass.showcase.models.sample_images import add_noise, load_eval_images

    clean = load_eval_images(size=size)
    return clean, [add_noise(img, sigma=sigma, seed=seed + i) for i, img in enumerate(clean)]


# PSNR_IDENTICAL_DB (image_quality.py): Olive stores metric values as JSON numbers, so an infinite PSNR (outputs
# identical to the reference) is written as that value; it applies to PSNR figures only, never to latency.
PSNR_KEYS = ("psnr_vs_fp32", "psnr_vs_clean")


def cuda_provider_options(*, for_accuracy: bool) -> dict[str, str]:
    """float32 means float32 (no TF32); accuracy sessions use heuristic cuDNN algorithms, which are chosen the
    same way in every session, so the reference and a candidate with the same graph compute the same bits."""
    options = {"use_tf32": "0"}
    if for_accuracy:
        options["cudnn_conv_algo_search"] = "HEURISTIC"
    return options


def _providers(provider: str, *, for_accuracy: bool) -> list:
    if provider == "CUDAExecutionProvider":
        return [(provider, cuda_provider_options(for_accuracy=for_accuracy))]
    return [provider]


def reference_outputs(noisy: list[np.ndarray], reference_model: Path, provider: str) -> list[np.ndarray]:
    """The float32 reference's outputs with the set-up every candidate is judged with, cached per process."""
    key = (str(reference_model), provider, tuple(x.shape for x in noisy), tuple(float(x.sum()) for x in noisy))
    if key not in _reference_cache:
        _reference_cache[key], _ = accuracy_outputs(str(reference_model), provider, noisy)
    return _reference_cache[key]


class BoundRunner:
    """One session, inputs and outputs bound on the device: what a deployed model's steady state costs."""

    def __init__(self, model_path: str, provider: str) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model_path, options, providers=_providers(provider, for_accuracy=False))
        self.providers = self.session.get_providers()
        if self.providers[0] != provider:
            raise ProviderFallbackError(
                f"refusing to report figures for {provider}: the session ran on {self.providers[0]} "
                f"(providers used: {self.providers})"
            )
        self.device = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]
        self.input_dtype = np.float16 if self.input.type == "tensor(float16)" else np.float32

    def bind(self, x: np.ndarray):
        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(x.astype(self.input_dtype), self.device, 0)
        binding.bind_ortvalue_input(self.input.name, value)
        binding.bind_output(self.output.name, self.device)
        return binding, value

    def run(self, x: np.ndarray) -> np.ndarray:
        binding, _keep = self.bind(x)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32)

    def latency_ms(self, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
        binding, _keep = self.bind(x)
        for _ in range(warmup):
            self.session.run_with_iobinding(binding)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            times.append((time.perf_counter() - start) * 1000)
        return times


class TorchRunner:
    """The PyTorch input model, so a workflow that starts from PyTorch gets its float32 baseline measured."""

    def __init__(self, model, provider: str) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if provider == "CUDAExecutionProvider" and torch.cuda.is_available() else "cpu"
        if provider == "CUDAExecutionProvider" and self.device != "cuda":
            raise ProviderFallbackError(f"refusing to report figures for {provider}: torch has no usable CUDA device")
        self.module = model.load_model().to(self.device).eval()
        self.providers = [f"torch-{self.device}"]

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.module(self.torch.from_numpy(x).to(self.device)).cpu().numpy().astype(np.float32)

    def latency_ms(self, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
        tensor = self.torch.from_numpy(x).to(self.device)
        times = []
        with self.torch.no_grad():
            for i in range(warmup + repeat):
                start = time.perf_counter()
                self.module(tensor)
                if self.device == "cuda":
                    self.torch.cuda.synchronize()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000)
        return times


def accuracy_outputs(model_path: str, provider: str, noisy: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Outputs to judge accuracy by, from one session set-up shared by the reference and every candidate.

    On the CPU EP a float16 graph runs in float32 behind Casts and hides overflow, so there the float16 storage
    is emulated (DESIGN.md §5; for a float32 model the emulation changes nothing); on a GPU provider the real
    outputs count."""
    import onnx

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if provider != "CPUExecutionProvider":
        session = ort.InferenceSession(model_path, options, providers=_providers(provider, for_accuracy=True))
        if session.get_providers()[0] != provider:
            raise ProviderFallbackError(
                f"refusing to judge accuracy on {provider}: the session ran on {session.get_providers()[0]}"
            )
        name = session.get_inputs()[0].name
        dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
        outputs = [session.run(None, {name: x.astype(dtype)})[0].astype(np.float32) for x in noisy]
        return outputs, f"real outputs on {provider}"
    from olive_fp16_pass.emulation import emulate_float16_storage

    emulated = emulate_float16_storage(onnx.load(model_path))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(emulated.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: x.astype(np.float32)})[0] for x in noisy]
    return outputs, "float16-storage emulation on the CPU (the CPU EP would hide float16 overflow)"


def latency_figures(times: list[float]) -> dict[str, float]:
    """Median with its spread: min and 90th percentile of the timed runs."""
    ordered = sorted(times)
    return {
        "latency_ms": statistics.median(ordered),
        "latency_min_ms": ordered[0],
        "latency_p90_ms": float(np.percentile(ordered, 90)),
    }


def cap_psnr(result: dict[str, float]) -> dict[str, float]:
    """Every value as a float; only PSNR figures are capped (infinite when outputs are identical)."""
    return {k: (min(float(v), PSNR_IDENTICAL_DB) if k in PSNR_KEYS else float(v)) for k, v in result.items()}


def evaluate_denoiser(
    model,
    device=None,
    execution_providers=None,
    *,
    image_size: int = 256,
    sigma: float = 25 / 255,
    seed: int = 0,
    warmup: int = 3,
    repeat: int = 20,
    reference_model: str | None = None,
) -> dict[str, float]:
    provider = _provider(execution_providers)
    reference_path = Path(reference_model) if reference_model else FP32_MODEL
    clean, noisy = eval_images(image_size, sigma, seed)
    reference = reference_outputs(noisy, reference_path, provider)
    if type(model).__name__ == "PyTorchModelHandler":  # the FP32 baseline of denoise_from_pytorch.json
        runner = TorchRunner(model, provider)
        outputs, accuracy_backend = [runner.run(x) for x in noisy], f"PyTorch float32 on {runner.providers[0]}"
    else:
        runner = BoundRunner(str(model.model_path), provider)
        outputs, accuracy_backend = accuracy_outputs(str(model.model_path), provider, noisy)
    per_image = [
        fidelity(out, ref) | task_quality(out, c) for out, ref, c in zip(outputs, reference, clean, strict=True)
    ]
    times = runner.latency_ms(noisy[0], warmup, repeat)
    result = {
        **latency_figures(times),
        # Worst image for fidelity (the user sees the worst), mean for task quality.
        "max_abs_vs_fp32": max(r["max_abs_vs_fp32"] for r in per_image),
        "mean_abs_vs_fp32": statistics.fmean(r["mean_abs_vs_fp32"] for r in per_image),
        "p999_abs_vs_fp32": max(r["p999_abs_vs_fp32"] for r in per_image),
        "psnr_vs_fp32": min(r["psnr_vs_fp32"] for r in per_image),
        "pixels_changed_pct": max(r["pixels_changed_pct"] for r in per_image),
        "max_8bit_change": max(r["max_8bit_change"] for r in per_image),
        "nonfinite": sum(r["nonfinite"] for r in per_image),
        "psnr_vs_clean": statistics.fmean(r["psnr_vs_clean"] for r in per_image),
        "ssim_vs_clean": statistics.fmean(r["ssim_vs_clean"] for r in per_image),
    }
    result = cap_psnr(result)
    sidecar = {
        "model_path": str(model.model_path),
        "metrics": result,
        "per_image": per_image,
        "latency_ms_all": times,
        "provider_requested": provider,
        "accuracy_backend": accuracy_backend,
        "providers_used": runner.providers,
        "device_label": "GPU (CUDA)" if runner.providers[0] in ("CUDAExecutionProvider", "torch-cuda") else "CPU",
        "image_size": image_size,
        "sigma": sigma,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        # Which interpreter evaluated (a PythonEnvironment target runs this in its own), and whether the
        # olive-fp16 import hook was active there: the evaluator must not need it.
        "python": {
            "executable": sys.executable,
            "import_hook_active": "olive_fp16_pass.olive.import_hook" in sys.modules,
        },
        "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if type(model).__name__ == "PyTorchModelHandler":
        return result
    model_file = Path(model.model_path)
    if model_file.resolve() == reference_path.resolve():  # the input model: its figures are in Olive's footprint
        return result
    model_file.with_suffix(".eval.json").write_text(json.dumps(sidecar, indent=2, default=float, allow_nan=False))
    np.savez(model_file.with_suffix(".eval.npz"), noisy=noisy[0], reference=reference[0], output=outputs[0])
    return result
