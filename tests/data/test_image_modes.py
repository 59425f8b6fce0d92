"""to_rgb: every PIL mode against a hand computation (the one conversion training, evaluation and
the CLI use). The bug it replaces: ``convert("RGB")`` clips 16-bit values at 255 (white images)
and drops transparency."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from ofa_cn.data.errors import DataError
from ofa_cn.data.image import decode_image, to_rgb

WHERE = "img.tsv: row 2 (line 3), field 'image'"


def rgb(img: Image.Image) -> np.ndarray:
    out = to_rgb(img, WHERE)
    assert out.mode == "RGB" and out.size == img.size
    return np.asarray(out)


def gray_rows(values) -> np.ndarray:
    """Expected RGB of one row of grey values: uint8 [1, W, 3]."""
    return np.repeat(np.array([values], dtype=np.uint8)[..., None], 3, axis=-1)


def test_rgb_is_unchanged(noise_image):
    img = noise_image(5, 4)
    assert np.array_equal(rgb(img), np.asarray(img))


def test_bilevel_and_grey():
    assert np.array_equal(rgb(Image.frombytes("L", (3, 1), bytes([0, 7, 255])).convert("1")), gray_rows([0, 0, 255]))
    assert np.array_equal(rgb(Image.frombytes("L", (3, 1), bytes([0, 7, 255]))), gray_rows([0, 7, 255]))


# 65535 * 255 / 65535 = 255; 32896 = 128 * 257 -> 128; 1000 * 255 / 65535 = 3.89 -> 4; 257 -> 1
SIXTEEN_BIT = [0, 257, 1000, 32896, 65535]
EIGHT_BIT = [0, 1, 4, 128, 255]


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_16_bit_grey_is_scaled_not_clipped(mode, dtype):
    img = Image.frombytes(mode, (5, 1), np.array(SIXTEEN_BIT, dtype=dtype).tobytes())
    assert np.array_equal(rgb(img), gray_rows(EIGHT_BIT))


def test_16_bit_png_through_decode_image_is_not_white():
    buffer = io.BytesIO()
    Image.fromarray(np.full((3, 4), 16 * 257, dtype=np.uint16)).save(buffer, format="PNG")  # 16-bit grey PNG
    decoded = decode_image(base64.b64encode(buffer.getvalue()).decode(), WHERE)
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.full((3, 4, 3), 16, dtype=np.uint8))  # convert("RGB"): 255


def test_32_bit_integer_grey_reads_16_bit_values():
    img = Image.fromarray(np.array([SIXTEEN_BIT], dtype=np.int32), "I")
    assert np.array_equal(rgb(img), gray_rows(EIGHT_BIT))


@pytest.mark.parametrize("value", [-1, 65536])
def test_32_bit_integer_outside_16_bits_is_an_error(value):
    img = Image.fromarray(np.array([[0, value]], dtype=np.int32), "I")
    pattern = rf"^{re.escape(WHERE)}: an image of mode I .* values in \[0, 65535\].* found {value} "
    with pytest.raises(DataError, match=pattern):
        to_rgb(img, WHERE)


def test_float_grey_on_pils_scale():
    img = Image.fromarray(np.array([[0.0, 127.4, 127.5, 254.6, 255.0]], dtype=np.float32), "F")
    assert np.array_equal(rgb(img), gray_rows([0, 127, 128, 255, 255]))


@pytest.mark.parametrize("value, shown", [(300.0, "300.0"), (float("nan"), "nan"), (-0.5, "-0.5")])
def test_float_grey_outside_0_255_is_an_error(value, shown):
    img = Image.fromarray(np.array([[1.0, value]], dtype=np.float32), "F")
    with pytest.raises(DataError, match=rf"values in \[0, 255\].* found {shown} \(1 pixels outside\)"):
        to_rgb(img, WHERE)


def test_grey_with_alpha_is_composited_on_white():
    # L=100, A=128: (100 * 128 + 255 * 127) / 255 = 177.2 -> 177; A=0 -> white; A=255 -> itself
    img = Image.frombytes("LA", (3, 1), bytes([100, 128, 100, 0, 100, 255]))
    assert np.array_equal(rgb(img), gray_rows([177, 255, 100]))
    premultiplied = img.convert("La")
    assert np.array_equal(rgb(premultiplied), gray_rows([177, 255, 100]))


def test_rgba_is_composited_on_white():
    # (200, 0, 40) at A=64: R (12800 + 48705) / 255 = 241.2 -> 241; G 191; B (2560 + 48705) / 255 = 201.0 -> 201
    img = Image.frombytes("RGBA", (2, 1), bytes([200, 0, 40, 64, 9, 8, 7, 0]))
    assert rgb(img).tolist() == [[[241, 191, 201], [255, 255, 255]]]


def test_palette_with_a_transparent_colour_is_composited_on_white():
    img = Image.frombytes("P", (3, 1), bytes([0, 1, 0]))
    img.putpalette([10, 20, 30, 200, 100, 50])
    opaque = rgb(img)
    assert opaque.tolist() == [[[10, 20, 30], [200, 100, 50], [10, 20, 30]]]
    img.info["transparency"] = 0  # as PIL reads a PNG tRNS chunk / a GIF transparent index
    assert rgb(img).tolist() == [[[255, 255, 255], [200, 100, 50], [255, 255, 255]]]


def test_palette_with_alpha_band():
    img = Image.frombytes("P", (1, 1), bytes([1]))
    img.putpalette([0, 0, 0, 200, 100, 50])
    pa = Image.merge("PA", (img, Image.frombytes("L", (1, 1), bytes([128]))))
    pa.putpalette([0, 0, 0, 200, 100, 50])
    # (c * 128 + 255 * 127) / 255: 200 -> 227.4 -> 227; 100 -> 177.2 -> 177; 50 -> 152.1 -> 152
    assert rgb(pa).tolist() == [[[227, 177, 152]]]


def test_cmyk_without_profile():
    # R = (255 - C) * (255 - K) / 255: C=M=Y=0, K=51 -> 204; C=51, K=51 -> 204 * 204 / 255 = 163.2 -> 163
    img = Image.frombytes("CMYK", (2, 1), bytes([0, 255, 0, 51, 51, 0, 255, 51]))
    assert rgb(img).tolist() == [[[204, 0, 204], [163, 204, 0]]]
