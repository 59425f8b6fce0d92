"""Box quantisation, its inverse, and box parsing with errors that say where and why."""

from __future__ import annotations

import pytest

from ofa_cn.data.boxes import bins_to_box, box_to_bins, parse_box
from ofa_cn.data.errors import DataError

WHERE = "ref.tsv: row 2 (line 3), field 'box'"


def test_box_to_bins_by_hand():
    # k = round(v / 512 * 999): 0 -> 0; 1 -> 1.95 -> 2; 256 -> 499.5 -> 500 (even); 512 -> 999
    assert box_to_bins([0, 1, 256, 512], 512, 1000) == [0, 2, 500, 999]
    # exact halves round to even: 1/4*10 = 2.5 -> 2, 3/4*10 = 7.5 -> 8, 2/4*10 = 5, 4/4*10 = 10
    assert box_to_bins([1, 3, 2, 4], 4, 11) == [2, 8, 5, 10]


def test_box_to_bins_golden_row():
    # Golden row 1: box (60, 90, 110, 230) on a 320x240 image resized to 256x256, max_image_size
    # 256. Resized: x * 0.8 and y * 256/240 -> (48, 96, 88, 245.33); / 256 * 999 ->
    # (187.31, 374.63, 343.41, 957.4) -> bins 187 375 343 957 (ids 29512 29700 29668 30282).
    h = 256 / 240
    resized = [60 * 0.8, 90 * h, 110 * 0.8, 230 * h]
    assert box_to_bins(resized, 256, 1000) == [187, 375, 343, 957]


def test_box_to_bins_outside_the_range():
    with pytest.raises(ValueError, match=r"outside \[0, 999\].*use patch_image_size <= max_image_size"):
        box_to_bins([0, 0, 600, 10], 512, 1000)
    with pytest.raises(ValueError, match="outside"):
        box_to_bins([-1, 0, 10, 10], 512, 1000)


def test_bins_to_box_by_hand():
    # 607 / 999 * 256 = 155.5475..., 331 / 999 * 256 = 84.8208...; then x / 0.5, y / 2
    box = bins_to_box([607, 607, 607, 331], 256, 1000, 0.5, 2.0)
    assert box == pytest.approx([311.095, 77.774, 311.095, 42.410], abs=1e-3)


def test_bins_to_box_matches_the_original_decode(golden_dir):
    import torch

    outputs = torch.load(golden_dir / "outputs.pt", weights_only=True)
    inputs = torch.load(golden_dir / "inputs.pt", weights_only=True)
    for row in range(2):
        box = bins_to_box(
            outputs["grounding_bins_constrained_bins"][row],
            256,
            1000,
            float(inputs["grounding_w_resize_ratios"][row]),
            float(inputs["grounding_h_resize_ratios"][row]),
        )
        assert box == outputs["grounding_bins_constrained_boxes_pixels"][row].tolist()  # float32 exactly


def test_round_trip_within_half_a_bin():
    w_ratio, h_ratio = 512 / 640, 512 / 480
    box = [13.0, 250.5, 600.0, 479.0]
    resized = [box[0] * w_ratio, box[1] * h_ratio, box[2] * w_ratio, box[3] * h_ratio]
    back = bins_to_box(box_to_bins(resized, 512, 1000), 512, 1000, w_ratio, h_ratio)
    half_bin = 512 / 999 / 2
    assert back == pytest.approx(box, abs=half_bin / min(w_ratio, h_ratio) + 1e-4)


def test_parse_box():
    assert parse_box("10, 20,30.5,40", WHERE) == [10.0, 20.0, 30.5, 40.0]
    assert parse_box("0,0,320,240", WHERE, (320, 240)) == [0.0, 0.0, 320.0, 240.0]  # edges included
    assert parse_box("5,5,5.5,9", WHERE, (10, 10)) == [5.0, 5.0, 5.5, 9.0]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,2,3", "found 3 values in '1,2,3'"),
        ("1,2,3,4,5", "found 5 values"),
        ("", "found 1 values in ''"),
        ("1,2,x,4", "a value that is not a number in '1,2,x,4'"),
        ("1,2,nan,4", "a value that is not finite"),
        ("1,2,inf,4", "a value that is not finite"),
        ("30,2,10,4", "expected x0 <= x1 and y0 <= y1"),
        ("1,40,3,4", "expected x0 <= x1 and y0 <= y1"),
        ("5,5,5,9", "expected a box of positive width and height, found '5,5,5,9' (0 wide, 4 high)"),
        ("1,2.5,3,2.5", "(2 wide, 0 high)"),
        ("-1,2,3,4", "lies outside the 100x50 (w x h) image"),
        ("1,2,101,4", "lies outside the 100x50 (w x h) image"),
        ("1,2,3,50.5", "expected 0 <= x0 <= x1 <= 100 and 0 <= y0 <= y1 <= 50"),
    ],
)
def test_parse_box_errors(text, expected):
    with pytest.raises(DataError) as err:
        parse_box(text, WHERE, (100, 50))
    message = str(err.value)
    assert message.startswith(WHERE + ": ") and expected in message and "skip_bad_rows=True" in message


def test_bins_to_box_clips_to_the_resized_image():
    """max_image_size 96 > S = 64: bin 999 is 96 resized px, past the image; clipped to 64 it maps
    to the image's own edge (width 320 = 64 / 0.2, height 128 = 64 / 0.5)."""
    w_ratio, h_ratio = 64 / 320, 64 / 128
    assert bins_to_box([0, 0, 999, 999], 96, 1000, w_ratio, h_ratio) == pytest.approx([0, 0, 480, 192])
    assert bins_to_box([0, 0, 999, 999], 96, 1000, w_ratio, h_ratio, resized_size=64) == pytest.approx([0, 0, 320, 128])
    # a bin inside the image is unchanged: 333 / 999 * 96 = 32 resized px -> 160 and 64 original px
    assert bins_to_box([333, 333, 333, 333], 96, 1000, w_ratio, h_ratio, resized_size=64) == pytest.approx(
        [160, 64, 160, 64])
