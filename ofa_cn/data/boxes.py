"""Boxes <-> quantised ``<bin_k>`` coordinates, as pure functions.

A box is (x0, y0, x1, y1) in pixels. After the grounding resize each coordinate is divided by
``max_image_size`` (a task config field, not the patch size) and mapped to one of ``num_bins``
bins: ``k = round(v / max_image_size * (num_bins - 1))``. Both directions compute in float32
with torch's round-half-to-even, as the original did, so bins and decoded boxes match it exactly.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .errors import FIX_OR_SKIP, DataError


def box_to_bins(box: Sequence[float] | torch.Tensor, max_image_size: int, num_bins: int) -> list[int]:
    """Box in resized pixels -> 4 bin numbers (not yet dictionary ids; see ``tokenizer.bin_id``).

    Example: with max_image_size 512 and 1000 bins, x = 256 -> round(0.5 * 999) = round(499.5) = 500
    (half to even), and x = 1 -> round(1.951...) = 2.

    Raises:
        ValueError: a coordinate outside [0, max_image_size], whose bin would not exist.
    """
    coords = torch.as_tensor(box, dtype=torch.float32)  # [4]
    bins = (coords / max_image_size * (num_bins - 1)).round().long()
    if bins.min() < 0 or bins.max() > num_bins - 1:
        raise ValueError(
            f"box {coords.tolist()} gives bins {bins.tolist()} outside [0, {num_bins - 1}]: coordinates must lie "
            f"in [0, max_image_size={max_image_size}]; use patch_image_size <= max_image_size."
        )
    return bins.tolist()


def bins_to_box(
    bins: Sequence[int] | torch.Tensor,
    max_image_size: int,
    num_bins: int,
    w_ratio: float,
    h_ratio: float,
    resized_size: int | None = None,
) -> list[float]:
    """4 bin numbers -> box in original-image pixels (the inverse of resize + ``box_to_bins``).

    ``v = bin / (num_bins - 1) * max_image_size``, then x /= w_ratio and y /= h_ratio, where the
    ratios are resized size / original size (``resize_with_box``). Computed in float32.

    Args:
        resized_size: the side S of the resized image (``patch_image_size``); when given, ``v`` is
            clipped to [0, S] first, so the box lies inside the original image (S / ratio = its
            side). Without clipping, a max_image_size larger than S maps the last bins past the
            image's edge.
    """
    coords = torch.as_tensor(bins, dtype=torch.long) / (num_bins - 1) * max_image_size  # float32 [4]
    if resized_size is not None:
        coords = coords.clamp(0, resized_size)
    ratios = torch.tensor([w_ratio, h_ratio, w_ratio, h_ratio], dtype=torch.float32)
    return (coords / ratios).tolist()


def parse_box(
    text: str,
    where: str,
    image_size: tuple[int, int] | None = None,
) -> list[float]:
    """``"x0,y0,x1,y1"`` (pixels) -> [x0, y0, x1, y1], checked.

    Args:
        text: the box column of a grounding TSV row.
        where: the location for errors, e.g. ``location(path, row, "box")``.
        image_size: (width, height) of the image; when given, the box must lie inside it
            (x1 == width is inside: the right and bottom edges may be exclusive).

    Raises:
        DataError: not 4 finite numbers, x1 < x0 or y1 < y0 (inverted), zero width or height, or
            outside the image. The one box check: training, evaluation and pretraining rows use it.
    """
    parts = text.split(",")
    expected = 'expected "x0,y0,x1,y1" (4 comma-separated pixel coordinates)'
    if len(parts) != 4:
        raise DataError(where, f"{expected}, found {len(parts)} values in {text!r}. {FIX_OR_SKIP}")
    try:
        box = [float(p) for p in parts]
    except ValueError:
        raise DataError(where, f"{expected}, found a value that is not a number in {text!r}. {FIX_OR_SKIP}") from None
    if not all(math.isfinite(v) for v in box):
        raise DataError(where, f"{expected}, found a value that is not finite in {text!r}. {FIX_OR_SKIP}")
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        raise DataError(
            where, f"expected x0 <= x1 and y0 <= y1 (corners top-left then bottom-right), found {text!r}. {FIX_OR_SKIP}"
        )
    if x1 == x0 or y1 == y0:
        # it could never be hit (IoU needs an overlap of positive width and height), and
        # evaluation would stop on it after all generation
        raise DataError(
            where, f"expected a box of positive width and height, found {text!r} "
            f"({x1 - x0:g} wide, {y1 - y0:g} high). {FIX_OR_SKIP}"
        )
    if image_size is not None:
        width, height = image_size
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise DataError(
                where, f"box {text!r} lies outside the {width}x{height} (w x h) image; expected "
                f"0 <= x0 <= x1 <= {width} and 0 <= y0 <= y1 <= {height}. {FIX_OR_SKIP}"
            )
    return box
