"""Real architectures, exported here, through every FP16 converter: valid / loads / runs / accurate / FP16 share.

Usage (from the repository root, in a venv with torch, torchvision and transformers; see "Environment" below):

    python bench/real_models.py                       # every model, both exporters, default per-model budget
    python bench/real_models.py --models resnet18,bert --exporters torchscript
    python bench/real_models.py --list                # the model names
    python bench/real_models.py --export-ci-models    # regenerate tests/data/real/ (the CI subset)

Results: bench/results/real_models-<date>.{md,json} (`--tag` adds a suffix).

What it does and why:

- Models are real architectures from torchvision and transformers, built from their own classes with random
  weights (fixed seed, `weights=None`, `weights_backbone=None`: nothing is downloaded) and, where the stock size
  would not fit a 2-core machine's budget, a small configuration of the same class (the name says so).
- Random initialisation gives degenerate outputs in places (torchvision's ViT head is zero-initialised, so its
  logits are all 0): every floating parameter of rank >= 2 that is entirely zero is re-initialised N(0, 0.02)
  before export, and every float output's reference is checked for signal (std > 1e-6 and max |x| > 1e-6);
  a degenerate output is flagged in the table, so an "accurate" verdict on it is not taken at face value.
- Exporters: TorchScript (`torch.onnx.export(..., dynamo=False)`) and dynamo (`dynamo=True`, written with
  external data, so the external-data paths of the converters are exercised). An export failure is a row too.
- Tools, each in both `keep_io_types` modes (False/True): ours (`convert_float16`, given the model *file*, as a
  user would), onnxconverter-common's `float16.convert_float_to_float16`, and ONNX Runtime's
  `onnxruntime.transformers.float16.convert_float_to_float16` (given the loaded ModelProto, a copy each: both
  edit it in place). Plus ours `auto_mixed_precision` (keep_io_types=True, validated by float16-storage
  emulation on the CPU) with the same criteria as the accuracy column.
- Checks, independent of one another: valid (`onnx.checker.check_model(full_check=True)`, or the plain check
  when the exported FP32 model itself fails the full one); loads (ORT CPU session with ORT_ENABLE_ALL: fusions
  across a precision boundary fail here); runs (on the first feed); accurate: the project's own
  `emulate_float16_storage` of the converted model (every float16 tensor rounded to float16 where it is
  produced, so overflow and precision loss show as on a GPU), run with optimizations off, against the FP32
  model's outputs on every feed: cosine >= MIN_COSINE and max |error| <= MAX_REL * max |reference| per output,
  no NaN/Inf where the reference is finite. Detection models return a variable number of boxes whose order can
  change with tiny score changes: their outputs are compared sorted (a permutation-invariant proxy), and a
  different box count is a failure. With random weights SSDLite's top-20 scores lie ~1e-3 apart, inside
  float16's noise, so which boxes make the cut changes under any converter: the detection model also returns
  its head's class logits and box regressions, and the verdict (and AMP's criteria) judge those; the
  detections are compared and recorded (`judged: false`) but do not count.
- FP16 share: main-graph nodes with a float32 output in the FP32 model that output float16 in the converted
  one, matched by node name (bench/amp_speed.py's `fp16_count`), and the share of float weights stored as
  float16. Casts: Cast nodes in the converted model minus those in the FP32 model. Time: the conversion call
  (ours: `convert_float16(...)` and `.model`; AMP: the whole search).
- Each (model, exporter) runs in its own subprocess with a wall-clock budget (`--budget-s`); the child writes
  its results after every step, so a budget overrun loses only the unfinished steps, which are reported as
  "budget". One ORT thread per session and one torch thread: the machines this runs on are shared.

Environment: torch==2.14.1 torchvision==0.29.1 transformers onnx onnxscript onnx-ir onnxconverter-common
onnxruntime numpy, and this checkout (`pip install -e . --no-deps`), in a venv of its own (e.g. .venv-real/).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CI_DATA_DIR = REPO_ROOT / "tests" / "data" / "real"
if str(REPO_ROOT) not in sys.path:  # run as `python bench/real_models.py`: this checkout's package and `bench`
    sys.path.insert(0, str(REPO_ROOT))

from bench.amp_speed import fp16_count  # noqa: E402  (after the path is set)
from bench.bench_env import count_op, environment  # noqa: E402

EXPORTERS = ("torchscript", "dynamo")
TOOLS = ("ours", "occ", "ort")
KEEP_IO = (False, True)
TOOL_LABELS = {
    "ours": "olive_fp16_pass.convert_float16(<model file>, keep_io_types=K)",
    "occ": "onnxconverter_common.float16.convert_float_to_float16(model, keep_io_types=K)",
    "ort": "onnxruntime.transformers.float16.convert_float_to_float16(model, keep_io_types=K)",
    "amp": "olive_fp16_pass.auto_mixed_precision(<model file>, feeds, keep_io_types=True, CPU emulation)",
}
MIN_COSINE = 0.999
MAX_REL = 0.02  # max |error| allowed, as a fraction of the output's max |reference|
SIGNAL_FLOOR = 1e-6
N_FEEDS = 3  # AMP holds the last one out
DEFAULT_BUDGET_S = 420.0
OPSET_TORCHSCRIPT = 17
OPSET_DYNAMO = 18
DIGEST_KEY = "olive_fp16_pass (sha256 of sources)"
DATE = dt.date.today().isoformat()


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Exportable:
    """A torch module ready to export, with inputs for any seed and the names the ONNX graph should use."""

    module: Any
    make_inputs: Callable[[int], tuple]
    input_names: list[str]
    output_names: list[str]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # torchvision / transformers
    build: Callable[[], Exportable]
    description: str
    sorted_compare: bool = False  # detection: variable-count, order-unstable outputs
    # Outputs the accuracy verdict (and AMP's criteria) judge; None: all. The others are compared and recorded.
    judged_outputs: tuple[str, ...] | None = None
    exporters: tuple[str, ...] = EXPORTERS


def _image(shape: tuple[int, ...]) -> Callable[[int], tuple]:
    def make(seed: int) -> tuple:
        import torch

        return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)),)

    return make


def _tokens(vocab: int, shape: tuple[int, int], *, mask: bool = False) -> Callable[[int], tuple]:
    def make(seed: int) -> tuple:
        import torch

        ids = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))
        return (ids, torch.ones(shape, dtype=torch.int64)) if mask else (ids,)

    return make


class _Outputs:
    """Wraps a module so that it returns a flat tuple of tensors (exporters and ORT want plain outputs)."""

    @staticmethod
    def wrap(module: Any, pick: Callable[[Any], tuple]) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = module

            def forward(self, *args):
                return pick(self.inner(*args))

        return Wrapper()


def _tv(builder: str, shape: tuple[int, ...], **kwargs: Any) -> Callable[[], Exportable]:
    def build() -> Exportable:
        import torchvision

        module = getattr(torchvision.models, builder)(weights=None, **kwargs)
        return Exportable(module, _image(shape), ["pixel_values"], ["logits"])

    return build


def _vit() -> Exportable:
    from torchvision.models.vision_transformer import VisionTransformer

    module = VisionTransformer(image_size=64, patch_size=16, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=512)
    return Exportable(module, _image((1, 3, 64, 64)), ["pixel_values"], ["logits"])


def _swin() -> Exportable:
    from torchvision.models.swin_transformer import SwinTransformer

    module = SwinTransformer(
        patch_size=[4, 4], embed_dim=48, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24], window_size=[7, 7]
    )
    return Exportable(module, _image((1, 3, 112, 112)), ["pixel_values"], ["logits"])


def _detection() -> Exportable:
    import torchvision

    # box_score_thresh=0: random weights score every class ~1/91, below the default 0.05, so nothing would be
    # detected and the outputs would be empty; a handful of detections per image keeps outputs comparable.
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, score_thresh=0.0, detections_per_img=20, num_classes=11
    )
    return Exportable(_detector_with_head_outputs(model), _detection_inputs, ["image"], list(DETECTION_OUTPUTS))


# The detections, then the head's raw outputs. With random weights the top-20 scores lie ~1e-3 apart, closer
# than float16's own rounding noise moves them, so which boxes make the cut (and their labels) changes under
# any converter; the head's class logits and box regressions carry the signal and are what the verdict judges.
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "cls_logits", "bbox_regression")
DETECTION_JUDGED = ("cls_logits", "bbox_regression")


def _detector_with_head_outputs(model: Any) -> Any:
    """torchvision's SSD eval forward (transform, backbone, head, anchors, NMS), returning the head's outputs too."""
    import torch

    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, image):
            m = self.inner
            images = list(image)
            original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
            batch, _ = m.transform(images)
            features = list(m.backbone(batch.tensors).values())
            head = m.head(features)
            anchors = m.anchor_generator(batch, features)
            found = m.postprocess_detections(head, anchors, batch.image_sizes)
            found = m.transform.postprocess(found, batch.image_sizes, original_sizes)
            first = found[0]
            return first["boxes"], first["scores"], first["labels"], head["cls_logits"], head["bbox_regression"]

    return Detector()


def _detection_inputs(seed: int) -> tuple:
    import torch

    return (torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(seed)),)


def _segmentation() -> Exportable:
    import torchvision

    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    module = _Outputs.wrap(model, lambda out: (out["out"],))
    return Exportable(module, _image((1, 3, 128, 128)), ["pixel_values"], ["out"])


def _video() -> Exportable:
    import torchvision

    module = torchvision.models.video.r3d_18(weights=None)
    return Exportable(module, _image((1, 3, 4, 64, 64)), ["video"], ["logits"])


def _bert() -> Exportable:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=64,
    )  # fmt: skip
    model = BertModel(config).eval()
    module = _Outputs.wrap(model, lambda out: (out.last_hidden_state, out.pooler_output))
    return Exportable(
        module, _tokens(1000, (2, 16), mask=True), ["input_ids", "attention_mask"], ["last_hidden_state", "pooler"]
    )


GPT2_LAYERS, GPT2_HEADS, GPT2_HIDDEN, GPT2_VOCAB, GPT2_PAST, GPT2_NEW = 2, 4, 64, 1000, 8, 4


def _gpt2() -> Exportable:
    """GPT-2 decoding step with past key/values as flat inputs and the present ones as flat outputs."""
    import torch
    from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=GPT2_VOCAB, n_positions=64, n_embd=GPT2_HIDDEN, n_layer=GPT2_LAYERS, n_head=GPT2_HEADS
    )
    model = GPT2LMHeadModel(config).eval()

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, *past):
            cache = DynamicCache()
            for layer in range(GPT2_LAYERS):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
            present = []
            for layer in range(GPT2_LAYERS):
                key, value = _cache_layer(out.past_key_values, layer)
                present += [key, value]
            return (out.logits, *present)

    head = GPT2_HIDDEN // GPT2_HEADS

    def make(seed: int) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, GPT2_VOCAB, (1, GPT2_NEW), generator=gen)
        mask = torch.ones(1, GPT2_PAST + GPT2_NEW, dtype=torch.int64)
        past = [torch.randn(1, GPT2_HEADS, GPT2_PAST, head, generator=gen) for _ in range(2 * GPT2_LAYERS)]
        return (ids, mask, *past)

    past_names = [f"past_{kind}_{layer}" for layer in range(GPT2_LAYERS) for kind in ("key", "value")]
    present_names = [f"present_{kind}_{layer}" for layer in range(GPT2_LAYERS) for kind in ("key", "value")]
    return Exportable(Step(), make, ["input_ids", "attention_mask", *past_names], ["logits", *present_names])


def _cache_layer(cache: Any, layer: int) -> tuple:
    """(key, value) of one layer of a transformers cache, across the cache API's versions."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache[layer][0], cache[layer][1]


