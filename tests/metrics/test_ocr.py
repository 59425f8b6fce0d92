"""ofa_cn/metrics/ocr.py: normalisation, edit distance and scores computed by hand."""

import pytest

from ofa_cn.metrics import edit_distance, normalize_ocr_text, ocr_scores


def test_normalize_ocr_text():
    assert normalize_ocr_text("憂鬱的台灣烏龜") == "忧郁的台湾乌龟"  # traditional -> simplified
    assert normalize_ocr_text(" 中國 ＡＢＣ　１２３\n") == "中国abc123"  # NFKC, lower, no spaces
    assert normalize_ocr_text("已经是简体") == "已经是简体"
    assert normalize_ocr_text("  ") == ""


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("flaw", "lawn", 2),  # -f, +n
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("我爱北京", "我爱南京", 1),
        ("天安门", "天门", 1),
    ],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_ocr_scores_by_hand():
    preds = {"1": "中國", "2": "ABCD", "3": "x", "4": "", "5": "天门"}
    refs = {"1": "中国", "2": "abce", "3": "", "4": "", "5": "天安门"}
    scores = ocr_scores(preds, refs)
    assert scores["count"] == 5
    # exact after normalisation: 1 (traditional), 4 (both empty)
    assert scores["accuracy"] == pytest.approx(100 * 2 / 5)
    # distance / longest: 0, 1/4, 1/1, 0 (both empty), 1/3
    assert scores["ned"] == pytest.approx(100 * (1 - (0 + 1 / 4 + 1 + 0 + 1 / 3) / 5))


def test_mismatched_ids_are_errors():
    with pytest.raises(ValueError, match="prediction but no reference: '2'"):
        ocr_scores({"1": "a", "2": "b"}, {"1": "a"})
    with pytest.raises(ValueError, match="references but no prediction: '1'"):
        ocr_scores({}, {"1": "a"})
