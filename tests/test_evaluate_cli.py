"""evaluate.py and the single-image commands reproduce the golden outputs for image_real.png."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ofa_cn.apps.cli import main as cli_main
from ofa_cn.apps.evaluate import evaluate
from ofa_cn.checkpoints.loading import parse_task_args
from ofa_cn.tokenizer import get_tokenizer

CAPTION_GEN = {"beam": 5, "max_len_b": 16, "min_len": 1, "no_repeat_ngram_size": 3}
REAL = 1  # row 1 of the golden batches is image_real.png


@pytest.fixture(scope="module")
def golden_caption(golden_outputs) -> str:
    length = int(golden_outputs["caption_gen_lengths"][REAL, 0])
    return get_tokenizer().decode(golden_outputs["caption_gen_tokens"][REAL, 0, :length])


@pytest.fixture(scope="module")
def golden_box(golden_outputs) -> list[float]:
    return golden_outputs["grounding_bins_constrained_boxes_pixels"][REAL].tolist()


@pytest.fixture(scope="module")
def tsvs(golden_dir, golden_inputs, tmp_path_factory):
    image = base64.b64encode((golden_dir / "image_real.png").read_bytes()).decode()
    box = ",".join(f"{v:g}" for v in golden_inputs["grounding_region_coords"][REAL].tolist())
    out = tmp_path_factory.mktemp("tsv")
    (out / "caption.tsv").write_text(f"101\t{image}\t一个穿红色衣服的人站在草地上\n", encoding="utf-8")
    (out / "grounding.tsv").write_text(f"201\t{image}\t穿红色衣服的人\t{box}\n", encoding="utf-8")
    return out


def test_evaluate_caption_equals_golden(golden_checkpoint, tsvs, tmp_path, golden_caption):
    metrics = evaluate(golden_checkpoint, tsvs / "caption.tsv", tmp_path, generation=CAPTION_GEN, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "predictions.jsonl", encoding="utf-8")]
    assert rows == [{"image_id": "101", "caption": golden_caption}]
    assert metrics["count"] == 1 and metrics["cider"] == 0.0
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved["generation"]["beam"] == 5 and saved["task"] == "CaptionTask"


def test_eval_caption_script_uses_the_published_settings_and_lets_flags_override(golden_checkpoint, tsvs, tmp_path,
                                                                                 golden_caption):
    """scripts/eval_caption.sh: its settings (no-repeat 3, min_len 1, ...) then ours (beam 5, 16 tokens)."""
    repo = Path(__file__).resolve().parents[1]
    cmd = ["bash", str(repo / "scripts/eval_caption.sh"), str(golden_checkpoint), str(tsvs / "caption.tsv"),
           str(tmp_path), "--selected-cols", "0,1,2", "--device", "cpu", "--beam", "5", "--max-len-b", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in open(tmp_path / "predictions.jsonl", encoding="utf-8")]
    assert rows == [{"image_id": "101", "caption": golden_caption}]
    generation = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["generation"]
    assert (generation["beam"], generation["max_len_b"], generation["no_repeat_ngram_size"]) == (5, 16, 3)
    short = subprocess.run(["bash", str(repo / "scripts/eval_caption.sh"), "only-one"], capture_output=True, text=True)
    assert short.returncode == 2 and "usage:" in short.stderr


def test_evaluate_grounding_equals_golden(golden_checkpoint, tsvs, tmp_path, golden_box, golden_inputs):
    metrics = evaluate(golden_checkpoint, tsvs / "grounding.tsv", tmp_path, task_name="refcoco", any_task=True,
                       progress=False, max_image_size=256)
    rows = [json.loads(line) for line in open(tmp_path / "predictions.jsonl", encoding="utf-8")]
    assert rows[0]["uniq_id"] == "201"
    torch.testing.assert_close(torch.tensor(rows[0]["box"], dtype=torch.float64),
                               torch.tensor(golden_box, dtype=torch.float64), atol=1e-3, rtol=0)
    assert metrics["count"] == 1 and metrics["acc@0.5"] == 0.0  # the golden weights are random


def test_evaluate_refuses_the_wrong_task(golden_checkpoint, tsvs, tmp_path):
    with pytest.raises(ValueError, match="trained for the 'caption' task, not 'refcoco'"):
        evaluate(golden_checkpoint, tsvs / "grounding.tsv", tmp_path, task_name="refcoco", progress=False)


def test_cli_caption(golden_checkpoint, golden_dir, golden_caption, capsys):
    image = str(golden_dir / "image_real.png")
    assert cli_main(["caption", image, image, "--checkpoint", str(golden_checkpoint), "--beam", "5",
                     "--max-len-b", "16", "--no-repeat-ngram-size", "3", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["caption"] for r in out["results"]] == [golden_caption, golden_caption]  # batched


def test_cli_ground(golden_checkpoint, golden_dir, golden_box, capsys):
    """The original's box, with no task argument: the caption checkpoint saved no max_image_size, so
    grounding uses its patch_image_size (256), as the original evaluation did (issue 17: it was 512,
    and boxes came out 2x too large)."""
    from ofa_cn.checkpoints.loading import _log_once

    _log_once.cache_clear()  # the choice is logged once per process; another test may have made it
    image = str(golden_dir / "image_real.png")
    assert cli_main(["ground", image, "穿红色衣服的人", "--checkpoint", str(golden_checkpoint), "--any-task",
                     "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    name, box = captured.out.strip().split("\t")
    assert name == image
    assert [float(v) for v in box.split(",")] == pytest.approx(golden_box, abs=6e-4)  # printed to 1/1000 px
    assert "has no max_image_size; grounding uses its patch_image_size, 256" in captured.err


def test_cli_errors(golden_checkpoint, golden_dir, tmp_path, capsys):
    image = str(golden_dir / "image_real.png")
    assert cli_main(["ground", image, "人", "--checkpoint", str(golden_checkpoint)]) == 2
    assert "trained for the 'caption' task" in capsys.readouterr().err
    assert cli_main(["caption", str(tmp_path / "missing.png"), "--checkpoint", str(golden_checkpoint)]) == 2
    assert f"argument IMAGE '{tmp_path / 'missing.png'}': no such file or directory" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    assert cli_main(["caption", str(tmp_path / "broken.png"), "--checkpoint", str(golden_checkpoint)]) == 2
    assert f"argument IMAGE: {tmp_path / 'broken.png'} is not an image PIL can read" in capsys.readouterr().err
    assert cli_main(["ground", image, "  ", "--checkpoint", str(golden_checkpoint), "--any-task"]) == 2
    err = capsys.readouterr().err
    assert f"{image}: expected non-empty text" in err and "say which region to find" in err
    assert cli_main(["caption", image, "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert f"argument --checkpoint '{tmp_path / 'none.pt'}': no such file or directory" in capsys.readouterr().err


def test_parse_task_args():
    assert parse_task_args(["max_image_size=256", "bins_only=false", "selected_cols=0,3,1,2"]) == {
        "max_image_size": 256, "bins_only": False, "selected_cols": "0,3,1,2"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_task_args(["oops"])


@pytest.mark.slow
def test_evaluate_under_torchrun_two_cpu_processes(golden_checkpoint, golden_dir, tmp_path, golden_caption):
    """scripts/evaluate.py splits rows by rank (gloo on CPU) and gathers them on rank 0."""
    image = base64.b64encode((golden_dir / "image_real.png").read_bytes()).decode()
    rows = "".join(f"{i}\t{image}\t一个人\n" for i in range(3))
    (tmp_path / "three.tsv").write_text(rows, encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    repo = Path(__file__).resolve().parents[1]
    cmd = [str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(29100 + os.getpid() % 500),
           str(repo / "scripts/evaluate.py"), "--checkpoint", str(golden_checkpoint), "--data", str(tmp_path / "three.tsv"),
           "--out-dir", str(tmp_path / "out"), "--device", "cpu", "--beam", "5", "--max-len-b", "16",
           "--no-repeat-ngram-size", "3", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    got = [json.loads(line) for line in open(tmp_path / "out" / "predictions.jsonl", encoding="utf-8")]
    assert sorted(r["image_id"] for r in got) == ["0", "1", "2"]
    assert all(r["caption"] == golden_caption for r in got)
