"""Train the U-Net denoiser on scikit-image's photos, export it to ONNX and write DATA.md.

Usage (the command that produced the shipped files)::

    python -m olive_fp16_pass.showcase.models.train_denoiser --out olive_fp16_pass/showcase/models

Why it is built this way:

* Real photos, synthetic noise: the photos in ``skimage.data`` ship with the package (no downloads, licences are
  known, see :mod:`olive_fp16_pass.showcase.models.sample_images`); additive Gaussian noise with a random sigma
  in [5, 50]/255 makes one blind denoiser cover a range of noise levels.
* CPU only, one thread, fixed iteration count, one seeded NumPy generator for all sampling: the run is deterministic
  and its cost is bounded (about 20 minutes on one core), so anyone can reproduce the shipped weights.
* Held-out photos (chelsea, coffee) are only touched after training, for the figures in DATA.md; progress during
  training is monitored on fixed crops of the training photos.
* Export with the TorchScript exporter (``dynamo=False``): the dynamo exporter emits opset 18 and cannot down-convert
  ``Pad`` to opset 17, which we want for the widest runtime support. IR version is then set to 10 explicitly.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from olive_fp16_pass.showcase.models.denoiser import DEFAULT_CHANNELS, UNetDenoiser, count_parameters
from olive_fp16_pass.showcase.models.sample_images import (
    EVAL_PHOTOS,
    TRAIN_PHOTOS,
    add_noise,
    center_crop,
    load_eval_images,
    load_photo,
)

OPSET = 17
IR_VERSION = 10
EVAL_SIGMA = 25 / 255
EVAL_NOISE_SEED = 0
SIGMA_RANGE = (5 / 255, 50 / 255)


def sample_batch(
    images: list[np.ndarray], rng: np.random.Generator, batch: int, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random crops with flips, 90-degree rotations and channel permutations, plus Gaussian noise of random sigma.

    All of these augmentations leave the noise model (i.i.d. per pixel and channel) unchanged, so they multiply the
    effective data of a dozen photos without teaching the network anything false. Returns (clean, noisy), NCHW.
    """
    clean = np.empty((batch, 3, crop, crop), dtype=np.float32)
    for i in range(batch):
        img = images[rng.integers(len(images))]
        h, w = img.shape[:2]
        top, left = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        patch = img[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = np.rot90(patch, k=int(rng.integers(4)))
        patch = patch[..., rng.permutation(3)]
        clean[i] = patch.transpose(2, 0, 1)
    sigma = rng.uniform(*SIGMA_RANGE, size=(batch, 1, 1, 1)).astype(np.float32)
    noisy = clean + rng.standard_normal(clean.shape, dtype=np.float32) * sigma
    return clean, noisy


def psnr(clean: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB with data_range=1, via scikit-image (the metric the DATA.md figures use)."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(clean, test, data_range=1.0))


@torch.no_grad()
def denoise(model: UNetDenoiser, noisy: np.ndarray) -> np.ndarray:
    """Run the PyTorch model on one NCHW float32 array."""
    return model(torch.from_numpy(noisy)).numpy()


def monitor_set(images: list[np.ndarray], size: int = 128) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed (clean, noisy) center crops of the first few training photos, to watch progress without peeking at the
    held-out photos."""
    pairs = []
    for i, img in enumerate(images[:4]):
        clean = np.ascontiguousarray(center_crop(img, size).transpose(2, 0, 1)[None])
        pairs.append((clean, add_noise(clean, EVAL_SIGMA, seed=1000 + i)))
    return pairs


def train(args: argparse.Namespace, out_dir: Path) -> tuple[UNetDenoiser, float, list[list[float]]]:
    """Train for ``args.iters`` steps.

    Returns the model (eval mode), the training wall time in seconds, and the loss curve as [step, RMSE*255] pairs
    (one per ``args.log_every`` steps), kept so that DATA.md can report transient loss spikes honestly.
    """
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = [load_photo(p.name) for p in TRAIN_PHOTOS]
    monitor = monitor_set(images)
    model = UNetDenoiser(channels=tuple(args.channels))
    print(f"parameters: {count_parameters(model):,}", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Short linear warm-up, then cosine decay to 1% of the peak rate: stable start without batch norm, and the low
    # final rate is what squeezes out the last few tenths of a dB.
    warmup = max(1, args.iters // 50)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, args.iters - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start = time.perf_counter()
    running = 0.0
    history: list[list[float]] = []
    for step in range(args.iters):
        model.train()
        clean, noisy = sample_batch(images, rng, args.batch, args.crop)
        clean_t, noisy_t = torch.from_numpy(clean), torch.from_numpy(noisy)
        loss = F.mse_loss(model(noisy_t), clean_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        done = step + 1
        if done % args.log_every == 0 or done == args.iters:
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (args.iters - done)
            rmse = math.sqrt(running / args.log_every) * 255
            running = 0.0
            history.append([done, round(rmse, 3)])
            msg = f"step {done}/{args.iters} rmse*255 {rmse:.2f} lr {sched.get_last_lr()[0]:.2e} "
            msg += f"elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min"
            if done % (args.log_every * 10) == 0 or done == args.iters:
                model.eval()
                gain = np.mean([psnr(c, denoise(model, n)) - psnr(c, n) for c, n in monitor])
                msg += f" | train-crop PSNR gain {gain:+.2f} dB"
                torch.save(model.state_dict(), out_dir / "denoiser.pt")
            print(msg, flush=True)
    train_s = time.perf_counter() - start
    model.eval()
    torch.save(model.state_dict(), out_dir / "denoiser.pt")
    return model, train_s, history


def export_onnx(model: UNetDenoiser, path: Path) -> None:
    """Export FP32 ONNX (opset 17, IR 10) with dynamic batch/height/width, as one self-contained file."""
    import onnx

    dyn = {0: "batch", 2: "height", 3: "width"}
    example = torch.rand(1, 3, 64, 64)
    # The legacy exporter warns that it is deprecated; it is chosen on purpose (see the module docstring).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["noisy"],
            output_names=["denoised"],
            opset_version=OPSET,
            dynamic_axes={"noisy": dyn, "denoised": dyn},
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    proto.ir_version = IR_VERSION
    proto.producer_name = "olive_fp16_pass.showcase.models.train_denoiser"
    proto.doc_string = "U-Net denoiser: noisy RGB [0,1] NCHW -> denoised; see olive_fp16_pass/showcase/models/DATA.md"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def verify_onnx(model: UNetDenoiser, path: Path) -> dict:
    """Check the ONNX file against PyTorch on held-out and odd-sized inputs; returns graph facts for DATA.md."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = {}
    noisy = add_noise(load_eval_images(256)[0], EVAL_SIGMA, EVAL_NOISE_SEED)
    rng = np.random.default_rng(0)
    cases = {"1x3x256x256 (held-out, noisy)": noisy}
    for shape in [(2, 3, 37, 53), (1, 3, 1, 1), (1, 3, 300, 451)]:
        cases["x".join(map(str, shape))] = rng.random(shape, dtype=np.float32)
    for name, x in cases.items():
        got = sess.run(["denoised"], {"noisy": x})[0]
        want = denoise(model, x)
        if got.shape != x.shape:
            raise AssertionError(f"{name}: ONNX output shape {got.shape} != input shape {x.shape}")
        diffs[name] = float(np.abs(got - want).max())
    if diffs["1x3x256x256 (held-out, noisy)"] >= 1e-4:
        raise AssertionError(f"ONNX vs PyTorch max abs diff too large: {diffs}")
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    return {
        "max_abs_diff": diffs,
        "nodes": len(proto.graph.node),
        "op_types": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": proto.ir_version,
        "bytes": path.stat().st_size,
    }


def evaluate(model: UNetDenoiser, onnx_path: Path) -> list[dict]:
    """PSNR on the held-out photos at sigma 25/255 (noise seed 0): 256x256 center crops and full photos."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = []
    for size in (256, None):
        for photo, clean in zip(EVAL_PHOTOS, load_eval_images(size), strict=True):
            noisy = add_noise(clean, EVAL_SIGMA, EVAL_NOISE_SEED)
            out_pt = denoise(model, noisy)
            out_ort = sess.run(["denoised"], {"noisy": noisy})[0]
            rows.append(
                {
                    "photo": photo.name,
                    "crop": "256x256 center" if size else f"full {clean.shape[2]}x{clean.shape[3]}",
                    "noisy": psnr(clean, noisy),
                    "denoised_torch": psnr(clean, out_pt),
                    "denoised_onnx": psnr(clean, out_ort),
                    "denoised_onnx_clipped": psnr(clean, np.clip(out_ort, 0, 1)),
                }
            )
    for r in rows:
        print(
            f"{r['photo']:8s} {r['crop']:15s} noisy {r['noisy']:.2f} dB -> denoised {r['denoised_onnx']:.2f} dB "
            f"(torch {r['denoised_torch']:.2f}, clipped {r['denoised_onnx_clipped']:.2f}) "
            f"gain {r['denoised_onnx'] - r['noisy']:+.2f} dB",
            flush=True,
        )
    return rows


def describe_loss_curve(history: list[list[float]]) -> list[str]:
    """DATA.md bullet(s) on the training loss: the final value and any transient spike (a window whose RMSE is more
    than twice the median of the five windows before it), so a reader of the figures knows the run was not smooth."""
    if not history:
        return []
    window = int(history[0][0])  # the first entry is logged after one window
    lines = [f"* Training loss (RMSE x 255, mean over the last {window} steps, all sigmas): {history[-1][1]:.2f}."]
    spikes = []
    for i in range(5, len(history)):
        before = float(np.median([r for _, r in history[i - 5 : i]]))
        if history[i][1] > 2 * before:
            spikes.append(f"step {int(history[i][0])} ({history[i][1]:.1f} vs {before:.1f} before)")
    if spikes:
        lines.append(
            "* Transient loss spikes (Adam without batch norm; the run recovered and the cosine decay continued): "
            + ", ".join(spikes)
            + "."
        )
    return lines


def write_data_md(path: Path, facts: dict) -> None:
    """Write DATA.md: data sources and licences, the exact command, and the measured figures."""
    g = facts["onnx"]
    rows = facts["eval"]
    lines = [
        "# Denoiser model: data, licences and figures",
        "",
        "Generated by `olive_fp16_pass/showcase/models/train_denoiser.py`; rerunning the command below regenerates "
        "this file,",
        "`denoiser.pt` and `denoiser.onnx`.",
        "",
        "## Files",
        "",
        "| File | What |",
        "| --- | --- |",
        "| `denoiser.py` | `UNetDenoiser` (PyTorch) and `load_pytorch_model(path=None)` (an Olive `model_loader`) |",
        "| `denoiser.pt` | trained weights, plain `state_dict` (load with `torch.load(..., weights_only=True)`) |",
        f"| `denoiser.onnx` | FP32 ONNX, opset {g['opset']}, IR version {g['ir_version']}, one file, "
        f"{g['bytes'] / 1e6:.2f} MB |",
        "| `sample_images.py` | `load_eval_images(size=256)`, `add_noise(img, sigma=25/255, seed=0)`, photo registry |",
        "| `train_denoiser.py` | training, export, verification, evaluation (this file's generator) |",
        "| `denoiser_train.json` | settings, wall time and loss curve of the run that made `denoiser.pt` |",
        "",
        'Olive: a PyTorch model is `{"type": "PyTorchModel", '
        '"model_script": "olive_fp16_pass/showcase/models/denoiser.py",',
        '"model_loader": "load_pytorch_model", "model_path": "olive_fp16_pass/showcase/models/denoiser.pt"}` plus an',
        "`io_config` with input `noisy` and output `denoised` (checked with olive-ai's",
        "`PyTorchModelHandler.load_model`); the ONNX file is an `ONNXModel` as it is.",
        "",
        "## Model",
        "",
        f"* Residual U-Net, encoder widths {'/'.join(map(str, facts['channels']))}: four levels of two 3x3 conv +",
        "  LeakyReLU(0.1), 2x2 max-pool after each level, bottleneck (same width as the last level) at 1/16",
        "  resolution, 2x2 stride-2 ConvTranspose upsampling, skip connections by concat, 1x1 conv head predicting",
        "  the noise; output = `noisy - noise` (not clamped). No batch norm.",
        f"* Parameters: {facts['parameters']:,}. ONNX size: {g['bytes']:,} bytes.",
        "* Input `noisy`: float32 `[batch, 3, height, width]`, RGB in [0, 1], all three of batch/height/width dynamic;",
        "  any height and width work (padded inside the graph to a multiple of 16 with edge replication, then",
        "  cropped back). Output `denoised`: same shape.",
        f"* ONNX graph: {g['nodes']} nodes; op types: " + ", ".join(f"{k} {v}" for k, v in g["op_types"].items()) + ".",
        "* ONNX vs PyTorch max abs difference (onnxruntime CPU): "
        + "; ".join(f"{k}: {v:.2e}" for k, v in g["max_abs_diff"].items())
        + ".",
        "",
        "## Held-out evaluation",
        "",
        f"Gaussian noise sigma = 25/255, `add_noise(..., seed={EVAL_NOISE_SEED})`, noisy input not clipped.",
        "PSNR via `skimage.metrics.peak_signal_noise_ratio(clean, x, data_range=1)`; `denoised` is the raw ONNX",
        "output (onnxruntime CPU), `clipped` is the same clipped to [0, 1]. These photos were never trained on.",
        "",
        "| Photo | Region | Noisy PSNR (dB) | Denoised PSNR (dB) | Gain (dB) | Clipped (dB) | PyTorch (dB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['photo']} | {r['crop']} | {r['noisy']:.2f} | {r['denoised_onnx']:.2f} | "
            f"{r['denoised_onnx'] - r['noisy']:+.2f} | {r['denoised_onnx_clipped']:.2f} | {r['denoised_torch']:.2f} |"
        )
    crops = [r for r in rows if r["crop"].startswith("256")]
    mean_noisy = np.mean([r["noisy"] for r in crops])
    mean_den = np.mean([r["denoised_onnx"] for r in crops])
    lines += [
        "",
        f"Mean over the 256x256 crops: noisy {mean_noisy:.2f} dB -> denoised {mean_den:.2f} dB "
        f"({mean_den - mean_noisy:+.2f} dB).",
        "",
        "## Training",
        "",
        "Reproduce (CPU, one thread, deterministic for a given machine and PyTorch build):",
        "",
        "```",
        facts["command"],
        "```",
        "",
        f"* {facts['iters']} Adam steps, batch {facts['batch']}, random {facts['crop']}x{facts['crop']} crops,",
        f"  peak lr {facts['lr']:g} (linear warm-up, cosine decay to 1%), MSE loss, grad-norm clip 1.0,",
        f"  seed {facts['seed']}.",
        "* Augmentation: horizontal flip, rotation by multiples of 90 degrees, RGB channel permutation.",
        "* Noise: additive Gaussian, sigma uniform in [5, 50]/255 per crop, not clipped.",
        f"* Training wall time: {facts['train_s'] / 60:.1f} min on {facts['machine']} "
        f"(torch {facts['torch']}, `torch.set_num_threads(1)`).",
        *describe_loss_curve(facts["history"]),
        "",
        "## Photos and licences",
        "",
        f"All photos ship inside the scikit-image wheel (`skimage/data/`, scikit-image {facts['skimage']});",
        "nothing is downloaded. Sources and licences are quoted from the docstrings of the `skimage.data`",
        "functions. Grayscale photos are replicated to three channels.",
        "",
        "| Split | `skimage.data` | Size | Source | Licence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for split, photos in (("held out", EVAL_PHOTOS), ("train", TRAIN_PHOTOS)):
        for p in photos:
            shape = facts["photo_shapes"][p.name]
            size = f"{shape[0]}x{shape[1]}" + (" gray" if p.grayscale else "")
            lines.append(f"| {split} | `{p.name}` | {size} | {p.source} | {p.licence} |")
    lines += [
        "",
        "Not used: `moon` (no licence stated), `cell`, `page`, `text`, `clock` (not natural photos, or",
        "motion-blurred), `stereo_motorcycle` (Middlebury benchmark, licence not stated in the docstring), `cat`",
        "(the same image as `chelsea`, which is held out).",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="output directory")
    parser.add_argument("--iters", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs=4, default=list(DEFAULT_CHANNELS))
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--skip-train", action="store_true", help="reuse OUT/denoiser.pt: only export, verify, evaluate"
    )
    args = parser.parse_args(argv)

    # One thread: the run is meant to be cheap, reproducible, and polite on shared machines.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    pt_path, onnx_path = args.out / "denoiser.pt", args.out / "denoiser.onnx"

    if args.skip_train:
        from olive_fp16_pass.showcase.models.denoiser import load_pytorch_model

        model = load_pytorch_model(pt_path)
        # The figures in DATA.md must describe the run that produced the weights, not this command line.
        meta = json.loads((args.out / "denoiser_train.json").read_text())
        train_s = meta.pop("train_s")
        history = meta.pop("history", [])
        for key, value in meta.items():
            setattr(args, key, value)
    else:
        model, train_s, history = train(args, args.out)
        meta = {k: getattr(args, k) for k in ("iters", "batch", "crop", "lr", "seed", "channels")}
        meta |= {"train_s": train_s, "history": history}
        (args.out / "denoiser_train.json").write_text(json.dumps(meta) + "\n")
    print(f"training time {train_s / 60:.1f} min", flush=True)

    export_onnx(model, onnx_path)
    graph = verify_onnx(model, onnx_path)
    print(f"ONNX: {graph['bytes']:,} bytes, {graph['nodes']} nodes, ops {graph['op_types']}", flush=True)
    print(f"ONNX vs torch max abs diff: {graph['max_abs_diff']}", flush=True)
    rows = evaluate(model, onnx_path)

    import skimage

    cmd = "python -m olive_fp16_pass.showcase.models.train_denoiser --out olive_fp16_pass/showcase/models"
    defaults = {"iters": 4000, "batch": 16, "crop": 64, "lr": 1e-3, "seed": 0}
    for k, v in defaults.items():
        if getattr(args, k) != v:
            cmd += f" --{k} {getattr(args, k)}"
    if list(args.channels) != list(DEFAULT_CHANNELS):
        cmd += " --channels " + " ".join(map(str, args.channels))
    facts = {
        "onnx": graph,
        "eval": rows,
        "channels": list(model.channels),
        "parameters": count_parameters(model),
        "command": cmd,
        "iters": args.iters,
        "batch": args.batch,
        "crop": args.crop,
        "lr": args.lr,
        "seed": args.seed,
        "train_s": train_s,
        "history": history,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores visible",
        "torch": torch.__version__,
        "skimage": skimage.__version__,
        "photo_shapes": {p.name: load_photo(p.name).shape for p in (*EVAL_PHOTOS, *TRAIN_PHOTOS)},
    }
    write_data_md(args.out / "DATA.md", facts)
    print(f"wrote {onnx_path}, {args.out / 'DATA.md'}" + ("" if args.skip_train else f", {pt_path}"), flush=True)


if __name__ == "__main__":
    main()
