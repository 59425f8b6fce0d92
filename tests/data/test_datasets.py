"""Caption, grounding, OCR and image-text matching datasets: real ids, real pixels, errors per bad row, skip policy."""

from __future__ import annotations

import base64
import logging
import pickle
import random

import numpy as np
import pytest
import torch

from ofa_cn.data import CaptionDataset, DataError, GroundingDataset, OCRDataset, TSVFile
from ofa_cn.data.grounding import pre_caption
from ofa_cn.data.image import MEAN_STD, ocr_resize, resize_square
from ofa_cn.data.matching import MatchingDataset
from ofa_cn.tokenizer import BOS, EOS, get_tokenizer

CAPTION_SOURCE = [0, 1749, 4279, 2993, 6839, 753, 788, 724, 1083, 2163, 140, 2]  # 图片描述了什么内容?
# 这段文字" 穿红色衣服的女人 "描述的是哪个区域？ between bos and eos
GROUNDING_PROMPT_WOMAN = [
    6825, 3671, 3156, 2103, 111, 4963, 5277, 5686, 6136, 3306, 4642, 1961, 786, 111,
    2993, 6839, 4642, 3225, 1529, 706, 1281, 1822, 8047,
]
OCR_SOURCE = [0, 1749, 4279, 681, 4642, 3156, 2103, 3225, 788, 724, 140, 2]  # 图片上的文字是什么?
BIN_OFFSET = 29325


@pytest.fixture
def image_b64(png_b64, noise_image):
    return png_b64(noise_image(40, 30))


def _caption(tmp_path, write_tsv, rows, split="train", **kw):
    # file layout as MUGE: uniq_id, image_id, caption, objects, image -> selected_cols 1,4,2
    path = write_tsv(tmp_path / f"caption_{split}.tsv", [["u", r[0], r[2], "", r[1]] for r in rows])
    tsv = TSVFile(path, "1,4,2", CaptionDataset.FIELDS)
    return CaptionDataset(tsv, get_tokenizer(), split, patch_image_size=kw.pop("size", 32), **kw)


def _grounding(tmp_path, write_tsv, rows, split="valid", size=32, **kw):
    # file layout as RefCOCO-CN: uniq_id, text, box, image -> selected_cols 0,3,1,2
    path = write_tsv(tmp_path / "grounding.tsv", [[r[0], r[2], r[3], r[1]] for r in rows])
    tsv = TSVFile(path, "0,3,1,2", GroundingDataset.FIELDS)
    kw.setdefault("max_image_size", 512)
    return GroundingDataset(tsv, get_tokenizer(), split, patch_image_size=size, **kw)


def _ocr(tmp_path, write_tsv, rows, split="valid", size=64, **kw):
    tsv = TSVFile(write_tsv(tmp_path / f"ocr_{split}.tsv", rows), "0,1,2", OCRDataset.FIELDS)
    return OCRDataset(tsv, get_tokenizer(), split, patch_image_size=size, **kw)


def _matching(tmp_path, write_tsv, rows, split="train", size=32):
    tsv = TSVFile(write_tsv(tmp_path / f"matching_{split}.tsv", rows), None, MatchingDataset.FIELDS)
    return MatchingDataset(tsv, get_tokenizer(), split, patch_image_size=size)


# ------------------------------------------------------------------ caption


def test_caption_train_sample(tmp_path, write_tsv, png_b64, noise_image, tokenizer):
    img = noise_image(40, 30)
    ds = _caption(tmp_path, write_tsv, [["img-7", png_b64(img), "一个人，在草地上. 跑!"]])
    sample = ds[0]
    assert sample["id"] == 0 and sample["image_id"] == "img-7"
    assert sample["source"].tolist() == CAPTION_SOURCE
    answer = tokenizer.encode("一个人，在草地上 跑")  # ASCII . and ! removed, full-width ， kept
    assert sample["target"].tolist() == answer + [2]
    assert sample["prev_output_tokens"].tolist() == [0] + answer
    assert sample["references"] == ["一个人，在草地上 跑"]
    assert torch.equal(sample["patch_image"], resize_square(img, 32, *MEAN_STD[False]))
    assert sample["patch_mask"] is True


