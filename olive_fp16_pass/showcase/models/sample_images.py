"""Real photographs for training and evaluating the denoiser, all shipped inside scikit-image (no downloads).

Why a registry: training, evaluation, tests and DATA.md must agree on which photos are held out. Every photo here
loads offline from the installed ``skimage.data`` package (they are in the wheel, not fetched with pooch), and the
source and licence strings are copied from the docstrings of the ``skimage.data`` functions (scikit-image 0.26).

Held-out photos (:data:`EVAL_PHOTOS`) are never used for training or model selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Photo:
    """One photograph from ``skimage.data``: its loader name, where it comes from, and its licence."""

    name: str
    source: str
    licence: str
    grayscale: bool = False


#: Held out for evaluation: never trained on. Two colour photos with smooth areas, fine texture and sharp edges.
EVAL_PHOTOS: tuple[Photo, ...] = (
    Photo(
        "chelsea",
        "Chelsea the cat, photographed by Stefan van der Walt (`skimage.data.chelsea`, same as `cat`)",
        'CC0 ("No copyright restrictions. CC0 by the photographer")',
    ),
    Photo(
        "coffee",
        "Coffee cup, photographed by Rachel Michetti, courtesy of Pikolo Espresso Bar",
        'CC0 ("No copyright restrictions. CC0 by the photographer")',
    ),
)

#: Training photos. Grayscale ones are replicated to three channels: they add natural texture (brick, grass,
#: gravel) and the noise model (independent per channel) does not care that the channels are equal.
TRAIN_PHOTOS: tuple[Photo, ...] = (
    Photo(
        "astronaut",
        "Eileen Collins, NASA Great Images database (https://flic.kr/p/r9qvLn)",
        'Public domain ("No known copyright restrictions, released into the public domain")',
    ),
    Photo(
        "rocket",
        "DSCOVR launch on Falcon 9, SpaceX Photos on Flickr",
        "Public domain (released into the public domain by SpaceX)",
    ),
    Photo(
        "immunohistochemistry",
        "IHC-stained colonic glands, Center for Microscopy And Molecular Imaging (CMMI)",
        "No known copyright restrictions",
    ),
    Photo(
        "hubble_deep_field",
        "Hubble eXtreme Deep Field, HubbleSite / NASA",
        'Public domain (NASA: "may be freely used in the public domain")',
    ),
    Photo(
        "retina", "Fundus photograph, Mikael Häggström, Wikimedia Commons", "CC0 1.0 Universal Public Domain Dedication"
    ),
    Photo(
        "camera",
        '"camera" photo by Lav Varshney',
        'CC0 ("No copyright restrictions. CC0 by the photographer")',
        grayscale=True,
    ),
    Photo(
        "coins",
        "Greek coins from Pompeii, Brooklyn Museum Collection",
        "No known copyright restrictions",
        grayscale=True,
    ),
    Photo("brick", "Brick wall, CC0Textures (Bricks25)", "CC0", grayscale=True),
    Photo("grass", "Grass, DeviantArt (linolafett, Grass-01)", "CC0", grayscale=True),
    Photo("gravel", "Gravel, CC0Textures (Gravel04)", "CC0", grayscale=True),
)


def load_photo(name: str) -> np.ndarray:
    """Load ``skimage.data.<name>()`` as float32 HWC RGB in [0, 1] (grayscale replicated to 3 channels)."""
    import skimage.data  # lazy: scikit-image is only needed by the model tooling, not by the FP16 passes

    img = getattr(skimage.data, name)()
    if img.dtype != np.uint8:
        raise TypeError(f"skimage.data.{name} is {img.dtype}, expected uint8")
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return (img[..., :3].astype(np.float32) / 255.0).copy()


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Center-crop an HWC image to ``size`` x ``size`` (the image must be at least that large)."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the crop {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def load_eval_images(size: int | None = 256) -> list[np.ndarray]:
    """Held-out clean images as float32 NCHW arrays of shape (1, 3, size, size) in [0, 1].

    ``size=None`` returns the full photos (chelsea 300x451, coffee 400x600) instead of center crops; the denoiser
    accepts any height and width.
    """
    images = []
    for photo in EVAL_PHOTOS:
        img = load_photo(photo.name)
        if size is not None:
            img = center_crop(img, size)
        images.append(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))
    return images


def add_noise(img: np.ndarray, sigma: float = 25 / 255, seed: int = 0) -> np.ndarray:
    """Additive white Gaussian noise with standard deviation ``sigma`` (in [0, 1] units), reproducible by ``seed``.

    The result is deliberately not clipped to [0, 1]: that is the standard AWGN benchmark setting (the noisy PSNR at
    sigma = 25/255 is then 20.17 dB) and it is the distribution the denoiser was trained on.
    """
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return (img + noise).astype(np.float32)