def _t5() -> Exportable:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        decoder_start_token_id=0,
    )  # fmt: skip
    model = T5ForConditionalGeneration(config).eval()
    module = _Outputs.wrap(model, lambda out: (out.logits, out.encoder_last_hidden_state))

    def make(seed: int) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        return (torch.randint(0, 1000, (1, 12), generator=gen), torch.ones(1, 12, dtype=torch.int64),
                torch.randint(0, 1000, (1, 6), generator=gen))  # fmt: skip

    class Seq2Seq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module.inner

        def forward(self, input_ids, attention_mask, decoder_input_ids):
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False
            )
            return out.logits, out.encoder_last_hidden_state

    return Exportable(
        Seq2Seq(), make, ["input_ids", "attention_mask", "decoder_input_ids"], ["logits", "encoder_hidden_state"]
    )


def _whisper() -> Exportable:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=1000, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=50,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()

    class Seq2Seq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_features, decoder_input_ids):
            # An explicit decoder mask (all ones, as the default): without one, transformers' masking code looks
            # for packed sequences with torch.diff, which the TorchScript exporter cannot export at any opset.
            mask = torch.ones_like(decoder_input_ids)
            out = self.inner(
                input_features=input_features, decoder_input_ids=decoder_input_ids, decoder_attention_mask=mask,
                use_cache=False,
            )  # fmt: skip
            return out.logits, out.encoder_last_hidden_state

    def make(seed: int) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(1, 80, 100, generator=gen), torch.randint(0, 1000, (1, 6), generator=gen))

    return Exportable(Seq2Seq(), make, ["input_features", "decoder_input_ids"], ["logits", "encoder_hidden_state"])


