"""GPU latency of FP32 vs our FP16 vs our AMP vs Olive's OnnxFloatToFloat16, side by side in one run.

CUDA execution provider, I/O binding (inputs and outputs stay on the device), warm-up, then the median and
spread of N runs; FP32 twice (TF32 allowed, TF32 off); peak GPU memory of each session (its own process, read
with nvidia-smi after the runs: ORT's arena keeps its peak). Every row records the providers the session
really used. With no usable GPU it says so and exits 2; `--cpu` measures the CPU on purpose, labelled CPU.

    python bench/latency.py --out bench/results            # GPU
    python bench/latency.py --cpu --small --out /tmp/lat    # dry run on a CPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/latency.py`: this checkout's package and `bench`
    sys.path.insert(0, str(REPO))

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _gpu_info() -> dict:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        name, driver, memory = [x.strip() for x in out.splitlines()[0].split(",")]
        return {"name": name, "driver": driver, "memory_total": memory}
    except Exception as exc:  # no nvidia-smi: reported, not fatal (CPU runs)
        return {"error": str(exc)}


def _process_gpu_memory_mib(pid: int) -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except Exception:
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return None


def measure(
    model_path: str, provider: str, shape: list[int], input_name: str, warmup: int, runs: int, tf32: bool
) -> dict:
    """Runs in a child process (one session per process, so its GPU memory is its own)."""
    import onnxruntime as ort

    if provider == CUDA and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = [(CUDA, {"use_tf32": int(tf32)})] if provider == CUDA else [CPU]
    session = ort.InferenceSession(model_path, options, providers=providers)
    used = session.get_providers()
    result = {"providers_used": used}
    if used[0] != provider:
        result["error"] = f"session fell back to {used[0]}: not reported"
        return result
    arg = session.get_inputs()[0]
    dtype = np.float16 if arg.type == "tensor(float16)" else np.float32
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(dtype)
    device = "cuda" if provider == CUDA else "cpu"
    value = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, value)
    binding.bind_output(session.get_outputs()[0].name, device)
    for _ in range(warmup):
        session.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    result.update(
        median_ms=statistics.median(times),
        p10_ms=times[len(times) // 10],
        p90_ms=times[(len(times) * 9) // 10],
        runs=runs,
        gpu_memory_mib=_process_gpu_memory_mib(os.getpid()) if provider == CUDA else None,
    )
    return result


def _child(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    print("RESULT " + json.dumps(measure(**spec)))


def _run_child(spec: dict, timeout: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    return json.loads(lines[-1][7:])


def _variants(model: onnx.ModelProto, name: str, work: Path, provider: str, amp_data) -> dict[str, Path]:
    """FP32, our FP16, our AMP, Olive's OnnxFloatToFloat16 (via Olive's own pass) as files."""
    import olive_fp16_pass as fp16

    paths = {}
    fp32 = work / f"{name}_fp32.onnx"
    onnx.save(model, fp32)
    paths["fp32"] = fp32
    ours = fp16.convert_float16(model)
    paths["ours_fp16"] = ours.save(work / f"{name}_ours_fp16.onnx")
    amp = fp16.auto_mixed_precision(
        model, amp_data, rtol=None, atol=None, min_cosine=0.999, provider=provider, progress=False
    )
    paths["ours_amp"] = amp.save(work / f"{name}_ours_amp.onnx")
    paths["amp_fp32_nodes"] = len(amp.report.fp32_nodes)  # type: ignore[assignment]
    paths["amp_backend"] = amp.report.search["backend"]["mode"]  # type: ignore[assignment]
    from olive.model import ONNXModelHandler
    from olive.passes.olive_pass import create_pass_from_dict
    from olive.passes.onnx.float16_conversion import OnnxFloatToFloat16

    olive_pass = create_pass_from_dict(OnnxFloatToFloat16, {}, disable_search=True)
    out = olive_pass.run(ONNXModelHandler(model_path=str(fp32)), str(work / f"{name}_olive_fp16.onnx"))
    paths["olive_OnnxFloatToFloat16"] = Path(out.model_path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="measure the CPU on purpose (labelled CPU)")
    parser.add_argument("--small", action="store_true", help="small shapes/models (dry run)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return 0

    from olive_fp16_pass.doctor import cuda_problem

    provider = CPU if args.cpu else CUDA
    if not args.cpu:
        problem = cuda_problem()  # the same check and sentence as `olive-fp16 doctor` and the workflow guard
        if problem is not None:
            print(
                f"latency.py: no usable GPU here: {problem}\nNot printing CPU numbers as GPU numbers; "
                "use --cpu to measure the CPU on purpose.",
                file=sys.stderr,
            )
            return 2
    import onnxruntime as ort

    from bench.transformer_model import build_encoder

    denoiser = onnx.load(REPO / "olive_fp16_pass/showcase/models/denoiser.onnx")
    rng = np.random.default_rng(0)
    if args.small:
        cases = [
            ("denoiser_128", denoiser, [1, 3, 128, 128], "noisy"),
            ("encoder_tiny", build_encoder(layers=2, hidden=64, heads=4, ffn=128, seq=32), [1, 32, 64], "hidden_in"),
        ]
    else:
        encoder = build_encoder()
        cases = [
            ("denoiser_512x512", denoiser, [1, 3, 512, 512], "noisy"),
            ("denoiser_1920x1080", denoiser, [1, 3, 1080, 1920], "noisy"),
            ("bert_base_seq128", encoder, [1, 128, 768], "hidden_in"),
        ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, model, shape, input_name in cases:
            amp_shape = list(shape)
            if input_name == "noisy":
                amp_shape[2:] = [min(256, amp_shape[2]), min(256, amp_shape[3])]
            amp_data = [{input_name: rng.uniform(0, 1, amp_shape).astype(np.float32)} for _ in range(6)]
            variants = _variants(model, name, work, provider, amp_data)
            specs = [("fp32 (TF32 on)", variants["fp32"], True), ("fp32 (TF32 off)", variants["fp32"], False)]
            specs += [(label, variants[label], True) for label in ("ours_fp16", "ours_amp", "olive_OnnxFloatToFloat16")]
            results = {}
            for label, path, tf32 in specs:
                if provider == CPU and label == "fp32 (TF32 off)":
                    continue
                spec = {
                    "model_path": str(path),
                    "provider": provider,
                    "shape": shape,
                    "input_name": input_name,
                    "warmup": args.warmup,
                    "runs": args.runs,
                    "tf32": tf32,
                }
                results[label] = _run_child(spec, args.timeout)
                print(f"{name:22s} {label:26s} {json.dumps(results[label])[:160]}", flush=True)
            base_on = results.get("fp32 (TF32 on)", {}).get("median_ms")
            base_off = results.get("fp32 (TF32 off)", {}).get("median_ms")
            for r in results.values():
                if "median_ms" in r:
                    r["speedup_vs_fp32_tf32"] = base_on / r["median_ms"] if base_on else None
                    r["speedup_vs_fp32_strict"] = base_off / r["median_ms"] if base_off else None
            rows.append(
                {
                    "model": name,
                    "shape": shape,
                    "amp_fp32_nodes": variants["amp_fp32_nodes"],
                    "amp_validation": variants["amp_backend"],
                    "results": results,
                }
            )
    label = "CPU" if args.cpu else "GPU"
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device_label": label,
        "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "gpu": _gpu_info()},
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__},
        "rows": rows,
    }
    print(f"\n{label} latency, median ms (p10-p90), speed-up vs FP32 TF32-on / TF32-off, GPU memory MiB")
    for row in rows:
        for name, r in row["results"].items():
            if "median_ms" not in r:
                print(f"{row['model']:22s} {name:26s} {r.get('error', '?')[:80]}")
                continue
            s_on = r.get("speedup_vs_fp32_tf32")
            s_off = r.get("speedup_vs_fp32_strict")
            print(
                f"{row['model']:22s} {name:26s} {r['median_ms']:9.3f} ({r['p10_ms']:.3f}-{r['p90_ms']:.3f})  "
                f"x{s_on or 0:.2f} / x{s_off or 0:.2f}  mem {r.get('gpu_memory_mib')}  {r['providers_used'][0]}"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y-%m-%d')}-latency-{label.lower()}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
