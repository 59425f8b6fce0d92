"""`make demo` in miniature: data -> two fairseq-hydra-train runs side by side (from scratch, and from
the shipped pretrained checkpoint) -> evaluate four models -> report, all outputs present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
MODELS = ("untrained", "from scratch", "pretrained only", "pretrained + finetuned")


def test_demo_smoke_produces_every_output(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(REPO / "scripts/demo.py"), "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header = "| task | metric | untrained | from scratch | pretrained only | pretrained + finetuned | target |"
    assert header in proc.stdout and "| refcoco | Acc@0.5 (%) |" in proc.stdout and "report:" in proc.stdout
    assert "updates/min" in proc.stderr  # the runs' speed, so a user sees when the machine is the problem
    for name in ("results.md", "results.json", "report.html", "loss_curve.png", "data/manifest.json",
                 "runs/pretrained_start.pt", "runs/from_scratch/checkpoint_last.pt", "runs/from_scratch/untrained.pt",
                 "runs/finetuned/checkpoint_last.pt", "runs/from_scratch/DONE", "runs/finetuned/DONE"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(results["metrics"]) == set(MODELS)
    for model in MODELS:
        assert set(results["metrics"][model]) == {"caption", "refcoco", "ocr"}
        assert results["metrics"][model]["refcoco"]["count"] == 12
        for task in ("caption", "refcoco", "ocr"):
            assert results["image_reliance"][model][task]["rows"] == 12, (model, task)
    # the finetuned run started from the pretrained weights, not from a fresh initialisation
    log = (out / "runs/finetuned/train.log").read_text(encoding="utf-8")
    assert "pretrained_start.pt" in log and "loaded checkpoint" in log.lower()
    # where the numbers were made: runs on one machine are bit-identical, other CPUs may round differently
    machine = f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"
    assert "Machine: " in (out / "results.md").read_text(encoding="utf-8") and machine in proc.stdout
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("class='card'") == 3 * 8 and page.count("<table>") == 2
    assert list((out / "runs/finetuned/tensorboard").rglob("events.out.tfevents.*"))
    # idempotent: a second run neither regenerates data nor retrains
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "a finished training run is in" in again.stderr
    assert "already holds a complete demo dataset" in again.stderr


def test_pretrain_smoke_runs_every_stage_and_exports(tmp_path):
    """`--pretrain --smoke`: every PRETRAIN_STAGES stage through fairseq-hydra-train, each from the
    last one's weights and reading its tasks' files, the held-out grounding scored, the export loadable."""
    from helpers import load_script

    from ofa_cn.demo.pretrained import write_finetune_start

    stages = load_script("demo").PRETRAIN_STAGES
    out, export = tmp_path / "out", tmp_path / "export"
    cmd = [sys.executable, str(REPO / "scripts/demo.py"), "--pretrain", "--smoke", "--out", str(out),
           "--pretrained", str(export)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    previous = None
    for folder, sources, _updates in stages:
        run = out / "pretrain" / folder
        assert (run / "DONE").exists() and (run / "checkpoint_last.pt").exists(), folder
        log = (run / "train.log").read_text(encoding="utf-8")
        for prefix in sources.values():
            assert f"rows from {out / 'pretrain' / prefix}_train.tsv" in log, (folder, prefix)
        if previous is not None:
            assert f"{previous}/checkpoint_last.pt" in log and "loaded checkpoint" in log.lower(), folder
        previous = folder
    made_by = json.loads((export / "config.json").read_text(encoding="utf-8"))["made_by"]
    assert made_by["updates_per_stage"] == {folder: 4 for folder, _s, _u in stages}
    assert made_by["machine"].endswith(f"torch {torch.__version__}, {os.cpu_count()} cores")
    scored = {folder for folder, sources, _u in stages if "grounding" in sources}
    assert set(made_by["grounding_acc_per_stage"]) == scored and "grounding Acc@0.5" in proc.stderr
    for folder in scored:  # the evaluation's own metrics file, 12 held-out rows
        metrics = json.loads((out / "pretrain" / folder / "eval_grounding" / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["count"] == 12 and made_by["grounding_acc_per_stage"][folder] == metrics["acc@0.5"]
    write_finetune_start(export, tmp_path / "start.pt")  # loads back as a fairseq start file
