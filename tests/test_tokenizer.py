"""The dictionary's ids are the checkpoint format; the tokenizer must reproduce the original."""

from __future__ import annotations

import pytest

from ofa_cn.tokenizer import (VOCAB_FILE, VOCAB_SHA256, ChineseTokenizer, build_dictionary,
                              dictionary_symbols, get_tokenizer, vocab_sha256)

CAPTION_PROMPT = "图片描述了什么内容?"
GROUNDING_PROMPT = '这段文字" {} "描述的是哪个区域？'


@pytest.fixture(scope="module")
def tok() -> ChineseTokenizer:
    return get_tokenizer()


def test_vocab_is_the_released_file():
    assert vocab_sha256(VOCAB_FILE) == VOCAB_SHA256 == "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"


def test_dictionary_layout():
    symbols = dictionary_symbols()
    assert len(symbols) == 30325
    assert symbols[:4] == ("<s>", "<pad>", "</s>", "<unk>")
    assert symbols.index("[PAD]") == 4 and symbols.index("[UNK]") == 104 and symbols.index("[CLS]") == 105
    assert symbols.index("的") == 4642 and symbols.index("，") == 8028 and symbols.index("？") == 8047
    assert symbols[21132] == "<mask>"
    assert symbols[21133] == "<code_0>" and symbols[29324] == "<code_8191>"
    assert symbols[29325] == "<bin_0>" and symbols[30324] == "<bin_999>"
    # the two U+2028 vocab lines, as fairseq registered them from dict.txt
    assert symbols[347] == "" and symbols[13506] == "##"


def test_fairseq_dictionary_matches_symbols():
    d = build_dictionary()
    assert len(d) == 30325
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (0, 1, 2, 3)
    assert [d[i] for i in (104, 4642, 21132, 29325, 30324)] == ["[UNK]", "的", "<mask>", "<bin_0>", "<bin_999>"]
    assert d.index("<bin_607>") == 29325 + 607


@pytest.mark.parametrize("text, ids", [
    (CAPTION_PROMPT, [1749, 4279, 2993, 6839, 753, 788, 724, 1083, 2163, 140]),
    ("图片上的文字是什么?", [1749, 4279, 681, 4642, 3156, 2103, 3225, 788, 724, 140]),
    (GROUNDING_PROMPT.format("穿红色衣服的女人"),
     [6825, 3671, 3156, 2103, 111, 4963, 5277, 5686, 6136, 3306, 4642, 1961, 786, 111, 2993, 6839, 4642,
      3225, 1529, 706, 1281, 1822, 8047]),
    (" 一个穿着红色T恤的Man，走在路上。",
     [675, 706, 4963, 4712, 5277, 5686, 166, 2618, 4642, 8795, 8028, 6628, 1766, 6666, 681, 515]),
])
def test_spec_vectors(tok, text, ids):
    assert tok.encode(text) == ids


def test_golden_prompts(tok, golden_inputs):
    caption = [0] + tok.encode(CAPTION_PROMPT) + [2]
    for row in golden_inputs["caption_src_tokens"]:
        assert row.tolist() == caption
    for row, expr in zip(golden_inputs["grounding_src_tokens"], ["灰色方块", "穿红色衣服的人"]):
        ids = [0] + tok.encode(GROUNDING_PROMPT.format(expr)) + [2]
        assert row.tolist()[: len(ids)] == ids
        assert set(row.tolist()[len(ids):]) <= {1}


def test_unknown_character_is_bert_unk(tok):
    assert tok.encode("\U0001F600") == [104]  # an emoji: [UNK] (104), never <unk> (3)


def test_ascii_wordpieces_and_case(tok):
    assert tok.tokenize("Describe") == ["des", "##cr", "##i", "##be"]
    assert tok.tokenize("&&") == ["&", "&"]


@pytest.mark.parametrize("text, expected", [
    ("一个穿着红色T恤的Man，走在路上。", "一个穿着红色t恤的man，走在路上。"),
    ("a photo of 2 cats", "a photo of 2 cats"),
    ("价格是100元", "价格是100元"),
    ("红色的圆形和蓝色的方块", "红色的圆形和蓝色的方块"),
])
def test_round_trip(tok, text, expected):
    assert tok.decode(tok.encode(text)) == expected


def test_decode_strips_specials_and_keeps_symbols(tok):
    assert tok.decode([0, 4642, 2, 1, 1]) == "的"
    assert tok.decode([29325 + 3, 29325 + 9]) == "<bin_3> <bin_9>"


def test_empty_and_overlong_input(tok):
    assert tok.encode("") == [] and tok.encode("   ") == []
    assert tok.decode([]) == ""
    assert tok.encode("a" * 101) == [104]  # a word over 100 characters is one [UNK]
    long_text = "天" * 5000
    assert tok.encode(long_text) == [tok.indices["天"]] * 5000


def test_symbols_and_bins(tok):
    assert tok.encode_symbols("<bin_0> <bin_999>") == [29325, 30324]
    assert tok.bin_id(607) == 29932
    with pytest.raises(ValueError, match="not in the OFA-CN dictionary"):
        tok.encode_symbols("<bin_1000>")
    with pytest.raises(ValueError, match="outside"):
        tok.bin_id(1000)
