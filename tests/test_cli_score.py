"""ofa_cn/apps/cli.py `score` commands: run in-process through main([...]) and once as a process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ofa_cn.apps.cli import main
from ofa_cn.metrics import score_captions

REPO_ROOT = Path(__file__).resolve().parents[1]


def _write_jsonl(path: Path, records: list) -> str:
    """Write one line per record: dicts as JSON, strings verbatim (to plant bad lines)."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _score(capsys, *argv: str) -> dict:
    assert main(["score", *argv]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "expected exactly one JSON object on stdout"
    return json.loads(out)


def _score_fails(capsys, *argv: str) -> str:
    assert main(["score", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_caption(tmp_path, capsys):
    pred = _write_jsonl(
        tmp_path / "pred.jsonl",
        [
            {"image_id": 1, "caption": "一 个 男 人 在 骑 车"},
            {"image_id": "2", "caption": "两只猫睡觉了"},
        ],
    )
    ref = _write_jsonl(
        tmp_path / "ref.jsonl",
        [
            {"image_id": "1", "captions": ["一个男人在骑车", "男人骑自行车"]},
            "",  # blank lines are skipped
            {"image_id": 2, "captions": ["两只猫睡觉了"]},
        ],
    )
    result = _score(capsys, "caption", "--pred", pred, "--ref", ref)
    assert result["count"] == 2
    assert result["bleu4"] == pytest.approx(100.0, abs=1e-6)  # each prediction is a reference
    assert result["rouge_l"] == pytest.approx(100.0)
    expected = score_captions(
        {"1": "一个男人在骑车", "2": "两只猫睡觉了"},
        {"1": ["一个男人在骑车", "男人骑自行车"], "2": ["两只猫睡觉了"]},
    )
    assert result == pytest.approx(expected)


def test_grounding_with_splits(tmp_path, capsys):
    square = [0, 0, 10, 10]
    pred = _write_jsonl(
        tmp_path / "pred.jsonl",
        [
            {"uniq_id": "a", "box": square},  # hit
            {"uniq_id": "b", "box": [5, 0, 15, 10]},  # IoU 1/3
            {"uniq_id": "c", "box": [1.0, 1.0, 11.0, 11.0]},  # IoU 81/119, hit
        ],
    )
    ref = _write_jsonl(
        tmp_path / "ref.jsonl",
        [
            {"uniq_id": "a", "box": square, "split": "testA"},
            {"uniq_id": "b", "box": square, "split": "testA"},
            {"uniq_id": "c", "box": square, "split": "val"},
        ],
    )
    result = _score(capsys, "grounding", "--pred", pred, "--ref", ref)
    assert result["count"] == 3
    assert result["acc@0.5"] == pytest.approx(100 * 2 / 3)
    assert result["mean_iou"] == pytest.approx((1 + 1 / 3 + 81 / 119) / 3, abs=1e-6)
    assert result["splits"]["testA"]["acc@0.5"] == pytest.approx(50.0)
    assert result["splits"]["testA"]["count"] == 2
    assert result["splits"]["val"]["acc@0.5"] == pytest.approx(100.0)

    low = _score(capsys, "grounding", "--pred", pred, "--ref", ref, "--threshold", "0.3")
    assert low["acc@0.3"] == pytest.approx(100.0)


def test_grounding_without_splits(tmp_path, capsys):
    pred = _write_jsonl(tmp_path / "pred.jsonl", [{"uniq_id": 7, "box": [0, 0, 10, 5]}])
    ref = _write_jsonl(tmp_path / "ref.jsonl", [{"uniq_id": 7, "box": [0, 0, 10, 10]}])
    result = _score(capsys, "grounding", "--pred", pred, "--ref", ref)
    assert result == pytest.approx({"acc@0.5": 0.0, "count": 1, "mean_iou": 0.5})


def test_ocr(tmp_path, capsys):
    pred = _write_jsonl(
        tmp_path / "pred.jsonl",
        [{"uniq_id": "1", "text": "中國"}, {"uniq_id": "2", "text": "abcd"}],
    )
    ref = _write_jsonl(
        tmp_path / "ref.jsonl",
        [{"uniq_id": "2", "text": "ABCE"}, {"uniq_id": "1", "text": "中 国"}],
    )
    result = _score(capsys, "ocr", "--pred", pred, "--ref", ref)
    assert result == pytest.approx({"accuracy": 50.0, "ned": 100 * (1 - 0.25 / 2), "count": 2})


@pytest.mark.parametrize(
    "task, bad_line, expected",
    [
        ("caption", {"image_id": "2", "text": "人"}, "field 'caption': missing"),
        ("caption", '{"image_id": "2", "caption": ', "not valid JSON"),
        ("caption", '["image_id", "2"]', "expected a JSON object, found list"),
        ("caption", {"image_id": 2.5, "caption": "人"}, "field 'image_id': expected a string"),
        ("caption", {"image_id": "1", "caption": "人"}, "duplicate id '1' (first on line 1)"),
        ("grounding", {"uniq_id": "2", "box": [0, 0, 10]}, "field 'box': expected 4 numbers"),
        ("grounding", {"uniq_id": "2", "box": [0, 0, "1", 2]}, "field 'box': expected 4 numbers"),
        ("grounding", {"uniq_id": "2", "box": [0, 0, True, 2]}, "field 'box': expected 4 numbers"),
        ("ocr", {"uniq_id": "2", "text": ["a"]}, "field 'text': expected a string"),
    ],
)
def test_bad_prediction_line_names_file_line_and_field(tmp_path, capsys, task, bad_line, expected):
    good_pred = {
        "caption": {"image_id": "1", "caption": "人"},
        "grounding": {"uniq_id": "1", "box": [0, 0, 1, 1]},
        "ocr": {"uniq_id": "1", "text": "人"},
    }[task]
    pred = _write_jsonl(tmp_path / "pred.jsonl", [good_pred, bad_line])
    ref = _write_jsonl(tmp_path / "ref.jsonl", [good_pred])  # never read: pred fails first
    err = _score_fails(capsys, task, "--pred", pred, "--ref", ref)
    assert f"{pred}:2:" in err
    assert expected in err
    assert err.startswith(f"ofa-cn score {task}: error:")


def test_bad_reference_and_mismatched_files(tmp_path, capsys):
    pred = _write_jsonl(tmp_path / "pred.jsonl", [{"uniq_id": "1", "box": [0, 0, 1, 1]}])
    # one reference row has a split, the other does not
    ref = _write_jsonl(
        tmp_path / "ref.jsonl",
        [
            {"uniq_id": "1", "box": [0, 0, 1, 1], "split": "val"},
            {"uniq_id": "2", "box": [0, 0, 1, 1]},
        ],
    )
    err = _score_fails(capsys, "grounding", "--pred", pred, "--ref", ref)
    assert f"{ref}:2: field 'split': missing" in err

    ref = _write_jsonl(tmp_path / "ref2.jsonl", [{"uniq_id": "2", "box": [0, 0, 1, 1]}])
    err = _score_fails(capsys, "grounding", "--pred", pred, "--ref", ref)
    assert "prediction but no reference: '1'" in err
    assert f"--pred {pred}, --ref {ref}" in err

    ref = _write_jsonl(tmp_path / "ref3.jsonl", [{"image_id": "1", "captions": []}])
    cap_pred = _write_jsonl(tmp_path / "cap.jsonl", [{"image_id": "1", "caption": "人"}])
    err = _score_fails(capsys, "caption", "--pred", cap_pred, "--ref", ref)
    assert f"{ref}:1: field 'captions': expected at least one string" in err


def test_missing_or_empty_file(tmp_path, capsys):
    empty = _write_jsonl(tmp_path / "empty.jsonl", [""])
    missing = str(tmp_path / "missing.jsonl")
    err = _score_fails(capsys, "ocr", "--pred", missing, "--ref", empty)
    assert f"cannot read {missing}" in err
    err = _score_fails(capsys, "ocr", "--pred", empty, "--ref", empty)
    assert f"{empty}: no records" in err


def test_runs_as_a_module(tmp_path):
    pred = _write_jsonl(tmp_path / "pred.jsonl", [{"uniq_id": "1", "text": "中國"}])
    ref = _write_jsonl(tmp_path / "ref.jsonl", [{"uniq_id": "1", "text": "中国"}])
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"uniq_id": "1"}])
    command = [sys.executable, "-m", "ofa_cn.apps.cli", "score", "ocr", "--ref", ref, "--pred"]

    done = subprocess.run(command + [pred], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accuracy": 100.0, "ned": 100.0, "count": 1}

    failed = subprocess.run(command + [bad], capture_output=True, text=True, cwd=REPO_ROOT)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert f"{bad}:1: field 'text': missing" in failed.stderr


def test_caption_accepts_coco_style_results_and_jieba(tmp_path, capsys):
    refs = {"1": ["一个男人在骑自行车", "男人骑车"], "2": ["两只猫在睡觉"]}
    ref = _write_jsonl(tmp_path / "ref.jsonl", [{"image_id": k, "captions": v} for k, v in refs.items()])
    # the original OFA's result file: one JSON array, ids as numbers, captions spaced per character
    coco = tmp_path / "results.json"
    coco.write_text(json.dumps([{"image_id": 1, "caption": "一 个 男 人 在 骑 车"},
                                {"image_id": 2, "caption": "两 只 猫"}], ensure_ascii=False), encoding="utf-8")
    preds = {"1": "一个男人在骑车", "2": "两只猫"}
    for tokenize in ("char", "jieba"):
        result = _score(capsys, "caption", "--pred", str(coco), "--ref", ref, "--tokenize", tokenize)
        assert result == pytest.approx(score_captions(preds, refs, tokenize=tokenize))
    assert _score(capsys, "caption", "--pred", str(coco), "--ref", ref)["tokenize"] == "char"

    coco.write_text(json.dumps([{"image_id": 1, "caption": "人"}, {"image_id": 2}]), encoding="utf-8")
    err = _score_fails(capsys, "caption", "--pred", str(coco), "--ref", ref)
    assert f"{coco}:item 2: field 'caption': missing" in err
