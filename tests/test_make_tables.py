"""scripts/make_tables.py renders metrics.json files as the tables of checkpoints.md; the evaluation
and download scripts that the tables and the list point to agree with them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


make_tables = load_script("make_tables")


def write_metrics(folder: Path, **metrics) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return str(folder)


def test_renders_hand_written_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirs = [
        write_metrics(Path("out/cap"), bleu4=26.234, rouge_l=58.9, cider=50.699, sacrebleu_zh=20.0, count=3,
                      task="CaptionTask", checkpoint="/ckpt/caption_cn_base.pt", data="/d/muge/caption_valid.tsv",
                      command="python scripts/evaluate.py --checkpoint /ckpt/caption_cn_base.pt --beam 8"),
        write_metrics(Path("out/g1"), **{"acc@0.5": 75.0, "count": 4, "mean_iou": 0.61},
                      task="RefcocoTask", checkpoint="ck/refcocog_cn_large.pt", data="d/refcocog_test.tsv"),
        write_metrics(Path("out/g2"), **{"acc@0.5": 50.0}, checkpoint="ck/refcocoplus_cn_base.pt",
                      data="d/refcocoplus_testa.tsv"),
        # a checkpoint and data file named by nobody's convention: dataset unknown, split = file stem
        write_metrics(Path("out/g3"), **{"acc@0.5": 12.5}, checkpoint="mine/checkpoint_best.pt",
                      data="d/my_split.tsv"),
        write_metrics(Path("out/ocr"), accuracy=81.0, ned=None, checkpoint="ck/ofa_cn_ocr_base.pt",
                      data="d/ocr_scene_test.tsv") + "/metrics.json",  # the file itself also works
    ]
    expected = """\
### MUGE caption

| Checkpoint | Data | BLEU@4 | ROUGE-L | CIDEr-D | Command |
|---|---|---|---|---|---|
| `caption_cn_base.pt` | `caption_valid.tsv` | 26.23 (–) | 58.90 (–) | 50.70 (–) | `python scripts/evaluate.py --checkpoint /ckpt/caption_cn_base.pt --beam 8` |

### RefCOCO-CN series

| Checkpoint | Dataset | Split | Acc@0.5 | Command |
|---|---|---|---|---|
| `refcocog_cn_large.pt` | RefCOCOg-CN | test-u | 75.00 (71.30) | – |
| `refcocoplus_cn_base.pt` | RefCOCO+-CN | testA | 50.00 (77.26) | – |
| `checkpoint_best.pt` | – | my_split | 12.50 (–) | – |

### Chinese OCR

| Checkpoint | Data | Accuracy | NED | Command |
|---|---|---|---|---|
| `ofa_cn_ocr_base.pt` | `ocr_scene_test.tsv` | 81.00 (–) | – (–) | – |
"""
    assert make_tables.render(make_tables.load(dirs)) == expected
    # the same through the command line, and only the sections that have rows
    run = subprocess.run([sys.executable, str(SCRIPTS / "make_tables.py"), "out/g2"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("### RefCOCO-CN series\n") and "MUGE" not in run.stdout
    assert run.stdout.count("\n| `") == 1


def test_bad_inputs_say_what_is_wrong(tmp_path):
    not_metrics = write_metrics(tmp_path / "x", loss=1.0, checkpoint="a.pt", data="b.tsv")
    for argument, message in ((not_metrics, "none of the metric keys"), (str(tmp_path / "absent"), "no metrics.json"),
                              (str(tmp_path / "absent"), "upload its muge_submission.jsonl")):
        run = subprocess.run([sys.executable, str(SCRIPTS / "make_tables.py"), argument],
                             capture_output=True, text=True)
        assert run.returncode == 1 and message in run.stderr and run.stdout == ""


# The published numbers of the original checkpoints_cn.md (OCR: none published).
PUBLISHED_CAPTION = {"base": (26.23, 58.95, 50.70), "large": (27.32, 59.20, 53.51)}
PUBLISHED_GROUNDING = {
    "base": {"refcoco": (82.18, 86.07, 76.68), "refcocoplus": (69.38, 77.26, 60.14), "refcocog": (73.57, 72.53)},
    "large": {"refcoco": (82.84, 86.54, 76.50), "refcocoplus": (71.30, 78.56, 61.85), "refcocog": (71.96, 71.30)},
}


def test_checkpoints_md_tables_are_make_tables_output():
    """checkpoints.md shows what `make_tables.py --published` prints, and those are the original's numbers."""
    results = make_tables.published_results()
    shown = {}
    for r in results:
        size = "large" if "_large" in r.checkpoint else "base"
        if "caption" in r.checkpoint:
            shown[("caption", size)] = (r.metrics["bleu4"], r.metrics["rouge_l"], r.metrics["cider"])
        elif "acc@0.5" in r.metrics:
            dataset = Path(r.checkpoint).stem.split("_cn_")[0]
            shown.setdefault((dataset, size), ())
            shown[(dataset, size)] += (r.metrics["acc@0.5"],)
    assert {k: v for k, v in shown.items() if k[0] == "caption"} == {("caption", s): v for s, v in PUBLISHED_CAPTION.items()}
    assert {k: v for k, v in shown.items() if k[0] != "caption"} == {
        (d, s): v for s, datasets in PUBLISHED_GROUNDING.items() for d, v in datasets.items()}
    rendered = make_tables.render(results)
    assert rendered in (REPO / "checkpoints.md").read_text(encoding="utf-8")
    run = subprocess.run([sys.executable, str(SCRIPTS / "make_tables.py"), "--published"], capture_output=True,
                         text=True)
    assert run.returncode == 0 and run.stdout == rendered


