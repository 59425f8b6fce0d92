"""The demo's report: a results table, a loss curve and a page of held-out examples (HTML + PNG).

Pure rendering over files the run wrote (training log, predictions, the TSV rows); no model here.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

TRUE_BOX = (40, 170, 40)  # green
PRED_BOX = (220, 30, 30)  # red


def read_training_losses(log_path: str | Path) -> list[tuple[int, float]]:
    """(update, loss) pairs from fairseq's json log lines (`log_format: json`) in a saved log."""
    points = []
    for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines():
        start = line.find("{")
        if start < 0 or '"num_updates"' not in line or '"loss"' not in line:
            continue
        try:
            entry = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if "loss" in entry and "num_updates" in entry:
            points.append((int(float(entry["num_updates"])), float(entry["loss"])))
    return points


def plot_curve(points: Sequence[tuple[int, float]], width: int = 560, height: int = 260,
               title: str = "training loss (base 2) per update") -> Image.Image:
    """A plain line chart of (x, y) points, drawn with PIL."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 50, width - 15, 25, height - 30
    draw.text((left, 5), title, fill="black")
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    if len(points) < 2:
        draw.text((left + 10, top + 10), "not enough points", fill="black")
        return img
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = max(x1 - x0, 1), max(y1 - y0, 1e-6)
    coords = [(left + (x - x0) / span_x * (right - left), bottom - (y - y0) / span_y * (bottom - top))
              for x, y in points]
    draw.line(coords, fill=(30, 90, 200), width=2)
    draw.text((5, top), f"{y1:.1f}", fill="black")
    draw.text((5, bottom - 10), f"{y0:.1f}", fill="black")
    draw.text((left, bottom + 5), str(x0), fill="black")
    draw.text((right - 40, bottom + 5), str(x1), fill="black")
    return img


def draw_boxes(img: Image.Image, true_box: Sequence[float] | None, pred_box: Sequence[float] | None,
               scale: int = 2) -> Image.Image:
    """The image enlarged `scale` times with the true (green) and predicted (red) boxes."""
    out = img.convert("RGB").resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(out)
    for box, colour in ((true_box, TRUE_BOX), (pred_box, PRED_BOX)):
        if box is not None:
            # a prediction may be inverted (x1 < x0): drawn as the rectangle its corners span,
            # while the metrics score it as generated (a miss)
            x0, y0, x1, y1 = (v * scale for v in box)
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=colour, width=2)
    return out


def png_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: task | metric | untrained | trained | target."""
    lines = ["| task | metric | untrained | trained | target |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['metric']} | {r['untrained']:.1f} | {r['trained']:.1f} | {r['target']} |")
    return "\n".join(lines)


def reliance_table(reliance: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table of `image_reliance` results: reliance[model][task] = {"own", "other"} losses."""
    lines = ["| task | untrained: own image | untrained: another row's image | trained: own image | "
             "trained: another row's image |", "|---|---|---|---|---|"]
    for task in reliance["trained"]:
        before, after = reliance["untrained"][task], reliance["trained"][task]
        lines.append(f"| {task} | {before['own']:.3f} | {before['other']:.3f} | {after['own']:.3f} | "
                     f"{after['other']:.3f} |")
    return "\n".join(lines)


def write_html(path: str | Path, table_rows: Sequence[dict[str, Any]], curve: Image.Image,
               examples: Sequence[dict[str, Any]], notes: str = "") -> Path:
    """The report page: table, loss curve, and one card per example.

    Each example: {"image": PIL image, "caption_pred", "caption_ref", "expression", "box_pred",
    "box_true", "ocr_image", "ocr_pred", "ocr_ref"} (any part may be missing).
    """
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ("task", "metric", "untrained", "trained", "target"))
    body = "".join(
        f"<tr><td>{esc(r['task'])}</td><td>{esc(r['metric'])}</td><td>{r['untrained']:.1f}</td>"
        f"<td><b>{r['trained']:.1f}</b></td><td>{esc(str(r['target']))}</td></tr>" for r in table_rows)
    cards = []
    for ex in examples:
        parts = []
        if ex.get("image") is not None:
            parts.append(f"<img src='{png_data_uri(draw_boxes(ex['image'], ex.get('box_true'), ex.get('box_pred')))}'>")
        if "caption_pred" in ex:
            parts.append(f"<p>描述: <b>{esc(ex['caption_pred'])}</b><br><small>参考: {esc(ex['caption_ref'])}</small></p>")
        if "expression" in ex:
            parts.append(f"<p>定位: {esc(ex['expression'])} <span style='color:#d21'>■ 预测</span> "
                         f"<span style='color:#2a2'>■ 真值</span></p>")
        if ex.get("ocr_image") is not None:
            parts.append(f"<img src='{png_data_uri(ex['ocr_image'].resize((ex['ocr_image'].width * 2, ex['ocr_image'].height * 2)))}'>"
                         f"<p>OCR: <b>{esc(ex['ocr_pred'])}</b> <small>(真值 {esc(ex['ocr_ref'])})</small></p>")
        cards.append(f"<div class='card'>{''.join(parts)}</div>")
    page = f"""<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>OFA-CN demo</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 10px}}
.cards{{display:flex;flex-wrap:wrap;gap:12px}} .card{{border:1px solid #ddd;padding:8px;width:360px}} img{{max-width:340px}}</style>
</head><body><h1>OFA-CN demo: a small model trained from scratch on the CPU</h1>
<table><tr>{head}</tr>{body}</table><p>{esc(notes)}</p>
<h2>Training loss</h2><img src='{png_data_uri(curve)}'>
<h2>Held-out examples</h2><div class="cards">{''.join(cards)}</div></body></html>"""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
