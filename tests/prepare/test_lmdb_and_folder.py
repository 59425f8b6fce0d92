"""ofa_cn/prepare/lmdb.py and folder.py, and the `ofa-cn prepare` command line."""

from __future__ import annotations

import base64
import json

import lmdb
import pytest

from ofa_cn.apps.cli import main
from ofa_cn.data.ocr import OCRDataset
from ofa_cn.data.tsv import TSVFile
from ofa_cn.prepare import folder
from ofa_cn.prepare import lmdb as lmdb_source
from ofa_cn.tokenizer import get_tokenizer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


@pytest.fixture
def text_lmdb(tmp_path, png):
    """FudanVI's layout: num-samples = 6, keys 1-based; sample 3 has no label, 4 a broken image,
    5 an empty label, 6 a label with a line break."""
    path = tmp_path / "scene_test"
    env = lmdb.open(str(path), map_size=1 << 20)
    samples = {1: (png(12, 4), "欢迎光临"), 2: (png(9, 3, 80), "ＡＢ中國"), 3: (png(5, 5), None),
               4: (b"garbage", "坏图"), 5: (png(5, 5), " "), 6: (png(5, 5), "两\n行")}
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"6")
        for i, (image, label) in samples.items():
            txn.put(b"image-%09d" % i, image)
            if label is not None:
                txn.put(b"label-%09d" % i, label.encode("utf-8"))
    env.close()
    return path


def test_lmdb_rows_and_skips(text_lmdb, tmp_path, png, read_rows):
    out = tmp_path / "ocr.tsv"
    report = lmdb_source.prepare(text_lmdb, out, show_progress=False)
    assert read_rows(out) == [["000000001", b64(png(12, 4)), "欢迎光临"],
                              ["000000002", b64(png(9, 3, 80)), "ＡＢ中國"]]
    assert dict(report.skipped) == {"image or label key missing": 1, "image does not decode": 1,
                                    "empty label": 1, "label holds a tab or line break": 1}
    assert report.notes["num_samples"] == 6
    dataset = OCRDataset(TSVFile(out, "0,1,2", OCRDataset.FIELDS), get_tokenizer(), "test", 64)
    assert dataset[1]["reference"] == "ab中国"  # the dataset normalises; the TSV keeps the label as given


def test_folder_all_three_tasks(tmp_path, png, read_rows):
    images = tmp_path / "mine"
    (images / "sub").mkdir(parents=True)
    (images / "sub" / "a.png").write_bytes(png(10, 6))
    (images / "b.png").write_bytes(png(4, 4, 30))
    (tmp_path / "secret.png").write_bytes(png(4, 4))
    lines = {
        "caption": [{"image": "sub/a.png", "caption": ["一只猫", "猫"]}, {"image": "b.png", "caption": "狗", "id": "d"},
                    {"image": "../secret.png", "caption": "x"}, {"image": "none.png", "caption": "y"}],
        "refcoco": [{"image": "sub/a.png", "expression": "左边", "box": [1, 2, 10, 6]},
                    {"image": "sub/a.png", "expression": "右边", "box": [1, 2, 11, 6]},
                    {"image": "b.png", "expression": "中间", "box": [1, 2, 3]}],
        "ocr": [{"image": "b.png", "text": "出口"}, {"image": "b.png", "caption": "no text key"}],
    }
    expected = {
        "caption": [["1", "1", "一只猫&&猫", "", b64(png(10, 6))], ["d", "d", "狗", "", b64(png(4, 4, 30))]],
        "refcoco": [["1", "左边", "1,2,10,6", b64(png(10, 6))]],
        "ocr": [["1", b64(png(4, 4, 30)), "出口"]],
    }
    skipped = {
        "caption": {"image path leaves --images": 1, "image file missing": 1},
        "refcoco": {"box outside its image": 1, "'box' is not 4 numbers [x0, y0, x1, y1]": 1},
        "ocr": {"line without 'image' and 'text'": 1},
    }
    for task, rows in lines.items():
        labels = tmp_path / f"{task}.jsonl"
        labels.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        out = tmp_path / f"{task}.tsv"
        report = folder.prepare(images, labels, task, out, show_progress=False)
        assert read_rows(out) == expected[task], task
        assert dict(report.skipped) == skipped[task], task


def test_command_line_writes_and_reports(text_lmdb, tmp_path, capsys):
    out = tmp_path / "cli.tsv"
    assert main(["prepare", "lmdb", "--lmdb", str(text_lmdb), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"written": 2, "skipped": 4, "out": str(out)}
    assert "wrote 2 rows" in captured.err and "skipped 1: empty label" in captured.err
    assert (tmp_path / "cli.report.json").is_file()

    # nothing to write: the report is printed, the exit status is 2, no TSV appears
    labels = tmp_path / "none.jsonl"
    labels.write_text('{"image": "missing.png", "text": "字"}\n', encoding="utf-8")
    empty = tmp_path / "empty.tsv"
    status = main(["prepare", "folder", "--images", str(tmp_path), "--labels", str(labels), "--task", "ocr",
                   "--out", str(empty), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2 and not empty.exists()
    assert "skipped 1: image file missing" in captured.err and "no row written" in captured.err