def _llama() -> Exportable:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, use_cache=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    module = _Outputs.wrap(model, lambda out: (out.logits,))
    return Exportable(module, _tokens(1000, (1, 16), mask=True), ["input_ids", "attention_mask"], ["logits"])


def _clip() -> Exportable:
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 16},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 64, "patch_size": 16},
        projection_dim=32,
    )  # fmt: skip
    model = CLIPModel(config).eval()

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, pixel_values):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
            return out.logits_per_image, out.text_embeds, out.image_embeds

    def make(seed: int) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        return (torch.randint(0, 1000, (2, 16), generator=gen), torch.ones(2, 16, dtype=torch.int64),
                torch.randn(2, 3, 64, 64, generator=gen))  # fmt: skip

    return Exportable(
        Both(),
        make,
        ["input_ids", "attention_mask", "pixel_values"],
        ["logits_per_image", "text_embeds", "image_embeds"],
    )


# CI subset: small enough to commit (< 2 MB each); see --export-ci-models.
def _ci_mobilenet() -> Exportable:
    import torchvision

    module = torchvision.models.mobilenet_v3_small(weights=None, width_mult=0.5, num_classes=16)
    return Exportable(module, _image((1, 3, 64, 64)), ["pixel_values"], ["logits"])


def _ci_bert() -> Exportable:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32,
    )  # fmt: skip
    model = BertModel(config).eval()
    module = _Outputs.wrap(model, lambda out: (out.last_hidden_state, out.pooler_output))
    return Exportable(
        module, _tokens(256, (2, 8), mask=True), ["input_ids", "attention_mask"], ["last_hidden_state", "pooler"]
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("resnet18", "torchvision", _tv("resnet18", (1, 3, 96, 96)), "resnet18, 96x96"),
        ModelSpec("mobilenet_v3_large", "torchvision", _tv("mobilenet_v3_large", (1, 3, 96, 96)), "96x96"),
        ModelSpec("efficientnet_b0", "torchvision", _tv("efficientnet_b0", (1, 3, 96, 96)), "96x96"),
        ModelSpec("convnext_tiny", "torchvision", _tv("convnext_tiny", (1, 3, 64, 64)), "convnext_tiny, 64x64"),
        ModelSpec("vit_small", "torchvision", _vit, "VisionTransformer 4 layers, hidden 128, 64x64 / patch 16"),
        ModelSpec("swin_small_config", "torchvision", _swin, "SwinTransformer embed 48, depths 2-2-2-2, 112x112"),
        ModelSpec(
            "ssdlite320_mobilenet_v3",
            "torchvision",
            _detection,
            "ssdlite320_mobilenet_v3_large, 11 classes, score_thresh 0, 20 detections (NMS, Loop in TorchScript)",
            sorted_compare=True,
            judged_outputs=DETECTION_JUDGED,
        ),
        ModelSpec("lraspp_mobilenet_v3", "torchvision", _segmentation, "lraspp_mobilenet_v3_large, 128x128"),
        ModelSpec("r3d_18", "torchvision", _video, "video r3d_18, 4 frames 64x64"),
        ModelSpec("bert", "transformers", _bert, "BertModel 2 layers, hidden 64"),
        ModelSpec("gpt2_past", "transformers", _gpt2, "GPT2LMHeadModel 2 layers, hidden 64, 8 past + 4 new tokens"),
        ModelSpec("t5", "transformers", _t5, "T5ForConditionalGeneration 2+2 layers, d_model 64"),
        ModelSpec("whisper", "transformers", _whisper, "WhisperForConditionalGeneration 2+2 layers, d_model 64"),
        ModelSpec("llama", "transformers", _llama, "LlamaForCausalLM 2 layers, hidden 64, GQA 4/2 heads"),
        ModelSpec("clip", "transformers", _clip, "CLIPModel text+vision 2 layers, hidden 64, 64x64 / patch 16"),
    )
}
CI_MODELS: dict[str, tuple[ModelSpec, str]] = {
    "mobilenet_v3_small_w05": (
        ModelSpec("mobilenet_v3_small_w05", "torchvision", _ci_mobilenet, "mobilenet_v3_small width 0.5, 16 classes"),
        "torchscript",
    ),
    "gpt2_past_tiny": (
        ModelSpec("gpt2_past_tiny", "transformers", _gpt2, "GPT-2 2 layers with past kv"),
        "torchscript",
    ),
    "bert_tiny_dynamo": (ModelSpec("bert_tiny_dynamo", "transformers", _ci_bert, "BERT 2 layers, hidden 32"), "dynamo"),
}


