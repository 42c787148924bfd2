"""Models and input feeds for the mixed-precision search benchmark (`bench/amp_speed.py`).

Why these models: the cost of an accuracy-driven mixed-precision search grows with the number of nodes and with
the number of nodes that truly need float32, so the benchmark needs graphs of a few hundred and a few thousand
nodes in which *most* nodes are fine in float16 and *a few* are not, for reasons that occur in real models:

- an activation beyond float16's range (65504): one MLP block has its output weight scaled up so that its
  MatMul reaches ~1e5, and a LayerScale Mul (a per-channel scale, as in CaiT/DINOv2) scales it back down; in
  float16 the MatMul output is inf and the whole model's output NaN. The large tensors each have one consumer:
  onnxconverter-common's converter round-trips a tensor with several consumers through float16 even when all of
  them are blocked (version 1.16 removes only 1:1 Cast pairs), so an overflow feeding e.g. a decomposed
  LayerNorm cannot be fixed by its search; `enc300ln` is that case (fc2's output flows, unscaled, into the
  residual Add and the LayerNorm), kept as a separate row so the main rows measure the searches, not that;
- catastrophic cancellation: ``x + 2048 - 2048`` (a shift into a large offset and back, as in some quantization
  or position tricks) rounds ``x`` to a multiple of 2 when the sum is stored in float16.

The graphs are transformer-encoder-like (post-LN, one attention head, width 32, sequence 16, LayerNorm written
out as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add and GELU as Erf, as PyTorch exports them before the
fused ops), built with `onnx.helper` from a fixed seed so both tools convert the very same bytes. The real shipped
denoiser (`olive_fp16_pass/showcase/models/denoiser.onnx`, a U-Net of 114 nodes) is a small real-model row.

Node names hold no regular-expression metacharacters, so they are exact names for onnxconverter-common and
full-match patterns for `olive_fp16_pass`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parent.parent
DENOISER_PATH = REPO_ROOT / "olive_fp16_pass" / "showcase" / "models" / "denoiser.onnx"
OPSET = 17
IR_VERSION = 10  # onnx 1.23 writes IR 14 by default; onnxruntime 1.2x-1.3x loads at most IR 13
WIDTH = 32
SEQUENCE = 16
NODES_PER_BLOCK = 42
OVERFLOW_PEAK = 1e5  # |max| the overflow block's MatMul reaches on typical inputs: > 65504, float16's max
CANCEL_OFFSET = 2048.0  # float16 spacing at 2048 is 2: x + 2048 - 2048 keeps x only to a multiple of 2
N_FEEDS = 8
# Residual branches (attention output, fc2) start at half the variance-preserving scale, as scaled-init
# transformers do (GPT-2: 1/sqrt(2·layers)): keeps the float16 rounding error of a 36-layer stack well
# inside the tolerance, so that only the injected spots truly need float32.
BRANCH_SCALE = 0.5
N_HOLDOUT = 2
REAL_DIR = REPO_ROOT / "tests" / "data" / "real"  # the CI's exported models, with their feeds (3 each)
REAL_KEYS = ("gpt2_past_tiny", "bert_tiny_dynamo", "mobilenet_v3_small_w05")
MODEL_KEYS = ("enc300", "enc1500", "denoiser", "enc300ln", *REAL_KEYS)


@dataclass(frozen=True)
class BenchModel:
    """One benchmark model: the FP32 proto, its feeds (validation first, held-out last) and what was injected."""

    key: str
    description: str
    model: onnx.ModelProto
    feeds: list[dict[str, np.ndarray]]
    n_holdout: int
    injected: dict[str, list[str]]  # spot -> node names that truly need float32 there
    targets: bool = True  # the 10x targets apply (a few hundred nodes or more)

    @property
    def validation(self) -> list[dict[str, np.ndarray]]:
        return self.feeds[: len(self.feeds) - self.n_holdout]

    @property
    def holdout(self) -> list[dict[str, np.ndarray]]:
        return self.feeds[len(self.feeds) - self.n_holdout :]


class _Builder:
    """Collects nodes and initializers with unique, PyTorch-export-like names (`/layers_3/mlp/fc2/MatMul`)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def const(self, name: str, array: np.ndarray) -> str:
        assert name not in self.names, name
        self.names.add(name)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op_type: str, name: str, inputs: list[str], **attrs: object) -> str:
        assert name not in self.names, name
        self.names.add(name)
        output = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def linear(self, prefix: str, wprefix: str, x: str, scale: float = 1.0) -> str:
        """MatMul + bias Add (2 nodes); `scale` multiplies the weight (1 = variance-preserving init)."""
        w = self.weight(f"{wprefix}.weight", (WIDTH, WIDTH), scale / math.sqrt(WIDTH))
        y = self.node("MatMul", f"{prefix}/MatMul", [x, w])
        return self.node("Add", f"{prefix}/Add", [y, self.weight(f"{wprefix}.bias", (WIDTH,), 0.02)])

    def layer_norm(self, prefix: str, wprefix: str, x: str) -> str:
        """LayerNorm as exported without the fused op (9 nodes)."""
        mean = self.node("ReduceMean", f"{prefix}/ReduceMean", [x], axes=[-1], keepdims=1)
        d = self.node("Sub", f"{prefix}/Sub", [x, mean])
        sq = self.node("Pow", f"{prefix}/Pow", [d, self.const(f"{wprefix}.two", np.array(2.0, np.float32))])
        var = self.node("ReduceMean", f"{prefix}/ReduceMean_1", [sq], axes=[-1], keepdims=1)
        var = self.node("Add", f"{prefix}/Add", [var, self.const(f"{wprefix}.eps", np.array(1e-5, np.float32))])
        std = self.node("Sqrt", f"{prefix}/Sqrt", [var])
        n = self.node("Div", f"{prefix}/Div", [d, std])
        gamma = (1 + 0.05 * self.rng.standard_normal(WIDTH)).astype(np.float32)
        n = self.node("Mul", f"{prefix}/Mul", [n, self.const(f"{wprefix}.gamma", gamma)])
        return self.node("Add", f"{prefix}/Add_1", [n, self.weight(f"{wprefix}.beta", (WIDTH,), 0.02)])


