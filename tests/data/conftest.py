"""Fixtures for the data tests: factories for tiny images, base64 columns and TSV files.

The golden reference fixtures (``golden_dir``, ``golden_inputs``) come from tests/conftest.py.
Helpers are fixtures because tests import in importlib mode, where conftest is not importable.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _png_b64(img: Image.Image, urlsafe: bool = False) -> str:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(buffer.getvalue()).decode("ascii")


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def png_b64():
    """png_b64(img, urlsafe=False) -> the image's PNG bytes as base64, as a TSV image column."""
    return _png_b64


@pytest.fixture(scope="session")
def noise_image():
    """noise_image(w, h, seed=0) -> seeded RGB noise (every pixel differs, so a wrong resize shows)."""
    return _noise_image


@pytest.fixture(scope="session")
def write_tsv():
    """write_tsv(path, rows) -> path, rows joined by tabs and newlines, UTF-8."""
    return _write_tsv


@pytest.fixture(scope="session")
def tokenizer():
    from ofa_cn.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture(scope="session")
def golden_image(golden_dir) -> Image.Image:
    """image_real.png: the 320x240 picture behind row 1 of the golden inputs."""
    with Image.open(golden_dir / "image_real.png") as img:
        return img.convert("RGB")
