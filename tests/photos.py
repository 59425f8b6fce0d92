"""Test inputs for the single-image path: photo-like pictures of odd sizes and tiny task checkpoints.

Importable as ``photos`` (pytest's pythonpath includes tests/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from helpers import randomize_, tiny_config
from ofa_cn.model.ofa import OFAModel

EXIF_ORIENTATION = 0x0112  # the EXIF tag; value 6 = "rotate 90 degrees clockwise to display"
MODEL_ARGS = ("resnet_type", "encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
              "decoder_ffn_embed_dim", "encoder_attention_heads", "decoder_attention_heads", "encoder_layers",
              "decoder_layers", "token_bucket_size", "image_bucket_size", "max_source_positions",
              "max_target_positions", "code_image_size")


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like uint8 [H, W, 3] picture: smooth colour gradients, a bright disc, a dark bar, grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([80 + 100 * y / height, 120 + 60 * x / width, 200 - 80 * y / height], axis=-1)
    cx, cy, r = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height, 0.2 * min(width, height)
    disc = ((x - cx) ** 2 + (y - cy) ** 2 < r ** 2)[..., None]
    bar = ((x > 0.1 * width) & (x < 0.3 * width) & (y > 0.5 * height))[..., None]
    pixels = np.where(disc, [250, 210, 40], np.where(bar, [30, 30, 40], sky))
    pixels = pixels + rng.normal(0, 6, pixels.shape)  # sensor grain
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_photos(folder: Path) -> dict[str, Path]:
    """Four files as users have them: a JPEG photo of odd size, a portrait PNG, a JPEG whose EXIF
    says rotate 90 (stored 120 x 80, shown 80 x 120), an RGBA PNG with a transparent part."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"odd.jpg": folder / "odd.jpg", "portrait.png": folder / "portrait.png",
             "rotated.jpg": folder / "rotated.jpg", "rgba.png": folder / "rgba.png"}
    Image.fromarray(photo(333, 217, 1)).save(files["odd.jpg"], quality=90)
    Image.fromarray(photo(61, 97, 2)).save(files["portrait.png"])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(photo(120, 80, 3)).save(files["rotated.jpg"], quality=90, exif=exif)
    rgba = np.concatenate([photo(75, 50, 4), np.full((50, 75, 1), 255, np.uint8)], axis=-1)
    rgba[:, :20, 3] = 0  # transparent left edge
    Image.fromarray(rgba, "RGBA").save(files["rgba.png"])
    return files


def save_tiny_checkpoint(path: Path, task: dict, seed: int = 0) -> Path:
    """A tiny model (every size different) saved as the original trainer lays a checkpoint out,
    with ``task`` as its saved task config."""
    cfg = tiny_config()
    model = randomize_(OFAModel.from_config(cfg), seed)
    args = argparse.Namespace(arch="ofa_base", _name="ofa_base", **{k: getattr(cfg, k) for k in MODEL_ARGS})
    torch.save({"args": None, "cfg": {"model": args, "task": task}, "model": model.state_dict()}, path)
    return path
