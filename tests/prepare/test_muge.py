"""ofa_cn/prepare/muge.py: MUGE's captions JSONL + image TSV -> the caption TSV the caption task reads."""

from __future__ import annotations

import base64
import json

import pytest

from ofa_cn.data.caption import CaptionDataset
from ofa_cn.data.tsv import TSVFile
from ofa_cn.prepare import muge
from ofa_cn.prepare.common import NoRowsWritten, report_path
from ofa_cn.tokenizer import get_tokenizer


def write_release(tmp_path, png, captions: list[dict], images: list[tuple[str, str]]):
    jsonl = tmp_path / "IC_valid.jsonl"
    jsonl.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in captions), encoding="utf-8")
    tsv = tmp_path / "IC_valid.tsv"
    tsv.write_text("".join(f"{i}\t{b}\n" for i, b in images), encoding="utf-8")
    return jsonl, tsv


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def test_valid_split_rows_ids_and_skips(tmp_path, png, read_rows):
    good, other = b64(png(5, 3)), b64(png(4, 6, 90))
    captions = [
        {"image_id": 101, "text": ["白色运动鞋", "一双 白色的\t鞋子"]},  # int id; a tab inside a caption
        {"image_id": "102", "text": ["红色连衣裙", "&&", "..."]},   # two bad captions dropped, one kept
        {"image_id": "103", "text": ["..."]},                      # nothing usable left
        {"image_id": "104", "text": ["蓝色背包"]},                   # its image does not decode
        {"image_id": "105", "text": ["黑色帽子"]},                   # no image line
    ]
    images = [("101", good), ("102", other), ("103", good), ("104", "bm90IGFuIGltYWdl"), ("106", good),
              ("101", good)]
    jsonl, tsv = write_release(tmp_path, png, captions, images)
    out = tmp_path / "caption_valid.tsv"

    report = muge.prepare(jsonl, tsv, out, show_progress=False)

    assert read_rows(out) == [
        ["101", "101", "白色运动鞋&&一双 白色的 鞋子", "", good],
        ["102", "102", "红色连衣裙", "", other],
    ]
    assert report.written == 2
    assert dict(report.skipped) == {
        "caption contains '&&' (that caption dropped)": 1,
        "empty caption (that caption dropped)": 2,
        "no usable caption left": 1,
        "image does not decode": 1,
        "image without a caption line": 1,
        "image_id on two image lines": 1,
        "caption line without an image": 1,
    }
    saved = json.loads(report_path(out).read_text(encoding="utf-8"))
    assert saved["written"] == 2 and saved["skipped_total"] == 8
    assert saved["examples"]["caption line without an image"] == [f"{jsonl}: image_id 105"]
    assert report_path(out).name == "caption_valid.report.json"

    # the caption task reads the file with its configs' columns and splits the references
    dataset = CaptionDataset(TSVFile(out, "1,4,2", CaptionDataset.FIELDS), get_tokenizer(), "valid", 16)
    assert dataset[0]["image_id"] == "101"
    assert dataset[0]["references"] == ["白色运动鞋", "一双 白色的 鞋子"]
    assert dataset[1]["patch_image"].shape == (3, 16, 16)


def test_one_row_per_caption_for_training(tmp_path, png, read_rows):
    jsonl, tsv = write_release(tmp_path, png, [{"image_id": "7", "text": ["甲", "乙"]}], [("7", b64(png(3, 3)))])
    out = tmp_path / "train.tsv"
    muge.prepare(jsonl, tsv, out, one_row_per_caption=True, show_progress=False)
    assert [r[:4] for r in read_rows(out)] == [["7_0", "7", "甲", ""], ["7_1", "7", "乙", ""]]


def test_test_split_without_captions_gives_empty_caption_rows(tmp_path, png, read_rows):
    image = b64(png(3, 4))
    jsonl, tsv = write_release(tmp_path, png, [{"image_id": "1"}, {"image_id": "2", "text": []}],
                               [("1", image), ("2", image)])
    out = tmp_path / "caption_test.tsv"
    report = muge.prepare(jsonl, tsv, out, show_progress=False)
    assert read_rows(out) == [["1", "1", "", "", image], ["2", "2", "", "", image]]
    assert report.notes["rows_without_captions"] == 2 and not report.skipped


def test_no_row_written_is_an_error_and_leaves_no_output(tmp_path, png):
    jsonl, tsv = write_release(tmp_path, png, [{"image_id": "1", "text": ["猫"]}], [("2", b64(png(3, 3)))])
    out = tmp_path / "empty.tsv"
    with pytest.raises(NoRowsWritten, match="no row written"):
        muge.prepare(jsonl, tsv, out, show_progress=False)
    assert not out.exists() and not (tmp_path / "empty.tsv.partial").exists()
    assert json.loads(report_path(out).read_text(encoding="utf-8"))["written"] == 0
