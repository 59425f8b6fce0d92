"""The demo's report page opened in a real browser (Debian's chromium, headless): its images load,
its tables have their rows, and the screenshot shows the pictures with their boxes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ofa_cn.demo.report import PRED_BOX, TRUE_BOX, plot_curves, results_table, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                                reason="chromium is not installed (scripts/setup.sh installs it; CI requires it)")
# what a page-load check reports: images that decoded, table rows, and the page's size
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const rows = [...document.querySelectorAll('table tr')].length;
  document.title = `images ${ok}/${imgs.length} rows ${rows}`;
});</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is required under CI=true: apt-get install -y chromium (scripts/setup.sh does)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--virtual-time-budget=3000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def scene() -> Image.Image:
    pixels = np.full((64, 64, 3), 240, np.uint8)
    pixels[10:30, 20:44] = (40, 80, 220)  # a blue square
    return Image.fromarray(pixels)


def test_report_renders_tables_images_and_boxes(tmp_path):
    rows = [{"task": "refcoco", "metric": "Acc@0.5 (%)", "target": ">= 60",
             "values": {"untrained": 0.0, "pretrained + finetuned": 75.5}}]
    table = results_table(rows, ["untrained", "pretrained + finetuned"])
    examples = [{"image": scene(), "title": "蓝色的正方形", "box_true": [20, 10, 44, 30], "box_pred": [22, 12, 46, 31],
                 "prediction": "22, 12, 46, 31", "truth": "20, 10, 44, 30", "correct": True}] * 3
    page = write_html(tmp_path / "report.html", "demo", {"Held-out results": table}, plot_curves({"a": [(0, 5), (9, 1)]}),
                      {"Grounding": examples}, notes="note")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = chromium("--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>images 4/4 rows 2</title>" in dom.stdout  # 3 example pictures + the loss curve; header + 1 row

    shot = tmp_path / "shot.png"
    result = chromium(f"--screenshot={shot}", "--window-size=900,1200", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert TRUE_BOX in colours and PRED_BOX in colours  # the boxes were drawn into the rendered pictures
    assert (40, 80, 220) in colours  # the picture itself
