"""Image decoding and transforms: bit-identical to the original's torchvision-on-PIL pipeline.

The torchvision outputs are stored in fixtures/torchvision_reference.pt, written by
make_torchvision_fixtures.py (torchvision is not installed beside the torch CPU wheel); the
inputs are rebuilt here from the same seeds.
"""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ofa_cn.data.errors import DataError
from ofa_cn.data.image import (
    MEAN_STD,
    decode_image,
    normalize,
    ocr_resize,
    resize_square,
    resize_with_box,
    to_tensor,
)

WHERE = "img.tsv: row 7 (line 8), field 'image'"
REFERENCE_FILE = Path(__file__).resolve().parent / "fixtures" / "torchvision_reference.pt"


@pytest.fixture(scope="module")
def tv_ref() -> dict[str, torch.Tensor]:
    """Case name -> torchvision's output for this file's inputs (see make_torchvision_fixtures.py)."""
    return torch.load(REFERENCE_FILE, weights_only=True)["cases"]


def _ramp_image() -> Image.Image:
    """Every uint8 value once per channel (a copy of make_torchvision_fixtures.ramp_image)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return Image.fromarray(np.stack([ramp, 255 - ramp, ramp.T], axis=-1), "RGB")


def _to_float_pipeline(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """Stored torchvision pixels uint8 [H, W, 3] -> ToTensor -> Normalize, float32 [3, H, W].

    Done with our to_tensor and normalize: both act on each value alone, and
    test_to_tensor_and_normalize_match_torchvision proves them equal to torchvision's on every
    uint8 value of every channel, for both normalisations.
    """
    return normalize(to_tensor(pixels.numpy()), mean, std)


# ------------------------------------------------------------------ decode_image


def test_decode_standard_and_urlsafe_base64(png_b64, noise_image):
    img = noise_image(31, 17)
    standard = png_b64(img)
    assert "+" in standard and "/" in standard  # the two characters the alphabets disagree on
    for text in (standard, png_b64(img, urlsafe=True)):
        decoded = decode_image(text, WHERE)
        assert decoded.mode == "RGB" and decoded.size == (31, 17)
        assert np.array_equal(np.asarray(decoded), np.asarray(img))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_decode_converts_to_rgb(png_b64, noise_image, mode):
    img = noise_image(8, 6).convert(mode)
    decoded = decode_image(png_b64(img), WHERE)
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(img.convert("RGB")))


def _truncated_png(noise_image):
    buffer = io.BytesIO()
    noise_image(40, 40).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()[:200]).decode()


@pytest.mark.parametrize(
    "make_text, expected",
    [
        (lambda _: "abc", "expected base64 of an image file, found text that is not base64"),
        (lambda _: "图片", "expected base64 of an image file, found text that is not base64"),
        (lambda _: base64.b64encode(b"not an image at all").decode(), "found 19 bytes that PIL cannot read"),
        (lambda _: "", "found 0 bytes that PIL cannot read"),
        (_truncated_png, "found 200 bytes that PIL cannot read"),
    ],
    ids=["bad-padding", "non-ascii", "not-an-image", "empty", "truncated-png"],
)
def test_decode_errors_name_the_location(noise_image, make_text, expected):
    with pytest.raises(DataError) as err:
        decode_image(make_text(noise_image), WHERE)
    assert str(err.value).startswith(WHERE + ": ")
    assert expected in str(err.value)
    assert "skip_bad_rows=True" in str(err.value)


# ------------------------------------------------------------------ caption and grounding


@pytest.mark.parametrize("name", ["noise_13x9", "ramp_16x16"])
def test_to_tensor_and_normalize_match_torchvision(noise_image, tv_ref, name):
    img = noise_image(13, 9) if name == "noise_13x9" else _ramp_image()
    tensor = to_tensor(img)
    assert torch.equal(tensor, tv_ref[f"to_tensor/{name}"])
    for imagenet, (mean, std) in MEAN_STD.items():
        assert torch.equal(normalize(tensor, mean, std), tv_ref[f"normalize/{name}/imagenet={imagenet}"])
    assert torch.equal(normalize(tensor, *MEAN_STD[False]), tensor * 2 - 1)


def test_ramp_holds_every_value_in_every_channel():
    pixels = np.asarray(_ramp_image())
    for c in range(3):
        assert sorted(pixels[..., c].ravel().tolist()) == list(range(256))


@pytest.mark.parametrize("imagenet", [False, True])
@pytest.mark.parametrize("width, height, size", [(64, 48, 32), (20, 50, 48), (33, 33, 33)])
def test_resize_square_is_bit_identical_to_torchvision(noise_image, tv_ref, imagenet, width, height, size):
    # The original caption pipeline: Resize((size, size), BICUBIC) -> ToTensor -> Normalize.
    img = noise_image(width, height, seed=width)
    mean, std = MEAN_STD[imagenet]
    ours = resize_square(img, size, mean, std)
    assert ours.shape == (3, size, size) and ours.dtype == torch.float32
    expected = _to_float_pipeline(tv_ref[f"resize_square/{width}x{height}_to_{size}"], mean, std)
    assert torch.equal(ours, expected)


def test_caption_preprocessing_equals_golden(golden_image, golden_inputs):
    # The original caption dataset's output for image_real.png (320x240) at patch_image_size 256.
    ours = resize_square(golden_image, 256, *MEAN_STD[False])
    torch.testing.assert_close(ours, golden_inputs["image_real_preprocessed"], atol=1e-6, rtol=0)


def test_resize_with_box(noise_image):
    img = noise_image(320, 240)
    tensor, box, w_ratio, h_ratio = resize_with_box(img, [60, 90, 110, 230], 256, *MEAN_STD[False])
    assert torch.equal(tensor, resize_square(img, 256, *MEAN_STD[False]))  # always S x S
    assert (w_ratio, h_ratio) == (0.8, 256 / 240)
    # scaled in float32 with float32 ratios, as the original: 90 * 1.0666667 = 96.00001
    assert box.dtype == torch.float32
    h32 = np.float32(256 / 240)
    assert box.tolist() == [48.0, np.float32(90) * h32, 88.0, np.float32(230) * h32]
    torch.testing.assert_close(box, torch.tensor([48.0, 96.0, 88.0, 245.3333]), atol=1e-4, rtol=0)


# ------------------------------------------------------------------ OCR


# The original OCR pipeline: F.resize bicubic, F.pad edge, ToTensor, Normalize. The stored
# references are torchvision's pixels after F.pad; each test names the resize (h, w) and the
# padding (left, top, right, bottom) they were made with.


def test_ocr_wide_image_is_centred_at_evaluation(noise_image, tv_ref):
    img = noise_image(200, 50)  # new_h = int(128 * 50 / 200) = 32 -> raised to 64
    mean, std = MEAN_STD[False]
    ours = ocr_resize(img, 128, mean, std, rng=None)
    assert ours.shape == (3, 128, 128)
    # resize (64, 128), padding (0, 32, 0, 32)
    assert torch.equal(ours, _to_float_pipeline(tv_ref["ocr/200x50_to_128"], mean, std))
    # edge replication: every padded row repeats the nearest image row
    assert torch.equal(ours[:, :32], ours[:, 32:33].expand(3, 32, 128))
    assert torch.equal(ours[:, 96:], ours[:, 95:96].expand(3, 32, 128))


def test_ocr_tall_image_pads_the_width(noise_image, tv_ref):
    img = noise_image(60, 150)  # new_w = int(100 * 60 / 150) = 40 -> 64; free width 36 -> left 18
    mean, std = MEAN_STD[True]
    ours = ocr_resize(img, 100, mean, std, rng=None)
    # resize (100, 64), padding (18, 0, 18, 0)
    assert torch.equal(ours, _to_float_pipeline(tv_ref["ocr/60x150_to_100"], mean, std))


def test_ocr_training_offset_comes_from_the_rng(noise_image, tv_ref):
    img = noise_image(300, 120)  # new_h = int(128 * 120 / 300) = 51 -> 64; free 64
    mean, std = MEAN_STD[False]
    ours = ocr_resize(img, 128, mean, std, rng=random.Random(5))
    # resize (64, 128), padding (0, top, 0, 64 - top) with top = random.Random(5).randint(0, 64)
    assert torch.equal(ours, _to_float_pipeline(tv_ref["ocr/300x120_to_128_rng5"], mean, std))
    assert torch.equal(ours, ocr_resize(img, 128, mean, std, rng=random.Random(5)))  # reproducible


def test_ocr_short_side_keeps_its_ratio_above_64(noise_image, tv_ref):
    img = noise_image(160, 120)  # new_h = int(128 * 0.75) = 96
    ours = ocr_resize(img, 128, *MEAN_STD[False], rng=None)
    # resize (96, 128), padding (0, 16, 0, 16)
    assert torch.equal(ours, _to_float_pipeline(tv_ref["ocr/160x120_to_128"], *MEAN_STD[False]))


def test_ocr_document_mode(noise_image):
    img = noise_image(700, 40)
    mean, std = MEAN_STD[False]
    ours = ocr_resize(img, 480, mean, std, rng=None, is_document=True)
    # The original's F.resize(img, [64, 1920], BICUBIC) on a PIL image is PIL's resize to (w, h);
    # the OCR references above prove that bit for bit, so its 360 KB output is not stored.
    line = to_tensor(img.resize((1920, 64), Image.Resampling.BICUBIC))
    stacked = torch.cat(line.chunk(4, dim=-1), dim=-2)  # [3, 256, 480], as the original stacks it
    # top offset (480 - 256) // 2 = 112; rows above repeat the first row, rows below the last
    expected = torch.cat([stacked[:, :1].expand(3, 112, 480), stacked, stacked[:, -1:].expand(3, 112, 480)], dim=1)
    assert torch.equal(ours, normalize(expected, mean, std))


def test_ocr_bad_sizes(noise_image):
    img = noise_image(40, 20)
    with pytest.raises(ValueError, match="patch_image_size >= 64"):
        ocr_resize(img, 48, *MEAN_STD[False])
    with pytest.raises(ValueError, match="document mode needs patch_image_size 480 .*got 256"):
        ocr_resize(img, 256, *MEAN_STD[False], is_document=True)