def _reinit_zero_weights(module: Any) -> list[str]:
    """Re-initialise N(0, 0.02) every all-zero float parameter of rank >= 2 (zero-initialised heads)."""
    import torch

    changed = []
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dtype.is_floating_point and param.dim() >= 2 and not bool(param.any()):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
                changed.append(name)
    return changed


def _calibrate_batchnorm(module: Any, make_inputs: Callable[[int], tuple]) -> int:
    """Give BatchNorm layers running statistics measured on random inputs, as training would.

    Fresh BatchNorm layers hold mean 0 / variance 1, so in eval mode they normalise nothing and the activations
    of deep random CNNs (MobileNetV3, EfficientNet) shrink to ~1e-10 by the head: degenerate outputs. Only the
    BatchNorm layers run in training mode (cumulative averages), so detection models keep their eval forward.
    Batches of two: a training-mode BatchNorm refuses a single value per channel, which a batch of one gives
    wherever the feature map is 1x1 (SSDLite's last extra layers: "Expected more than 1 value per channel").
    """
    import torch

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        with torch.no_grad():
            for seed in range(100, 104):
                module(*_batch_of_two(make_inputs(seed), make_inputs(seed + 50)))
    finally:
        for norm in norms:
            norm.eval()
    return len(norms)


def _batch_of_two(first: tuple, second: tuple) -> tuple:
    """The two inputs' tensors stacked along the batch dimension (every model here takes batch-first inputs)."""
    import torch

    return tuple(torch.cat([a, b]) for a, b in zip(first, second, strict=True))


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------


def export(spec: ModelSpec, exporter: str, path: Path, details: dict[str, Any]) -> Exportable:
    """Build the model (seed 0) and export it to `path`; dynamo writes its weights as external data."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    exportable = spec.build()
    module = exportable.module.eval()
    details["reinitialised_zero_weights"] = _reinit_zero_weights(module)
    details["batchnorm_calibrated"] = _calibrate_batchnorm(module, exportable.make_inputs)
    details["parameters"] = sum(p.numel() for p in module.parameters())
    args = exportable.make_inputs(0)
    start = time.perf_counter()
    # nn.MultiheadAttention's inference fast path is an op the TorchScript exporter does not know.
    torch.backends.mha.set_fastpath_enabled(False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=OPSET_TORCHSCRIPT,
                input_names=exportable.input_names,
                output_names=exportable.output_names,
            )
        else:
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=OPSET_DYNAMO,
                input_names=exportable.input_names,
                output_names=exportable.output_names,
                verbose=False,
            )
            program.save(str(path), external_data=True)
    details["export_s"] = round(time.perf_counter() - start, 2)
    return exportable


# ----------------------------------------------------------------------------------------------------------------
# Running and judging
# ----------------------------------------------------------------------------------------------------------------


def _session(model: onnx.ModelProto | str, *, optimize: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _run(session: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    from olive_fp16_pass.runtime import run_session

    return [np.asarray(o) for o in run_session(session, {k: v.copy() for k, v in feed.items()})]


def feeds_for(exportable: Exportable, model: onnx.ModelProto, n: int = N_FEEDS) -> list[dict[str, np.ndarray]]:
    """Feeds named as the exported graph's inputs (exporters may drop unused ones), seeds 0..n-1."""
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in initializers]
    feeds = []
    for seed in range(n):
        arrays = {
            name: t.numpy() for name, t in zip(exportable.input_names, exportable.make_inputs(seed), strict=False)
        }
        missing = [name for name in graph_inputs if name not in arrays]
        if missing:
            raise RuntimeError(f"exported graph inputs {missing} are not among {list(arrays)}")
        feeds.append({name: arrays[name] for name in graph_inputs})
    return feeds


