"""The Python API (``ofa_cn.load`` / ``Predictor``), its image inputs, and the CLI around it."""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ofa_cn
from ofa_cn.apps.cli import main as cli_main
from ofa_cn.apps.inputs import ImageInputError, fetch_url, read_image
from photos import save_tiny_checkpoint, write_photos

REPO = Path(__file__).resolve().parents[1]
GEN = {"beam": 2, "max_len_b": 4}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return {
        "caption": save_tiny_checkpoint(folder / "caption.pt", {"_name": "caption", "patch_image_size": 64}),
        "multi": save_tiny_checkpoint(folder / "multi.pt", {"_name": "unify_task", "patch_image_size": 64,
                                                             "max_image_size": 64}),
    }


@pytest.fixture(scope="module")
def captioner(checkpoints):
    return ofa_cn.load(checkpoints["caption"], device="cpu")


@pytest.fixture(scope="module")
def server(files):
    """The photos served over http from 127.0.0.1 (a free port), for the URL inputs."""
    handler = functools.partial(QuietHandler, directory=str(next(iter(files.values())).parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines on stderr
        pass


def test_load_knows_its_task_and_one_input_gives_one_answer(captioner, files):
    assert captioner.task == "caption"
    one = captioner(files["odd.jpg"], **GEN)
    assert isinstance(one, str) and one
    assert captioner([str(files["odd.jpg"])], **GEN) == [one]  # a str path is one image, not its characters
    assert captioner.caption(str(files["odd.jpg"]), **GEN) == one


def test_every_kind_of_input_gives_the_same_answer(captioner, files, server):
    path = files["portrait.png"]
    expected = captioner(path, **GEN)
    with Image.open(path) as img:
        pil = img.copy()
    inputs = [str(path), path, pil, np.asarray(pil), path.read_bytes(), f"{server}/portrait.png"]
    assert captioner(inputs, **GEN) == [expected] * len(inputs)


def test_url_errors_name_the_url(server):
    with pytest.raises(ImageInputError, match=r"missing\.png: the server answered HTTP 404"):
        read_image(f"{server}/missing.png", "u")
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ImageInputError, match=rf"127\.0\.0\.1:{port}/a\.jpg is unreachable"):
        fetch_url(f"http://127.0.0.1:{port}/a.jpg")


def test_url_timeout():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/a.jpg"
        with pytest.raises(ImageInputError, match=r"no answer within 0\.2 s"):
            fetch_url(url, timeout=0.2)


def test_unknown_options_are_a_type_error_listing_the_valid_ones(captioner, files):
    with pytest.raises(TypeError, match=r"unknown options return_score, sampling; valid options: batch_size, "
                                        r"return_scores, progress, beam"):
        captioner(files["odd.jpg"], sampling=True, return_score=True)


def test_scores_on_request(captioner, files):
    plain = captioner(files["rgba.png"], **GEN)
    scored = captioner([files["rgba.png"]], return_scores=True, **GEN)
    assert scored[0]["caption"] == plain and isinstance(scored[0]["score"], float) and scored[0]["score"] < 0


def test_batch_size_splits_the_list(captioner, files, monkeypatch):
    task, _ = captioner._task("caption")
    sizes = []
    step = task.inference_step
    monkeypatch.setattr(task, "inference_step", lambda g, m, batch: sizes.append(len(batch["id"])) or step(g, m, batch))
    images = list(files.values()) + [files["odd.jpg"]]
    answers = captioner(images, batch_size=2, progress=False, **GEN)
    assert sizes == [2, 2, 1] and len(answers) == 5
    with pytest.raises(ValueError, match="batch_size 0: expected a positive whole number"):
        captioner(images, batch_size=0)


def test_exif_orientation_is_applied_unless_turned_off(files):
    assert read_image(files["rotated.jpg"], "r").size == (80, 120)  # shown upright, as viewers do
    assert read_image(files["rotated.jpg"], "r", exif=False).size == (120, 80)  # as stored (and as TSVs read)
    assert read_image(files["rgba.png"], "a").mode == "RGB"


def test_bad_inputs_say_what_was_wrong(captioner, files, tmp_path):
    with pytest.raises(ImageInputError, match="is a directory"):
        captioner(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.png does not exist"):
        captioner(str(tmp_path / "nope.png"))
    with pytest.raises(ImageInputError, match=r"bytes #0 is not an image PIL can read"):
        captioner(b"no picture")
    with pytest.raises(ImageInputError, match=r"array #0: expected a uint8 array of shape \[H, W, 3\].*float64"):
        captioner(np.zeros((4, 4, 3)))
    with pytest.raises(TypeError, match="cannot read an image from a int"):
        captioner(3)
    with pytest.raises(ValueError, match="dtype 'fp16': expected one of float32, fp32, bfloat16, bf16"):
        ofa_cn.load(files["odd.jpg"], dtype="fp16")
    with pytest.raises(ValueError, match="device 'gpu': .*expected cpu, cuda or cuda:N"):
        ofa_cn.load(files["odd.jpg"], device="gpu")


def test_a_checkpoint_for_another_task_is_refused_unless_any_task(checkpoints):
    with pytest.raises(ValueError, match="trained for the 'caption' task, not 'refcoco'; use a 'refcoco'"):
        ofa_cn.load(checkpoints["caption"], task="ground", device="cpu")


def test_multitask_checkpoint(checkpoints, files):
    multi = ofa_cn.load(checkpoints["multi"], device="cpu")
    assert multi.task is None
    with pytest.raises(TypeError, match="multitask checkpoint: call .caption"):
        multi(files["odd.jpg"])
    box = multi.ground(files["odd.jpg"], "人", **GEN)
    assert len(box) == 4 and all(0 <= v <= 333 for v in box[0::2]) and all(0 <= v <= 217 for v in box[1::2])
    two = multi.ground([files["odd.jpg"], files["portrait.png"]], "人", **GEN)  # one text for every image
    assert two[0] == box
    with pytest.raises(ValueError, match="one expression per image"):
        multi.ground([files["odd.jpg"]], ["a", "b"])
    assert isinstance(multi.ocr(files["odd.jpg"], **GEN), str)


def test_bf16(checkpoints, files):
    bf16 = ofa_cn.load(checkpoints["caption"], device="cpu", dtype="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert isinstance(bf16(files["odd.jpg"], **GEN), str)


# ---- the command line ---------------------------------------------------------------------------

def test_cli_directory_glob_batches_and_jsonl(checkpoints, files, capsys, monkeypatch):
    from ofa_cn.tasks.base import OFATask

    sizes = []
    step = OFATask.inference_step
    monkeypatch.setattr(OFATask, "inference_step",
                        lambda self, g, m, batch: sizes.append(len(batch["id"])) or step(self, g, m, batch))
    folder = files["odd.jpg"].parent
    assert cli_main(["caption", str(folder), str(folder / "*.png"), "--checkpoint", str(checkpoints["caption"]),
                     "--batch-size", "4", "--jsonl", "--scores", "--beam", "2", "--max-len-b", "4"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = sorted(str(p) for p in files.values())
    assert [r["image"] for r in rows] == names + sorted(str(p) for p in files.values() if p.suffix == ".png")
    assert sizes == [4, 2] and all(set(r) == {"image", "caption", "score"} for r in rows)


def test_cli_errors_name_the_argument(checkpoints, files, tmp_path, capsys):
    ckpt = str(checkpoints["caption"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    cases = [
        (["caption", str(tmp_path / "empty"), "--checkpoint", ckpt], "argument IMAGE", "a directory with no image files"),
        (["caption", str(tmp_path / "*.jpg"), "--checkpoint", ckpt], "argument IMAGE",
         "the pattern matches no file"),
        (["caption", str(files["odd.jpg"]), "--checkpoint", str(tmp_path / "notes.txt")], "argument --checkpoint",
         "is not a checkpoint"),
        (["caption", str(tmp_path / "notes.txt"), "--checkpoint", ckpt], "argument IMAGE", "is not an image"),
        (["caption", "http://127.0.0.1:9/a.jpg", "--checkpoint", ckpt], "argument IMAGE", "is unreachable"),
        (["ground", str(files["odd.jpg"]), "--checkpoint", ckpt], "IMAGE TEXT pairs", "has no expression"),
    ]
    for argv, argument, problem in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and argument in err and problem in err, err
        assert "allow-list" not in err


def test_cli_decompression_bomb_is_a_one_line_error(checkpoints, files, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # odd.jpg's 72,261 pixels are more than twice that
    assert cli_main(["caption", str(files["odd.jpg"]), "--checkpoint", str(checkpoints["caption"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(files["odd.jpg"]) in err and "decompression bomb" in err


def _run_cli(*argv, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ofa_cn.apps.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_stderr_is_quiet_by_default(checkpoints, files):
    argv = ["caption", str(files["odd.jpg"]), "--checkpoint", str(checkpoints["caption"]), "--beam", "2",
            "--max-len-b", "4"]
    quiet = _run_cli(*argv)  # a fresh process: fairseq's import-time logging setup is what could leak
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.startswith(str(files["odd.jpg"]) + "\t")


def test_cli_verbose_shows_progress_messages(checkpoints, files, capsys):
    argv = ["caption", str(files["odd.jpg"]), "--checkpoint", str(checkpoints["caption"]), "--beam", "2",
            "--max-len-b", "4", "-v"]
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    assert "INFO ofa_cn.tasks.base: dictionary: 30325 symbols" in err and "DEBUG" not in err


def test_the_python_api_leaves_logging_alone(checkpoints, files):
    """fairseq's import calls logging.basicConfig (DEBUG); through ofa_cn.load it does not take effect."""
    code = (f"import logging, ofa_cn\np = ofa_cn.load({str(checkpoints['caption'])!r}, device='cpu')\n"
            f"p({str(files['odd.jpg'])!r}, beam=2, max_len_b=4)\n"
            "print(logging.getLogger().handlers, logging.getLogger().level)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.split() == ["[]", "30"], done.stderr[-2000:]


def test_cli_verbose_shows_the_traceback(checkpoints, tmp_path, capsys):
    argv = ["caption", str(tmp_path / "nope.png"), "--checkpoint", str(checkpoints["caption"])]
    assert cli_main(argv) == 2 and "Traceback" not in capsys.readouterr().err
    assert cli_main([*argv, "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("no such file or directory")


def test_progress_bar(captioner, files, capsys):
    captioner([files["odd.jpg"]] * 3, batch_size=2, progress=True, **GEN)
    assert "3/3" in capsys.readouterr().err


def test_help_and_score_import_neither_torch_nor_fairseq():
    code = ("import sys, contextlib, io\n"
            "from ofa_cn.apps.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'fairseq') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_user_dir_registers_the_plugin():
    """fairseq's --user-dir imports ofa_cn and then ofa_cn/tasks, which registers everything."""
    code = ("import argparse\nfrom fairseq.utils import import_user_module\n"
            f"import_user_module(argparse.Namespace(user_dir={str(REPO / 'ofa_cn')!r}))\n"
            "from fairseq.tasks import TASK_REGISTRY\nfrom fairseq.models import ARCH_MODEL_REGISTRY\n"
            "from fairseq.criterions import CRITERION_REGISTRY\nfrom fairseq.optim import OPTIMIZER_REGISTRY\n"
            "print(all(t in TASK_REGISTRY for t in ('caption', 'refcoco', 'ocr', 'unify_task')),\n"
            "      'ofa_cn_base' in ARCH_MODEL_REGISTRY, 'scst_reward_criterion' in CRITERION_REGISTRY,\n"
            "      'adjust_label_smoothed_cross_entropy' in CRITERION_REGISTRY, 'fused_adam' in OPTIMIZER_REGISTRY)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["True"] * 5, done.stderr[-2000:]