def test_caption_target_is_truncated_in_tokens(tmp_path, write_tsv, image_b64, tokenizer):
    # An unspaced Chinese caption is one "word": the original never truncated it.
    caption = "一个穿红色衣服的人站在草地上"
    ds = _caption(tmp_path, write_tsv, [["i", image_b64, caption]], max_tgt_length=5)
    assert ds[0]["target"].tolist() == tokenizer.encode(caption)[:5] + [2]
    assert ds[0]["prev_output_tokens"].tolist() == [0] + tokenizer.encode("一个穿红色")
    assert ds.size(0) == (12, 6) and ds.num_tokens(0) == 12


def test_caption_valid_references(tmp_path, write_tsv, image_b64, tokenizer):
    ds = _caption(tmp_path, write_tsv, [["i", image_b64, "一只猫.&& 两只  狗 &&小鸟"]], split="valid")
    sample = ds[0]
    assert sample["references"] == ["一只猫", "两只 狗", "小鸟"]
    assert sample["target"].tolist() == tokenizer.encode("一只猫") + [2]
    batch = ds.collater([sample, ds[0]])
    assert batch["references"] == [["一只猫", "两只 狗", "小鸟"]] * 2 and batch["image_ids"] == ["i", "i"]


def test_golden_caption_and_grounding(tmp_path, write_tsv, png_b64, golden_image, golden_inputs):
    # Row 1 of the golden batches, made by the original datasets from image_real.png (320x240).
    b64 = png_b64(golden_image)
    caption = _caption(tmp_path, write_tsv, [["1", b64, "一个人"]], size=256)[0]
    assert caption["source"].tolist() == golden_inputs["caption_src_tokens"][0].tolist()
    assert caption["prev_output_tokens"].tolist() == golden_inputs["caption_prev_output_tokens"][0, :4].tolist()
    torch.testing.assert_close(caption["patch_image"], golden_inputs["image_real_preprocessed"], atol=1e-6, rtol=0)

    box = ",".join(f"{v:g}" for v in golden_inputs["grounding_region_coords"][1].tolist())
    ds = _grounding(tmp_path, write_tsv, [["g1", b64, "穿红色衣服的人", box]], size=256, max_image_size=256)
    sample = ds[0]
    assert sample["source"].tolist() == golden_inputs["grounding_src_tokens"][1].tolist()
    assert sample["prev_output_tokens"].tolist() == golden_inputs["grounding_prev_output_tokens"][1].tolist()
    assert sample["target"].tolist() == golden_inputs["grounding_target"][1].tolist()
    assert sample["w_resize_ratio"] == golden_inputs["grounding_w_resize_ratios"][1]
    assert sample["h_resize_ratio"] == golden_inputs["grounding_h_resize_ratios"][1]
    assert torch.equal(sample["region_coord"], golden_inputs["grounding_region_coords"][1])
    torch.testing.assert_close(sample["patch_image"], golden_inputs["image_real_preprocessed"], atol=1e-6, rtol=0)


# ------------------------------------------------------------------ grounding


def test_pre_caption():
    assert pre_caption("~Left-Side/Man  ", 80) == "left side man"
    assert pre_caption(" ~left", 80) == "~left"  # only punctuation at the very start is dropped
    assert pre_caption("?!<PERSON> on  the\tleft", 80) == "person on the\tleft"
    assert pre_caption("a b c d", 2) == "a b"
    assert pre_caption("穿红色衣服的女人", 1) == "穿红色衣服的女人"  # one unspaced "word"