def _block(b: _Builder, index: int, h: str, *, overflow: str | None, cancel: bool) -> tuple[str, dict[str, list[str]]]:
    """One post-LN encoder layer (42 nodes; +2 for the cancellation spot, +1 for a layer_scale overflow spot).

    `overflow`: None, "layer_scale" (fc2 -> LayerScale Mul, single-consumer tensors) or "layernorm" (fc2's
    ~1e5 output flows into the residual Add and the decomposed LayerNorm, whose tensors have two consumers).
    """
    p, w = f"/layers_{index}", f"layers_{index}"
    first = len(b.nodes)
    q = b.linear(f"{p}/attn/q", f"{w}.attn.q", h)
    k = b.linear(f"{p}/attn/k", f"{w}.attn.k", h)
    v = b.linear(f"{p}/attn/v", f"{w}.attn.v", h)
    kt = b.node("Transpose", f"{p}/attn/Transpose", [k], perm=[0, 2, 1])
    s = b.node("MatMul", f"{p}/attn/MatMul", [q, kt])
    s = b.node("Mul", f"{p}/attn/Mul", [s, b.const(f"{w}.attn.scale", np.array(1 / math.sqrt(WIDTH), np.float32))])
    a = b.node("Softmax", f"{p}/attn/Softmax", [s], axis=-1)
    a = b.node("MatMul", f"{p}/attn/MatMul_1", [a, v])
    a = b.linear(f"{p}/attn/o", f"{w}.attn.o", a, scale=BRANCH_SCALE)
    injected: dict[str, list[str]] = {}
    if cancel:
        offset = b.const(f"{w}.attn.offset", np.array(CANCEL_OFFSET, np.float32))
        a = b.node("Add", f"{p}/attn/shift/Add", [a, offset])
        a = b.node("Sub", f"{p}/attn/shift/Sub", [a, offset])
        injected["cancellation"] = [f"{p}/attn/shift/Add", f"{p}/attn/shift/Sub"]
    h = b.node("Add", f"{p}/attn/residual/Add", [h, a])
    h = b.layer_norm(f"{p}/ln_1", f"{w}.ln_1", h)
    g = b.linear(f"{p}/mlp/fc1", f"{w}.mlp.fc1", h)
    # GELU as PyTorch exports it before opset 20: x * (1 + erf(x / sqrt(2))) * 0.5.
    e = b.node("Div", f"{p}/mlp/act/Div", [g, b.const(f"{w}.mlp.sqrt2", np.array(math.sqrt(2), np.float32))])
    e = b.node("Erf", f"{p}/mlp/act/Erf", [e])
    e = b.node("Add", f"{p}/mlp/act/Add", [e, b.const(f"{w}.mlp.one", np.array(1, np.float32))])
    g = b.node("Mul", f"{p}/mlp/act/Mul", [g, e])
    g = b.node("Mul", f"{p}/mlp/act/Mul_1", [g, b.const(f"{w}.mlp.half", np.array(0.5, np.float32))])
    if overflow == "layer_scale":
        # fc2's weight is scaled up so its output reaches ~OVERFLOW_PEAK, and a LayerScale Mul scales it back
        # to the other layers' level: fine in float32, inf in float16 for fc2's MatMul, its bias Add and the Mul.
        g = b.linear(f"{p}/mlp/fc2", f"{w}.mlp.fc2", g, scale=OVERFLOW_PEAK)
        gamma = np.full(WIDTH, BRANCH_SCALE / OVERFLOW_PEAK, np.float32)
        g = b.node("Mul", f"{p}/mlp/layer_scale/Mul", [g, b.const(f"{w}.mlp.layer_scale", gamma)])
        injected["overflow"] = [f"{p}/mlp/fc2/MatMul", f"{p}/mlp/fc2/Add", f"{p}/mlp/layer_scale/Mul"]
    else:
        # "layernorm": fc2, its bias, the residual, and the LayerNorm up to its Div exceed 65504 (Pow: ~1e10).
        g = b.linear(f"{p}/mlp/fc2", f"{w}.mlp.fc2", g, scale=OVERFLOW_PEAK if overflow else BRANCH_SCALE)
    h = b.node("Add", f"{p}/mlp/residual/Add", [h, g])
    h = b.layer_norm(f"{p}/ln_2", f"{w}.ln_2", h)
    if overflow == "layernorm":
        names = [n.name for n in b.nodes[first:]]
        injected["overflow"] = names[names.index(f"{p}/mlp/fc2/MatMul") : names.index(f"{p}/ln_2/Div") + 1]
    assert len(b.nodes) - first == NODES_PER_BLOCK + 2 * cancel + (overflow == "layer_scale")
    return h, injected


