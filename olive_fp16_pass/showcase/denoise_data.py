"""Olive dataset of denoiser validation feeds for `OnnxAutoMixedPrecision` (training photos, not held out)."""

from __future__ import annotations

import numpy as np
from olive.data.registry import Registry


class DenoiseFeeds:
    """Noisy crops of training photos: items ({"noisy": CHW float32}, clean CHW float32)."""

    def __init__(self, size: int, count: int, sigma: float, seed: int) -> None:
        from olive_fp16_pass.showcase.models.sample_images import TRAIN_PHOTOS, add_noise, center_crop, load_photo

        rng = np.random.default_rng(seed)
        self.items = []
        photos = [p for p in TRAIN_PHOTOS if not p.grayscale] or list(TRAIN_PHOTOS)
        for i in range(count):
            photo = load_photo(photos[i % len(photos)].name)  # HWC float32 in [0, 1]
            crop = center_crop(photo, max(size, min(photo.shape[:2]) // 2))
            top = int(rng.integers(0, crop.shape[0] - size + 1))
            left = int(rng.integers(0, crop.shape[1] - size + 1))
            clean = np.ascontiguousarray(crop[top : top + size, left : left + size].transpose(2, 0, 1))
            noisy = add_noise(clean, sigma=sigma, seed=seed + i)
            self.items.append(({"noisy": noisy.astype(np.float32)}, clean.astype(np.float32)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


@Registry.register_dataset()
def denoise_validation_feeds(data_dir=None, size: int = 128, count: int = 8, sigma: float = 25 / 255, seed: int = 1):
    return DenoiseFeeds(size, count, sigma, seed)