def test_grounding_sample(tmp_path, write_tsv, png_b64, noise_image):
    img = noise_image(64, 32)
    rows = [["r-1", png_b64(img), "穿红色衣服的女人", "8,4,40,30"]]
    ds = _grounding(tmp_path, write_tsv, rows, size=32, max_image_size=64)
    sample = ds[0]
    assert sample["source"].tolist() == [0] + GROUNDING_PROMPT_WOMAN + [2]
    # resized to 32x32: x * 0.5, y * 1.0 -> (4, 4, 20, 30); / 64 * 999 -> 62.4, 62.4, 312.2, 468.3
    assert sample["target"].tolist() == [BIN_OFFSET + k for k in (62, 62, 312, 468)] + [2]
    assert sample["prev_output_tokens"].tolist() == [0] + [BIN_OFFSET + k for k in (62, 62, 312, 468)]
    assert sample["region_coord"].tolist() == [8, 4, 40, 30]  # original pixels
    assert sample["w_resize_ratio"].item() == 0.5 and sample["h_resize_ratio"].item() == 1.0
    assert sample["uniq_id"] == "r-1"
    batch = ds.collater([sample, sample])
    assert batch["region_coords"].shape == (2, 4) and batch["w_resize_ratios"].tolist() == [0.5, 0.5]
    assert batch["uniq_ids"] == ["r-1", "r-1"] and batch["target"].shape == (2, 5)


def test_grounding_config_checks(tmp_path, write_tsv, image_b64):
    rows = [["r", image_b64, "人", "0,0,1,1"]]
    with pytest.raises(ValueError, match=r"patch_image_size \(64\) > max_image_size \(32\)"):
        _grounding(tmp_path, write_tsv, rows, size=64, max_image_size=32)
    with pytest.raises(ValueError, match=r"num_bins \(500\) differs from the tokenizer's \(1000\)"):
        _grounding(tmp_path, write_tsv, rows, num_bins=500)
    tsv = TSVFile(tmp_path / "grounding.tsv", "0,3,1", ("uniq_id", "image", "text"))
    with pytest.raises(ValueError, match=r"open it as TSVFile\(path, selected_cols, GroundingDataset.FIELDS\)"):
        GroundingDataset(tsv, get_tokenizer(), "valid", 32)


# ------------------------------------------------------------------ OCR


def test_ocr_sample(tmp_path, write_tsv, png_b64, noise_image, tokenizer):
    img = noise_image(120, 40)
    ds = _ocr(tmp_path, write_tsv, [["o-1", png_b64(img), "中國ＡＢＣ銀行"]], max_tgt_length=5)
    sample = ds[0]
    assert sample["source"].tolist() == OCR_SOURCE
    # zh-hans + NFKC -> "中国ABC银行"; first 5 characters, lower case -> "中国abc"
    assert sample["target"].tolist() == tokenizer.encode("中国abc") + [2]
    assert sample["reference"] == "中国abc银行"
    assert torch.equal(sample["patch_image"], ocr_resize(img, 64, *MEAN_STD[False], rng=None))  # centred
    assert ds.collater([sample])["references"] == ["中国abc银行"]


def test_ocr_training_padding_is_seeded(tmp_path, write_tsv, png_b64, noise_image):
    rows = [[f"o{i}", png_b64(noise_image(120, 30, seed=i)), "天地"] for i in range(2)]
    a = _ocr(tmp_path, write_tsv, rows, split="train", seed=3)
    b = _ocr(tmp_path, write_tsv, rows, split="train", seed=3)
    assert torch.equal(a[1]["patch_image"], b[1]["patch_image"])  # same seed, epoch and row
    img = noise_image(120, 30, seed=1)
    expected = ocr_resize(img, 64, *MEAN_STD[False], rng=random.Random("3/1/1"))
    assert torch.equal(a[1]["patch_image"], expected)
    a.set_epoch(2)
    assert torch.equal(a[1]["patch_image"], ocr_resize(img, 64, *MEAN_STD[False], rng=random.Random("3/2/1")))


def test_ocr_document_mode_needs_480(tmp_path, write_tsv, image_b64):
    with pytest.raises(ValueError, match="document mode needs patch_image_size 480, got 64"):
        _ocr(tmp_path, write_tsv, [["o", image_b64, "天"]], is_document=True)


# ------------------------------------------------------------------ bad rows