def test_a_run_shows_its_published_number_and_recorded_command(tmp_path):
    folder = write_metrics(tmp_path / "r", **{"acc@0.5": 80.5}, checkpoint="/x/refcoco_cn_base.pt",
                           data="/d/refcoco_testB.tsv", command="python scripts/evaluate.py --data /d/refcoco_testB.tsv")
    text = make_tables.render(make_tables.load([folder]))
    assert "| `refcoco_cn_base.pt` | RefCOCO-CN | testB | 80.50 (76.68) | " \
           "`python scripts/evaluate.py --data /d/refcoco_testB.tsv` |" in text


def released_names() -> list[str]:
    """The .pt files of the 'Released checkpoints' table of checkpoints.md, in order."""
    text = (REPO / "checkpoints.md").read_text(encoding="utf-8")
    section = text.split("## Released checkpoints", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| \[`(\w+)\.pt`\]\(https://\S+/\1\.pt\)", section, re.M)


def test_download_script_lists_the_released_checkpoints():
    run = subprocess.run(["bash", str(SCRIPTS / "download_checkpoints.sh"), "--list"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    names = released_names()
    assert len(names) == 12
    assert run.stdout.split() == names
    bad = subprocess.run(["bash", str(SCRIPTS / "download_checkpoints.sh"), "ofa_cn_hugee"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown checkpoint 'ofa_cn_hugee'" in bad.stderr


@pytest.mark.parametrize("script", ["download_checkpoints.sh", "eval_caption.sh", "eval_refcoco.sh", "eval_ocr.sh"])
def test_shell_scripts_parse(script):
    run = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


# script -> (task name, TSV columns of the original CN evaluation scripts)
EVAL_SCRIPTS = {"eval_caption.sh": ("caption", "1,4,2"), "eval_refcoco.sh": ("refcoco", "0,3,1,2"),
                "eval_ocr.sh": ("ocr", "0,1,2")}


@pytest.mark.parametrize("script", list(EVAL_SCRIPTS))
def test_eval_script_runs_evaluate_with_the_published_settings(script):
    """With PYTHON=echo the script prints the evaluate.py command it would run."""
    import ofa_cn.tasks  # noqa: F401
    from fairseq.tasks import TASK_REGISTRY

    task_name, columns = EVAL_SCRIPTS[script]
    run = subprocess.run(["bash", str(SCRIPTS / script), "c.pt", "d.tsv", "out", "--device", "cpu"],
                         capture_output=True, text=True, env={"PYTHON": "echo", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    argv = shlex.split(run.stdout)
    assert argv[0] == str(SCRIPTS / "evaluate.py")
    flags = dict(zip(argv[1::2], argv[2::2]))
    assert flags["--checkpoint"] == "c.pt" and flags["--data"] == "d.tsv" and flags["--out-dir"] == "out"
    assert flags["--task"] == task_name and flags["--selected-cols"] == columns and flags["--device"] == "cpu"
    generation = {key[2:].replace("-", "_"): float(value) for key, value in flags.items()
                  if key in ("--beam", "--max-len-a", "--max-len-b", "--min-len", "--no-repeat-ngram-size")}
    assert generation == {k: float(v) for k, v in TASK_REGISTRY[task_name].DEFAULT_GENERATION.items()}
    missing = subprocess.run(["bash", str(SCRIPTS / script), "c.pt"], capture_output=True, text=True)
    assert missing.returncode == 2 and "usage:" in missing.stderr