def signal_of(reference: list[list[np.ndarray]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per output: scale (max |x|), std, and whether it carries signal (a degenerate output judges nothing)."""
    stats = {}
    for j, name in enumerate(names):
        values = np.concatenate([np.asarray(r[j], np.float64).ravel() for r in reference])
        floating = np.issubdtype(reference[0][j].dtype, np.floating)
        finite = values[np.isfinite(values)] if values.size else values
        scale = float(np.abs(finite).max()) if finite.size else 0.0
        std = float(finite.std()) if finite.size else 0.0
        stats[name] = {
            "float": bool(floating),
            "scale": scale,
            "std": std,
            "signal": bool(not floating or (std > SIGNAL_FLOOR and scale > SIGNAL_FLOOR)),
            "shape": list(reference[0][j].shape),
        }
    return stats


def accuracy(
    reference: list[list[np.ndarray]],
    got: list[list[np.ndarray]],
    names: list[str],
    signal: dict[str, dict[str, Any]],
    *,
    sorted_compare: bool,
    judged: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Per-output errors (the project's `output_error`) and the verdict: cosine, max error vs scale, finiteness.

    Only the `judged` outputs (None: all) count toward the verdict; `sorted_compare` sorts the others (all, when
    every output is judged) before comparing: order-unstable detections."""
    from olive_fp16_pass.compare import output_error

    per_output: dict[str, Any] = {}
    failures = []
    for j, name in enumerate(names):
        ref = [np.asarray(r[j]) for r in reference]
        cand = [np.asarray(c[j]) for c in got]
        if any(a.shape != b.shape for a, b in zip(ref, cand, strict=False)):
            failures.append(f"{name}: shape {[c.shape for c in cand]} != {[r.shape for r in ref]}")
            continue
        counted = judged is None or name in judged
        if sorted_compare and (judged is None or not counted):
            ref = [np.sort(a, axis=None) for a in ref]
            cand = [np.sort(a, axis=None) for a in cand]
        error = output_error(ref, cand)
        scale = signal[name]["scale"]
        rel = error.max_abs / scale if scale > 0 else (0.0 if error.max_abs == 0 else math.inf)
        per_output[name] = {
            "cosine": error.cosine,
            "max_abs": error.max_abs,
            "max_rel": rel,
            "nonfinite": error.nonfinite,
            "judged": counted,
        }
        if not counted:
            continue
        if error.nonfinite:
            failures.append(f"{name}: {error.nonfinite} NaN/Inf where FP32 is finite")
        if not error.cosine >= MIN_COSINE:
            failures.append(f"{name}: cosine {error.cosine:.6f} < {MIN_COSINE}")
        if not rel <= MAX_REL:
            failures.append(f"{name}: max error {rel:.3g} x scale > {MAX_REL}")
    judged_outputs = [o for o in per_output.values() if o["judged"]]
    worst_cos = min((o["cosine"] for o in judged_outputs), default=float("nan"))
    worst_rel = max((o["max_rel"] for o in judged_outputs), default=float("nan"))
    return {
        "ok": not failures,
        "failures": failures,
        "per_output": per_output,
        "min_cosine": worst_cos,
        "max_rel": worst_rel,
    }


def weights_fp16_pct(model: onnx.ModelProto) -> float:
    """Share of float weight elements (main-graph initializers) stored as float16."""
    counts = {onnx.TensorProto.FLOAT: 0, onnx.TensorProto.FLOAT16: 0}
    for tensor in model.graph.initializer:
        if tensor.data_type in counts:
            counts[tensor.data_type] += math.prod(tensor.dims)
    total = sum(counts.values())
    return 100.0 * counts[onnx.TensorProto.FLOAT16] / total if total else 0.0


def _error(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text[:400]}"


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """A topologically sorted copy: ONNX shape inference, which the FP16 count relies on, types nothing after a
    node that reads a value defined later (ORT's converter appends its input Casts at the end of the graph)."""
    from onnx_ir.passes.common import TopologicalSortPass

    from olive_fp16_pass import ir_serde  # onnx-ir's own serde refuses map types (scikit-learn's ZipMap)

    ir_model = ir_serde.deserialize_model(model)
    TopologicalSortPass()(ir_model)
    return ir_serde.serialize_model(ir_model)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def convert(tool: str, keep_io: bool, path: Path, model: onnx.ModelProto, out: Path, details: dict[str, Any], feeds,
            criteria) -> onnx.ModelProto:  # fmt: skip
    """Run one converter; return the converted model loaded whole (external data read back)."""
    start = time.perf_counter()
    if tool == "ours":
        from olive_fp16_pass import convert_float16

        result = convert_float16(str(path), keep_io_types=keep_io)
        _ = result.model
        details["convert_s"] = round(time.perf_counter() - start, 3)
        details["report_fp32_reasons"] = result.report.reasons()
        details["report_warnings"] = result.report.warnings[:5]
        result.save(out)
        return onnx.load(str(out))
    if tool == "amp":
        from olive_fp16_pass import auto_mixed_precision

        result = auto_mixed_precision(
            str(path), feeds, provider="CPUExecutionProvider", keep_io_types=keep_io, progress=False, **criteria
        )
        details["convert_s"] = round(time.perf_counter() - start, 3)
        search = result.report.search or {}
        details["amp"] = {
            key: search.get(key)
            for key in ("criteria_met", "holdout_met", "candidates_tried", "sessions_created", "failures")
        }
        details["report_fp32_reasons"] = result.report.reasons()
        result.save(out)
        return onnx.load(str(out))
    if tool == "occ":
        from onnxconverter_common import float16

        converted = float16.convert_float_to_float16(_copy(model), keep_io_types=keep_io)
    elif tool == "ort":
        from onnxruntime.transformers import float16 as ort_float16

        converted = ort_float16.convert_float_to_float16(_copy(model), keep_io_types=keep_io)
    else:
        raise ValueError(f"unknown tool {tool!r}")
    details["convert_s"] = round(time.perf_counter() - start, 3)
    return converted


def judge(converted: onnx.ModelProto, original: onnx.ModelProto, full_check: bool, feeds, reference, names, signal,
          spec: ModelSpec, result: dict[str, Any]) -> None:  # fmt: skip
    """The independent checks; each records its own error, so one failure does not hide the others."""
    from olive_fp16_pass.emulation import emulate_float16_storage

    errors = result.setdefault("errors", {})
    try:
        onnx.checker.check_model(converted, full_check=full_check)
        result["valid"] = True
    except Exception as exc:
        result["valid"] = False
        errors["valid"] = _error(exc)
    result["loads"] = result["runs"] = False
    try:
        session = _session(converted, optimize=True)
        result["loads"] = True
    except Exception as exc:
        errors["loads"] = _error(exc)
    else:
        try:
            _run(session, feeds[0])
            result["runs"] = True
        except Exception as exc:
            errors["runs"] = _error(exc)
    result["accurate"] = False
    try:
        emulated = _session(emulate_float16_storage(converted), optimize=False)
        got = [_run(emulated, feed) for feed in feeds]
        verdict = accuracy(
            reference, got, names, signal, sorted_compare=spec.sorted_compare, judged=spec.judged_outputs
        )
        result["accurate"] = verdict["ok"]
        result["accuracy"] = verdict
        if verdict["failures"]:
            errors["accurate"] = "; ".join(verdict["failures"][:3])
    except Exception as exc:
        errors["accurate"] = "emulation failed: " + _error(exc)
    try:
        counted = fp16_count(original, _sorted(converted))
        result["fp16_nodes_pct"] = round(counted["fp16_pct"], 1)
        result["float_nodes"] = counted["float_nodes"]
    except Exception as exc:
        errors["fp16_count"] = _error(exc)
    result["weights_fp16_pct"] = round(weights_fp16_pct(converted), 1)
    result["casts_added"] = count_op(converted, "Cast") - count_op(original, "Cast")


def amp_criteria(names: list[str], signal: dict[str, dict[str, Any]], judged: tuple[str, ...] | None = None) -> dict:
    """The accuracy column's criteria, expressed as auto_mixed_precision arguments (unjudged outputs: any error
    passes, only NaN/Inf where float32 is finite still fails)."""
    per_output = {name: {"max_abs": MAX_REL * signal[name]["scale"]} for name in names if signal[name]["float"]}
    for name in names:
        if judged is not None and name not in judged:
            per_output[name] = {"min_cosine": -1.0, "max_abs": 1e30}
    return {"rtol": None, "atol": None, "min_cosine": MIN_COSINE, "per_output": per_output}


def child(spec_name: str, exporter: str, workdir: Path, result_path: Path, tools: list[str]) -> int:
    """One (model, exporter): export, reference, every tool; results rewritten after each step."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    spec = MODELS.get(spec_name) or CI_MODELS[spec_name][0]
    record: dict[str, Any] = {"model": spec.name, "exporter": exporter, "description": spec.description, "tools": {}}
    flush = record_writer(record, result_path)

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    try:
        exportable = export(spec, exporter, path, record)
    except Exception as exc:
        record["export_error"] = _error(exc)
        record["export_traceback"] = traceback.format_exc()[-3000:]
        flush()
        return 0
    flush()
    try:
        original = onnx.load(str(path))
        record["nodes"] = len(original.graph.node)
        record["loops_ifs"] = count_op(original, "Loop") + count_op(original, "If")
        record["external_data"] = (
            any(t.data_location == onnx.TensorProto.EXTERNAL for t in original.graph.initializer)
            or (workdir / "model.onnx.data").exists()
        )
        reference = Reference.of(original, feeds_for(exportable, original), record)
        record["fp32_vs_torch"] = _torch_check(exportable, reference.outputs[0])
    except Exception as exc:
        record["fp32_error"] = _error(exc)
        record["fp32_traceback"] = traceback.format_exc()[-3000:]
        flush()
        return 0
    flush()
    run_tools(tools, path, original, reference, spec, workdir, record, flush)
    return 0


def record_writer(record: dict[str, Any], result_path: Path) -> Callable[[], None]:
    """A function that rewrites `record` to `result_path` atomically: a child's results survive its timeout."""

    def flush() -> None:
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, default=_json_default, indent=1))
        tmp.replace(result_path)

    return flush


