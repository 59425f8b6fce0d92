"""ofa_cn/metrics/cider.py: hand-computed CIDEr-D values and agreement with pycocoevalcap."""

import math
import random

import pytest
from pycocoevalcap.cider.cider import Cider

from ofa_cn.metrics.cider import build_document_frequency, cider_d, ngram_counts

HAND_WRITTEN_CORPORA = [
    # (hypotheses, references): words separated by spaces, as the scorers expect
    (
        ["一 个 男 人 在 骑 车", "两 只 猫", "红 色 的 花 红 色 的 花", ""],
        [
            ["一 个 男 人 在 骑 自 行 车", "男 人 骑 车"],
            ["两 只 猫 在 睡 觉"],
            ["一 朵 红 色 的 花", "红 花", "花 是 红 色 的"],
            ["一 只 狗"],
        ],
    ),
    (
        ["a man riding a horse", "a", "the cat sat on the mat the cat"],
        [
            ["a man rides a horse on a beach", "a person riding a horse"],
            ["a dog", "a cat"],
            ["the cat sat on the mat", "a cat is sitting on a mat", "cat on mat"],
        ],
    ),
]


def _random_corpus(seed: int, images: int) -> tuple[list[str], list[list[str]]]:
    """Sentences over a 7-word vocabulary, so that n-grams are shared between images."""
    rng = random.Random(seed)
    vocab = list("abcdefg")

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 9)))

    hyps = [sentence() for _ in range(images)]
    refs = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(images)]
    return hyps, refs


def _coco_cider(hyps: list[str], refs: list[list[str]]) -> tuple[float, list[float]]:
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    mean, per_image = Cider().compute_score(gts, res)
    return float(mean), [float(x) for x in per_image]


@pytest.mark.parametrize(
    "corpus", HAND_WRITTEN_CORPORA + [_random_corpus(0, 30), _random_corpus(1, 7)]
)
def test_corpus_mode_equals_pycocoevalcap(corpus):
    hyps, refs = corpus
    coco_mean, coco_per_image = _coco_cider(hyps, refs)
    ours = cider_d(hyps, refs)
    assert coco_mean > 0.1  # the cases do score something
    assert ours == pytest.approx(coco_per_image, abs=1e-9)
    assert sum(ours) / len(ours) == pytest.approx(coco_mean, abs=1e-9)


def test_precomputed_document_frequency_equals_corpus_mode():
    hyps, refs = _random_corpus(2, 12)
    df, log_ref_len = build_document_frequency(refs)
    assert cider_d(hyps, refs, df=df, ref_len=log_ref_len) == cider_d(hyps, refs)


def test_document_frequency_counts_each_image_once():
    df, log_ref_len = build_document_frequency([["a b", "a c"], ["a"]])
    assert log_ref_len == pytest.approx(math.log(2))
    assert df[("a",)] == 2  # twice in image 0, but one document
    assert df[("b",)] == 1
    assert df[("a", "b")] == 1
    assert ("b", "c") not in df
    assert len(df) == 5  # a, b, c, a b, a c


def test_document_frequency_from_a_larger_corpus_changes_the_idf():
    hyps, refs = ["a b"], [["a b"]]
    assert cider_d(hyps, refs) == [0.0]  # one image: log_ref_len = log(1) = 0
    df, log_ref_len = build_document_frequency([["a b"], ["c d"], ["e f"]])
    # hyp equals ref: cosine 1 for 1- and 2-grams; no 3- or 4-grams -> 0. Mean 0.5, x10.
    assert cider_d(hyps, refs, df=df, ref_len=log_ref_len) == pytest.approx([5.0])


def test_hand_computed_scores():
    # image 0: hyp has one extra, unseen word t (df 0 -> idf log 2, like the others).
    # All weights equal, so each order's clipped cosine is shared / sqrt(|hyp| * |ref|):
    # 1-grams 4/sqrt(5*4), 2-grams 3/sqrt(4*3), 3-grams 2/sqrt(3*2), 4-grams 1/sqrt(2*1).
    # Bigram counts 4 vs 3 -> delta 1 -> penalty exp(-1 / 72).
    # image 1: hyp equals its only reference and shares nothing with image 0 -> 10.
    hyps = ["p q r s t", "w x y z"]
    refs = [["p q r s"], ["w x y z"]]
    cosines = [4 / math.sqrt(20), 3 / math.sqrt(12), 2 / math.sqrt(6), 1 / math.sqrt(2)]
    expected_0 = 10 * math.exp(-1 / 72) * sum(cosines) / 4
    assert cider_d(hyps, refs) == pytest.approx([expected_0, 10.0], abs=1e-12)
    assert expected_0 == pytest.approx(8.0969, abs=1e-4)


def test_ngram_counts():
    counts = ngram_counts("a b a b", n=3)
    assert counts[("a",)] == 2
    assert counts[("a", "b")] == 2
    assert counts[("b", "a")] == 1
    assert counts[("a", "b", "a")] == 1
    assert sum(counts.values()) == 4 + 3 + 2


def test_errors_are_clear():
    with pytest.raises(ValueError, match="one list of references per hypothesis"):
        cider_d(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="empty reference list for hypothesis 1"):
        cider_d(["a", "b"], [["a"], []])
    df, _ = build_document_frequency([["a"]])
    with pytest.raises(ValueError, match="df and ref_len together"):
        cider_d(["a"], [["a"]], df=df)
    with pytest.raises(ValueError, match="empty corpus"):
        build_document_frequency([])
