"""Pure functions for OFA's positions: relative-position buckets and image position ids.

All tables are index tables (int64); the model looks learned per-layer biases up through them.
"""

from __future__ import annotations

import math

import torch

from .config import PATCH_STRIDE


def token_bucket_table(bucket_size: int, max_position: int) -> torch.Tensor:
    """Relative-position bucket of every (query i, key j) pair of text positions.

    rel = i - j is its own bucket while |rel| <= bucket_size // 2; beyond, buckets grow
    logarithmically up to max_position - 1. Computed in float32 as the original did.

    Returns:
        [max_position, max_position] int64, values in [0, 2 * bucket_size - 2].
    """
    mid = bucket_size // 2
    pos = torch.arange(max_position)
    rel = pos[:, None] - pos[None, :]  # [P, P]
    sign = torch.sign(rel)
    # inside the exact zone the log term is unused; clamp keeps log() finite there
    abs_rel = torch.where(rel.abs() <= mid, torch.full_like(rel, mid), rel.abs()).float()
    log_bucket = torch.ceil(
        torch.log(abs_rel / mid) / math.log((max_position - 1) / mid) * (mid - 1)
    ).long() + mid
    bucket = torch.where(rel.abs() <= mid, rel, log_bucket * sign)
    return bucket + bucket_size - 1


def num_image_buckets(bucket_size: int) -> int:
    """Rows of an image relative-position table: (2b-1)^2 grid offsets + 3 for position id 0."""
    return (2 * bucket_size - 1) ** 2 + 3


def image_bucket_table(bucket_size: int) -> torch.Tensor:
    """Relative-position bucket of every pair of image position ids on a bucket_size^2 grid.

    Position id p >= 1 is the grid cell ((p-1) // b, (p-1) % b); id 0 is a reserved slot with
    its own three buckets (row 0, column 0, and the corner).

    Returns:
        [b*b + 1, b*b + 1] int64, values in [0, num_image_buckets(b) - 1].
    """
    b = bucket_size
    span = 2 * b - 1
    cells = torch.arange(b * b)
    row, col = cells // b, cells % b
    drow = row[:, None] - row[None, :] + b - 1  # [b*b, b*b], in [0, 2b-2]
    dcol = col[:, None] - col[None, :] + b - 1
    n = num_image_buckets(b)
    table = torch.empty(b * b + 1, b * b + 1, dtype=torch.long)
    table[1:, 1:] = drow * span + dcol
    table[0, :] = n - 3
    table[:, 0] = n - 2
    table[0, 0] = n - 1
    return table


def image_position_ids(height: int, width: int, bucket_size: int) -> torch.Tensor:
    """Position ids of an h x w patch grid, row-major: col + row * bucket_size + 1.

    Returns:
        [height * width] int64.
    """
    if height > bucket_size or width > bucket_size:
        raise ValueError(
            f"image grid {height}x{width} patches exceeds image_bucket_size {bucket_size}; "
            f"use images of at most {bucket_size * PATCH_STRIDE} px per side"
        )
    rows = torch.arange(height)[:, None] * bucket_size
    cols = torch.arange(width)[None, :]
    return (rows + cols + 1).flatten()


IMAGE_CODE_PAD_ID = 1024  # fill value of the table's tail in the released format
IMAGE_CODE_PAD_COUNT = 769


def decoder_image_position_table(code_image_size: int, bucket_size: int) -> torch.Tensor:
    """The decoder's `image_position_idx` buffer: [0], the code grid's ids, then 769 x 1024.

    Only image-code generation reads it; it is kept because it is part of the checkpoint format
    (1026 entries for the released code_image_size 128).

    Returns:
        [1 + (code_image_size // 8) ** 2 + 769] int64.
    """
    side = code_image_size // 8  # VQGAN codes are 8x8-pixel cells
    grid = image_position_ids(side, side, bucket_size)
    tail = torch.full((IMAGE_CODE_PAD_COUNT,), IMAGE_CODE_PAD_ID, dtype=torch.long)
    return torch.cat([torch.zeros(1, dtype=torch.long), grid, tail])
