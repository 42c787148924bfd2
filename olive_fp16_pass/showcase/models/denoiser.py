"""A small U-Net image denoiser, shipped as a realistic FP32 test model for the FP16 conversion passes.

Why this model exists: the FP16 passes need a real, trained convolutional network whose output quality can be
measured (PSNR against a clean image), not a random-weight toy. A residual U-Net denoiser is a good fit:

* it is a standard architecture (Conv, MaxPool, ConvTranspose, Concat, LeakyRelu, Pad, Slice) that every
  execution provider supports, so FP16 problems are about numerics, not op coverage;
* its quality is a single, well understood number (PSNR in dB), so an FP16 regression shows up directly;
* it has no batch norm, so nothing is folded or fused behind our back and the ONNX graph mirrors this file.

Input: ``noisy``, float32 NCHW RGB in [0, 1], any batch size, any height and width (the model pads to a multiple of
16 internally and crops back, see :meth:`UNetDenoiser.forward`). Output: ``denoised``, same shape, not clamped.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: The encoder max-pools (2x) after each of its four levels, so the bottleneck runs at 1/16 resolution and the
#: network proper needs H and W divisible by 2**4 for every skip connection to line up. forward() pads to this.
SIZE_MULTIPLE = 16

#: Default channel widths of the four encoder levels and the bottleneck.
DEFAULT_CHANNELS: tuple[int, ...] = (16, 32, 64, 128)

#: Weights trained by ``python -m olive_fp16_pass.showcase.models.train_denoiser`` and shipped next to this file.
DEFAULT_WEIGHTS = Path(__file__).with_name("denoiser.pt")
#: The same network exported to ONNX (FP32, opset 17, IR version 10).
DEFAULT_ONNX = Path(__file__).with_name("denoiser.onnx")

# LeakyReLU rather than ReLU: with no batch norm, a leaky slope keeps gradients alive in the small-data regime we
# train in, and it costs nothing at inference (a single LeakyRelu op in ONNX).
_NEG_SLOPE = 0.1


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by LeakyReLU: the basic block of every U-Net level."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
            nn.LeakyReLU(_NEG_SLOPE, inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1),
            nn.LeakyReLU(_NEG_SLOPE, inplace=True),
        )


class UNetDenoiser(nn.Module):
    """Residual U-Net: predicts the noise and returns ``noisy - predicted_noise``.

    Architecture (with the default widths c = 16/32/64/128):

    * encoder: four levels of :class:`DoubleConv` (3->c0, c0->c1, c1->c2, c2->c3), each followed by a 2x2 max-pool;
    * bottleneck: :class:`DoubleConv` c3->c3 at 1/16 resolution;
    * decoder: four levels, each a 2x2 stride-2 ConvTranspose to the width of the matching encoder level, concat with
      that level's skip, then :class:`DoubleConv`;
    * head: 1x1 conv to 3 channels = the predicted noise.

    Why residual: the identity path carries the image, so the network only has to model the noise, which trains much
    faster and generalises better from a handful of photos than predicting the clean image directly.
    """

    def __init__(self, channels: tuple[int, ...] = DEFAULT_CHANNELS, in_channels: int = 3) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"expected 4 encoder widths, got {channels}")
        self.channels = tuple(channels)
        self.encoders = nn.ModuleList()
        prev = in_channels
        for ch in channels:
            self.encoders.append(DoubleConv(prev, ch))
            prev = ch
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        # The bottleneck keeps the deepest width instead of doubling it: doubling would put most of the parameters
        # at 1/16 resolution, where they do little for denoising but would double the file size.
        self.bottleneck = DoubleConv(prev, prev)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for ch in reversed(channels):
            self.ups.append(nn.ConvTranspose2d(prev, ch, kernel_size=2, stride=2))
            self.decoders.append(DoubleConv(2 * ch, ch))
            prev = ch
        self.head = nn.Conv2d(prev, in_channels, kernel_size=1)
        # Start as (almost) the identity map: a zero noise estimate means the untrained model returns its input,
        # which is a far better starting point for a residual denoiser than random output.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """Denoise ``noisy`` (N, 3, H, W) in [0, 1]; any H, W >= 1.

        H and W are padded up to a multiple of 16 with edge replication and the result is cropped back. Edge
        replication (ONNX ``Pad`` mode ``edge``) rather than reflection because reflection needs the pad to be smaller
        than the image, which fails for tiny inputs. The pad amounts are computed from the runtime shape, so the
        exported ONNX graph keeps height and width dynamic.
        """
        height, width = noisy.shape[-2], noisy.shape[-1]
        pad_h = (SIZE_MULTIPLE - height % SIZE_MULTIPLE) % SIZE_MULTIPLE
        pad_w = (SIZE_MULTIPLE - width % SIZE_MULTIPLE) % SIZE_MULTIPLE
        x = F.pad(noisy, (0, pad_w, 0, pad_h), mode="replicate")

        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        noise = self.head(x)[..., :height, :width]
        return noisy - noise


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (reported in DATA.md)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(channels: tuple[int, ...] = DEFAULT_CHANNELS) -> UNetDenoiser:
    """Construct an untrained denoiser with the shipped architecture."""
    return UNetDenoiser(channels=channels)


def load_pytorch_model(path: str | Path | None = None) -> UNetDenoiser:
    """Return the denoiser in eval mode with trained weights.

    Designed as an Olive ``model_loader``: Olive's PyTorch model handler calls ``model_loader(model_path)`` from a
    ``model_script``, so ``path`` may be the ``.pt`` file, a directory containing ``denoiser.pt``, or ``None`` for the
    weights shipped next to this module. The checkpoint is a plain ``state_dict`` (loaded with ``weights_only=True``,
    so no pickled code runs); the channel widths are read back from the tensor shapes, so a checkpoint trained with
    other widths still loads.
    """
    weights = DEFAULT_WEIGHTS if path is None else Path(path)
    if weights.is_dir():
        weights = weights / DEFAULT_WEIGHTS.name
    state = torch.load(weights, map_location="cpu", weights_only=True)
    channels = tuple(int(state[f"encoders.{i}.0.weight"].shape[0]) for i in range(4))
    model = UNetDenoiser(channels=channels)
    model.load_state_dict(state)
    model.eval()
    return model
