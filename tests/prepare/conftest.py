"""Tiny raw-dataset fixtures for the converters: PNG images of distinct sizes, as bytes."""

from __future__ import annotations

import io

import pytest
from PIL import Image


def png_bytes(width: int, height: int, shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 255 - shade, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def png():
    return png_bytes


def _read_rows(path) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


@pytest.fixture
def read_rows():
    """The columns of every line of a written TSV."""
    return _read_rows