def encoder(
    n_layers: int, *, overflow: str = "layer_scale", seed: int = 0
) -> tuple[onnx.ModelProto, dict[str, list[str]]]:
    """An FP32 encoder of `n_layers` layers (42 nodes each, +3 for the two spots, +1 output node).

    The overflow spot is in layer n_layers // 2, the cancellation spot in layer n_layers // 3 (so neither sits
    at a boundary of the node list, where a bisection would find it trivially).
    """
    if n_layers < 3:
        raise ValueError(f"n_layers must be >= 3 (room for both spots), got {n_layers}")
    b = _Builder(np.random.default_rng(seed))
    h = "x"
    injected: dict[str, list[str]] = {}
    for index in range(n_layers):
        spot = overflow if index == n_layers // 2 else None
        h, spots = _block(b, index, h, overflow=spot, cancel=index == n_layers // 3)
        injected.update(spots)
    b.nodes.append(helper.make_node("Identity", [h], ["y"], name="/output/Identity"))
    graph = helper.make_graph(
        b.nodes,
        f"encoder_{n_layers}_layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQUENCE, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQUENCE, WIDTH])],
        b.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="olive_fp16_pass.bench.amp_models",
    )
    onnx.checker.check_model(model, full_check=True)
    return model, injected


def encoder_feeds(n: int = N_FEEDS, *, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Token-embedding-like inputs: standard normal activations, fixed seed."""
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, SEQUENCE, WIDTH)).astype(np.float32)} for _ in range(n)]


def denoiser_feeds(n: int = N_FEEDS, *, size: int = 64, seed: int = 2) -> list[dict[str, np.ndarray]]:
    """Noisy 64x64 RGB images in [0, 1]: smooth random 'photos' (low-frequency content plus edges) with noise.

    Why synthetic: scikit-image (whose sample photos the denoiser was trained on) is not a dependency of this
    package; a smooth image with a few sharp edges plus Gaussian noise (sigma 25/255, as in training) exercises
    the same range of activations.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    feeds = []
    for _ in range(n):
        channels = []
        for _ in range(3):
            c = np.zeros((size, size), np.float32)
            for _ in range(4):  # a few low-frequency waves
                fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
                c += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
            edge = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) > rng.uniform(-0.5, 0.5)
            c += 0.3 * edge + rng.uniform(0.2, 0.5)
            channels.append(c)
        clean = np.clip(np.stack(channels), 0, 1)
        noisy = np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
        feeds.append({"noisy": noisy[None]})
    return feeds


def build_all(keys: list[str] | None = None) -> list[BenchModel]:
    """The benchmark's models, in table order: (a) ~300 nodes, (b) ~1,500 nodes, (c) the real denoiser, and
    (d) `enc300ln`, (a) with the overflow flowing into a LayerNorm (see the module docstring)."""
    out = []
    wanted = keys or list(MODEL_KEYS)
    for key in wanted:
        if key == "enc300":
            model, injected = encoder(7)
            desc = "transformer-encoder-like, 7 layers, width 32, seq 16; overflow + cancellation spots"
            out.append(BenchModel(key, desc, model, encoder_feeds(), N_HOLDOUT, injected))
        elif key == "enc1500":
            model, injected = encoder(36)
            desc = "transformer-encoder-like, 36 layers, width 32, seq 16; overflow + cancellation spots"
            out.append(BenchModel(key, desc, model, encoder_feeds(), N_HOLDOUT, injected))
        elif key == "enc300ln":
            model, injected = encoder(7, overflow="layernorm")
            desc = (
                "as enc300, but fc2's ~1e5 output flows into the residual Add and the decomposed LayerNorm "
                "(tensors with two consumers)"
            )
            out.append(BenchModel(key, desc, model, encoder_feeds(), N_HOLDOUT, injected))
        elif key == "denoiser":
            model = onnx.load(str(DENOISER_PATH))
            desc = (
                "shipped U-Net denoiser (olive_fp16_pass/showcase/models/denoiser.onnx), "
                "1x3x64x64 synthetic noisy images"
            )
            out.append(BenchModel(key, desc, model, denoiser_feeds(), N_HOLDOUT, {}, targets=False))
        elif key in REAL_KEYS:
            out.append(real_model(key))
        else:
            raise ValueError(f"unknown model key {key!r}")
    return out


def real_model(name: str) -> BenchModel:
    """One of tests/data/real's exported models (random weights, fixed seed; see bench/real_models.py), its
    weights loaded in memory, with its 3 stored feeds: 2 validate, 1 is held out."""
    import json

    info = json.loads((REAL_DIR / "manifest.json").read_text())["models"][name]
    model = onnx.load(str(REAL_DIR / f"{name}.onnx"))  # external data read in: saved inline by the benchmark
    with np.load(REAL_DIR / f"{name}.feeds.npz") as stored:
        feeds = [{k: stored[f"{k}__{i}"] for k in info["inputs"]} for i in range(info["feeds"])]
    desc = f"tests/data/real: {info['description']} ({info['exporter']} export), {len(feeds)} stored feeds"
    return BenchModel(name, desc, model, feeds, 1, {}, targets=False)


if __name__ == "__main__":
    import onnxruntime as ort

    for bm in build_all():
        session = ort.InferenceSession(bm.model.SerializeToString(), providers=["CPUExecutionProvider"])
        (y,) = session.run(None, bm.feeds[0])[:1]
        print(f"{bm.key}: {len(bm.model.graph.node)} nodes, out {y.shape}, max|y| {abs(y).max():.3g}, {bm.injected}")
