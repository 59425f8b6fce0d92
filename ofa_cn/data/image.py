"""Image decoding and the per-task resize + normalise transforms, as pure functions.

The sizes and the normalisation come from the checkpoint's task config (``patch_image_size``,
``imagenet_default_mean_and_std``) and are passed in explicitly. Every resize is PIL bicubic, as
the original's torchvision transforms on PIL images are, so pixel values match the original bit
for bit. Tensors are ``[3, H, W]`` float32, channels RGB.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .errors import FIX_OR_SKIP, DataError

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
# imagenet_default_mean_and_std -> (mean, std); False (the default) maps pixels to [-1, 1].
MEAN_STD: dict[bool, tuple[tuple[float, ...], tuple[float, ...]]] = {
    False: ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    True: (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
}

OCR_MIN_SIDE = 64  # the short side of an OCR image is never resized below this
DOCUMENT_RESIZE_HW = (64, 1920)  # document mode: one long text line ...
DOCUMENT_CHUNKS = 4  # ... cut into 4 pieces of 64 x 480, stacked into 256 x 480
DOCUMENT_PATCH_SIZE = DOCUMENT_RESIZE_HW[1] // DOCUMENT_CHUNKS


def decode_image(b64: str, where: str) -> Image.Image:
    """Base64 of an image file's bytes -> RGB PIL image (through ``to_rgb``, for every mode).

    Accepts URL-safe and standard base64 (``urlsafe_b64decode`` maps ``-_`` to ``+/`` and keeps
    ``+/`` as they are).

    Args:
        b64: the encoded image, e.g. a TSV image column.
        where: the location for errors, e.g. ``location(path, row, "image")``.

    Raises:
        DataError: the text is not base64, or the bytes are not an image PIL can read.
    """
    try:
        data = base64.urlsafe_b64decode(b64)
    except (binascii.Error, ValueError) as e:  # ValueError: non-ASCII characters
        raise DataError(
            where, f"expected base64 of an image file, found text that is not base64 ({e}; {len(b64)} characters). "
            f"{FIX_OR_SKIP}"
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes the pixels, so truncated files fail here
            return to_rgb(img, where)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        # PIL reports bad files as UnidentifiedImageError (an OSError), SyntaxError (broken PNG
        # chunks) or EOFError, depending on the format.
        raise DataError(
            where, f"expected an image file (PNG, JPEG, ...), found {len(data)} bytes that PIL cannot read "
            f"({type(e).__name__}: {e}). {FIX_OR_SKIP}"
        ) from None


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 4] -> uint8 [H, W, 3]: c' = round((c * a + 255 * (255 - a)) / 255)."""
    color = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:].astype(np.uint32)
    return ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    """uint8 [H, W] -> RGB image with R = G = B = gray."""
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1), "RGB")


