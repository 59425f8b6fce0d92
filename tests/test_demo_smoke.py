"""`make demo` in miniature: data -> fairseq-hydra-train -> evaluate -> report, all outputs present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_demo_smoke_produces_every_output(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(REPO / "scripts/demo.py"), "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| caption | CIDEr-D |" in proc.stdout and "report:" in proc.stdout
    for name in ("results.md", "results.json", "report.html", "loss_curve.png", "run/checkpoint_last.pt",
                 "run/untrained.pt", "run/DONE", "data/manifest.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(results["trained"]) == {"caption", "refcoco", "ocr"}
    assert results["trained"]["refcoco"]["count"] == 12
    reliance = results["image_reliance"]
    for model in ("untrained", "trained"):
        for task in ("caption", "refcoco", "ocr"):
            assert reliance[model][task]["rows"] == 12 and reliance[model][task]["own"] > 0, (model, task)
    assert f"| ocr | {reliance['untrained']['ocr']['own']:.3f} |" in proc.stdout
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("class='card'") == 12 and "data:image/png;base64," in page
    assert list((out / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    # idempotent: a second run neither regenerates data nor retrains
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "a finished training run is in" in again.stderr
    assert "already holds a complete demo dataset" in again.stderr