def _bad_rows(image_b64):
    not_an_image = base64.b64encode(b"GIF89a but not really").decode()
    return {
        "caption": (
            lambda tmp_path, write_tsv, row: _caption(tmp_path, write_tsv, [["good", image_b64, "一只猫"], row]),
            [
                (["x", "@@not base64@@", "一只猫"], "image", "not base64"),
                (["x", not_an_image, "一只猫"], "image", "PIL cannot read"),
                (["x", image_b64, "..."], "caption", "the caption is empty after removing ASCII punctuation"),
            ],
        ),
        "grounding": (
            lambda tmp_path, write_tsv, row: _grounding(
                tmp_path, write_tsv, [["good", image_b64, "人", "1,1,5,5"], row]
            ),
            [
                (["x", image_b64, "人", "1,2,3"], "box", "found 3 values"),
                (["x", image_b64, "人", "1,2,a,4"], "box", "not a number"),
                (["x", image_b64, "人", "10,2,3,4"], "box", "expected x0 <= x1 and y0 <= y1"),
                (["x", image_b64, "人", "1,2,41,4"], "box", "outside the 40x30 (w x h) image"),
                (["x", image_b64, "?!~ ", "1,2,3,4"], "text", "expected non-empty text"),
                (["x", "QUJD", "人", "1,2,3,4"], "image", "PIL cannot read"),
            ],
        ),
        "ocr": (
            lambda tmp_path, write_tsv, row: _ocr(tmp_path, write_tsv, [["good", image_b64, "天"], row]),
            [
                (["x", image_b64, "   "], "text", "expected non-empty text"),
            ],
        ),
        "matching": (
            lambda tmp_path, write_tsv, row: _matching(
                tmp_path, write_tsv, [["good", image_b64, "蓝色的星形", "否"], row]
            ),
            [
                (["x", image_b64, "红色的圆形", "对"], "answer", "expected 是 or 否, found '对'"),
                (["x", image_b64, "   ", "是"], "text", "expected non-empty text"),
                (["x", "QUJD", "红色的圆形", "是"], "image", "PIL cannot read"),
            ],
        ),
    }


@pytest.mark.parametrize("task", ["caption", "grounding", "ocr", "matching"])
def test_bad_rows_name_file_row_and_field(tmp_path, write_tsv, image_b64, task):
    build, cases = _bad_rows(image_b64)[task]
    for bad_row, field, problem in cases:
        ds = build(tmp_path, write_tsv, bad_row)
        assert ds[0]["id"] == 0
        with pytest.raises(DataError) as err:
            ds[1]
        message = str(err.value)
        assert message.startswith(f"{ds.tsv.path}: row 1 (line 2), field '{field}': "), message
        assert problem in message and "skip_bad_rows=True" in message, message


def test_skip_policy_counts_logs_once_and_keeps_ids(tmp_path, write_tsv, image_b64, caplog):
    rows = [["a", image_b64, "一只猫"], ["b", "broken!", "两只狗"], ["c", image_b64, "小鸟"]]
    ds = _caption(tmp_path, write_tsv, rows, skip_bad_rows=True)
    with caplog.at_level(logging.WARNING, logger="ofa_cn.data.base"):
        samples = [ds[i] for i in range(3)] + [ds[1]]
    assert samples[1] is None and samples[3] is None
    assert ds.num_skipped_rows == 1
    warnings = [r for r in caplog.records if "skipping a bad row" in r.getMessage()]
    assert len(warnings) == 1 and "caption_train.tsv: row 1 (line 2), field 'image'" in warnings[0].getMessage()
    assert [s["id"] for s in samples if s is not None] == [0, 2]  # the row after the bad one keeps id 2
    assert samples[2]["image_id"] == "c"
    batch = ds.collater(samples)
    assert batch["id"].tolist() == [0, 2] and batch["image_ids"] == ["a", "c"]
    assert ds.collater([None]) == {}


def test_fairseq_batching_and_workers(tmp_path, write_tsv, image_b64):
    rows = [[f"i{i}", image_b64, "一只猫" * (i + 1)] for i in range(6)]
    ds = _caption(tmp_path, write_tsv, rows, split="valid", max_tgt_length=8)
    indices = ds.ordered_indices()
    assert indices.tolist() == list(range(6))
    kept, ignored = ds.filter_indices_by_size(indices, (1024, 1024))
    assert kept.tolist() == list(range(6)) and ignored == []
    batches = ds.batch_by_size(indices, max_tokens=36)  # 12 tokens per sample -> 3 per batch
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]]
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[4]["target"], ds[4]["target"])
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=batches, num_workers=2, collate_fn=ds.collater, multiprocessing_context="fork"
    )
    got = [b["id"].tolist() for b in loader]
    assert got == [[0, 1, 2], [3, 4, 5]]
    assert np.array_equal(ds.num_tokens_vec(np.arange(3)), [12, 12, 12])


