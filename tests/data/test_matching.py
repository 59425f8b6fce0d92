"""Image-text matching rows (``ofa_cn.data.matching``): the pretraining prompt around the text, 是/否
as the target, bad rows named by file, row and field; and unify_task reads them as `matching_data`."""

from __future__ import annotations

import pytest
import torch

from ofa_cn.data import DataError, TSVFile
from ofa_cn.data.image import MEAN_STD, resize_square
from ofa_cn.data.matching import MatchingDataset
from ofa_cn.tokenizer import BOS, EOS, get_tokenizer

# 图片描述的是" 红色的圆形 "吗? between bos and eos (ids of the released vocabulary)
SOURCE_RED_CIRCLE = [0, 1749, 4279, 2993, 6839, 4642, 3225, 111, 5277, 5686, 4642, 1753, 2505, 111, 1412, 140, 2]
YES_ID, NO_ID = 3225, 1419  # 是, 否


def _matching(tmp_path, write_tsv, rows, split="train", size=32):
    tsv = TSVFile(write_tsv(tmp_path / f"matching_{split}.tsv", rows), None, MatchingDataset.FIELDS)
    return MatchingDataset(tsv, get_tokenizer(), split, patch_image_size=size)


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


@pytest.mark.parametrize("row, field, problem", [
    (["x", None, "红色的圆形", "对"], "answer", "expected 是 or 否, found '对'"),
    (["x", None, "   ", "是"], "text", "expected non-empty text"),
    (["x", "QUJD", "红色的圆形", "是"], "image", "PIL cannot read"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, write_tsv, png_b64, noise_image, row, field, problem):
    image = png_b64(noise_image(40, 30))
    row = [image if value is None else value for value in row]
    ds = _matching(tmp_path, write_tsv, [["good", image, "蓝色的星形", "否"], row])
    assert ds[0]["id"] == 0
    with pytest.raises(DataError) as err:
        ds[1]
    message = str(err.value)
    assert message.startswith(f"{ds.tsv.path}: row 1 (line 2), field '{field}': "), message
    assert problem in message and "skip_bad_rows=True" in message, message


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
