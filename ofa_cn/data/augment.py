"""Training-time image augmentations of the original OFA pretraining, as pure functions.

The original composes them in ``data/pretrain_data/unify_dataset.py``:

- image-text pairs: ``random_resize`` (short side drawn from ``patch_image_size`` up to a maximum,
  long side capped) -> ``center_crop(patch_image_size)`` -> ``random_augment`` (its defaults);
- visual grounding: the same ``random_resize`` -> ``object_center_crop(patch_image_size)``;
- detection: ``random_hflip`` -> ``large_scale_jitter`` (output 2 * code_image_size).

The sizes and the jitter's scale range are pretraining settings, kept with the dataset that uses
them (``ofa_cn.data.pretrain``: ``MAX_PAIR_IMAGE_SIDE``, ``MAX_PAIR_LONG_SIDE``, ``DETECTION_SCALE``).

Every function takes and returns RGB PIL images, so the caller finishes with ``image.to_tensor``
and ``image.normalize``. Boxes are float32 tensors ``[N, 4]`` (or ``[4]`` for the one grounding
box) of (x0, y0, x1, y1) in pixels of the image they come with; box arithmetic is float32, as in
the original. Randomness comes only from the ``random.Random`` passed in: for the same rng state
the output is the same. The draws are not the original's (it used torch's, numpy's and Python's
global generators), so only the distributions match it, not individual samples.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps

# RandomAugment(2, 7, isPIL=True, augs=[...]) in unify_dataset.py: the ops, in the original's order.
PRETRAIN_AUGMENT_OPS = (
    "Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
)
MAX_MAGNITUDE = 10  # magnitude / MAX_MAGNITUDE scales each op's largest parameter below
APPLY_PROB = 0.5  # each drawn op is applied with this probability, else skipped
FILL = (128, 128, 128)  # grey for pixels that geometric ops bring in from outside the image
MAX_SHEAR = 0.3  # shear factor (pixels of x per pixel of y) at MAX_MAGNITUDE
MAX_TRANSLATE_PIXELS = 10.0  # absolute pixels, not a fraction of the image size
MAX_ROTATE_DEGREES = 30.0
_ENHANCE_MIN, _ENHANCE_SPAN = 0.1, 1.8  # Brightness/Sharpness factor = 0.1 + 1.8 * magnitude / 10


def _as_boxes(boxes: Sequence[Sequence[float]] | torch.Tensor) -> torch.Tensor:
    """Boxes of any sequence type -> float32 [N, 4]."""
    out = torch.as_tensor(boxes, dtype=torch.float32)
    if out.numel() == 0:
        return out.reshape(0, 4)  # an image without boxes
    if out.ndim != 2 or out.shape[1] != 4:
        raise ValueError(f"expected boxes of shape [N, 4] as (x0, y0, x1, y1) pixels, got shape {list(out.shape)}")
    return out


def _shift_and_clip(boxes: torch.Tensor, left: float, top: float, width: int, height: int) -> torch.Tensor:
    """Boxes [N, 4] -> the same boxes in a crop at (left, top) of width x height, clipped to it."""
    # utils/transforms.py:crop: subtract the offset, min with (w, h) per corner, clamp at 0 (float32).
    shifted = boxes - torch.tensor([left, top, left, top], dtype=torch.float32)
    corners = torch.min(shifted.reshape(-1, 2, 2), torch.tensor([width, height], dtype=torch.float32))
    return corners.clamp(min=0).reshape(-1, 4)


# ----------------------------------------------------------------------------- resize and crops


def short_side_size(width: int, height: int, size: int, max_size: int | None) -> tuple[int, int]:
    """The original's output (width, height) for a resize of the short side to ``size``.

    The long side becomes ``int(size * long / short)`` (truncated), then *each* side is capped
    at ``max_size`` on its own, so a capped image loses its aspect ratio rather than being scaled
    down (utils/transforms.py:resize.get_size_with_aspect_ratio; DETR's original scaled down).
    Example: 200 x 100 (w x h), size 150, max_size 250 -> height 150, width int(150 * 200 / 100)
    = 300 -> capped to 250, so (250, 150).
    """
    if (width <= height and width == size) or (height <= width and height == size):
        new_w, new_h = width, height
    elif width < height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if max_size is not None:
        new_w, new_h = min(new_w, int(max_size)), min(new_h, int(max_size))
    return new_w, new_h


def resize_short_side(
    img: Image.Image,
    size: int,
    max_size: int | None,
    boxes: Sequence[Sequence[float]] | torch.Tensor | None = None,
) -> tuple[Image.Image, torch.Tensor | None]:
    """Bicubic resize to ``short_side_size(...)``, scaling the boxes by the same x and y ratios.

    Args:
        size: the new short side.
        max_size: the cap on each side, or None for no cap.
        boxes: [N, 4] pixels of ``img``, or None.

    Returns:
        the resized image; the boxes in its pixels, float32 [N, 4] (None when none were given).
    """
    new_w, new_h = short_side_size(img.width, img.height, size, max_size)
    resized = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if boxes is None:
        return resized, None
    ratio_w, ratio_h = new_w / img.width, new_h / img.height
    return resized, _as_boxes(boxes) * torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=torch.float32)


def random_resize(
    img: Image.Image,
    scales: Sequence[int],
    max_size: int | None,
    rng: random.Random,
    boxes: Sequence[Sequence[float]] | torch.Tensor | None = None,
) -> tuple[Image.Image, torch.Tensor | None]:
    """The original's ``RandomResize(scales, max_size)``: ``resize_short_side`` to a size drawn
    uniformly from ``scales``. Returns (image, boxes or None) as ``resize_short_side``."""
    if not scales:
        raise ValueError("random_resize needs at least one scale (a short-side length in pixels), got none")
    return resize_short_side(img, rng.choice(scales), max_size, boxes)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's ``CenterCrop(size)`` (the original's), with PIL alone: the size x size centre.

    Along a side at least ``size`` long the offset is ``int(round((W - size) / 2.0))``, Python's
    round, half to even (W - size = 5 -> 2, 7 -> 4). A side shorter than ``size`` is padded with
    black to exactly ``size``, ``(size - W) // 2`` before and the rest after, so the extra pixel
    of an odd difference goes right / bottom. The two sides are handled independently, so one
    can be padded while the other is cropped.
    """
    # torchvision pads first and then crops the padded image at offset 0 on a padded side; a
    # negative offset into the original is the same thing, since PIL's crop fills outside with 0.
    def offset(side: int) -> int:
        return -((size - side) // 2) if size > side else int(round((side - size) / 2.0))

    left, top = offset(img.width), offset(img.height)
    return img.crop((left, top, left + size, top + size))


def object_center_crop(
    img: Image.Image,
    box: Sequence[float] | torch.Tensor,
    size: int,
) -> tuple[Image.Image, torch.Tensor]:
    """The original's ``ObjectCenterCrop``: a size x size crop centred on the box, moved inside the image.

    The crop's left edge is ``max(cx - size/2 + min(W - cx - size/2, 0), 0)`` (the top likewise):
    centred on the box, pushed left when it would pass the right edge, then right when it would
    pass the left edge. Where the image is smaller than ``size`` the crop extends past its right
    or bottom edge and those pixels are black. The box is shifted and clipped to [0, size] but
    never dropped, even if it becomes empty.

    The edges are floats. As in the original, the box moves by the float offset while the pixels
    move by the offset rounded half to even (PIL's crop rounding), so the two can disagree by
    half a pixel. The original rounds both crop edges, which for an odd ``size`` and an offset
    ending in .5 gives a crop one pixel too wide or narrow; here the far edge is near edge + size.

    Args:
        box: (x0, y0, x1, y1) in pixels of ``img``.
        size: the crop side (``patch_image_size``).

    Returns:
        the size x size crop; the box in its pixels, float32 [4].
    """
    box_t = _as_boxes(torch.as_tensor(box, dtype=torch.float32).reshape(1, -1))
    x0, y0, x1, y1 = box_t[0].tolist()
    center_x, center_y = (x0 + x1) / 2, (y0 + y1) / 2
    left = max(center_x - size / 2 + min(img.width - center_x - size / 2, 0), 0)
    top = max(center_y - size / 2 + min(img.height - center_y - size / 2, 0), 0)
    left_px, top_px = round(left), round(top)  # Python's round, half to even, as PIL's crop
    cropped = img.crop((left_px, top_px, left_px + size, top_px + size))  # black beyond the image
    return cropped, _shift_and_clip(box_t, left, top, size, size)[0]


# ----------------------------------------------------------------------------- detection


def hflip(img: Image.Image, boxes: Sequence[Sequence[float]] | torch.Tensor) -> tuple[Image.Image, torch.Tensor]:
    """Mirror left-right; a box (x0, y0, x1, y1) becomes (W - x1, y0, W - x0, y1). Boxes [N, 4] pixels."""
    boxes_t = _as_boxes(boxes)
    flipped = boxes_t[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor(
        [img.width, 0.0, img.width, 0.0]
    )
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), flipped


def random_hflip(
    img: Image.Image,
    boxes: Sequence[Sequence[float]] | torch.Tensor,
    rng: random.Random,
    p: float = 0.5,
) -> tuple[Image.Image, torch.Tensor]:
    """``hflip`` with probability ``p``, else the input unchanged. Returns (image, boxes float32 [N, 4])."""
    if rng.random() < p:
        return hflip(img, boxes)
    return img, _as_boxes(boxes)


def large_scale_jitter(
    img: Image.Image,
    boxes: Sequence[Sequence[float]] | torch.Tensor,
    labels: Sequence[Any],
    output_size: int,
    scale_min: float,
    scale_max: float,
    rng: random.Random,
) -> tuple[Image.Image, torch.Tensor, list[Any]]:
    """The original's ``LargeScaleJitter`` (copy-paste augmentation): random scale, then a random square crop.

    1. s ~ U[scale_min, scale_max); the image is resized (bicubic) so that its *short* side is
       ``round(s * output_size)``, the other side ``round(side * scale)``.
    2. A random output_size x output_size window: along each side the offset is
       ``floor((new_side - output_size) * u)``, u ~ U[0, 1).
    3. Boxes are scaled, shifted and clipped to the window; a box left with no width or no
       height (x1 <= x0 or y1 <= y0) is dropped together with its label.

    The original asserts s >= 1 (its padding branch is disabled). Below that a side can be
    shorter than ``output_size``; it is padded with black on the right / bottom, as the disabled
    branch would have done. For scale_min >= 1 the behaviour is the original's.

    Args:
        boxes: [N, 4] pixels of ``img``.
        labels: N labels of any type, one per box.
        output_size: side of the square output (2 * code_image_size in pretraining).

    Returns:
        the output_size x output_size image; the kept boxes float32 [M, 4] in its pixels, all in
        [0, output_size]; their labels, in order.
    """
    boxes_t = _as_boxes(boxes)
    if len(labels) != len(boxes_t):
        raise ValueError(f"expected one label per box, got {len(labels)} labels for {len(boxes_t)} boxes")
    if not 0 < scale_min <= scale_max:
        raise ValueError(f"expected 0 < scale_min <= scale_max, got scale_min={scale_min}, scale_max={scale_max}")
    # float32 throughout, as the original's torch arithmetic (LargeScaleJitter.__call__).
    hw = torch.tensor([img.height, img.width])  # int64 [2]
    random_scale = torch.tensor([rng.random()], dtype=torch.float32) * (scale_max - scale_min) + scale_min
    short_side = (random_scale * output_size).round()  # float32 [1]
    scale = torch.maximum(short_side / hw[0], short_side / hw[1])  # the short side gets short_side
    new_hw = (hw * scale).round().int()  # [2] (h, w)
    new_h, new_w = new_hw.tolist()
    resized = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    ratio_h, ratio_w = (new_hw / hw).tolist()
    boxes_t = boxes_t * torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=torch.float32)

    u = torch.tensor([rng.random(), rng.random()], dtype=torch.float32)
    top, left = ((new_hw - output_size).clamp(min=0) * u).floor().int().tolist()
    output = resized.crop((left, top, left + output_size, top + output_size))  # black beyond the image
    boxes_t = _shift_and_clip(boxes_t, left, top, output_size, output_size)
    corners = boxes_t.reshape(-1, 2, 2)
    keep = torch.all(corners[:, 1, :] > corners[:, 0, :], dim=1).tolist()  # utils/transforms.py:crop_target
    return output, boxes_t[keep], [label for label, k in zip(labels, keep) if k]


# ----------------------------------------------------------------------------- RandomAugment ops


def _warp_affine(img: Image.Image, matrix: Sequence[Sequence[float]]) -> Image.Image:
    """cv2.warpAffine(img, matrix, borderValue=FILL) with bilinear sampling, done with PIL.

    ``matrix`` is 2 x 3 and maps input pixel indices to output indices (cv2's convention, pixel
    centres at integers). PIL wants the inverse map in coordinates where centres sit at i + 0.5,
    so the matrix is inverted and its translation moved by half a pixel.
    """
    (a, b, c), (d, e, f) = matrix
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det  # inverse of the 2 x 2 part
    tx, ty = -(ia * c + ib * f), -(id_ * c + ie * f)
    # src_idx = R dst_idx + t, and idx = coord - 0.5  =>  src_coord = R dst_coord + t + 0.5 - R [0.5, 0.5]
    coeffs = (ia, ib, tx + 0.5 - 0.5 * (ia + ib), id_, ie, ty + 0.5 - 0.5 * (id_ + ie))
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=FILL)