def test_row_with_a_tab_inside_the_caption_stops_the_dataset_before_training(tmp_path, write_tsv, image_b64, caplog):
    rows = [["a", image_b64, "一只猫"], ["b", image_b64, "两只\t狗"], ["c", image_b64, "小鸟"]]
    with pytest.raises(DataError, match=r"caption_train.tsv: row 1 \(line 2\): expected 5 tab-separated fields, as "
                                        r"2 of the file's 3 rows have, found 6\. A tab inside a field"):
        _caption(tmp_path, write_tsv, rows)
    with caplog.at_level(logging.WARNING, logger="ofa_cn.data.base"):
        ds = _caption(tmp_path, write_tsv, rows, skip_bad_rows=True)
    assert "1 rows have another number of fields than the file's 5 and will be skipped (first: row 1)" in caplog.text
    assert ds[1] is None and ds.num_skipped_rows == 1
    assert ds[2]["references"] == ["小鸟"]


# ------------------------------------------------------------------ matching

# 图片描述的是" 红色的圆形 "吗? between bos and eos (ids of the released vocabulary)
SOURCE_RED_CIRCLE = [0, 1749, 4279, 2993, 6839, 4642, 3225, 111, 5277, 5686, 4642, 1753, 2505, 111, 1412, 140, 2]
YES_ID, NO_ID = 3225, 1419  # 是, 否


def test_a_row_becomes_the_prompt_the_square_image_and_the_answer(tmp_path, write_tsv, png_b64, noise_image):
    image = noise_image(40, 30)
    ds = _matching(tmp_path, write_tsv, [["m-1", png_b64(image), "红色的圆形", "是"],
                                         ["m-2", png_b64(image), "红色的圆形", "否"]])
    yes, no = ds[0], ds[1]
    assert yes["source"].tolist() == SOURCE_RED_CIRCLE
    assert yes["target"].tolist() == [YES_ID, EOS] and yes["prev_output_tokens"].tolist() == [BOS, YES_ID]
    assert no["target"].tolist() == [NO_ID, EOS]
    assert torch.equal(yes["patch_image"], resize_square(image.convert("RGB"), 32, *MEAN_STD[False]))
    assert yes["uniq_id"] == "m-1"


def test_the_pretraining_pairs_use_the_same_prompt(tmp_path, write_tsv, png_b64, noise_image, tokenizer):
    from ofa_cn.data.pretrain import PROMPTS

    head, tail = PROMPTS["image_text_match"].split("{}")
    assert [BOS] + tokenizer.encode(head) + tokenizer.encode("红色的圆形") + tokenizer.encode(tail) + [EOS] \
        == SOURCE_RED_CIRCLE


def test_unify_task_mixes_matching_rows_in(tmp_path, write_tsv, png_b64, noise_image):
    import ofa_cn.tasks  # noqa: F401  (registers the tasks)
    from ofa_cn.tasks.pretrain import UnifyConfig, UnifyTask

    image = png_b64(noise_image(40, 30))
    train = write_tsv(tmp_path / "m_train.tsv", [[f"m{i}", image, "红色的圆形", "是否"[i % 2]] for i in range(3)])
    valid = write_tsv(tmp_path / "m_valid.tsv", [["v", image, "红色的圆形", "是"]])
    task = UnifyTask.setup_task(UnifyConfig(matching_data=f"{train},{valid}", patch_image_size=32))
    task.load_dataset("train")
    mixture = task.datasets["train"]
    assert len(mixture) == 3 and isinstance(mixture.parts[0], MatchingDataset)
    batch = mixture.collater([mixture[i] for i in range(3)])
    assert batch["target"][:, 0].tolist() == [YES_ID, NO_ID, YES_ID]
