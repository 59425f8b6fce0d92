"""ofa_cn/metrics/grounding.py: IoU and Acc@0.5 on boxes computed by hand."""

import pytest

from ofa_cn.metrics import box_hit, box_iou, grounding_accuracy

SQUARE = [0, 0, 10, 10]  # area 100 (exclusive end: width = x1 - x0)


def test_box_iou_by_hand():
    # half-shifted square: intersection 5 x 10 = 50, union 100 + 100 - 50 = 150
    assert box_iou([5, 0, 15, 10], SQUARE) == pytest.approx(1 / 3, abs=1e-8)
    # corner overlap: intersection [0, 3, 4, 10] = 4 x 7 = 28; areas 8 x 8 = 64 and 100
    assert box_iou([-4, 3, 4, 11], SQUARE) == pytest.approx(28 / (64 + 100 - 28), abs=1e-8)
    assert box_iou(SQUARE, SQUARE) == pytest.approx(1.0, abs=1e-8)
    assert box_iou(SQUARE, SQUARE) < 1.0  # the 1e-6 in the denominator
    assert box_iou([20, 20, 30, 30], SQUARE) == 0.0  # apart: no negative "intersection"
    assert box_iou([10, 0, 20, 10], SQUARE) == 0.0  # touching edges


def test_box_iou_rejects_bad_boxes():
    with pytest.raises(ValueError, match="4 finite numbers"):
        box_iou([0, 0, 10], SQUARE)
    with pytest.raises(ValueError, match="4 finite numbers"):
        box_iou(SQUARE, [0, 0, float("nan"), 1])


def test_accuracy_by_hand():
    preds = {
        "hit": [1, 1, 11, 11],  # inter 9 x 9 = 81, union 119 -> IoU 0.681
        "half": [0, 0, 10, 5],  # IoU 50 / (100 + 1e-6): just below 0.5, a miss
        "shift": [5, 0, 15, 10],  # IoU 1/3
        "apart": [20, 20, 30, 30],  # IoU 0
        "same": [0, 0, 10, 10],  # IoU ~1
    }
    refs = {k: SQUARE for k in preds}
    result = grounding_accuracy(preds, refs)
    assert result["count"] == 5
    assert result["acc@0.5"] == pytest.approx(100 * 2 / 5)
    mean_iou = (81 / 119 + 0.5 + 1 / 3 + 0 + 1) / 5
    assert result["mean_iou"] == pytest.approx(mean_iou, abs=1e-7)

    low = grounding_accuracy(preds, refs, threshold=0.3)
    assert set(low) == {"acc@0.3", "count", "mean_iou"}
    assert low["acc@0.3"] == pytest.approx(100 * 4 / 5)


def test_touching_or_degenerate_predictions_never_hit():
    refs = {"touch": SQUARE, "flipped": SQUARE}
    preds = {"touch": [10, 0, 20, 10], "flipped": [10, 10, 0, 0]}  # x1 < x0: no overlap
    assert grounding_accuracy(preds, refs, threshold=0.0)["acc@0"] == 0.0


def test_box_hit_is_the_rule_of_the_accuracy():
    assert box_hit([1, 1, 11, 11], SQUARE)  # IoU 0.681
    assert box_hit([5, 0, 15, 10], SQUARE, threshold=0.3) and not box_hit([5, 0, 15, 10], SQUARE)  # IoU 1/3
    assert not box_hit([10, 0, 20, 10], SQUARE, threshold=0.0)  # touching: no overlap, never a hit
    assert not box_hit([10, 10, 0, 0], SQUARE, threshold=0.0)  # flipped


def test_errors_are_clear():
    with pytest.raises(ValueError, match="prediction but no reference: 'b'"):
        grounding_accuracy({"a": SQUARE, "b": SQUARE}, {"a": SQUARE})
    with pytest.raises(ValueError, match="references but no prediction: 'b'"):
        grounding_accuracy({"a": SQUARE}, {"a": SQUARE, "b": SQUARE})
    with pytest.raises(ValueError, match="Reference box of uniq_id 'a' is empty"):
        grounding_accuracy({"a": SQUARE}, {"a": [5, 5, 5, 9]})
    with pytest.raises(ValueError, match="Predicted box of uniq_id 'a' must be 4 finite"):
        grounding_accuracy({"a": [1, 2, 3]}, {"a": SQUARE})
