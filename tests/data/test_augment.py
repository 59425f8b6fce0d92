"""Pretraining augmentations: sizes, offsets and box arithmetic of the original's transforms, op by op.

torchvision's CenterCrop outputs are stored in fixtures/torchvision_reference.pt, written by
make_torchvision_fixtures.py (torchvision is not installed beside the torch CPU wheel).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps

from ofa_cn.data.augment import (
    FILL,
    PRETRAIN_AUGMENT_OPS,
    apply_op,
    autocontrast,
    brightness,
    center_crop,
    equalize,
    hflip,
    identity,
    large_scale_jitter,
    object_center_crop,
    op_parameter,
    random_augment,
    random_hflip,
    random_resize,
    resize_short_side,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    short_side_size,
    translate_x,
    translate_y,
)

REFERENCE_FILE = Path(__file__).resolve().parent / "fixtures" / "torchvision_reference.pt"


@pytest.fixture(scope="module")
def tv_ref() -> dict[str, torch.Tensor]:
    """Case name -> torchvision's output for this file's inputs (see make_torchvision_fixtures.py)."""
    return torch.load(REFERENCE_FILE, weights_only=True)["cases"]


def _marker_image(width: int, height: int, x: int, y: int) -> Image.Image:
    """Black image with one white pixel at (x, y)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[y, x] = 255
    return Image.fromarray(pixels, "RGB")


def _white_pixels(img: Image.Image) -> list[tuple[int, int]]:
    """(x, y) of every pure-white pixel."""
    ys, xs = np.nonzero(np.asarray(img).min(axis=2) == 255)
    return list(zip(xs.tolist(), ys.tolist()))


def _find_window(out: Image.Image, src: Image.Image) -> tuple[int, int]:
    """(left, top) of the window of ``src`` whose pixels equal ``out``; fails if there is none."""
    out_a, src_a = np.asarray(out), np.asarray(src)
    h, w = out_a.shape[:2]
    hits = [
        (left, top)
        for top in range(src_a.shape[0] - h + 1)
        for left in range(src_a.shape[1] - w + 1)
        if np.array_equal(src_a[top:top + h, left:left + w], out_a)
    ]
    assert len(hits) == 1, f"expected exactly one matching window, found {hits}"
    return hits[0]


# ----------------------------------------------------------------------------- resize and crops


def test_short_side_size_caps_each_side_separately():
    # 200 x 100 (w x h), size 150: h = 150, w = int(150 * 200 / 100) = 300 -> min(300, 250) = 250.
    assert short_side_size(200, 100, 150, 250) == (250, 150)
    # Short side already 150 (w <= h and w == size): kept; h = min(300, 250) = 250.
    assert short_side_size(150, 300, 150, 250) == (150, 250)
    # 301 x 200, size 150: w = int(150 * 301 / 200) = int(225.75) = 225 (truncated, not rounded).
    assert short_side_size(301, 200, 150, 672) == (225, 150)
    assert short_side_size(100, 300, 150, None) == (150, 450)


def test_random_resize_pixels_and_boxes(noise_image):
    img = noise_image(200, 100)
    resized, boxes = random_resize(img, [150], 250, random.Random(0), boxes=[[10, 20, 110, 60]])
    assert resized.size == (250, 150)
    # x scales by 250 / 200 = 1.25, y by 150 / 100 = 1.5.
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[12.5, 30.0, 137.5, 90.0]]
    # The original called torchvision's F.resize(img, (h, w), BICUBIC) on the PIL image, which is
    # PIL's resize to (w, h) (test_image.py's OCR tests prove it against stored torchvision output).
    expected = img.resize((250, 150), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(resized), np.asarray(expected))
    assert resize_short_side(img, 150, 250)[1] is None


def test_random_resize_draws_every_scale(noise_image):
    img = noise_image(40, 20)
    heights = {random_resize(img, [10, 12, 14], None, random.Random(seed))[0].height for seed in range(30)}
    assert heights == {10, 12, 14}
    first = random_resize(img, list(range(10, 30)), None, random.Random(7))[0]
    again = random_resize(img, list(range(10, 30)), None, random.Random(7))[0]
    assert first.size == again.size