@dataclass
class Reference:
    """The float32 model's runs every tool is judged against, and whether it passes onnx's full check."""

    feeds: list[dict[str, Any]]
    names: list[str]
    outputs: list[list[np.ndarray]]
    signal: dict[str, Any]
    full_check: bool

    @classmethod
    def of(cls, original: onnx.ModelProto, feeds: list[dict[str, Any]], record: dict[str, Any]) -> Reference:
        """Runs `original` (all optimizations) on `feeds`; the op list, the full check's verdict and the outputs'
        signal go into `record`."""
        record["ops"] = sorted({n.op_type for n in original.graph.node})
        try:
            onnx.checker.check_model(original, full_check=True)
            full_check = True
        except Exception as exc:
            record["fp32_full_check_error"] = _error(exc)
            full_check = False
        fp32 = _session(original, optimize=True)
        names = [o.name for o in fp32.get_outputs()]
        outputs = [_run(fp32, feed) for feed in feeds]
        signal = signal_of(outputs, names)
        record["signal"] = signal
        record["degenerate_outputs"] = [n for n, s in signal.items() if not s["signal"]]
        return cls(feeds, names, outputs, signal, full_check)


def run_tools(
    tools: list[str],
    path: Path,
    original: onnx.ModelProto,
    reference: Reference,
    spec: Any,
    workdir: Path,
    record: dict[str, Any],
    flush: Callable[[], None],
) -> None:
    """Every tool in both keep_io_types modes (AMP with keep_io_types only), each converted and judged against
    `reference`; `record` is flushed after each."""
    criteria = amp_criteria(reference.names, reference.signal, spec.judged_outputs)
    steps = [(tool, keep) for tool in tools if tool != "amp" for keep in KEEP_IO]
    if "amp" in tools:
        steps.append(("amp", True))
    for tool, keep in steps:
        result: dict[str, Any] = {"errors": {}}
        record["tools"][f"{tool}/keep_io={keep}"] = result
        out = workdir / f"{tool}_{keep}.onnx"
        try:
            converted = convert(tool, keep, path, original, out, result, reference.feeds, criteria)
        except Exception as exc:
            result["errors"]["convert"] = _error(exc)
            result["convert_traceback"] = traceback.format_exc()[-2000:]
            flush()
            continue
        result["converted"] = True
        judge(
            converted,
            original,
            reference.full_check,
            reference.feeds,
            reference.outputs,
            reference.names,
            reference.signal,
            spec,
            result,
        )
        flush()
    record["done"] = True
    flush()