def to_rgb(img: Image.Image, where: str) -> Image.Image:
    """Any PIL image -> 8-bit RGB with the same appearance; the one conversion every path uses.

    ``img.convert("RGB")`` alone is wrong for several modes, and silently so: it clips 16-bit and
    32-bit values at 255 (a 16-bit PNG becomes white) and drops transparency (what lies under
    transparent pixels, often black, shows). Per mode:

    - RGB: unchanged. 1, L, P (opaque), CMYK, YCbCr, RGBX, HSV: PIL's conversion (CMYK:
      ``R = (255 - C) * (255 - K) / 255``, no colour profile).
    - I;16, I;16L, I;16B, I;16N (16-bit grey) and I (32-bit integer grey, which PIL uses for
      16-bit files too): ``v8 = round(v * 255 / 65535)``; an I value outside [0, 65535] is an error.
    - F (32-bit float grey): on PIL's own scale, 0 = black and 255 = white (as ``convert("L")``),
      rounded; a value outside [0, 255] or NaN is an error, never clipped.
    - LA, La, PA, RGBA, RGBa, P with a transparent colour: composited on white,
      ``c' = round((c * a + 255 * (255 - a)) / 255)``, as a page or viewer shows them.

    Args:
        img: a loaded PIL image of any mode.
        where: the location for errors: a file name, or ``location(path, row, "image")``.

    Raises:
        DataError: a mode or a value range with no sensible RGB reading.
    """
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16"):
        values = np.asarray(img).astype(np.uint32)  # [H, W]; the byte order is decoded by numpy
        return _gray_to_rgb(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode in ("I", "F"):
        values = np.asarray(img)  # int32 or float32 [H, W]
        top = 65535 if mode == "I" else 255
        bad = ~np.isfinite(values) | (values < 0) | (values > top) if mode == "F" else (values < 0) | (values > top)
        if bad.any():
            found = values[bad].flat[0]
            raise DataError(
                where, f"an image of mode {mode} ({'32-bit integer' if mode == 'I' else '32-bit float'} grey) must "
                f"hold values in [0, {top}] to be read as {'16-bit' if mode == 'I' else '8-bit'} grey, found "
                f"{found} ({int(bad.sum())} pixels outside). Save the image as 8- or 16-bit PNG or JPEG."
            )
        if mode == "I":
            gray = (values.astype(np.int64) * 255 + 32767) // 65535
        else:
            gray = np.floor(values.astype(np.float64) + 0.5)  # round half up, as the integer paths
        return _gray_to_rgb(gray.astype(np.uint8))
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info)
    try:
        if has_alpha:
            straight = img.convert("LA") if mode == "La" else img  # PIL has no La -> RGBA
            return Image.fromarray(_composite_on_white(np.asarray(straight.convert("RGBA"))), "RGB")
        return img.convert("RGB")
    except ValueError as e:  # a mode PIL cannot convert
        raise DataError(
            where, f"cannot convert an image of mode {mode} to RGB ({e}); save it as RGB PNG or JPEG."
        ) from None


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB uint8 image (PIL or [H, W, 3] array) -> float32 [3, H, W] in [0, 1] (torchvision's ToTensor)."""
    pixels = np.array(img, dtype=np.uint8, copy=True)  # [H, W, 3]
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous().float().div(255)


def normalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(tensor - mean) / std per channel, in torchvision's order of operations. [3, H, W] -> same."""
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return tensor.sub(mean_t).div(std_t)


def resize_square(img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Caption transform: bicubic resize to size x size (aspect ratio not kept), then normalise.

    Returns:
        float32 [3, size, size].
    """
    resized = img.resize((size, size), Image.Resampling.BICUBIC)
    return normalize(to_tensor(resized), mean, std)


def resize_with_box(
    img: Image.Image,
    box: Sequence[float],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Grounding transform: resize to size x size, scaling the box with the image.

    The original's ``RandomResize([S], max_size=S)`` clamps both sides to S, so the result is
    always S x S whatever the aspect ratio.

    Args:
        box: (x0, y0, x1, y1) in pixels of ``img``.

    Returns:
        image float32 [3, size, size]; the box in resized pixels, float32 [4] (scaled in float32 as
        the original); w_ratio = size / width; h_ratio = size / height.
    """
    width, height = img.size
    w_ratio, h_ratio = size / width, size / height
    return resize_square(img, size, mean, std), scale_box(box, w_ratio, h_ratio), w_ratio, h_ratio


def scale_box(box: Sequence[float], w_ratio: float, h_ratio: float) -> torch.Tensor:
    """A box (x0, y0, x1, y1) scaled with its image: x * w_ratio, y * h_ratio, in float32 as the original.

    Returns:
        float32 [4].
    """
    scale = torch.tensor([w_ratio, h_ratio, w_ratio, h_ratio], dtype=torch.float32)
    return torch.as_tensor(box, dtype=torch.float32) * scale


def _pad_offset(free: int, rng: random.Random | None) -> int:
    # Training draws the offset; evaluation centres the image. The original drew it with the
    # unseeded global `random` at evaluation too, so its OCR scores were not reproducible.
    return rng.randint(0, free) if rng is not None else free // 2


def ocr_resize(
    img: Image.Image,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    rng: random.Random | None = None,
    is_document: bool = False,
) -> torch.Tensor:
    """OCR transform: aspect-preserving bicubic resize into size x size, edge-replicated padding.

    Non-document mode: the long side becomes ``size`` and the short side ``max(64, int(size *
    short / long))``; the short side is then padded to ``size`` by repeating the edge pixels.
    Document mode: resize to 64 x 1920 (h x w), cut into 4 pieces of 64 x 480 stacked top to
    bottom (256 x 480), and pad the height to 480; needs size == 480.

    The padding offset is drawn from ``rng`` when one is given (training) and centred,
    ``(size - new) // 2``, when ``rng`` is None (evaluation). The original drew it from Python's
    unseeded global ``random`` at evaluation too, so its OCR evaluation was not deterministic; we
    centre instead (as ModelScope's port does).

    Args:
        size: ``patch_image_size``; at least 64.
        rng: the training-time random source, or None for evaluation.

    Returns:
        float32 [3, size, size].
    """
    if size < OCR_MIN_SIDE:
        raise ValueError(f"OCR needs patch_image_size >= {OCR_MIN_SIDE} (the smallest resized side), got {size}")
    width, height = img.size
    if is_document:
        if size != DOCUMENT_PATCH_SIZE:
            raise ValueError(
                f"document mode needs patch_image_size {DOCUMENT_PATCH_SIZE} (its stacked pieces are "
                f"{DOCUMENT_PATCH_SIZE} wide), got {size}; set patch_image_size={DOCUMENT_PATCH_SIZE} "
                f"or turn is_document off."
            )
        doc_h, doc_w = DOCUMENT_RESIZE_HW
        line = np.asarray(img.resize((doc_w, doc_h), Image.Resampling.BICUBIC))  # [64, 1920, 3]
        pixels = np.concatenate(np.split(line, DOCUMENT_CHUNKS, axis=1), axis=0)  # [256, 480, 3]
        top = _pad_offset(size - pixels.shape[0], rng)
        pad = ((top, size - pixels.shape[0] - top), (0, 0), (0, 0))
    elif width >= height:
        new_w, new_h = size, max(OCR_MIN_SIDE, int(size * height / width))
        pixels = np.asarray(img.resize((new_w, new_h), Image.Resampling.BICUBIC))  # [new_h, size, 3]
        top = _pad_offset(size - new_h, rng)
        pad = ((top, size - new_h - top), (0, 0), (0, 0))
    else:
        new_w, new_h = max(OCR_MIN_SIDE, int(size * width / height)), size
        pixels = np.asarray(img.resize((new_w, new_h), Image.Resampling.BICUBIC))  # [size, new_w, 3]
        left = _pad_offset(size - new_w, rng)
        pad = ((0, 0), (left, size - new_w - left), (0, 0))
    padded = np.pad(pixels, pad, mode="edge")  # [size, size, 3]
    assert padded.shape == (size, size, 3), f"OCR resize produced {padded.shape}, expected ({size}, {size}, 3)"
    return normalize(to_tensor(padded), mean, std)