def test_center_crop_slice_and_padding(noise_image):
    img = noise_image(10, 8)
    # top = round((8 - 4) / 2) = 2, left = round((10 - 4) / 2) = 3.
    np.testing.assert_array_equal(np.asarray(center_crop(img, 4)), np.asarray(img)[2:6, 3:7])
    # 11 x 8: left = round(3.5) = 4 and 9 x 9: round(2.5) = 2 (Python's round, half to even).
    for (width, height), rows, cols in [((11, 8), np.s_[2:6], np.s_[4:8]), ((9, 9), np.s_[2:6], np.s_[2:6])]:
        img = noise_image(width, height)
        np.testing.assert_array_equal(np.asarray(center_crop(img, 4)), np.asarray(img)[rows, cols])
    small = noise_image(3, 2)
    padded = np.asarray(center_crop(small, 4))
    assert padded.shape == (4, 4, 3)
    # Padding (4 - 3) // 2 = 0 left, 1 right; (4 - 2) // 2 = 1 top, 1 bottom; black.
    np.testing.assert_array_equal(padded[1:3, 0:3], np.asarray(small))
    assert (padded[[0, 3]] == 0).all() and (padded[:, 3] == 0).all()


@pytest.mark.parametrize(
    "width, height, size",
    # Offsets (W - size) / 2 whole and ending in .5, even and odd pads, one side padded while the
    # other is cropped, no-ops (the same list as make_torchvision_fixtures.CENTER_CROP_CASES).
    [(10, 8, 4), (5, 4, 4), (7, 4, 4), (9, 9, 4), (11, 8, 4), (4, 4, 4),
     (3, 2, 4), (2, 3, 5), (4, 9, 7), (13, 3, 6), (3, 13, 6), (1, 1, 3)],
)
def test_center_crop_matches_torchvision(noise_image, tv_ref, width, height, size):
    out = center_crop(noise_image(width, height), size)
    assert out.size == (size, size) and out.mode == "RGB"
    expected = tv_ref[f"center_crop/{width}x{height}_to_{size}"]
    assert torch.equal(torch.from_numpy(np.array(out)), expected)


@pytest.mark.parametrize(
    "box, left, top, expected_box",
    [
        # centre (75, 40): left = max(75 - 20 + min(100 - 75 - 20, 0), 0) = 55, top = 20.
        ((60, 30, 90, 50), 55, 20, [5, 10, 35, 30]),
        # centre (90, 20) near the right edge: left = 70 + min(-10, 0) = 60; top = max(0 + 0, 0) = 0.
        ((80, 10, 100, 30), 60, 0, [20, 10, 40, 30]),
        # the whole image: left 30, top 20; the box (-30, -20, 70, 60) is clipped to [0, 40].
        ((0, 0, 100, 80), 30, 20, [0, 0, 40, 40]),
        # centre (20.5, 20.5): the box moves by 0.5, the pixels by round(0.5) = 0 (half to even).
        ((10, 10, 31, 31), 0, 0, [9.5, 9.5, 30.5, 30.5]),
        # centre (22.5, 22.5): offset 2.5 -> pixels by round(2.5) = 2, the box by 2.5.
        ((12, 12, 33, 33), 2, 2, [9.5, 9.5, 30.5, 30.5]),
    ],
)
def test_object_center_crop(noise_image, box, left, top, expected_box):
    img = noise_image(100, 80)
    cropped, new_box = object_center_crop(img, box, 40)
    assert cropped.size == (40, 40)
    np.testing.assert_array_equal(np.asarray(cropped), np.asarray(img)[top:top + 40, left:left + 40])
    assert new_box.dtype == torch.float32
    assert new_box.tolist() == expected_box


def test_object_center_crop_of_a_small_image_pads_black(noise_image):
    img = noise_image(30, 20)
    cropped, box = object_center_crop(img, (5, 5, 15, 15), 40)
    pixels = np.asarray(cropped)
    np.testing.assert_array_equal(pixels[:20, :30], np.asarray(img))
    assert (pixels[20:] == 0).all() and (pixels[:, 30:] == 0).all()
    assert box.tolist() == [5, 5, 15, 15]


# ----------------------------------------------------------------------------- detection


def test_hflip_pixels_and_boxes(noise_image):
    img = noise_image(100, 50)
    flipped, boxes = hflip(img, [[10, 20, 30, 40]])
    assert boxes.tolist() == [[70, 20, 90, 40]]
    np.testing.assert_array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])


def test_random_hflip_probability(noise_image):
    img = noise_image(100, 50)
    assert random_hflip(img, [[10, 20, 30, 40]], random.Random(0), p=1.0)[1].tolist() == [[70, 20, 90, 40]]
    assert random_hflip(img, [[10, 20, 30, 40]], random.Random(0), p=0.0)[1].tolist() == [[10, 20, 30, 40]]
    outcomes = {random_hflip(img, [[10, 20, 30, 40]], random.Random(s))[1][0, 0].item() for s in range(20)}
    assert outcomes == {10.0, 70.0}


