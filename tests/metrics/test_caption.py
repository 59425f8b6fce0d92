"""ofa_cn/metrics/caption.py: character-level caption scores, by hand and against pycocoevalcap."""

import ast
import math
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

import ofa_cn.metrics
from ofa_cn.metrics import char_tokens, jieba_tokens, score_captions

# no character is shared between the images, so every n-gram has document frequency 1
DISJOINT = {"1": "一个男人在骑车", "2": "两只猫睡觉了", "3": "红色花朵开放"}


def test_char_tokens():
    # MUGE's rule: Chinese characters one by one, a run of ASCII letters and digits one token
    assert char_tokens("一个穿着 T恤的man") == "一 个 穿 着 T 恤 的 man"
    assert char_tokens("iphone12手机，3.5寸") == "iphone12 手 机 ， 3 . 5 寸"
    assert char_tokens(" 一 个\t男人\n") == "一 个 男 人"
    assert char_tokens("   ") == ""


def test_identical_captions_score_full_marks():
    scores = score_captions(DISJOINT, {k: [v] for k, v in DISJOINT.items()})
    assert scores["count"] == 3
    assert scores["bleu4"] == pytest.approx(100.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(100.0, abs=1e-9)
    assert scores["sacrebleu_zh"] == pytest.approx(100.0, abs=1e-9)
    # hyp = ref and all idf equal -> cosine 1 for n = 1..4 -> 10 per image, x100
    assert scores["cider"] == pytest.approx(1000.0, abs=1e-6)


def test_spaces_in_predictions_and_references_do_not_matter():
    spaced = {k: " ".join(v) for k, v in DISJOINT.items()}
    refs = {"1": ["一个 男人 在 骑 自行车"], "2": ["两只猫在睡觉"], "3": ["红色的花朵"]}
    assert score_captions(spaced, refs) == score_captions(DISJOINT, refs)


def test_hand_computed_bleu_and_rouge():
    # "小猫在床上睡觉" (7 chars) is a substring of the 10-char reference: every n-gram
    # precision is 1, so BLEU-4 is the brevity penalty exp(1 - 10/7).
    bleu = score_captions({"a": "小猫在床上睡觉"}, {"a": ["一只小猫在床上睡觉了"]})
    assert bleu["bleu4"] == pytest.approx(100 * math.exp(1 - 10 / 7), rel=1e-6)
    assert bleu["sacrebleu_zh"] == pytest.approx(100 * math.exp(1 - 10 / 7), rel=1e-6)
    assert bleu["cider"] == 0.0  # a one-image corpus: idf log(1) = 0

    # ROUGE-L: LCS("猫在睡觉", "猫在床上睡觉") = 4, so P = 1, R = 4/6 and, with beta = 1.2,
    # F = (1 + 1.44) P R / (R + 1.44 P) = 4.88 / 6.32.
    rouge = score_captions({"a": "猫在睡觉"}, {"a": ["猫在床上睡觉"]})
    assert rouge["rouge_l"] == pytest.approx(100 * 4.88 / 6.32, abs=1e-9)


def test_equals_pycocoevalcap_on_spaced_characters():
    preds = {"10": "一个男人在骑车", "11": "两只猫", "12": "红色的花红色的花", "13": ""}
    refs = {
        "10": ["一个男人在骑自行车", "男人骑车"],
        "11": ["两只猫在睡觉"],
        "12": ["一朵红色的花", "红花", "花是红色的"],
        "13": ["一只狗"],
    }
    # the same corpus, split into characters by hand
    res = {"10": ["一 个 男 人 在 骑 车"], "11": ["两 只 猫"], "12": ["红 色 的 花 红 色 的 花"], "13": [""]}
    gts = {
        "10": ["一 个 男 人 在 骑 自 行 车", "男 人 骑 车"],
        "11": ["两 只 猫 在 睡 觉"],
        "12": ["一 朵 红 色 的 花", "红 花", "花 是 红 色 的"],
        "13": ["一 只 狗"],
    }
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)

    scores = score_captions(preds, refs)
    assert scores["bleu4"] == pytest.approx(100 * bleu[3], abs=1e-9)
    assert scores["rouge_l"] == pytest.approx(100 * rouge, abs=1e-9)
    assert scores["cider"] == pytest.approx(100 * cider, abs=1e-9)
    assert scores["count"] == 4
    assert 10 < scores["bleu4"] < 90 and scores["cider"] > 10  # a case that is not trivial


