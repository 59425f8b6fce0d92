"""ofa_cn/prepare/refcoco.py: refer-toolkit files + translations -> the grounding TSV; unsafe pickles refused."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from ofa_cn.data.grounding import GroundingDataset
from ofa_cn.data.tsv import TSVFile
from ofa_cn.prepare import refcoco
from ofa_cn.prepare.refcoco import UnsafePickleError, load_plain_pickle
from ofa_cn.tokenizer import get_tokenizer


def sentences(*ids):
    return [{"sent_id": i, "sent": f"english {i}", "tokens": ["english"]} for i in ids]


@pytest.fixture
def release(tmp_path, png):
    """Three images (20x10, 8x8, a broken file), five refs in val, one in train."""
    images = tmp_path / "train2014"
    images.mkdir()
    (images / "COCO_train2014_000000000001.jpg").write_bytes(png(20, 10))
    (images / "COCO_train2014_000000000002.jpg").write_bytes(png(8, 8, 50))
    (images / "COCO_train2014_000000000003.jpg").write_bytes(b"not an image")
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 20, "height": 10},
                   {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": 8, "height": 8},
                   {"id": 3, "file_name": "COCO_train2014_000000000003.jpg", "width": 8, "height": 8}],
        "annotations": [{"id": 11, "image_id": 1, "bbox": [2.5, 1, 10.25, 4]},  # -> 2.5,1,12.75,5
                        {"id": 12, "image_id": 2, "bbox": [0, 0, 8, 8]},          # the whole image
                        {"id": 13, "image_id": 2, "bbox": [4, 4, 5, 1]},          # x1 = 9 > width 8
                        {"id": 14, "image_id": 3, "bbox": [0, 0, 1, 1]},
                        {"id": 15, "image_id": 1, "bbox": [3, 3, 0, 2]}],         # no width
    }
    refs = [
        {"ref_id": 0, "ann_id": 11, "image_id": 1, "split": "val", "sentences": sentences(100, 101, 102)},
        {"ref_id": 1, "ann_id": 12, "image_id": 2, "split": "val", "sentences": sentences(103)},
        {"ref_id": 2, "ann_id": 13, "image_id": 2, "split": "val", "sentences": sentences(104, 105)},
        {"ref_id": 3, "ann_id": 14, "image_id": 3, "split": "val", "sentences": sentences(106)},
        {"ref_id": 4, "ann_id": 15, "image_id": 1, "split": "val", "sentences": sentences(107)},
        {"ref_id": 5, "ann_id": 99, "image_id": 1, "split": "val", "sentences": sentences(108)},
        {"ref_id": 6, "ann_id": 11, "image_id": 1, "split": "train", "sentences": sentences(109)},
    ]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (tmp_path / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    zh = {100: "左边的人", 102: "穿 红色\t衣服的人", 103: "整张图", 104: "狗", 105: "猫", 106: "车",
          107: "树", 108: "天空", 109: "训练"}  # 101 has no translation
    (tmp_path / "zh.jsonl").write_text("".join(json.dumps({"sent_id": k, "sent": v}, ensure_ascii=False) + "\n"
                                               for k, v in zh.items()), encoding="utf-8")
    return tmp_path


def run(release, out, **kwargs):
    return refcoco.prepare(release / "refs(unc).p", release / "instances.json", release / "train2014",
                           release / "zh.jsonl", "val", out, show_progress=False, **kwargs)


def test_val_split_rows_boxes_and_skips(release, png, read_rows):
    out = release / "refcoco_val.tsv"
    report = run(release, out)
    image_1 = base64.urlsafe_b64encode(png(20, 10)).decode()
    image_2 = base64.urlsafe_b64encode(png(8, 8, 50)).decode()
    assert read_rows(out) == [
        ["100", "左边的人", "2.5,1,12.75,5", image_1],
        ["102", "穿 红色 衣服的人", "2.5,1,12.75,5", image_1],
        ["103", "整张图", "0,0,8,8", image_2],
    ]
    assert dict(report.skipped) == {
        "no translation for the expression": 1,         # 101
        "box outside its image": 2,                     # 104, 105: counted per expression
        "image does not decode": 1,                     # 106
        "box has no area (needs x0 < x1 and y0 < y1)": 1,  # 107
        "ann_id not in the instances file": 1,          # 108
    }
    assert report.notes["refs_in_split"] == 6

    # the grounding task reads it with its configs' columns; boxes survive in original pixels
    dataset = GroundingDataset(TSVFile(out, "0,3,1,2", GroundingDataset.FIELDS), get_tokenizer(), "val", 16)
    assert dataset[0]["uniq_id"] == "100"
    assert dataset[0]["region_coord"].tolist() == [2.5, 1.0, 12.75, 5.0]
    assert dataset[2]["region_coord"].tolist() == [0.0, 0.0, 8.0, 8.0]


def test_strict_makes_a_missing_translation_an_error(release):
    with pytest.raises(ValueError, match="no translation for sent_id 101"):
        run(release, release / "strict.tsv", strict=True)
    assert not (release / "strict.tsv").exists()


def test_unknown_split_names_the_splits_there(release):
    with pytest.raises(ValueError, match=r"no ref has split 'testA'.*\['train', 'val'\]"):
        refcoco.prepare(release / "refs(unc).p", release / "instances.json", release / "train2014",
                        release / "zh.jsonl", "testA", release / "x.tsv", show_progress=False)


class _CreatesAFile:
    """Unpickling this calls open(path, "w"): a stand-in for any code a malicious pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_malicious_pickle_is_refused_without_running(tmp_path):
    victim = tmp_path / "created_by_pickle"
    payload = [{"ref_id": 0, "sentences": [_CreatesAFile(victim)]}]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not victim.exists()
    pickle.loads(path.read_bytes()).__class__  # the plain unpickler would run it ...
    assert victim.exists()
    victim.unlink()
    with pytest.raises(UnsafePickleError, match=r"refused to load (builtins|io)\.open"):
        load_plain_pickle(path)  # ... ours refuses it
    assert not victim.exists()


def test_plain_pickles_load_including_python2_strings_and_sets(tmp_path):
    data = {"a": [1, 2.5, None, True], "b": ("x", -7), "c": {3, 4}, "d": frozenset({5})}
    path = tmp_path / "plain.p"
    path.write_bytes(pickle.dumps(data, protocol=2))
    assert load_plain_pickle(path) == data
    # a Python 2 pickle of {'sent': 'caf\xe9'} (protocol 2, SHORT_BINSTRING): byte strings decode as latin-1
    py2 = b"\x80\x02}q\x00U\x04sentq\x01U\x04caf\xe9q\x02s."
    (tmp_path / "py2.p").write_bytes(py2)
    assert load_plain_pickle(tmp_path / "py2.p") == {"sent": "café"}
