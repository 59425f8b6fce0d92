"""A folder of your own images plus a JSON-lines label file -> the TSV of one task.

One label per line, the image path relative to ``--images``; ``id`` is optional (default: the
line number):

    caption:  {"image": "shoes/1.jpg", "caption": "一双白色的运动鞋"}     (or a list of captions)
    refcoco:  {"image": "street.jpg", "expression": "左边的红色汽车", "box": [12, 40, 230, 180]}
    ocr:      {"image": "lines/7.png", "text": "欢迎光临"}

``box`` is [x0, y0, x1, y1] in pixels of the image file. The rows come out in the column order
each task's configs read: caption ``uniq_id, image_id, caption, objects, image``; refcoco
``uniq_id, text, box, image``; ocr ``uniq_id, image, text`` (see ``muge.py``, ``refcoco.py``
and ``lmdb.py``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

from ..data.caption import REFERENCE_SEPARATOR, clean_caption
from .common import (Report, Skip, check_box, check_column_text, check_image, convert, encode_image, format_box,
                     progress, read_jsonl_lines)
from .lmdb import check_label
from .refcoco import check_expression

TASKS = ("caption", "refcoco", "ocr")


def _captions(value: object, where: str) -> tuple[list[str], Skip | None]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return [], Skip("'caption' is not a string or a list of strings", f"{where}: {str(value)[:80]}")
    texts = [" ".join(t.split()) for t in texts]
    for text in texts:
        if REFERENCE_SEPARATOR in text:
            return [], Skip("caption contains '&&'", f"{where}: {text[:80]!r}")
        if not clean_caption(text):
            return [], Skip("empty caption", f"{where}: {text[:80]!r}")
    return texts, None


def _box(value: object, where: str) -> tuple[list[float], Skip | None]:
    ok = (isinstance(value, list) and len(value) == 4
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok:
        return [], Skip("'box' is not 4 numbers [x0, y0, x1, y1]", f"{where}: {str(value)[:80]}")
    return [float(v) for v in value], None


def rows(images_dir: str | os.PathLike, labels: str | os.PathLike, task: str, report: Report,
         show_progress: bool = True) -> Iterator[list[str] | Skip]:
    """One row of ``task``'s layout per label line, or a Skip."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: expected one of {TASKS}")
    root = Path(images_dir).resolve()
    text_key = {"caption": "caption", "refcoco": "expression", "ocr": "text"}[task]
    seen: set[str] = set()
    bar = progress(None, "line", f"folder {task}", show_progress)
    for number, value in read_jsonl_lines(labels):
        bar.update(1)
        if isinstance(value, Skip):
            yield value
            continue
        where = f"{labels}:{number}"
        uniq_id = str(value.get("id", number))
        name = value.get("image")
        if not isinstance(name, str) or not name or text_key not in value:
            yield Skip(f"line without 'image' and {text_key!r}", f"{where}: {str(value)[:80]}")
            continue
        bad = check_column_text(uniq_id, "id", where)
        if bad is None and uniq_id in seen:
            bad = Skip("id on two lines", f"{where}: id {uniq_id}")
        if bad:
            yield bad
            continue
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            yield Skip("image path leaves --images", f"{where}: {name!r}")
            continue
        if not path.is_file():
            yield Skip("image file missing", f"{where}: {path}")
            continue
        if task == "caption":
            texts, bad = _captions(value[text_key], where)
        elif isinstance(value[text_key], str):
            text = " ".join(value[text_key].split()) if task == "refcoco" else value[text_key]
            bad = check_expression(text, where) if task == "refcoco" else check_label(text, where)
        else:
            bad = Skip(f"{text_key!r} is not a string", f"{where}: {str(value[text_key])[:80]}")
        if task == "refcoco" and bad is None:
            box, bad = _box(value.get("box"), where)
        if bad:
            yield bad
            continue
        b64 = encode_image(path.read_bytes())
        size, bad = check_image(b64, where)
        if bad is None and task == "refcoco":
            bad = check_box(box, size, where)
        if bad:
            yield bad
            continue
        seen.add(uniq_id)
        if task == "caption":
            yield [uniq_id, uniq_id, REFERENCE_SEPARATOR.join(texts), "", b64]
        elif task == "refcoco":
            yield [uniq_id, text, format_box(box), b64]
        else:
            yield [uniq_id, b64, text]
    bar.close()


def prepare(images: str | os.PathLike, labels: str | os.PathLike, task: str, out: str | os.PathLike,
            show_progress: bool = True) -> Report:
    """Convert a folder of images and its label file to ``out``; returns the report."""
    report = Report(f"prepare folder ({task})", str(out))
    return convert(rows(images, labels, task, report, show_progress), out, report)
