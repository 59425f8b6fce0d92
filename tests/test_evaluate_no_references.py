"""evaluate.py on splits without references (MUGE's test split): predictions, no metrics, MUGE's file."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import torch

from ofa_cn.data.errors import DataError
from ofa_cn.apps.evaluate import evaluate
from ofa_cn.tokenizer import get_tokenizer

CAPTION_GEN = {"beam": 5, "max_len_b": 16, "min_len": 1, "no_repeat_ngram_size": 3}
REAL = 1  # row 1 of the golden batches is image_real.png


@pytest.fixture(scope="module")
def image(golden_dir) -> str:
    return base64.b64encode((golden_dir / "image_real.png").read_bytes()).decode()


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_caption_split_without_references(golden_checkpoint, golden_outputs, image, tmp_path, caplog):
    data = tmp_path / "caption_test.tsv"
    data.write_text(f"101\t{image}\t\n102\t{image}\t\n", encoding="utf-8")  # MUGE test: captions empty
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="ofa_cn.apps.no_references"):
        written = evaluate(golden_checkpoint, data, out, generation=CAPTION_GEN, progress=False,
                           command="python scripts/evaluate.py ...")
    length = int(golden_outputs["caption_gen_lengths"][REAL, 0])
    caption = get_tokenizer().decode(golden_outputs["caption_gen_tokens"][REAL, 0, :length])
    assert read_jsonl(out / "predictions.jsonl") == [{"image_id": "101", "caption": caption},
                                                     {"image_id": "102", "caption": caption}]
    assert read_jsonl(out / "muge_submission.jsonl") == [{"image_id": 101, "text": caption},
                                                        {"image_id": 102, "text": caption}]
    assert not (out / "metrics.json").exists()
    assert written["references"] is False and written["count"] == 2 and "cider" not in written
    assert written["command"] == "python scripts/evaluate.py ..."
    said = [r.getMessage() for r in caplog.records if "no references" in r.getMessage()]
    assert len(said) == 1 and "wrote 2 predictions" in said[0] and "no metrics" in said[0]


def test_grounding_split_without_boxes(golden_checkpoint, golden_outputs, image, tmp_path):
    data = tmp_path / "refcoco_test.tsv"
    data.write_text(f"201\t{image}\t穿红色衣服的人\t\n", encoding="utf-8")
    out = tmp_path / "out"
    evaluate(golden_checkpoint, data, out, task_name="refcoco", any_task=True, progress=False, max_image_size=256)
    rows = read_jsonl(out / "predictions.jsonl")
    assert [sorted(r) for r in rows] == [["box", "uniq_id"]]
    torch.testing.assert_close(torch.tensor(rows[0]["box"], dtype=torch.float64),
                               golden_outputs["grounding_bins_constrained_boxes_pixels"][REAL].double(),
                               atol=1e-3, rtol=0)  # the placeholder box never reaches the prediction
    assert not (out / "metrics.json").exists() and not (out / "muge_submission.jsonl").exists()


def test_a_reference_in_a_split_without_them_is_an_error(golden_checkpoint, image, tmp_path):
    data = tmp_path / "mixed.tsv"
    data.write_text(f"101\t{image}\t\n102\t{image}\t一只猫\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 1 \(line 2\), field 'caption': expected an empty caption like row 0"):
        evaluate(golden_checkpoint, data, tmp_path / "out", generation=CAPTION_GEN, progress=False)


def test_tokenize_is_recorded_and_only_for_captions(golden_checkpoint, image, tmp_path):
    data = tmp_path / "caption_valid.tsv"
    data.write_text(f"101\t{image}\t一个穿红色衣服的人站在草地上\n", encoding="utf-8")
    metrics = evaluate(golden_checkpoint, data, tmp_path / "out", generation=CAPTION_GEN, progress=False,
                       tokenize="jieba")
    assert metrics["tokenize"] == "jieba"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["tokenize"] == "jieba"
    with pytest.raises(ValueError, match="--tokenize jieba applies to caption metrics"):
        evaluate(golden_checkpoint, data, tmp_path / "g", task_name="refcoco", any_task=True, progress=False,
                 tokenize="jieba")


def test_prepared_muge_test_split_to_submission(golden_checkpoint, golden_dir, tmp_path):
    """Raw MUGE test files -> `ofa-cn prepare muge` -> evaluate with eval_caption.sh's columns -> MUGE's file."""
    from ofa_cn.prepare import muge

    image = base64.urlsafe_b64encode((golden_dir / "image_real.png").read_bytes()).decode()
    (tmp_path / "IC_test.jsonl").write_text('{"image_id": 5}\n{"image_id": 6}\n', encoding="utf-8")
    (tmp_path / "IC_test.tsv").write_text(f"5\t{image}\n6\t{image}\n", encoding="utf-8")
    data = tmp_path / "caption_test.tsv"
    muge.prepare(tmp_path / "IC_test.jsonl", tmp_path / "IC_test.tsv", data, show_progress=False)
    written = evaluate(golden_checkpoint, data, tmp_path / "out", selected_cols="1,4,2", generation=CAPTION_GEN,
                       progress=False)
    lines = read_jsonl(written["submission"])
    assert [line["image_id"] for line in lines] == [5, 6] and lines[0]["text"] == lines[1]["text"] != ""