def test_large_scale_jitter_crops_shifts_and_drops(noise_image):
    # Scale exactly 1 on 200 x 100 (w x h) with output 100: scale = max(100/100, 100/200) = 1, so no
    # resize; the window's top is 0 and its left is floor(100 * u).
    img = noise_image(200, 100)
    boxes = [[0, 10, 8, 50], [150, 20, 190, 60], [90, 0, 110, 100]]
    lefts = set()
    for seed in range(20):
        out, kept, labels = large_scale_jitter(img, boxes, ["a", "b", "c"], 100, 1.0, 1.0, random.Random(seed))
        assert out.size == (100, 100)
        left, top = _find_window(out, img)
        assert top == 0
        lefts.add(left)
        expected = {
            "a": [0, 10, 8 - left, 50],  # gone once left >= 8
            "b": [150 - left, 20, min(190 - left, 100), 60],  # gone while left + 100 <= 150
            "c": [max(90 - left, 0), 0, min(110 - left, 100), 100],  # overlaps every window
        }
        expected_labels = [name for name, b in expected.items() if b[2] > b[0]]
        assert labels == expected_labels
        assert kept.tolist() == [expected[name] for name in expected_labels]
        assert kept.min() >= 0 and kept.max() <= 100
    assert min(lefts) < 8 <= max(lefts)  # both fates of box "a" were seen
    assert min(lefts) <= 50 < max(lefts)  # and of box "b"


def test_large_scale_jitter_scales_short_side(noise_image):
    # s = 1.5, output 64: short side round(1.5 * 64) = 96; scale = max(96/100, 96/200) = 0.96
    # -> (h, w) = (96, 192); boxes scale by 0.96 both ways; then a 64 x 64 window.
    img = noise_image(200, 100)
    out, kept, labels = large_scale_jitter(img, [[50, 25, 150, 75]], [3], 64, 1.5, 1.5, random.Random(1))
    resized = img.resize((192, 96), Image.Resampling.BICUBIC)
    left, top = _find_window(out, resized)
    expected = torch.tensor([[48.0, 24.0, 144.0, 72.0]]) - torch.tensor([left, top, left, top])
    assert labels == [3]
    assert kept.tolist() == expected.clamp(0, 64).tolist()


def test_large_scale_jitter_below_one_pads_bottom_right(noise_image):
    img = noise_image(100, 100)
    out, kept, labels = large_scale_jitter(img, [[20, 20, 60, 60]], ["x"], 100, 0.5, 0.5, random.Random(0))
    pixels = np.asarray(out)
    np.testing.assert_array_equal(pixels[:50, :50], np.asarray(img.resize((50, 50), Image.Resampling.BICUBIC)))
    assert (pixels[50:] == 0).all() and (pixels[:, 50:] == 0).all()
    assert kept.tolist() == [[10, 10, 30, 30]] and labels == ["x"]


def test_large_scale_jitter_is_reproducible_and_checks_labels(noise_image):
    img = noise_image(60, 40)
    boxes = [[5, 5, 20, 30], [30, 10, 55, 35]]
    a = large_scale_jitter(img, boxes, [0, 1], 32, 1.0, 1.5, random.Random(3))
    b = large_scale_jitter(img, boxes, [0, 1], 32, 1.0, 1.5, random.Random(3))
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert torch.equal(a[1], b[1]) and a[2] == b[2]
    out, kept, labels = large_scale_jitter(img, [], [], 32, 1.0, 1.5, random.Random(3))
    assert out.size == (32, 32) and kept.shape == (0, 4) and labels == []
    with pytest.raises(ValueError, match="one label per box"):
        large_scale_jitter(img, boxes, [0], 32, 1.0, 1.5, random.Random(3))


# ----------------------------------------------------------------------------- RandomAugment ops


def test_identity_returns_equal_pixels(noise_image):
    img = noise_image(12, 10)
    np.testing.assert_array_equal(np.asarray(identity(img)), np.asarray(img))
    np.testing.assert_array_equal(np.asarray(rotate(img, 0.0)), np.asarray(img))


@pytest.mark.parametrize("offset, moved_to, filled", [(3, (2, 4), np.s_[:, 9:]), (-3, (8, 4), np.s_[:, :3])])
def test_translate_x_moves_marker(offset, moved_to, filled):
    out = translate_x(_marker_image(12, 10, 5, 4), offset)
    assert _white_pixels(out) == [moved_to]
    assert (np.asarray(out)[filled] == FILL[0]).all()


def test_translate_y_moves_marker():
    out = translate_y(_marker_image(12, 10, 5, 4), 3)
    assert _white_pixels(out) == [(5, 1)]
    assert (np.asarray(out)[7:] == FILL[0]).all()


