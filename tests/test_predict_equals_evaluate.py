"""One path from picture to answer: ``ofa-cn caption|ground|ocr`` on image files returns exactly what
``evaluate`` writes in predictions.jsonl for a TSV of the same images (issue 17).

Checked on the golden checkpoint (written by the original code) and on tiny task checkpoints whose
grounding config has max_image_size != patch_image_size, with photo-like pictures of odd sizes, a
portrait, an EXIF-rotated JPEG and an RGBA PNG.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image, ImageOps

from ofa_cn.apps.cli import main as cli_main
from ofa_cn.apps.evaluate import evaluate
from photos import save_tiny_checkpoint, write_photos

GENERATION = ["--beam", "3", "--max-len-b", "6"]  # short, so the golden model's OCR stays fast
BATCH = "3"  # 4 images: batches of 3 and 1 in both paths
TASKS = {  # command -> (evaluate's task, TSV columns after the image, the answer's key in both outputs)
    "caption": ("caption", ["一只猫"], "caption"),
    "ground": ("refcoco", ["穿红色衣服的人", "1,1,5,5"], "box"),
    "ocr": ("ocr", ["文字"], "text"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return {
        "caption": save_tiny_checkpoint(folder / "caption.pt", {"_name": "caption", "patch_image_size": 64}),
        # max_image_size 96 > patch 64: boxes map through both, and bins past 64 px must be clipped
        "ground": save_tiny_checkpoint(folder / "ground.pt", {"_name": "refcoco", "patch_image_size": 64,
                                                               "max_image_size": 96, "bins_only": True}, seed=1),
        "ocr": save_tiny_checkpoint(folder / "ocr.pt", {"_name": "ocr", "patch_image_size": 64}, seed=2),
    }


def tsv_bytes(path, exif: bool) -> bytes:
    """The file as a TSV row carries it: its own bytes; with exif, the upright picture (PNG, lossless),
    since TSV datasets never apply EXIF orientation."""
    if not exif:
        return path.read_bytes()
    with Image.open(path) as img:
        upright = ImageOps.exif_transpose(img)
        buffer = io.BytesIO()
        upright.save(buffer, format="PNG")
    return buffer.getvalue()


def run_both(command, checkpoint, files, tmp_path, capsys, exif: bool, extra=()):
    task, columns, key = TASKS[command]
    rows = [f"{i}\t{base64.b64encode(tsv_bytes(p, exif)).decode()}\t" + "\t".join(columns)
            for i, p in enumerate(files.values())]
    (tmp_path / "data.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    generation = {"beam": 3, "max_len_b": 6}
    evaluate(checkpoint, tmp_path / "data.tsv", tmp_path / "eval", task_name=task, batch_size=int(BATCH),
             generation=generation, device="cpu", progress=False, any_task=True)
    expected = [json.loads(line)[key] for line in open(tmp_path / "eval" / "predictions.jsonl", encoding="utf-8")]

    argv = [command]
    for p in files.values():
        argv += [str(p), columns[0]] if command == "ground" else [str(p)]
    argv += ["--checkpoint", str(checkpoint), "--any-task", "--device", "cpu", "--batch-size", BATCH, "--jsonl",
             *GENERATION, *extra] + ([] if exif else ["--no-exif"])
    assert cli_main(argv) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in got] == [str(p) for p in files.values()]
    return [r[key] for r in got], expected


def assert_same(command, got, expected):
    assert len(got) == len(expected) == 4
    if command == "ground":
        for box, ref in zip(got, expected):
            assert box == pytest.approx(ref, abs=1e-4, rel=0)
    else:
        assert got == expected


@pytest.mark.parametrize("command", list(TASKS))
def test_cli_equals_evaluate_on_the_golden_checkpoint(command, golden_checkpoint, files, tmp_path, capsys):
    got, expected = run_both(command, golden_checkpoint, files, tmp_path, capsys, exif=True)
    assert_same(command, got, expected)


@pytest.mark.parametrize("command", list(TASKS))
@pytest.mark.parametrize("exif", [True, False])
def test_cli_equals_evaluate_on_a_tiny_model(command, exif, tiny_checkpoints, files, tmp_path, capsys):
    got, expected = run_both(command, tiny_checkpoints[command], files, tmp_path, capsys, exif=exif)
    assert_same(command, got, expected)
    if command == "ground":  # in each image's pixels, inside the image
        sizes = [ImageOps.exif_transpose(Image.open(p)).size if exif else Image.open(p).size for p in files.values()]
        for (x0, y0, x1, y1), (w, h) in zip(got, sizes):
            assert 0 <= min(x0, x1) and max(x0, x1) <= w + 1e-3 and 0 <= min(y0, y1) and max(y0, y1) <= h + 1e-3
