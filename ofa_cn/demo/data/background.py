"""The light backgrounds that scenes and OCR text lines are drawn on, and their random settings."""

from __future__ import annotations

import random

import numpy as np


def sample_background(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int], float, int]:
    """Draw (tint, gradient, speckle, noise_seed) for ``light_background``.

    About half the backgrounds are plain; the rest get a gentle gradient and/or a few speckles.
    Per-pixel noise is avoided on purpose: it makes each PNG ~20x larger and slower to write.
    """
    tint = tuple(rng.randint(226, 255) for _ in range(3))
    gradient = (rng.randint(-8, 8), rng.randint(-8, 8)) if rng.random() < 0.5 else (0, 0)
    speckle = rng.choice((0.0, 0.0, 0.003, 0.01))
    return tint, gradient, speckle, rng.getrandbits(32)


def light_background(
    height: int, width: int, tint: tuple[int, int, int], gradient: tuple[int, int], speckle: float, seed: int
) -> np.ndarray:
    """A light background: ``tint`` plus a linear grey gradient plus sparse darker speckles.

    Every channel stays >= 226 - 8 - 24 = 194, above the darkest channel of every colour in
    scenes.COLOURS, so an object's pixels never coincide with background pixels.

    Returns:
        (height, width, 3) uint8 array.
    """
    shade_x = np.round(gradient[0] * (np.arange(width) / width - 0.5)).astype(np.int16)  # (W,)
    shade_y = np.round(gradient[1] * (np.arange(height) / height - 0.5)).astype(np.int16)  # (H,)
    row = np.asarray(tint, dtype=np.int16) + shade_x[:, None]  # (W, 3)
    pixels = row[None, :, :] + shade_y[:, None, None]  # (H, W, 3), shade within +-8
    if speckle:
        noise_rng = np.random.default_rng(seed)
        count = round(speckle * height * width)
        ys, xs = noise_rng.integers(0, height, count), noise_rng.integers(0, width, count)
        pixels[ys, xs] -= noise_rng.integers(8, 25, size=(count, 1), dtype=np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)