def test_shears_are_about_the_top_left_corner():
    out = shear_x(_marker_image(12, 10, 2, 4), 0.5)
    assert _white_pixels(out) == [(4, 4)]  # x + 0.5 * y = 2 + 2
    pixels = np.asarray(out)
    assert (pixels[0] == 0).all()  # row 0 does not move: no fill there
    assert (pixels[4, :2] == FILL[0]).all()  # row 4 moved right by 2
    assert _white_pixels(shear_y(_marker_image(12, 10, 4, 2), 0.5)) == [(4, 4)]  # y + 0.5 * x = 2 + 2


def test_rotate_is_counter_clockwise_about_cv2_centre():
    # cv2.getRotationMatrix2D((4, 4), 90, 1) maps (x, y) -> (y, 8 - x): (1, 2) -> (2, 7). About that
    # centre the source column x = 8 does not exist, so output row 0 is all fill.
    out = rotate(_marker_image(8, 8, 1, 2), 90.0)
    assert _white_pixels(out) == [(2, 7)]
    assert (np.asarray(out)[0] == FILL[0]).all()


def _cv2_warp_reference(pixels: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cv2.warpAffine's maths in float: output (x, y) samples the input bilinearly at M^-1 (x, y), rounded.

    Returns the result [H, W, 3] and a mask [H, W] of the pixels whose 4 neighbours are all inside
    the input (there the border handling of cv2 and PIL cannot matter).
    """
    h, w = pixels.shape[:2]
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    sx, sy = (inverse @ np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])).reshape(2, h, w)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    x0c, y0c = x0.clip(0, w - 2), y0.clip(0, h - 2)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    p = pixels.astype(np.float64)
    top = p[y0c, x0c] * (1 - fx) + p[y0c, x0c + 1] * fx
    bottom = p[y0c + 1, x0c] * (1 - fx) + p[y0c + 1, x0c + 1] * fx
    return np.round(top * (1 - fy) + bottom * fy), inside


def test_warps_match_cv2_maths_inside_the_image(noise_image):
    img = noise_image(20, 16)
    pixels = np.asarray(img)
    cx, cy = 10.0, 8.0  # cv2.getRotationMatrix2D's centre: (W / 2, H / 2)
    cos, sin = np.cos(np.radians(21.0)), np.sin(np.radians(21.0))
    cases = [
        (rotate(img, 21.0), [[cos, sin, (1 - cos) * cx - sin * cy], [-sin, cos, sin * cx + (1 - cos) * cy]]),
        (shear_x(img, -0.21), [[1, -0.21, 0], [0, 1, 0]]),
        (shear_y(img, 0.21), [[1, 0, 0], [0.21, 1, 0]]),
        (translate_x(img, 2.5), [[1, 0, -2.5], [0, 1, 0]]),
    ]
    for out, matrix in cases:
        expected, inside = _cv2_warp_reference(pixels, np.array(matrix))
        assert inside.sum() > 100
        # PIL truncates where cv2 rounds: at most 1 apart.
        diff = np.abs(np.asarray(out).astype(int) - expected.astype(int))[inside]
        assert diff.max() <= 1


def _autocontrast_reference(pixels: np.ndarray) -> np.ndarray:
    """Per channel: v -> trunc((v - lo) * 255 / (hi - lo)), as PIL (and the original, without its uint8 wrap)."""
    out = pixels.copy()
    for c in range(3):
        ch = pixels[..., c]
        lo, hi = int(ch.min()), int(ch.max())
        if hi > lo:
            scale = 255 / (hi - lo)
            out[..., c] = (np.arange(256) * scale - lo * scale).clip(0, 255).astype(np.uint8)[ch]
    return out


def _equalize_reference(pixels: np.ndarray) -> np.ndarray:
    """The original's equalize_func table: cumsum of the shifted histogram (+ step // 2) // step."""
    out = pixels.copy()
    for c in range(3):
        ch = pixels[..., c]
        hist = np.bincount(ch.ravel(), minlength=256)
        step = hist[hist != 0][:-1].sum() // 255
        if step:
            table = (np.cumsum(np.concatenate([[step // 2], hist[:-1]])) // step).clip(0, 255).astype(np.uint8)
            out[..., c] = table[ch]
    return out


def test_autocontrast_and_equalize_match_references():
    rng = np.random.default_rng(0)
    pixels = rng.integers(20, 201, size=(30, 40, 3), dtype=np.uint8)  # minimum above 0 in every channel
    pixels[..., 2] = 77  # a flat channel stays as it is
    img = Image.fromarray(pixels, "RGB")
    stretched = np.asarray(autocontrast(img))
    np.testing.assert_array_equal(stretched, _autocontrast_reference(pixels))
    np.testing.assert_array_equal(stretched, np.asarray(ImageOps.autocontrast(img)))
    assert stretched[..., 0].min() == 0 and stretched[..., 0].max() == 255
    assert (stretched[..., 2] == 77).all()
    equalized = np.asarray(equalize(img))
    np.testing.assert_array_equal(equalized, _equalize_reference(pixels))
    np.testing.assert_array_equal(equalized, np.asarray(ImageOps.equalize(img)))


def test_brightness_matches_float32_table():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = np.asarray(brightness(Image.fromarray(pixels, "RGB"), 1.36))
    # The original: (arange(256, float32) * 1.36).clip(0, 255).astype(uint8), a truncating table.
    table = (np.arange(256, dtype=np.float32) * 1.36).clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, table[pixels])


def test_sharpness_blends_with_the_smoothed_image(noise_image):
    img = noise_image(12, 10)
    pixels = np.asarray(img).astype(np.float64)
    np.testing.assert_array_equal(np.asarray(sharpness(img, 1.0)), np.asarray(img))
    out = np.asarray(sharpness(img, 1.36)).astype(np.float64)
    # The one-pixel border is the input's.
    np.testing.assert_array_equal(out[[0, -1]], pixels[[0, -1]])
    np.testing.assert_array_equal(out[:, [0, -1]], pixels[:, [0, -1]])
    # Inside: smooth with [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, extrapolate by 1.36, clip. PIL
    # rounds the smoothed value (off by up to 0.5 * 0.36 after the blend) and truncates the blend.
    kernel = np.ones((3, 3)) / 13
    kernel[1, 1] = 5 / 13
    smooth = sum(kernel[dy, dx] * pixels[dy:dy + 8, dx:dx + 10] for dy in range(3) for dx in range(3))
    expected = (smooth + 1.36 * (pixels[1:-1, 1:-1] - smooth)).clip(0, 255)
    np.testing.assert_allclose(out[1:-1, 1:-1], expected, atol=1.2)
    smoothed = np.asarray(sharpness(img, 0.0))
    np.testing.assert_array_equal(smoothed, np.asarray(img.filter(ImageFilter.SMOOTH)))


def test_op_parameters_at_magnitude_7():
    rng = random.Random(0)
    assert op_parameter("Identity", 7, rng) is None
    assert op_parameter("Brightness", 7, rng) == pytest.approx(1.36)  # 0.1 + 1.8 * 0.7
    assert op_parameter("Sharpness", 7, rng) == pytest.approx(1.36)
    for name, value in [("ShearX", 0.21), ("ShearY", 0.21), ("TranslateX", 7.0), ("TranslateY", 7.0), ("Rotate", 21.0)]:
        drawn = {round(op_parameter(name, 7, rng), 6) for _ in range(30)}
        assert drawn == {value, -value}, name
    with pytest.raises(ValueError, match="unknown augmentation op"):
        op_parameter("Solarise", 7, rng)


def test_random_augment_is_reproducible(noise_image):
    img = noise_image(24, 20)
    first = [np.asarray(random_augment(img, random.Random(seed))) for seed in range(8)]
    again = [np.asarray(random_augment(img, random.Random(seed))) for seed in range(8)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert a.shape == (20, 24, 3)
    assert any(not np.array_equal(a, np.asarray(img)) for a in first)
    np.testing.assert_array_equal(np.asarray(random_augment(img, random.Random(0), num_ops=0)), np.asarray(img))


def test_random_augment_applies_half_the_time_with_random_sign():
    img = _marker_image(30, 5, 15, 2)
    outcomes = []
    for seed in range(40):
        out = random_augment(img, random.Random(seed), num_ops=1, magnitude=10, ops=("TranslateX",))
        outcomes.append(_white_pixels(out)[0][0] - 15)
    assert set(outcomes) == {0, -10, 10}  # skipped, or moved 10 pixels either way
    assert 10 <= outcomes.count(0) <= 30


def test_every_pretrain_op_keeps_size_and_mode(noise_image):
    img = noise_image(16, 12)
    for name in PRETRAIN_AUGMENT_OPS:
        out = apply_op(img, name, 7, random.Random(0))
        assert out.size == img.size and out.mode == "RGB", name


def test_random_augment_rejects_bad_settings(noise_image):
    img = noise_image(8, 8)
    with pytest.raises(ValueError, match="magnitude"):
        random_augment(img, random.Random(0), magnitude=11)
    with pytest.raises(ValueError, match="ops"):
        random_augment(img, random.Random(0), ops=("Solarize",))