def _torch_check(exportable: Exportable, onnx_outputs: list[np.ndarray]) -> dict[str, Any]:
    """The exported FP32 model against PyTorch itself on feed 0: a broken export is not a converter's fault."""
    import torch

    with torch.no_grad():
        out = exportable.module(*exportable.make_inputs(0))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    worst = 0.0
    for got, expected in zip(onnx_outputs, outs, strict=False):
        expected = expected.detach().numpy()
        if got.shape != expected.shape:
            return {"ok": False, "detail": f"shape {got.shape} vs torch {expected.shape}"}
        scale = float(np.abs(expected).max()) or 1.0
        worst = max(worst, float(np.abs(got.astype(np.float64) - expected).max()) / scale)
    return {"ok": worst <= 1e-3, "max_rel": worst}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# ----------------------------------------------------------------------------------------------------------------
# Parent: budget per model, tables
# ----------------------------------------------------------------------------------------------------------------


def run_one(name: str, exporter: str, budget: float, workroot: Path, tools: list[str]) -> dict[str, Any]:
    workdir = workroot / f"{name}-{exporter}"
    result_path = workroot / f"{name}-{exporter}.json"
    command = [sys.executable, __file__, "--child", name, exporter, str(workdir), str(result_path), ",".join(tools)]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=budget, env=env)
        status = "ok" if proc.returncode == 0 else f"child exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
    except subprocess.TimeoutExpired:
        status = f"budget {budget:.0f} s exceeded"
    wall = time.perf_counter() - start
    record: dict[str, Any] = {"model": name, "exporter": exporter, "tools": {}}
    if result_path.exists():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(result_path.read_text())
    record["status"] = status
    record["wall_s"] = round(wall, 1)
    return record


def _mark(flag: bool | None) -> str:
    return "—" if flag is None else ("✓" if flag else "✗")


def _tool_cell(result: dict[str, Any] | None) -> str:
    """valid/loads/runs/accurate as four marks, then FP16 nodes %, Casts added, seconds."""
    if result is None:
        return "budget"
    if "convert" in result.get("errors", {}):
        return "convert ✗"
    marks = "".join(_mark(result.get(k)) for k in ("valid", "loads", "runs", "accurate"))
    pct = result.get("fp16_nodes_pct")
    pct_text = f"{pct:.0f}%" if pct is not None else "?"
    return f"{marks} {pct_text} c{result.get('casts_added', '?')} {result.get('convert_s', 0):.2f}s"


def table(records: list[dict[str, Any]], tools: list[str]) -> tuple[list[str], list[list[str]]]:
    columns = [(tool, keep) for tool in tools if tool != "amp" for keep in KEEP_IO]
    if "amp" in tools:
        columns.append(("amp", True))
    header = ["model", "exporter", "nodes", "signal"] + [f"{t} k={'T' if k else 'F'}" for t, k in columns]
    rows = []
    for record in records:
        row = [record["model"], record["exporter"], str(record.get("nodes", "—"))]
        if "export_error" in record:
            rows.append([*row, "—", f"export failed: {record['export_error'][:120]}"] + [""] * (len(columns) - 1))
            continue
        if "fp32_error" in record:
            rows.append([*row, "—", f"FP32 model fails: {record['fp32_error'][:120]}"] + [""] * (len(columns) - 1))
            continue
        if "signal" not in record:
            rows.append([*row, "—", record.get("status", "?")] + [""] * (len(columns) - 1))
            continue
        degenerate = record.get("degenerate_outputs") or []
        row.append("ok" if not degenerate else "degenerate: " + ",".join(degenerate))
        for tool, keep in columns:
            row.append(_tool_cell(record["tools"].get(f"{tool}/keep_io={keep}")))
        rows.append(row)
    return header, rows


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def totals(records: list[dict[str, Any]], tools: list[str]) -> dict[str, dict[str, int]]:
    """Per tool column: how many (model, exporter) rows pass each check, over rows whose FP32 model ran."""
    out: dict[str, dict[str, int]] = {}
    for record in records:
        if "signal" not in record:
            continue
        for key, result in record["tools"].items():
            entry = out.setdefault(key, {"rows": 0, "converted": 0, "valid": 0, "loads": 0, "runs": 0, "accurate": 0})
            entry["rows"] += 1
            entry["converted"] += bool(result.get("converted"))
            for check in ("valid", "loads", "runs", "accurate"):
                entry[check] += bool(result.get(check))
    return out


def failure_lines(records: list[dict[str, Any]]) -> list[str]:
    lines = []
    for record in records:
        where = f"{record['model']} / {record['exporter']}"
        if record.get("status") not in (None, "ok"):
            lines.append(f"- {where}: {record['status'][:300]}")
        for key, result in record.get("tools", {}).items():
            for check, message in result.get("errors", {}).items():
                lines.append(f"- {where} / {key} / {check}: {message[:300]}")
    return lines


