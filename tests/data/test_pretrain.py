"""Pretraining samples: each objective's source and target, the second batch, bad rows, negatives."""

from __future__ import annotations

import random

import pytest
import torch

from ofa_cn.data.errors import DataError
from ofa_cn.data.grounding import GroundingDataset
from ofa_cn.data.image import decode_image, normalize, to_tensor
from ofa_cn.data.negatives import Negatives
from ofa_cn.data.pretrain import PROMPTS, PretrainDataset
from ofa_cn.data.tsv import TSVFile
from pretrain_data import write_pretrain_files

P = PretrainDataset
SIZE = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_pretrain_files(tmp_path_factory.mktemp("pretrain"), scenes=3, seed=1)


def dataset(files, tokenizer, split="train", **kwargs):
    extras = dict(texts=TSVFile(files["text"], None, P.TEXT_FIELDS), images=TSVFile(files["image"], None, P.IMAGE_FIELDS),
                  detections=TSVFile(files["detection"], None, P.DETECTION_FIELDS),
                  negatives=Negatives.from_dir(files["negatives"]))
    extras.update(kwargs)
    return P(TSVFile(files["pairs"], None, P.FIELDS), tokenizer, split, SIZE, 40, 20, **extras)


def text(tokenizer, ids):
    return tokenizer.decode(ids)


def test_caption_row_gives_a_caption_and_a_matching_example(files, tokenizer):
    ds = dataset(files, tokenizer)
    row = ds.tsv[0]
    pairs, _ = ds[0]
    assert row["type"] == "caption" and len(pairs) == 2
    caption, match = pairs
    assert text(tokenizer, caption["source"]) == "图片描述了什么内容?"
    assert text(tokenizer, caption["target"]) == row["caption"]
    assert caption["target"][-1] == 2 and caption["prev_output_tokens"][0] == 0
    assert caption["conf"] == 1.0 and caption["code_mask"] is False and caption["patch_image"].shape == (3, SIZE, SIZE)
    shown = text(tokenizer, match["source"])
    assert shown.startswith('图片描述的是"') and shown.endswith('"吗?')
    said_yes = text(tokenizer, match["target"]) == "是"
    assert said_yes == (shown[len('图片描述的是"'):-len('"吗?')] == row["caption"])
    assert torch.equal(match["patch_image"], caption["patch_image"])  # the same augmented image


def test_matching_examples_say_yes_and_no_about_equally(files, tokenizer):
    answers = []
    for epoch in range(1, 41):
        ds = dataset(files, tokenizer)
        ds.set_epoch(epoch)
        answers.append(text(tokenizer, ds[0][0][1]["target"]))
    assert 10 <= answers.count("是") <= 30 and answers.count("是") + answers.count("否") == 40


def test_qa_row_weights_by_confidence(files, tokenizer, write_tsv, tmp_path):
    rows = [line.rstrip("\n").split("\t") for line in open(files["pairs"], encoding="utf-8")]
    qa = rows[1]
    qa[4] = "0.4|!+两个&&0.9|!+三个"
    path = write_tsv(tmp_path / "qa.tsv", [qa])
    ds = P(TSVFile(path, None, P.FIELDS), tokenizer, "valid", SIZE, 40, 20)
    (sample,), extras = ds[0]
    assert extras == [] and text(tokenizer, sample["source"]) == "图中有几个物体?"
    assert text(tokenizer, sample["target"]) == "三个" and sample["conf"] == pytest.approx(0.9)
    qa[4] = "0.4两个"
    ds = P(TSVFile(write_tsv(tmp_path / "bad.tsv", [qa]), None, P.FIELDS), tokenizer, "valid", SIZE, 40, 20)
    with pytest.raises(DataError, match=r"bad.tsv: row 0 \(line 1\), field 'refs': expected \"confidence\|!\+answer\""):
        ds[0]


def test_grounding_matches_the_finetuning_dataset_at_evaluation(files, tokenizer, tmp_path, write_tsv):
    """Valid split: no augmentation, so the grounding sample equals the refcoco dataset's."""
    ds = dataset(files, tokenizer, split="valid")
    row = ds.tsv[2]
    assert row["type"] == "visual_grounding"
    (grounding, region), extras = ds[2]
    assert extras == []
    path = write_tsv(tmp_path / "g.tsv", [[row["uniq_id"], row["image"], row["caption"], row["refs"]]])
    reference = GroundingDataset(TSVFile(path, None, GroundingDataset.FIELDS), tokenizer, "valid", SIZE, 40, 20,
                                 max_image_size=512)[0]
    for key in ("source", "target", "patch_image"):
        assert torch.equal(grounding[key], reference[key]), key
    bins = grounding["target"][:4].tolist()
    assert region["source"][-5:-1].tolist() == bins  # the region is the grounded caption's prompt
    assert text(tokenizer, region["source"]).startswith("这个区域描述了什么内容?区域:")
    assert text(tokenizer, region["target"]) == row["caption"]


def test_training_grounding_box_follows_the_crop(files, tokenizer):
    """Train: random resize + object-centred crop; the bins still frame the object's pixels."""
    ds = dataset(files, tokenizer)
    (grounding, _), _ = ds[2]
    x0, y0, x1, y1 = [(b - tokenizer.bin_offset) / 999 * 512 for b in grounding["target"][:4].tolist()]
    assert 0 <= x0 < x1 <= SIZE + 0.5 and 0 <= y0 < y1 <= SIZE + 0.5  # bins round to 512/999 px
    pixels = grounding["patch_image"]  # the object is a flat colour, the background light: the box is darker
    inside = pixels[:, round(y0) + 1:round(y1) - 1, round(x0) + 1:round(x1) - 1].mean()
    assert inside < pixels.mean()