def identity(img: Image.Image) -> Image.Image:
    return img


def autocontrast(img: Image.Image) -> Image.Image:
    """Per channel, stretch [min, max] to [0, 255] (PIL.ImageOps.autocontrast, cutoff 0)."""
    # The original's cv2 port (utils/vision_helper.py:autocontrast_func) negates a numpy uint8
    # (`-low`), which wraps, so any channel whose minimum is above 0 came out all 255. We follow
    # PIL, which its docstring says it reproduces.
    return ImageOps.autocontrast(img)


def equalize(img: Image.Image) -> Image.Image:
    """Per-channel histogram equalisation (PIL.ImageOps.equalize; the original's cv2 port matches it)."""
    return ImageOps.equalize(img)


def brightness(img: Image.Image, factor: float) -> Image.Image:
    """Pixels times ``factor``, truncated and clipped to [0, 255] (PIL.ImageEnhance.Brightness)."""
    return ImageEnhance.Brightness(img).enhance(factor)


def sharpness(img: Image.Image, factor: float) -> Image.Image:
    """Blend with a 3 x 3 smoothed copy (kernel 1s with 5 in the centre, / 13): 0 smooths, 1 is the
    input, above 1 sharpens. The one-pixel border is kept (PIL.ImageEnhance.Sharpness).

    Differs from the original's cv2 port inside the border: the smoothed values may round
    differently (cv2 rounds half to even), and the port casts the blend to uint8 without
    clipping, so for factor > 1 values past 0 or 255 wrapped around (300 -> 44); PIL clips them.
    """
    return ImageEnhance.Sharpness(img).enhance(factor)