def versions() -> dict[str, str]:
    found = {}
    for dist in ("torch", "torchvision", "transformers", "onnxscript", "onnxconverter-common", "onnxruntime", "onnx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def totals_lines(totals_by_tool: dict[str, dict[str, int]]) -> list[str]:
    """The Markdown "Totals" table: per tool and keep_io mode, how many rows converted, were valid, loaded..."""
    lines = [
        "| tool | rows | converted | valid | loads (ORT_ENABLE_ALL) | runs | accurate |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, t in totals_by_tool.items():
        lines.append(
            f"| {key} | {t['rows']} | {t['converted']} | {t['valid']} | {t['loads']} | {t['runs']} | {t['accurate']} |"
        )
    return lines


def save(records: list[dict[str, Any]], tools: list[str], args: argparse.Namespace, started: float) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"real_models-{DATE}" + (f"-{args.tag}" if args.tag else "")
    env = environment(DIGEST_KEY)
    env["versions"].update(versions())
    payload = {
        "date": DATE,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "tools": {k: TOOL_LABELS[k] for k in tools},
        "criteria": {"min_cosine": MIN_COSINE, "max_rel": MAX_REL, "signal_floor": SIGNAL_FLOOR, "feeds": N_FEEDS},
        "budget_s": args.budget_s,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "totals": totals(records, tools),
        "records": records,
    }
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    header, rows = table(records, tools)
    summary = totals_lines(payload["totals"])
    md = [
        f"# Real models through FP16 converters ({DATE})",
        "",
        f"Command: `{payload['command']}` — total {payload['total_wall_s']} s, budget {args.budget_s:.0f} s per "
        "(model, exporter).",
        f"Machine: {env['platform']}, {env['processor']}, {env['cpu_count']} CPUs (load at start "
        f"{', '.join(f'{x:.1f}' for x in env['load_avg_at_start'])}), Python {env['python']}, git {env['git_head']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        "",
        "Cell: valid / loads with ORT_ENABLE_ALL / runs / accurate under float16-storage emulation "
        f"(cosine >= {MIN_COSINE} and max error <= {MAX_REL} x max |FP32| per output, on {N_FEEDS} feeds), then the "
        "share of float nodes in FP16, `c` Casts added, conversion seconds. `k=T`/`k=F`: keep_io_types. "
        "'budget': not reached within the per-model budget. 'signal': outputs of the FP32 model carry signal "
        "(std and max |x| > 1e-6); a degenerate output's accuracy means nothing.",
        "",
        "Tools: " + "; ".join(f"`{k}` = {v}" for k, v in payload["tools"].items()) + ".",
        "",
        render_markdown(header, rows),
        "",
        "## Totals",
        "",
        *summary,
        "",
        "## Failures and errors",
        "",
        *(failure_lines(records) or ["none"]),
        "",
    ]
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(md))
    return RESULTS_DIR / f"{stem}.md"


# ----------------------------------------------------------------------------------------------------------------
# CI subset
# ----------------------------------------------------------------------------------------------------------------


def export_ci_models(target: Path = CI_DATA_DIR) -> None:
    """Export the three CI models and a manifest of their inputs (so CI needs neither torch nor transformers)."""
    import onnx_ir as ir

    target.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"generated_by": "python bench/real_models.py --export-ci-models", "models": {}}
    for name, (spec, exporter) in CI_MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            details: dict[str, Any] = {}
            exportable = export(spec, exporter, path, details)
            model = onnx.load(str(path))
            feeds = feeds_for(exportable, model)
            for old in target.glob(f"{name}.onnx*"):
                old.unlink()
            out = target / f"{name}.onnx"
            if exporter == "dynamo":
                # Keep the external data (the point of this model), under a name tied to the model's.
                loaded = ir.load(str(path))
                ir.save(loaded, str(out), external_data=f"{name}.onnx.data")
            else:
                onnx.save(model, str(out))
            np.savez(
                target / f"{name}.feeds.npz", **{f"{k}__{i}": v for i, f in enumerate(feeds) for k, v in f.items()}
            )
        manifest["models"][name] = {
            "exporter": exporter,
            "description": spec.description,
            "inputs": list(feeds[0]),
            "feeds": len(feeds),
            "parameters": details["parameters"],
        }
    manifest["versions"] = versions()
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated model names (default: all; see --list)")
    parser.add_argument("--exporters", default=",".join(EXPORTERS), help="torchscript,dynamo")
    parser.add_argument("--tools", default="ours,occ,ort,amp", help="ours,occ,ort,amp")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-clock per (model, exporter)")
    parser.add_argument("--tag", default="", help="suffix of the results file names")
    parser.add_argument("--workdir", help="keep the exported and converted models here (default: a temp folder)")
    parser.add_argument("--list", action="store_true", help="print the model names and exit")
    parser.add_argument("--export-ci-models", action="store_true", help="regenerate tests/data/real/ and exit")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        name, exporter, workdir, result_path, tools = args.child
        return child(name, exporter, Path(workdir), Path(result_path), tools.split(","))
    if args.list:
        for spec in MODELS.values():
            print(f"{spec.name:28s} {spec.family:13s} {spec.description}")
        return 0
    if args.export_ci_models:
        export_ci_models()
        print(f"wrote {CI_DATA_DIR}")
        return 0
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS and n not in CI_MODELS]
    if unknown:
        print(f"unknown models {unknown}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    tools = args.tools.split(",")
    exporters = args.exporters.split(",")
    started = time.perf_counter()
    records = []
    with contextlib.ExitStack() as stack:
        workroot = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workroot.mkdir(parents=True, exist_ok=True)
        for name in names:
            for exporter in exporters:
                record = run_one(name, exporter, args.budget_s, workroot, tools)
                records.append(record)
                _header, rows = table([record], tools)
                print(" | ".join(rows[0]), f"[{record['wall_s']} s, {record['status'][:80]}]", flush=True)
                save(records, tools, args, started)  # partial results survive an interrupted run
    path = save(records, tools, args, started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