def test_second_batch_every_eighth_row_in_training_only(files, tokenizer):
    ds = dataset(files, tokenizer)
    assert [len(ds[i][1]) for i in range(len(ds))] == [4] + [0] * 7 + [4]
    assert all(len(dataset(files, tokenizer, "valid")[i][1]) == 0 for i in (0, 8))


def test_text_infilling(files, tokenizer):
    ds = dataset(files, tokenizer)
    first, second = ds[0][1][:2]
    texts = [r["text"] for r in (ds.texts[0], ds.texts[1])]
    for sample, original in zip((first, second), texts):
        assert text(tokenizer, sample["target"]) == original
        source = text(tokenizer, sample["source"])
        assert source.startswith('"') and source.endswith('"的完整文本是什么?') and "<mask>" in source
        assert sample["conf"] == 2.0 and sample["patch_mask"] is False and not sample["patch_image"].any()


def test_image_infilling_blanks_the_centre_and_predicts_codes(files, tokenizer):
    ds = dataset(files, tokenizer)
    sample = ds[0][1][2]
    row = ds.images[0]
    assert sample["code_mask"] is True and text(tokenizer, sample["source"]) == PROMPTS["image_infilling"]
    codes = [int(v) for v in row["code"].split()]
    assert len(codes) == 256 and sample["target"][:-1].tolist() == [21133 + c for c in codes]
    full = normalize(to_tensor(decode_image(row["image"], "x")), (0.5,) * 3, (0.5,) * 3)
    centre = (slice(None), slice(64, 192), slice(64, 192))
    assert not sample["patch_image"][centre].any()
    sample["patch_image"][centre] = full[centre]
    assert torch.equal(sample["patch_image"], full)


def test_detection_lists_boxes_and_names(files, tokenizer):
    ds = dataset(files, tokenizer)
    sample = ds[0][1][3]
    names = [item.split(",", 5)[5] for item in ds.detections[0]["label"].split("&&")]
    ids = sample["target"][:-1].tolist()
    found = []
    while ids:
        assert all(i >= tokenizer.bin_offset for i in ids[:4])
        ids = ids[4:]
        name = []
        while ids and ids[0] < tokenizer.bin_offset:
            name.append(ids.pop(0))
        found.append(tokenizer.decode(name))
    assert found and set(found) <= set(names)
    assert sample["patch_image"].shape == (3, 256, 256) and sample["conf"] == 2.0


def test_collater_gives_two_batches(files, tokenizer):
    ds = dataset(files, tokenizer)
    first, second = ds.collater([ds[0], ds[1]])
    assert first["net_input"]["src_tokens"].size(0) == 4 and first["conf"].tolist() == [1.0] * 4
    assert second["net_input"]["code_masks"].tolist() == [False, False, True, False]
    assert second["conf"].tolist() == [2.0] * 4
    assert second["net_input"]["patch_masks"].tolist() == [False, False, True, True]
    single = ds.collater([ds[1]])
    assert isinstance(single, dict) and single["net_input"]["src_tokens"].size(0) == 2


def test_bad_rows_name_the_file_row_and_field(files, tokenizer, write_tsv, tmp_path):
    rows = [line.rstrip("\n").split("\t") for line in open(files["pairs"], encoding="utf-8")]
    rows[0][7] = "vqa"
    ds = P(TSVFile(write_tsv(tmp_path / "p.tsv", rows[:1]), None, P.FIELDS), tokenizer, "train", SIZE, 40, 20)
    with pytest.raises(DataError, match=r"p.tsv: row 0 \(line 1\), field 'type': expected one of caption, qa"):
        ds[0]
    images = [line.rstrip("\n").split("\t") for line in open(files["image"], encoding="utf-8")]
    images[0][2] = "1 2 3"
    bad = TSVFile(write_tsv(tmp_path / "i.tsv", images), None, P.IMAGE_FIELDS)
    ds = dataset(files, tokenizer, images=bad)
    with pytest.raises(DataError, match=r"i.tsv: row 0 \(line 1\), field 'code': expected 256 space-separated"):
        ds[0]
    detections = [line.rstrip("\n").split("\t") for line in open(files["detection"], encoding="utf-8")]
    detections[0][2] = "1,2,3,4,red"
    bad = TSVFile(write_tsv(tmp_path / "d.tsv", detections), None, P.DETECTION_FIELDS)
    with pytest.raises(DataError, match=r"d.tsv: row 0 \(line 1\), field 'label': object 0: expected"):
        dataset(files, tokenizer, detections=bad)[0]
    skipping = dataset(files, tokenizer, detections=bad, skip_bad_rows=True)
    assert skipping[0] is None and skipping[1] is not None and skipping.num_skipped_rows == 1


def test_negatives():
    negatives = Negatives(["别的描述"], ["红色的圆形", "蓝色的方形"], {"how many": ["0", "1", "2"], "other": ["是", "否"]})
    seen = {negatives.caption("一个红色的圆形", "红色的圆形", random.Random(s)) for s in range(50)}
    assert seen == {"一个蓝色的方形", "别的描述"}
    answers = [negatives.answer("0", 1.0, random.Random(s)) for s in range(200)]
    # same type ("1": count + 1; "-1" becomes "1"; or another count) unless p > 0.9: then "other"
    assert "0" not in answers and set(answers) <= {"1", "2", "是", "否"}
    assert 0 < sum(a in "是否" for a in answers) < 40
    assert {negatives.answer("猫", 1.0, random.Random(s)) for s in range(20)} <= {"是", "否"}


def test_missing_negatives_folder_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks all_captions.txt, object.txt, type2ans.json"):
        Negatives.from_dir(tmp_path)
