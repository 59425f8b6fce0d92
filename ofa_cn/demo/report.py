"""The demo's report: result tables, loss curves and a page of held-out examples (HTML + PNG).

Pure rendering over values the run produced (training logs, predictions, the TSV rows); no model here.
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
CURVE_COLOURS = ((30, 90, 200), (220, 120, 20), (40, 160, 60), (150, 60, 190))


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


def plot_curves(curves: dict[str, Sequence[tuple[int, float]]], width: int = 560, height: int = 260,
                title: str = "training loss (base 2) per update") -> Image.Image:
    """A plain line chart of one or more named (x, y) series on shared axes, drawn with PIL."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 50, width - 15, 25, height - 30
    draw.text((left, 5), title, fill="black")
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    series = {name: list(points) for name, points in curves.items() if len(points) >= 2}
    if not series:
        draw.text((left + 10, top + 10), "not enough points", fill="black")
        return img
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = max(x1 - x0, 1), max(y1 - y0, 1e-6)
    for k, (name, points) in enumerate(series.items()):
        colour = CURVE_COLOURS[k % len(CURVE_COLOURS)]
        coords = [(left + (x - x0) / span_x * (right - left), bottom - (y - y0) / span_y * (bottom - top))
                  for x, y in points]
        draw.line(coords, fill=colour, width=2)
        draw.text((right - 150, top + 5 + 14 * k), f"-- {name}", fill=colour)
    draw.text((5, top), f"{y1:.1f}", fill="black")
    draw.text((5, bottom - 10), f"{y0:.1f}", fill="black")
    draw.text((left, bottom + 5), str(x0), fill="black")
    draw.text((right - 40, bottom + 5), str(x1), fill="black")
    return img


def plot_curve(points: Sequence[tuple[int, float]], width: int = 560, height: int = 260,
               title: str = "training loss (base 2) per update") -> Image.Image:
    """`plot_curves` with a single unnamed series."""
    return plot_curves({"": points}, width, height, title)


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


def results_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Markdown table: task | metric | one column per model | target.

    Each row: {"task", "metric", "target", "values": {column: number}}.
    """
    lines = ["| task | metric | " + " | ".join(columns) + " | target |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for r in rows:
        cells = " | ".join(f"{r['values'][c]:.1f}" for c in columns)
        lines.append(f"| {r['task']} | {r['metric']} | {cells} | {r['target']} |")
    return "\n".join(lines)


def reliance_table(reliance: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table of `image_reliance` results, reliance[model][task] = {"own", "other"} losses
    (and "other_text" where the task's prompts differ): one row per task and one more per
    "other_text", one "own / other" column per model."""
    models = list(reliance)
    lines = ["| task | " + " | ".join(f"{m}: own / other image" for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for task in reliance[models[0]]:
        cells = " | ".join(f"{reliance[m][task]['own']:.3f} / {reliance[m][task]['other']:.3f}" for m in models)
        lines.append(f"| {task} | {cells} |")
        if "other_text" in reliance[models[0]][task]:
            cells = " | ".join(f"{reliance[m][task]['own']:.3f} / {reliance[m][task]['other_text']:.3f}"
                               for m in models)
            lines.append(f"| {task}, another row's text instead | {cells} |")
    return "\n".join(lines)


def _card(ex: dict[str, Any]) -> str:
    """One example: {"image", "box_true", "box_pred", "title", "prediction", "truth"} (boxes optional)."""
    esc = html.escape
    picture = draw_boxes(ex["image"], ex.get("box_true"), ex.get("box_pred"), scale=3)
    ok = "✓" if ex.get("correct") else "✗"
    return (f"<div class='card'><img src='{png_data_uri(picture)}' alt='{esc(ex['title'])}'>"
            f"<p>{esc(ex['title'])}</p><p>{ok} 预测: <b>{esc(ex['prediction'])}</b><br>"
            f"<small>真值: {esc(ex['truth'])}</small></p></div>")


def write_html(path: str | Path, title: str, tables_md: dict[str, str], curve: Image.Image,
               sections: dict[str, Sequence[dict[str, Any]]], notes: str = "") -> Path:
    """The report page: tables, the loss curves, and one section of example cards per task.

    Args:
        tables_md: heading -> a markdown table (as `results_table` / `reliance_table` write them).
        sections: heading -> examples for `_card`.
    """
    esc = html.escape
    parts = [f"<h1>{esc(title)}</h1>"]
    for heading, table in tables_md.items():
        parts.append(f"<h2>{esc(heading)}</h2>{markdown_table_html(table)}")
    parts.append(f"<p>{esc(notes)}</p><h2>Training loss</h2><img src='{png_data_uri(curve)}' alt='loss curves'>")
    for heading, examples in sections.items():
        cards = "".join(_card(ex) for ex in examples)
        parts.append(f"<h2>{esc(heading)}</h2><div class='cards'>{cards}</div>")
    page = f"""<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:4px 10px}} .cards{{display:flex;flex-wrap:wrap;gap:12px}}
.card{{border:1px solid #ddd;padding:8px;width:230px}} .card img{{width:210px;image-rendering:pixelated}}</style>
</head><body>{''.join(parts)}</body></html>"""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def markdown_table_html(table: str) -> str:
    """A markdown table (header, separator, rows) as an HTML table."""
    lines = [line.strip().strip("|") for line in table.strip().splitlines()]
    header, rows = lines[0], lines[2:]
    esc = html.escape
    head = "".join(f"<th>{esc(c.strip())}</th>" for c in header.split("|"))
    body = "".join("<tr>" + "".join(f"<td>{esc(c.strip())}</td>" for c in row.split("|")) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