def shear_x(img: Image.Image, factor: float) -> Image.Image:
    """Shear about the top-left corner: input (x, y) lands at (x + factor * y, y). Bilinear, grey fill."""
    return _warp_affine(img, ((1.0, factor, 0.0), (0.0, 1.0, 0.0)))


def shear_y(img: Image.Image, factor: float) -> Image.Image:
    """Shear about the top-left corner: input (x, y) lands at (x, y + factor * x). Bilinear, grey fill."""
    return _warp_affine(img, ((1.0, 0.0, 0.0), (factor, 1.0, 0.0)))


def translate_x(img: Image.Image, offset: float) -> Image.Image:
    """Output (x, y) = input (x + offset, y): content moves *left* by ``offset`` pixels; grey fill."""
    return _warp_affine(img, ((1.0, 0.0, -offset), (0.0, 1.0, 0.0)))


def translate_y(img: Image.Image, offset: float) -> Image.Image:
    """Output (x, y) = input (x, y + offset): content moves *up* by ``offset`` pixels; grey fill."""
    return _warp_affine(img, ((1.0, 0.0, 0.0), (0.0, 1.0, -offset)))


def rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate counter-clockwise (as seen on screen) about (W/2, H/2) in pixel indices; grey fill.

    That centre is cv2.getRotationMatrix2D's; PIL's own ``rotate`` turns about the point half a
    pixel further down-right, so this builds cv2's matrix instead.
    """
    # Rounded so that quarter turns are exact (cos 90 deg is 6e-17 in floats, and PIL truncates
    # 254.99... to 254); cv2's fixed-point warp snaps such noise away too.
    cos, sin = round(math.cos(math.radians(degrees)), 12), round(math.sin(math.radians(degrees)), 12)
    cx, cy = img.width / 2, img.height / 2
    return _warp_affine(img, ((cos, sin, (1 - cos) * cx - sin * cy), (-sin, cos, sin * cx + (1 - cos) * cy)))


# name -> (function, the parameter at MAX_MAGNITUDE or None for no parameter, whether its sign is random)
_OPS = {
    "Identity": (identity, None, False),
    "AutoContrast": (autocontrast, None, False),
    "Equalize": (equalize, None, False),
    "Brightness": (brightness, _ENHANCE_SPAN, False),
    "Sharpness": (sharpness, _ENHANCE_SPAN, False),
    "ShearX": (shear_x, MAX_SHEAR, True),
    "ShearY": (shear_y, MAX_SHEAR, True),
    "TranslateX": (translate_x, MAX_TRANSLATE_PIXELS, True),
    "TranslateY": (translate_y, MAX_TRANSLATE_PIXELS, True),
    "Rotate": (rotate, MAX_ROTATE_DEGREES, True),
}


def op_parameter(name: str, magnitude: float, rng: random.Random) -> float | None:
    """The parameter an op gets at ``magnitude`` (utils/vision_helper.py:arg_dict), or None if it takes none.

    Brightness and Sharpness: factor 0.1 + 1.8 * m / 10 (1.36 at m = 7), never negated. Shears:
    +-0.3 * m / 10; translations: +-10 * m / 10 pixels; Rotate: +-30 * m / 10 degrees, each sign
    with probability 1/2 (one ``rng.random()`` draw; ops without a random sign draw nothing).
    """
    if name not in _OPS:
        raise ValueError(f"unknown augmentation op {name!r}; expected one of {sorted(_OPS)}")
    _, full, signed = _OPS[name]
    if full is None:
        return None
    value = magnitude / MAX_MAGNITUDE * full
    if name in ("Brightness", "Sharpness"):
        value += _ENHANCE_MIN
    if signed and rng.random() < 0.5:
        value = -value
    return value


def apply_op(img: Image.Image, name: str, magnitude: float, rng: random.Random) -> Image.Image:
    """One RandomAugment op at ``magnitude``, always applied (the sign, if any, drawn from ``rng``)."""
    param = op_parameter(name, magnitude, rng)
    func = _OPS[name][0]
    return func(img) if param is None else func(img, param)


def random_augment(
    img: Image.Image,
    rng: random.Random,
    num_ops: int = 2,
    magnitude: float = 7,
    ops: Sequence[str] = PRETRAIN_AUGMENT_OPS,
) -> Image.Image:
    """The original's ``RandomAugment(num_ops, magnitude, isPIL=True, augs=ops)``.

    Draws ``num_ops`` op names uniformly *with* replacement, then applies each in turn with
    probability ``APPLY_PROB`` at the fixed ``magnitude`` (``apply_op``). Geometric ops fill
    with grey (128, 128, 128).

    Pixels can differ slightly from the original's cv2 ops in the bilinear warps (shears,
    rotations, non-integer translations): cv2 interpolates in fixed point (1/32-pixel positions,
    15-bit weights) and rounds, while PIL interpolates in floating point and truncates, so inside
    the image values are often 1 lower; along the edge where the image meets the fill, cv2 blends
    image and grey while PIL takes the edge pixel or grey. Integer translations (all of them at
    integer magnitudes) are exact. For AutoContrast and Sharpness, where the original had uint8
    overflow bugs, see ``autocontrast`` and ``sharpness``.

    Args:
        img: RGB image.
        magnitude: 0 to MAX_MAGNITUDE (10).
        ops: op names, a subset of ``PRETRAIN_AUGMENT_OPS``.

    Returns:
        RGB image of the same size.
    """
    if not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(f"expected 0 <= magnitude <= {MAX_MAGNITUDE}, got {magnitude}")
    unknown = [name for name in ops if name not in _OPS]
    if unknown or not ops:
        raise ValueError(f"expected a non-empty list of ops from {sorted(_OPS)}, got {list(ops)}")
    chosen = [rng.choice(ops) for _ in range(num_ops)]
    for name in chosen:
        if rng.random() > APPLY_PROB:
            continue
        img = apply_op(img, name, magnitude, rng)
    return img
