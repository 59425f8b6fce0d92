"""Image decoding and transforms: bit-identical to the original's torchvision-on-PIL pipeline."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

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


def _torchvision_resize(img, size_hw, mean, std):
    """The original caption pipeline: Resize((h, w), BICUBIC) -> ToTensor -> Normalize."""
    pipeline = transforms.Compose([
        transforms.Resize(size_hw, interpolation=InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(mean=mean, std=std),
    ])
    return pipeline(img)


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


def test_to_tensor_and_normalize_match_torchvision(noise_image):
    img = noise_image(13, 9)
    tensor = to_tensor(img)
    assert torch.equal(tensor, TF.to_tensor(img))
    for mean, std in MEAN_STD.values():
        assert torch.equal(normalize(tensor, mean, std), TF.normalize(tensor, mean, std))
    assert torch.equal(normalize(tensor, *MEAN_STD[False]), tensor * 2 - 1)


@pytest.mark.parametrize("imagenet", [False, True])
@pytest.mark.parametrize("width, height, size", [(64, 48, 32), (20, 50, 48), (33, 33, 33)])
def test_resize_square_is_bit_identical_to_torchvision(noise_image, imagenet, width, height, size):
    img = noise_image(width, height, seed=width)
    mean, std = MEAN_STD[imagenet]
    ours = resize_square(img, size, mean, std)
    assert ours.shape == (3, size, size) and ours.dtype == torch.float32
    assert torch.equal(ours, _torchvision_resize(img, (size, size), mean, std))


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


def _torchvision_ocr(img, resize_hw, padding_ltrb, mean, std):
    """The original OCR pipeline: F.resize bicubic, F.pad edge, ToTensor, Normalize."""
    resized = TF.resize(img, list(resize_hw), interpolation=InterpolationMode.BICUBIC)
    padded = TF.pad(resized, list(padding_ltrb), padding_mode="edge")
    return TF.normalize(TF.to_tensor(padded), mean, std)


def test_ocr_wide_image_is_centred_at_evaluation(noise_image):
    img = noise_image(200, 50)  # new_h = int(128 * 50 / 200) = 32 -> raised to 64
    mean, std = MEAN_STD[False]
    ours = ocr_resize(img, 128, mean, std, rng=None)
    assert ours.shape == (3, 128, 128)
    assert torch.equal(ours, _torchvision_ocr(img, (64, 128), (0, 32, 0, 32), mean, std))
    # edge replication: every padded row repeats the nearest image row
    assert torch.equal(ours[:, :32], ours[:, 32:33].expand(3, 32, 128))
    assert torch.equal(ours[:, 96:], ours[:, 95:96].expand(3, 32, 128))


def test_ocr_tall_image_pads_the_width(noise_image):
    img = noise_image(60, 150)  # new_w = int(100 * 60 / 150) = 40 -> 64; free width 36 -> left 18
    mean, std = MEAN_STD[True]
    ours = ocr_resize(img, 100, mean, std, rng=None)
    assert torch.equal(ours, _torchvision_ocr(img, (100, 64), (18, 0, 18, 0), mean, std))


def test_ocr_training_offset_comes_from_the_rng(noise_image):
    img = noise_image(300, 120)  # new_h = int(128 * 120 / 300) = 51 -> 64; free 64
    mean, std = MEAN_STD[False]
    top = random.Random(5).randint(0, 64)
    ours = ocr_resize(img, 128, mean, std, rng=random.Random(5))
    assert torch.equal(ours, _torchvision_ocr(img, (64, 128), (0, top, 0, 64 - top), mean, std))
    assert torch.equal(ours, ocr_resize(img, 128, mean, std, rng=random.Random(5)))  # reproducible


def test_ocr_short_side_keeps_its_ratio_above_64(noise_image):
    img = noise_image(160, 120)  # new_h = int(128 * 0.75) = 96
    ours = ocr_resize(img, 128, *MEAN_STD[False], rng=None)
    assert torch.equal(ours, _torchvision_ocr(img, (96, 128), (0, 16, 0, 16), *MEAN_STD[False]))


def test_ocr_document_mode(noise_image):
    img = noise_image(700, 40)
    mean, std = MEAN_STD[False]
    ours = ocr_resize(img, 480, mean, std, rng=None, is_document=True)
    line = TF.to_tensor(TF.resize(img, [64, 1920], interpolation=InterpolationMode.BICUBIC))
    stacked = torch.cat(line.chunk(4, dim=-1), dim=-2)  # [3, 256, 480], as the original stacks it
    # top offset (480 - 256) // 2 = 112; rows above repeat the first row, rows below the last
    expected = torch.cat([stacked[:, :1].expand(3, 112, 480), stacked, stacked[:, -1:].expand(3, 112, 480)], dim=1)
    assert torch.equal(ours, TF.normalize(expected, mean, std))


def test_ocr_bad_sizes(noise_image):
    img = noise_image(40, 20)
    with pytest.raises(ValueError, match="patch_image_size >= 64"):
        ocr_resize(img, 48, *MEAN_STD[False])
    with pytest.raises(ValueError, match="document mode needs patch_image_size 480 .*got 256"):
        ocr_resize(img, 256, *MEAN_STD[False], is_document=True)