def test_mismatched_ids_are_errors():
    refs = {"1": ["一个人"], "2": ["两个人"]}
    with pytest.raises(ValueError, match=r"prediction but no reference: '3'"):
        score_captions({"1": "人", "2": "人", "3": "人"}, refs)
    with pytest.raises(ValueError, match=r"references but no prediction: '2'"):
        score_captions({"1": "人"}, refs)
    with pytest.raises(ValueError, match="No references"):
        score_captions({}, {})


def test_empty_references_are_errors():
    with pytest.raises(ValueError, match="'1' has an empty reference list"):
        score_captions({"1": "人"}, {"1": []})
    with pytest.raises(ValueError, match="Reference caption 1 of image id '1' is empty"):
        score_captions({"1": "人"}, {"1": ["人", "  "]})


def test_metrics_package_imports_no_torch_and_nothing_else_from_ofa_cn():
    for path in Path(ofa_cn.metrics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside metrics/"
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("torch", "ofa_cn", "fairseq"), f"{path.name} imports {name}"


def test_jieba_tokens_are_words_whatever_the_spacing():
    assert jieba_tokens("一个男人在骑自行车") == "一个 男人 在 骑 自行车"
    assert jieba_tokens("一 个 男 人 在 骑 自 行 车") == "一个 男人 在 骑 自行车"  # the original's spaced output
    assert jieba_tokens("穿着T恤的 iphone12 男人") == "穿着 T恤 的 iphone12 男人"


@pytest.mark.parametrize("tokenize", ["char", "jieba"])
def test_both_tokenizations_equal_pycocoevalcap_on_hand_split_text(tokenize):
    preds = {"1": "一个男人在骑车", "2": "两只猫", "3": "白色运动鞋白色运动鞋"}
    refs = {"1": ["一个男人在骑自行车", "男人骑车"], "2": ["两只猫在睡觉"], "3": ["一双白色的运动鞋", "白色运动鞋"]}
    by_hand = {  # the same corpus, split by hand (jieba: its default dictionary's words)
        "char": ({"1": ["一 个 男 人 在 骑 车"], "2": ["两 只 猫"], "3": ["白 色 运 动 鞋 白 色 运 动 鞋"]},
                 {"1": ["一 个 男 人 在 骑 自 行 车", "男 人 骑 车"], "2": ["两 只 猫 在 睡 觉"],
                  "3": ["一 双 白 色 的 运 动 鞋", "白 色 运 动 鞋"]}),
        "jieba": ({"1": ["一个 男人 在 骑车"], "2": ["两只 猫"], "3": ["白色 运动鞋 白色 运动鞋"]},
                  {"1": ["一个 男人 在 骑 自行车", "男人 骑车"], "2": ["两只 猫 在 睡觉"],
                   "3": ["一双 白色 的 运动鞋", "白色 运动鞋"]}),
    }
    res, gts = by_hand[tokenize]
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    scores = score_captions(preds, refs, tokenize=tokenize)
    assert scores["tokenize"] == tokenize
    assert scores["bleu4"] == pytest.approx(100 * bleu[3], abs=1e-9)
    assert scores["rouge_l"] == pytest.approx(100 * rouge, abs=1e-9)
    assert scores["cider"] == pytest.approx(100 * cider, abs=1e-9)
    assert scores["cider"] > 10  # not a trivial case


def test_word_and_character_scores_differ():
    # one wrong character in a two-character word costs one char token but the whole word
    preds, refs = {"1": "白色运动鞋", "2": "红裙子"}, {"1": ["白色运动衣"], "2": ["红裙子"]}
    char, words = score_captions(preds, refs, "char"), score_captions(preds, refs, "jieba")
    # ROUGE-L of image 1: chars LCS 4 of 5 -> P = R = 0.8; words ["白色", "运动鞋"] vs ["白色", "运动衣"]: 1 of 2
    assert char["rouge_l"] == pytest.approx(100 * (0.8 + 1.0) / 2, abs=1e-9)
    assert words["rouge_l"] == pytest.approx(100 * (0.5 + 1.0) / 2, abs=1e-9)
    with pytest.raises(ValueError, match="tokenize 'words'"):
        score_captions(preds, refs, "words")
